"""The IVF build's memory rules and the batched scan: parts joined once, variables filled by blocks, batch == one by one."""

import numpy as np
import pytest

from rankloss_tf.retrieval import Index
from rankloss_tf.retrieval.items import Items
from rankloss_tf.retrieval.ivf import gathered_variable


def test_adds_are_joined_once_on_read_and_duplicates_across_parts_refused():
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(30, 4)).astype(np.float32)
    index = Index(metric="l2")
    for start in range(0, 30, 10):
        index.add_embeddings(rows[start : start + 10], np.arange(start, start + 10))
    assert len(index._parts) == 3 and len(index) == 30 and index.embedding_dim == 4  # nothing joined yet
    with pytest.raises(ValueError, match=r"duplicate ids \['3'\]"):
        index.add_embeddings(rows[:1], [0], ids=["3"])  # "3" sits in the first part
    np.testing.assert_allclose(index.references, rows, rtol=1e-6)
    assert index._parts == [] and index.ids.tolist() == [str(i) for i in range(30)]
    assert index.labels.tolist() == list(range(30))


def test_join_empties_the_list_of_parts():
    parts = [Items.of(np.full((n, 2), n, np.int8), np.zeros(n), [f"{n}-{i}" for i in range(n)], np.full(n, n), [""] * n)
             for n in (3, 0, 2)]
    joined = Items.join(parts)
    assert parts == [] and joined.references.dtype == np.int8
    assert joined.references[:, 0].tolist() == [3, 3, 3, 2, 2] and joined.labels.tolist() == [3, 3, 3, 2, 2]


def test_gathered_variable_holds_the_rows_in_order_decoded():
    rng = np.random.default_rng(1)
    codes = rng.integers(-128, 128, (1000, 8)).astype(np.int8)
    order = rng.permutation(1000)
    decode = lambda block: block.astype(np.float32) * 0.5  # noqa: E731
    np.testing.assert_array_equal(gathered_variable(codes, order, "v").numpy(), codes[order])
    np.testing.assert_array_equal(gathered_variable(codes, order[:300], "w", decode).numpy(), decode(codes[order[:300]]))


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_a_batch_answers_what_its_queries_answer_one_by_one_int8(metric):
    rng = np.random.default_rng(2)
    rows, queries = rng.normal(size=(4000, 16)).astype(np.float32), rng.normal(size=(64, 16)).astype(np.float32)
    index = Index(metric=metric, backend="ivf", lists=100, probes=6, codes="int8")
    index.add_embeddings(rows, np.zeros(4000, int))
    batch = index.search_embeddings(queries, k=10)
    ones = [index.search_embeddings(queries[i : i + 1], k=10) for i in range(len(queries))]
    np.testing.assert_array_equal(batch.indices, np.concatenate([one.indices for one in ones]))
    np.testing.assert_allclose(batch.scores, np.concatenate([one.scores for one in ones]), atol=1e-5)
