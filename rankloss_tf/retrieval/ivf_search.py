"""IVF search in standard TensorFlow ops: the graph code shared by ``Index.search`` and the SavedModel.

The gallery is stored *by list*: ``rows`` are the prepared references sorted
by their list (stable, so items keep their order within a list),
``offsets[l] : offsets[l + 1]`` is list ``l``'s slice and ``positions`` maps a
sorted row back to its gallery position. A query batch is searched list by
list: the (query, list) pairs of the ``probes`` nearest lists of each query
are sorted by list, and a ``tf.while_loop`` over the distinct lists probed
multiplies the queries probing a list with that list's contiguous slice of
rows (one matmul, no copy of the gallery rows), keeping each pair's top k
only (the batch never holds all its candidates' scores). The top k over a
query's pairs is its answer. One query alone (what online
serving sends) takes a path without loop: its probed lists' slices are
multiplied in an unrolled graph (one of a few fixed sizes, chosen by
``tf.switch_case``), the answer is the top k of the concatenated scores. Scores are those of the exact
kernel (``q . r`` on unit rows for cosine, ``2 q . r - ||r||^2`` for L2) and
are reported as cosine similarities or L2 distances.

Rows may be int8 codes (``retrieval.ivf_codes``): the query is scaled
by the code scale and the codes cast to float32 list by list; the scores are
exact for the decoded rows.

A query whose probed lists hold fewer than ``k`` items is answered by exact
search, every list probed (the whole batch, in a ``tf.cond``), so ``k`` items are
always returned. With every list probed the answer is the exact top k (ties
may be ordered differently).
"""

import numpy as np
import tensorflow as tf

from rankloss_tf.evaluation.neighbours import scores_to_values, unit_rows

__all__ = ["TABLES", "ivf_search", "unrolled_sizes"]

# The tensors of a stored IVF, in this order.
# One query probing up to this many lists is scanned by unrolled slices (no loop: a loop iteration costs tens of
# microseconds, a gather of the candidate rows copies them); batches, and more lists, scan list by list, each
# list's rows multiplied once by all the queries probing it.
UNROLLED_MAX = 128
TABLES = ("centroids", "centroid_sq_norms", "rows", "row_sq_norms", "offsets", "positions", "code_scale",
          "code_offset")


def _scores(block, references, sq_norms, metric):
    scores = tf.matmul(block, references, transpose_b=True)
    return 2.0 * scores - sq_norms[tf.newaxis, :] if metric == "l2" else scores


def _query_side(queries, tables):
    """``(block, shift)``: what multiplies the stored rows. int8 codes: ``x = offset + scale * code``, so
    ``q . x = (q * scale) . code + q . offset`` (``shift [b, 1]``); float rows: the queries and None."""
    if tables[2].dtype != tf.int8:
        return queries, None
    return queries * tables[6][tf.newaxis, :], tf.reduce_sum(queries * tables[7][tf.newaxis, :], axis=1, keepdims=True)


def _row_scores(side, rows, sq_norms, metric):
    """The kernel's scores of ``side`` (``_query_side``) against stored rows (floats, or codes cast to float32)."""
    block, shift = side
    scores = tf.matmul(block, tf.cast(rows, tf.float32), transpose_b=True)
    scores = scores if shift is None else scores + shift
    return 2.0 * scores - sq_norms[tf.newaxis, :] if metric == "l2" else scores


def _pairs(queries, centroids, centroid_sq_norms, probes, metric):
    """The (query, list) pairs sorted by list: ``(order, pair lists, pair queries, distinct lists, starts)``."""
    coarse = _scores(queries, centroids, centroid_sq_norms, metric)
    probed = tf.reshape(tf.math.top_k(coarse, probes).indices, [-1])
    order = tf.argsort(probed, stable=True)
    sorted_lists = tf.gather(probed, order)
    distinct, _, counts = tf.unique_with_counts(sorted_lists)
    starts = tf.concat([[0], tf.cumsum(counts)], axis=0)
    return order, sorted_lists, order // probes, distinct, starts


