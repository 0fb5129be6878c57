"""The Colab notebooks execute from top to bottom, in smoke mode, in a fresh kernel."""

import os
from pathlib import Path

import pytest

from tests.test_examples import skip_without_required_modules

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]
# In this order: 05_serving serves what 01_quickstart exported.
NOTEBOOKS = ["01_quickstart.ipynb", "02_migrate_from_tfa.ipynb", "05_serving.ipynb"]
CELL_TIMEOUT_SECONDS = 300


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("notebooks")


def test_every_notebook_is_tested():
    assert sorted(path.name for path in (ROOT / "notebooks").glob("*.ipynb")) == NOTEBOOKS


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_in_smoke_mode(name, workdir, monkeypatch):
    skip_without_required_modules(name.replace(".ipynb", ".py"))
    monkeypatch.setenv("RANKLOSS_TF_SMOKE", "1")  # the notebooks' stand-in for --smoke
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    notebook = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_SECONDS,
        kernel_name="python3",
        resources={"metadata": {"path": str(workdir)}},
    )
    client.execute()  # raises CellExecutionError, with the cell and traceback, on failure
    outputs = "".join(
        output.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    )
    if name == "05_serving.ipynb":
        assert "not found" not in outputs, "05_serving did not find the model 01_quickstart exported"
