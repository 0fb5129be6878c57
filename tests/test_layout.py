"""The package's shape: imports point down the layers, no function is long, nothing is said twice in code."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "rankloss_tf"
# Layers from the bottom; a module may import its own layer's package and the layers below.
LAYERS = [
    {"ops", "cache", "lazy", "io", "images", "references"},
    {"losses", "data", "datasets", "fine_tune"},
    {"compat", "backbones", "evaluation", "export"},
    {"loading"},
    {"models", "retrieval", "deploy"},
    {"app"},  # the application: the library never imports it
    # deprecated forwards (they go in 0.3), and python -m
    {"training", "cli", "artifacts", "losses_modern", "__main__"},
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}
LONG_FUNCTION_LINES = 60


def modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


def top(path):
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def imported(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path):
    mine = top(path)
    assert mine in RANK, f"{mine} has no layer in LAYERS"
    for name in imported(ast.parse(path.read_text())):
        parts = name.split(".")
        if parts[0] != "rankloss_tf" or len(parts) < 2 or parts[1] not in RANK:
            continue
        assert RANK[parts[1]] < RANK[mine] or parts[1] == mine, f"{path.name} imports {name}: a back edge"


def code_lines(path, node):
    body = node.body
    docstring = body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant)
    start = body[0].end_lineno + 1 if docstring else node.lineno
    lines = path.read_text().splitlines()[start - 1:node.end_lineno]
    return sum(1 for line in lines if line.strip() and not line.strip().startswith("#"))


def test_no_long_functions():
    long = []
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and code_lines(path, node) > LONG_FUNCTION_LINES:
                long.append(f"{path.relative_to(PACKAGE)}:{node.name} ({code_lines(path, node)} lines)")
    assert not long, long


def test_no_private_keras_imports_outside_one_shim():
    users = [str(p.relative_to(PACKAGE)) for p in modules()
             if any(name.startswith("keras.src") for name in imported(ast.parse(p.read_text())))]
    assert len(users) <= 1, users


@pytest.mark.parametrize("name, new", [("rankloss_tf.training", "rankloss_tf.app"),
                                       ("rankloss_tf.cli", "rankloss_tf.app.cli"),
                                       ("rankloss_tf.artifacts", "rankloss_tf.app.artifacts")])
def test_moved_modules_forward_and_warn_for_one_release(name, new):
    import subprocess
    import sys

    code = (f"import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
            f"try:\n    import {name}\nexcept DeprecationWarning as warning:\n    print(warning)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert f"{name} moved to {new}" in out


def test_moved_training_modules_are_the_app_modules():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from rankloss_tf.training import TrainConfig, config, fine_tune
    import rankloss_tf.app.config
    import rankloss_tf.fine_tune

    assert config is rankloss_tf.app.config and TrainConfig is config.TrainConfig
    assert fine_tune is rankloss_tf.fine_tune


def _imports_by_name(tree):
    """The ``import_module("rankloss_tf...")`` calls of a module (a literal or f-string name)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module" and node.args:
            name = node.args[0]
            text = name.value if isinstance(name, ast.Constant) else (
                name.values[0].value if isinstance(name, ast.JoinedStr) and isinstance(name.values[0], ast.Constant)
                else "")
            if str(text).startswith("rankloss_tf"):
                yield node.lineno


def test_one_lazy_import_mechanism():
    """Names imported when first used go through ``rankloss_tf.lazy``: no other module ``__getattr__``, no import by name."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        if any(isinstance(node, ast.FunctionDef) and node.name == "__getattr__" for node in tree.body):
            found.append(f"{path.relative_to(PACKAGE)}: a module __getattr__")
        found += [f"{path.relative_to(PACKAGE)}:{line}: import_module of a package module" for line in _imports_by_name(tree)]
    assert not found, found


def test_the_package_is_light_and_its_public_names_resolve():
    import subprocess
    import sys

    code = ("import sys, rankloss_tf\nlight = 'tensorflow' not in sys.modules\n"
            "missing = [n for n in rankloss_tf.__all__ if getattr(rankloss_tf, n, None) is None]\n"
            "print(light, missing)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "[]"], out


def test_the_house_drawn_in_the_docs_is_the_code():
    doc = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    drawn = {}
    for line in doc.splitlines():
        if line.startswith("layer "):  # "layer N  name name ...    what they are"
            _, number, rest = line.split(None, 2)
            drawn[int(number)] = set(rest.split("  ")[0].split())
    assert drawn == dict(enumerate(LAYERS)), "docs/architecture.md's layers differ from LAYERS"


def test_importing_a_submodule_changes_no_public_name():
    """A package's public function must not share its name with a submodule that importing later rebinds.

    ``backbones.convert`` (a function) and ``backbones/convert.py`` (a command) once did: after
    the command was imported, ``from rankloss_tf.backbones import convert`` gave the module.
    """
    import subprocess
    import sys

    code = (
        "import importlib, pkgutil, warnings, rankloss_tf\n"
        "warnings.simplefilter('ignore')\n"
        "packages = [importlib.import_module(m.name) for m in pkgutil.walk_packages(rankloss_tf.__path__, 'rankloss_tf.') if m.ispkg]\n"
        "before = {(p.__name__, n): id(getattr(p, n)) for p in packages for n in getattr(p, '__all__', ())}\n"
        "for m in pkgutil.walk_packages(rankloss_tf.__path__, 'rankloss_tf.'):\n"
        "    if not m.name.endswith('__main__'):\n"
        "        importlib.import_module(m.name)\n"
        "changed = sorted(f'{p}.{n}' for (p, n), i in before.items() if id(getattr(importlib.import_module(p), n)) != i)\n"
        "print(changed)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]", out