def _scan(side, tables, metric, pair_queries, distinct, starts, k):
    """The top k of every (query, list) pair among its list's rows, pairs sorted by list: ``(values, positions)``,
    ``[pairs, k]`` each (sorted row positions; -inf and 0 past a list's end).

    Each list's scores are reduced to their top k inside the loop: the batch never holds the scores of all its
    candidates (at 10^7 rows, 3,162 lists and 48 probes, 256 queries have ~40 million), only ``k`` per pair.
    """
    rows, row_sq_norms, offsets = tables[2], tables[3], tables[4]
    firsts, lasts = tf.gather(offsets, distinct), tf.gather(offsets, distinct + 1)
    # Flat [pairs * k] elements: an empty list (no query) concatenates only with its trailing dims known.
    values = tf.TensorArray(tf.float32, size=tf.size(distinct), infer_shape=False, element_shape=[None])
    found = tf.TensorArray(tf.int32, size=tf.size(distinct), infer_shape=False, element_shape=[None])

    def body(u, values, found):
        first, last = firsts[u], lasts[u]
        pairs = pair_queries[starts[u] : starts[u + 1]]
        block = [None if part is None else tf.gather(part, pairs) for part in side]
        scores = _row_scores(block, rows[first:last], row_sq_norms[first:last], metric)
        top = tf.math.top_k(tf.pad(scores, [[0, 0], [0, k]], constant_values=-np.inf), k)
        positions = tf.where(top.values > -np.inf, first + top.indices, 0)
        return u + 1, values.write(u, tf.reshape(top.values, [-1])), found.write(u, tf.reshape(positions, [-1]))

    _, values, found = tf.while_loop(lambda u, *_: u < tf.size(distinct), body, [0, values, found],
                                     parallel_iterations=8)
    return tf.reshape(values.concat(), [-1, k]), tf.reshape(found.concat(), [-1, k])


def _probed(query, probes, tables, metric):
    """The ``probes`` lists nearest one query ``[1, D]``: their first and last sorted rows, ``[probes]`` each."""
    centroids, centroid_sq_norms, offsets = tables[0], tables[1], tables[4]
    probed = tf.math.top_k(_scores(query, centroids, centroid_sq_norms, metric)[0], probes).indices
    return tf.gather(offsets, probed), tf.gather(offsets, probed + 1)


def _unrolled(side, firsts, lasts, size, tables, metric):
    """Scores of one query against ``size`` list slices (``firsts`` / ``lasts`` padded to ``size``), concatenated.

    Slices of the sorted rows along the first axis are views, not copies: each list's rows are read once, by
    their matmul (memory-bound, like faiss' scan). Padded slices are empty.
    """
    rows, row_sq_norms = tables[2], tables[3]
    firsts, lasts = tf.unstack(firsts, num=size), tf.unstack(lasts, num=size)
    parts = [_row_scores(side, rows[a:b], row_sq_norms[a:b], metric)[0] for a, b in zip(firsts, lasts)]
    return tf.concat(parts, axis=0)


def unrolled_sizes(lists, default_probes=None, default_only=False):
    """The unrolled scans of one query: powers of two up to ``min(lists, UNROLLED_MAX)`` and the default probes.

    ``default_only``: the default probes' scan alone (when they are at most
    ``UNROLLED_MAX``): the graph of a search that always probes the default.

    Example:
    >>> unrolled_sizes(1000, 34)
    (1, 2, 4, 8, 16, 32, 34, 64, 128)
    >>> unrolled_sizes(1000, 34, default_only=True)
    (34,)
    """
    top = min(int(lists), UNROLLED_MAX) if lists is not None else UNROLLED_MAX
    if default_only and default_probes is not None and 1 <= int(default_probes) <= top:
        return (int(default_probes),)
    sizes = {min(2**i, top) for i in range(top.bit_length() + 1)}
    if default_probes is not None and 1 <= int(default_probes) <= top:
        sizes.add(int(default_probes))
    return tuple(sorted(sizes))


