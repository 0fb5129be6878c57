"""Exact k-nearest-neighbour search in blocks: matmul + top_k, memory O(block x N).

The queries are processed ``block_size`` rows at a time against all references:
one ``[block, N]`` similarity matrix (a single ``tf.matmul``), then
``tf.math.top_k``. Nothing of size ``N x N`` is ever built, so 60,000 x 512
embeddings need about ``block_size * 60,000 * 4`` bytes of scratch memory
(about 250 MB with the default block of 1,024 rows) and run at matmul speed.
"""

import numpy as np
import tensorflow as tf

__all__ = ["METRICS", "iterate_neighbours", "nearest_neighbours"]

METRICS = ("cosine", "l2")


@tf.function(reduce_retracing=True)
def _block_top_k(block, start, references, reference_sq_norms, k, exclude_self):
    """Top-k references of one block of queries by descending score.

    The score is ``q . r`` (cosine on unit rows) or ``2 q . r - ||r||^2``
    (= ``||q||^2 - ||q - r||^2``, the same order as ascending L2 distance).
    """
    scores = tf.matmul(block, references, transpose_b=True)
    if reference_sq_norms is not None:
        scores = 2.0 * scores - reference_sq_norms[tf.newaxis, :]
    if exclude_self:
        rows = tf.range(tf.shape(block)[0])
        self_positions = tf.stack([rows, rows + start], axis=1)
        scores = tf.tensor_scatter_nd_update(
            scores, self_positions, tf.fill(tf.shape(rows), -np.inf)
        )
    return tf.math.top_k(scores, k=k, sorted=True)


def _as_embeddings(array, name):
    array = np.asarray(array)
    if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"`{name}` must be a non-empty [N, D] array. Received: shape={array.shape}")
    return array.astype(np.float32, copy=False)


def _unit_rows(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def iterate_neighbours(queries, references=None, k=1, metric="cosine", block_size=1024):
    """Yields the k nearest references of each block of queries.

    Args:
        queries: float array ``[Nq, D]``.
        references: float array ``[Nr, D]``, or None to search ``queries``
            among themselves, each query excluded from its own neighbours
            (leave-one-out).
        k: number of neighbours, ``1 <= k <= Nr`` (``Nr - 1`` leave-one-out).
        metric: ``"cosine"`` (rows are L2-normalised first; the score is the
            cosine similarity) or ``"l2"`` (Euclidean distance).
        block_size: number of query rows per matmul; the scratch memory is
            ``block_size * Nr`` floats.

    Yields:
        ``(start, indices, values)`` for the queries ``start:start + b``:
        ``indices`` int32 ``[b, k]`` into the references, nearest first (ties
        broken by lower index), and ``values`` float32 ``[b, k]``: cosine
        similarities (descending) or L2 distances (ascending).

    Raises:
        ValueError: bad shapes, metric, ``k`` or ``block_size``.

    Example:
    >>> x = np.array([[0.0], [1.0], [3.0]])
    >>> [(start, idx[:, 0].tolist()) for start, idx, _ in iterate_neighbours(x, k=1, metric="l2", block_size=2)]
    [(0, [1, 0]), (2, [1])]
    """
    if metric not in METRICS:
        raise ValueError(f"`metric` must be one of {METRICS}. Received: metric={metric!r}")
    queries = _as_embeddings(queries, "queries")
    exclude_self = references is None
    references = queries if exclude_self else _as_embeddings(references, "references")
    if references.shape[1] != queries.shape[1]:
        raise ValueError(
            "`queries` and `references` must have the same dimension. "
            f"Received: {queries.shape[1]} and {references.shape[1]}"
        )
    available = references.shape[0] - int(exclude_self)
    if not 1 <= int(k) <= available:
        raise ValueError(
            f"`k` must be between 1 and {available} for {references.shape[0]} references"
            f"{' (query excluded)' if exclude_self else ''}. Received: k={k}"
        )
    if int(block_size) < 1:
        raise ValueError(f"`block_size` must be a positive integer. Received: block_size={block_size}")
    if metric == "cosine":
        queries = _unit_rows(queries)
        references = queries if exclude_self else _unit_rows(references)
        reference_sq_norms = None
    else:
        reference_sq_norms = tf.constant(np.sum(references.astype(np.float64) ** 2, axis=1), tf.float32)
    references_tensor = tf.constant(references)
    for start in range(0, queries.shape[0], int(block_size)):
        block = queries[start : start + int(block_size)]
        values, indices = _block_top_k(
            tf.constant(block), tf.constant(start, tf.int32), references_tensor,
            reference_sq_norms, int(k), exclude_self,
        )
        values = values.numpy()
        if metric == "l2":
            block_sq_norms = np.sum(block.astype(np.float64) ** 2, axis=1, keepdims=True)
            values = np.sqrt(np.maximum(block_sq_norms - values, 0.0)).astype(np.float32)
        yield start, indices.numpy(), values


def nearest_neighbours(queries, references=None, k=1, metric="cosine", block_size=1024):
    """Exact k nearest neighbours, computed in blocks of queries.

    See ``iterate_neighbours`` for the arguments.

    Returns:
        ``(indices, values)``: int32 ``[Nq, k]`` neighbour indices, nearest
        first, and float32 ``[Nq, k]`` cosine similarities or L2 distances.

    Example:
    >>> import numpy as np
    >>> x = np.array([[0.0], [1.0], [3.0]])
    >>> indices, distances = nearest_neighbours(x, k=1, metric="l2")
    >>> indices[:, 0].tolist(), distances[:, 0].tolist()
    ([1, 0, 1], [1.0, 1.0, 2.0])
    """
    parts = list(iterate_neighbours(queries, references, k, metric, block_size))
    return (
        np.concatenate([indices for _, indices, _ in parts]),
        np.concatenate([values for _, _, values in parts]),
    )
