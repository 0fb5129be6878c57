"""Shared test set-up: quiet TensorFlow, deterministic seeds, the shared data folder, the slow set."""

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# Tests left out of `make test` (<= 15 minutes on 2 cores) and run by `make test-slow` / CI, with
# why each is still worth its minutes. One home for the choice, beside the `slow` marks written on
# tests; "file::name" covers every parameter of a test; tests/test_slow_set.py checks the names.
SLOW = {
    "test_notebooks.py::test_notebook_runs_in_smoke_mode":
        "the notebooks are the examples' code (test_examples runs it; test_docs checks the generation and "
        "the install cell); this catches what only a Jupyter kernel does",
}


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(items):
    for item in items:
        path, _, name = item.nodeid.partition("::")
        if f"{Path(path).name}::{name.split('[')[0]}" in SLOW:
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def shared_data():
    """The shared real-data folder beside the repository (skips the test when absent)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED_DATA}")
    return SHARED_DATA