def _single(query, k, probes, tables, metric, sizes):
    """One query, ``probes <= sizes[-1]``: the probed lists scanned by slices, unrolled (no loop, no gather).

    The scan of the smallest size in ``sizes`` at least ``probes`` runs (a ``tf.switch_case``); with the default
    probes among the sizes, the default search scans exactly its lists.
    """
    firsts, lasts = _probed(query, probes, tables, metric)
    padding = [[0, sizes[-1] - probes]]
    firsts, lasts = tf.pad(firsts, padding), tf.pad(lasts, padding)  # padded slices [0:0] are empty
    side = _query_side(query, tables)

    def branch(size):
        return lambda: _unrolled(side, firsts[:size], lasts[:size], size, tables, metric)

    which = tf.reduce_sum(tf.cast(tf.constant(sizes) < probes, tf.int32))
    scores = tf.switch_case(which, [branch(size) for size in sizes])
    top = tf.math.top_k(tf.pad(scores, [[0, k]], constant_values=-np.inf), k)
    lengths = lasts - firsts
    ends = tf.cumsum(lengths)
    list_of = tf.minimum(tf.searchsorted(ends, top.indices, side="right"), sizes[-1] - 1)  # each hit's list
    found = tf.gather(firsts, list_of) + top.indices - (tf.gather(ends, list_of) - tf.gather(lengths, list_of))
    return top.values[tf.newaxis], tf.where(top.values > -np.inf, found, 0)[tf.newaxis]


def _approximate(queries, k, probes, tables, metric):
    order, _, pair_queries, distinct, starts = _pairs(queries, tables[0], tables[1], probes, metric)
    values, found = _scan(_query_side(queries, tables), tables, metric, pair_queries, distinct, starts, k)
    back = tf.math.invert_permutation(order)  # pairs back in query order: each query's probes, nearest first
    count = tf.shape(queries)[0]
    top = tf.math.top_k(tf.reshape(tf.gather(values, back), [count, -1]), k)
    return top.values, tf.gather(tf.reshape(tf.gather(found, back), [count, -1]), top.indices, batch_dims=1)


def ivf_search(embeddings, k, probes, tables, metric, default_probes=None, default_only=False):
    """``(indices int32 [b, k], values float32 [b, k])`` of raw query embeddings (graph code).

    Args:
        embeddings: float32 ``[b, D]`` query embeddings.
        k: int32 scalar, ``1 <= k <=`` gallery size.
        probes: int32 scalar, lists probed per query (clipped to [1, lists]).
        tables: the tensors (or variables) named by ``TABLES``.
        metric: "cosine" or "l2".
        default_probes: the number of lists usually probed (a Python int), or
            None: one query probing exactly that many lists scans no padding.
        default_only: ``probes`` is always ``default_probes`` (the exported
            ``search`` / ``search_embeddings``): one query's graph holds that
            scan alone, not one per size (a leaner graph: ~10 % less CPU per
            query at 10^6 x 128). Other probes still answer right (padded, or
            list by list).

    Returns:
        Gallery positions and scores (cosine similarities, descending, or
        L2 distances, ascending), best first.

    Example:
    >>> from rankloss_tf.retrieval.ivf import IVF
    >>> ivf = IVF("l2", lists=2, probes=1)
    >>> rows = np.array([[0.0], [5.0], [0.2], [5.5]], np.float32)
    >>> ivf.train(rows, np.square(rows[:, 0]))
    >>> tables = [tf.constant(t) for t in ivf.tables(rows, np.square(rows[:, 0]))]
    >>> indices, values = ivf_search(tf.constant([[5.1]]), 2, 1, tables, "l2")
    >>> indices.numpy().tolist(), [round(float(v), 2) for v in values.numpy()[0]]
    ([[1, 3]], [0.1, 0.4])
    """
    # Variables read once, as tensors: a gather straight from a variable (ResourceGather) would switch it to
    # copy-on-read, and every later read of the gallery would copy it whole.
    tables = [tf.convert_to_tensor(t) for t in tables]
    queries = unit_rows(embeddings) if metric == "cosine" else tf.cast(embeddings, tf.float32)
    k = tf.cast(k, tf.int32)
    probes = tf.clip_by_value(tf.cast(probes, tf.int32), 1, tf.shape(tables[0])[0])
    sizes = unrolled_sizes(tables[0].shape[0], default_probes, default_only)
    values, found = tf.cond(
        tf.logical_and(tf.shape(queries)[0] == 1, probes <= sizes[-1]),
        lambda: _single(queries, k, probes, tables, metric, sizes),
        lambda: _approximate(queries, k, probes, tables, metric),
    )
    values, found = tf.cond(
        tf.reduce_all(values[:, -1] > -np.inf),
        lambda: (values, found),
        lambda: _approximate(queries, k, tf.shape(tables[0])[0], tables, metric),  # every list: exact
    )
    return tf.gather(tables[5], found), scores_to_values(queries, values, metric)


search_function = tf.function(ivf_search, reduce_retracing=True)
