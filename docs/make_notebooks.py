"""Writes the Colab notebooks in notebooks/ from the example scripts in examples/.

The examples are py:percent scripts (`# %%` cells); jupytext turns each into a
notebook, this script adds an install cell after the title (what it installs is
one variable, ``RANKLOSS_TF_SOURCE``) and fixes the metadata
and cell ids, so that the output is reproducible and has no outputs.

    python docs/make_notebooks.py          # rewrite notebooks/
    python docs/make_notebooks.py --check  # exit 1 if a notebook is out of date
"""

import argparse
import sys
from pathlib import Path

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = {
    "01_quickstart.py": "01_quickstart.ipynb",
    "02_migrate_from_tfa.py": "02_migrate_from_tfa.ipynb",
    "05_serving.py": "05_serving.ipynb",
}

INSTALL_CELL = '''\
# What to install when rankloss_tf is missing (Colab): a package name, a wheel (path or URL) or a
# Git URL, each with the extras it needs, e.g. "rankloss-tf[datasets]",
# "rankloss_tf-0.1.0-py3-none-any.whl[datasets]" or
# "rankloss-tf[datasets] @ git+https://github.com/rankloss-tf/rankloss-tf".
# Inside a clone of the repository the clone's source is used instead.
RANKLOSS_TF_SOURCE = "rankloss-tf[datasets]"

import importlib.util
import subprocess
import sys
from pathlib import Path

if importlib.util.find_spec("rankloss_tf") is None:
    here = Path.cwd().resolve()
    clone = next((p for p in [here, *here.parents] if (p / "rankloss_tf" / "__init__.py").is_file()), None)
    if clone is not None:
        sys.path.insert(0, str(clone))
    else:
        subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", RANKLOSS_TF_SOURCE])'''

METADATA = {
    "colab": {"provenance": []},
    "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
    "language_info": {"name": "python"},
}


def render(script):
    """The notebook of one example script, as the text of an .ipynb file."""
    notebook = jupytext.read(script, fmt="py:percent")
    install = nbformat.v4.new_code_cell(INSTALL_CELL)
    notebook.cells.insert(1, install)
    notebook.metadata = dict(METADATA)
    for index, cell in enumerate(notebook.cells):
        cell.id = f"cell-{index:02d}"
        cell.metadata = {}
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    notebook.nbformat, notebook.nbformat_minor = 4, 5
    nbformat.validate(notebook)
    return nbformat.writes(notebook) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a notebook is out of date")
    args = parser.parse_args()
    stale = []
    for example, name in NOTEBOOKS.items():
        text = render(ROOT / "examples" / example)
        target = ROOT / "notebooks" / name
        if args.check:
            if not target.is_file() or target.read_text() != text:
                stale.append(str(target))
        else:
            target.parent.mkdir(exist_ok=True)
            target.write_text(text)
    if stale:
        sys.exit("Out of date (run `python docs/make_notebooks.py`): " + ", ".join(stale))


if __name__ == "__main__":
    main()
