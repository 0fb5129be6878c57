"""The deprecated ``Index.save`` / ``Index.load`` forward to ``save_index`` / ``load_index``.

They import ``retrieval.saved_model`` inside the method: the layer rules allow a top-level import (one package), but
``saved_model`` imports ``Index`` from ``retrieval.index`` at its top, so that import would be circular.
"""

import ast
from pathlib import Path

import numpy as np
import pytest

from rankloss_tf.retrieval import Index, load_index

RETRIEVAL = Path(__file__).resolve().parents[1] / "rankloss_tf" / "retrieval"


def _top_level_imports(path):
    return {node.module for node in ast.parse(path.read_text()).body if isinstance(node, ast.ImportFrom)}


def test_saved_model_builds_on_index_so_index_imports_it_late():
    assert "rankloss_tf.retrieval.index" in _top_level_imports(RETRIEVAL / "saved_model.py")
    assert "rankloss_tf.retrieval.saved_model" not in _top_level_imports(RETRIEVAL / "index.py")


def test_the_deprecated_save_and_load_warn_and_round_trip(tmp_path):
    index = Index(metric="l2")
    index.add_embeddings(np.eye(3, dtype=np.float32), labels=[0, 1, 2])
    with pytest.warns(DeprecationWarning, match="save_index"):
        index.save(tmp_path / "index")
    with pytest.warns(DeprecationWarning, match="load_index"):
        loaded = Index.load(tmp_path / "index")
    again = load_index(tmp_path / "index")
    queries = np.eye(3, dtype=np.float32)
    for other in (loaded, again):
        np.testing.assert_array_equal(other.search_embeddings(queries, k=1).labels, index.search_embeddings(queries, k=1).labels)
