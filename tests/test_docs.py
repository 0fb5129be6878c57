"""The documentation: API reference up to date, every public name documented with an
example, notebooks generated from the examples, relative links that resolve."""

import importlib.util
import inspect
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "docs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_api = load_script("make_api")


def test_api_reference_is_up_to_date():
    assert (ROOT / "docs" / "api.md").read_text() == make_api.render(), (
        "docs/api.md is out of date: run `python docs/make_api.py`"
    )


def test_every_public_name_has_a_docstring_with_an_example():
    missing = []
    for module, members in make_api.api_entries():
        if not inspect.getdoc(module):
            missing.append(f"{module.__name__}: no module docstring")
        for name, value in members:
            if not (inspect.isclass(value) or inspect.isroutine(value)):
                continue  # constants are documented by their value
            _, example = make_api.split_example(inspect.getdoc(value) or "")
            if ">>>" not in example:
                missing.append(f"{module.__name__}.{name}: no docstring Example with >>> lines")
    assert not missing, "\n".join(missing)


def test_notebooks_are_generated_from_the_examples():
    pytest.importorskip("jupytext")
    make_notebooks = load_script("make_notebooks")
    for example, notebook in make_notebooks.NOTEBOOKS.items():
        expected = make_notebooks.render(ROOT / "examples" / example)
        assert (ROOT / "notebooks" / notebook).read_text() == expected, (
            f"notebooks/{notebook} is out of date: run `python docs/make_notebooks.py`"
        )


@pytest.mark.parametrize("page", ["README.md", "docs/guide.md", "docs/migration.md", "docs/api.md", "docs/performance.md"])
def test_relative_links_resolve(page):
    path = ROOT / page
    broken = []
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text()):
        if "://" not in target and not (path.parent / target).exists():
            broken.append(target)
    assert not broken, f"{page}: broken links {broken}"


def test_notebook_install_cell_installs_its_one_variable(tmp_path, monkeypatch):
    """Outside a clone, with rankloss_tf missing, the first cell pip-installs RANKLOSS_TF_SOURCE, and only it."""
    pytest.importorskip("jupytext")
    import importlib.util as util
    import subprocess

    cell = load_script("make_notebooks").INSTALL_CELL
    source = "rankloss_tf-9.9.9-py3-none-any.whl[datasets]"
    cell = cell.replace('RANKLOSS_TF_SOURCE = "rankloss-tf[datasets]"', f"RANKLOSS_TF_SOURCE = {source!r}")
    assert source in cell and cell.count("RANKLOSS_TF_SOURCE") == 2  # set once, used once
    calls = []
    find_spec = util.find_spec
    monkeypatch.setattr(util, "find_spec", lambda name, *a: None if name == "rankloss_tf" else find_spec(name, *a))
    monkeypatch.setattr(subprocess, "check_call", lambda command: calls.append(command))
    monkeypatch.chdir(tmp_path)  # not inside a clone
    exec(cell, {})
    assert len(calls) == 1 and calls[0][-1] == source and calls[0][1:4] == ["-m", "pip", "install"]
