"""The blocked exact-search kernel shared by evaluation and retrieval: oracle, chunking, ties, XLA."""

import numpy as np
import pytest
import tensorflow as tf

from tests.test_retrieval import assert_same_neighbours, score_matrix

from rankloss_tf.evaluation.neighbours import (
    chunk_size_for,
    nearest_neighbours,
    prepare_references,
    scores_to_values,
    search_top_k,
    unit_rows,
)


def oracle(queries, references, k, metric, exclude_self=False):
    """Loop over every (query, reference): sort by distance, ties by lower index."""
    indices, values = [], []
    for i, q in enumerate(queries):
        row = []
        for j, r in enumerate(references):
            if exclude_self and i == j:
                continue
            if metric == "cosine":
                score = -float(np.dot(q, r) / (np.linalg.norm(q) * np.linalg.norm(r)))
            else:
                score = float(np.sqrt(np.sum((q.astype(np.float64) - r) ** 2)))
            row.append((score, j))
        row.sort()
        indices.append([j for _, j in row[:k]])
        values.append([abs(s) for s, _ in row[:k]])
    return np.array(indices), np.array(values)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
@pytest.mark.parametrize("chunk_size", [None, 4, 7, 29])
@pytest.mark.parametrize("exclude_self", [False, True])
def test_chunked_search_equals_loop_oracle(metric, chunk_size, exclude_self):
    rng = np.random.default_rng(1)
    references = rng.normal(size=(30, 5)).astype(np.float32)
    queries = references[:9] if exclude_self else rng.normal(size=(9, 5)).astype(np.float32)
    refs, norms = prepare_references(references, metric)
    block = refs[:9] if exclude_self else (unit_rows(queries) if metric == "cosine" else tf.constant(queries))
    result = search_top_k(block, refs, 4, norms, chunk_size, 0 if exclude_self else None)
    want_indices, want_values = oracle(queries, references, 4, metric, exclude_self)
    scores = score_matrix(queries, references, metric)
    if exclude_self:
        scores[np.arange(9), np.arange(9)] = np.nan  # never returned
    assert_same_neighbours(result.indices.numpy(), want_indices, scores)
    np.testing.assert_allclose(np.abs(scores_to_values(block, result.values, metric)), want_values, atol=1e-4)


@pytest.mark.parametrize("chunk_size", [None, 2, 3, 5])
def test_ties_go_to_the_lower_index_in_every_chunking(chunk_size):
    references = np.array([[1.0, 0.0]] * 3 + [[0.0, 1.0]] * 4 + [[1.0, 0.0]] * 2, np.float32)
    refs, norms = prepare_references(references, "l2")
    result = search_top_k(tf.constant([[1.0, 0.0], [0.0, 1.0]]), refs, 5, norms, chunk_size)
    assert result.indices.numpy().tolist() == [[0, 1, 2, 7, 8], [3, 4, 5, 6, 0]]


def test_eager_function_and_xla_agree_when_chunked():
    rng = np.random.default_rng(2)
    references = rng.normal(size=(50, 8)).astype(np.float32)
    refs, norms = prepare_references(references, "l2")
    block = tf.constant(rng.normal(size=(6, 8)).astype(np.float32))

    def run(b):
        return search_top_k(b, refs, 5, norms, chunk_size=16)

    eager = run(block)
    for compiled in (tf.function(run), tf.function(run, jit_compile=True)):
        got = compiled(block)
        assert_same_neighbours(got.indices.numpy(), eager.indices.numpy(), score_matrix(block, references, "l2"))
        np.testing.assert_allclose(got.values.numpy(), eager.values.numpy(), rtol=1e-5, atol=1e-5)


def test_nearest_neighbours_bounded_scratch_gives_the_same_answer(monkeypatch):
    from rankloss_tf.evaluation import neighbours

    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 6)).astype(np.float32)
    whole = nearest_neighbours(x, k=7, metric="l2", block_size=64)
    monkeypatch.setattr(neighbours, "NEIGHBOURS_SCRATCH_SIZE", 64 * 20)
    assert neighbours.chunk_size_for(200, 64, 7, neighbours.NEIGHBOURS_SCRATCH_SIZE) == 20
    chunked = nearest_neighbours(x, k=7, metric="l2", block_size=64)
    assert_same_neighbours(chunked[0], whole[0], score_matrix(x, x, "l2"))  # other matmul shapes: near-ties may swap
    np.testing.assert_allclose(chunked[1], whole[1], rtol=1e-6)


def test_chunk_size_rule():
    assert chunk_size_for(100, 10, 3, scratch_size=1000) is None
    assert chunk_size_for(10**6, 1024, 10, scratch_size=2**26) == 65536
    assert chunk_size_for(10**6, 10**6, 10, scratch_size=100) == 10
