"""Exact k-nearest-neighbour search in blocks: matmul + top_k, bounded memory.

The queries are processed ``block_size`` rows at a time. Each block is scored
against the references by one ``tf.matmul`` and reduced by ``tf.math.top_k``;
when the references are many (more than ``scratch_size / block_size``), they
are scanned in chunks of equal size inside one ``tf.while_loop`` and each
chunk's top k is merged into the running top k. The scratch memory is then
``min(block x N, scratch_size)`` floats whatever the number ``N`` of
references: 60,000 x 512 embeddings take one chunk (about 250 MB with the
default block of 1,024 rows) and run at matmul speed; 10^6 references take
16 chunks of the same size.

Ties are broken by the lower reference index, in every chunking (``top_k``
keeps the lower index first, and the running top k, which holds lower
indices, comes first in each merge). The same kernel serves
``rankloss_tf.retrieval.Index`` and its exported SavedModel.
"""

import collections

import numpy as np
import tensorflow as tf

__all__ = [
    "METRICS",
    "SCRATCH_SIZE",
    "NEIGHBOURS_SCRATCH_SIZE",
    "chunk_size_for",
    "iterate_neighbours",
    "nearest_neighbours",
    "prepare_references",
    "scores_to_values",
    "search_top_k",
    "unit_rows",
]

METRICS = ("cosine", "l2")
SCRATCH_SIZE = 2**26  # floats of the [block, chunk] score matrix of a search: 256 MB
# The all-pairs blocks of ``iterate_neighbours`` (evaluation, which runs beside the trained model) hold about
# eight score-sized temporaries (scores, the self mask, top-k's copies): at 2**26 the evaluation of 100,000 x 128
# embeddings peaked 1.25 GB above its inputs, at 2**24 0.58 GB (issue 29, a 200k-image folder's command).
NEIGHBOURS_SCRATCH_SIZE = 2**24

TopK = collections.namedtuple("TopK", ["values", "indices"])


def unit_rows(x):
    """L2-normalises the rows of ``x`` (float32 ``[N, D]``): ``x / max(||x||, 1e-12)``.

    The one normalisation of the cosine metric, used for queries and
    references alike (in evaluation, the index and its SavedModel).

    Example:
    >>> unit_rows(np.array([[3.0, 4.0], [0.0, 0.0]])).numpy().tolist()
    [[0.6000000238418579, 0.800000011920929], [0.0, 0.0]]
    """
    x = tf.cast(x, tf.float32)
    return x / tf.maximum(tf.norm(x, axis=1, keepdims=True), 1e-12)


def chunk_size_for(num_references, block_rows, k, scratch_size=SCRATCH_SIZE):
    """The reference chunk of ``search_top_k``: None (one chunk) or an int in ``[k, N)``.

    Chooses the largest chunk whose ``[block_rows, chunk]`` score matrix holds
    at most ``scratch_size`` floats (at least ``k`` columns).

    Example:
    >>> chunk_size_for(10**6, 256, 10), chunk_size_for(1000, 256, 10)
    (262144, None)
    """
    chunk = max(int(k), int(scratch_size) // max(int(block_rows), 1))
    return None if chunk >= int(num_references) else chunk


def _scores(block, references, reference_sq_norms):
    """``q . r`` (cosine on unit rows) or ``2 q . r - ||r||^2`` (descending = ascending L2)."""
    scores = tf.matmul(block, references, transpose_b=True)
    if reference_sq_norms is not None:
        scores = 2.0 * scores - reference_sq_norms[tf.newaxis, :]
    return scores


def _mask_self(scores, self_columns):
    """Sets ``scores[i, self_columns[i]]`` to -inf where that column lies in ``scores``."""
    rows = tf.range(tf.shape(scores)[0])
    inside = (self_columns >= 0) & (self_columns < tf.shape(scores)[1])
    positions = tf.stack([rows, tf.clip_by_value(self_columns, 0, tf.shape(scores)[1] - 1)], axis=1)
    current = tf.gather_nd(scores, positions)
    return tf.tensor_scatter_nd_update(scores, positions, tf.where(inside, -np.inf, current))


def search_top_k(block, references, k, reference_sq_norms=None, chunk_size=None, self_offset=None):
    """Top-k references of one block of queries by descending score (graph code).

    Args:
        block: float32 ``[b, D]`` queries (unit rows for the cosine metric).
        references: float32 ``[N, D]`` (unit rows for the cosine metric).
        k: int, ``1 <= k <= N`` (``N - 1`` with ``self_offset``).
        reference_sq_norms: float32 ``[N]`` squared norms for the L2 metric,
            None for the cosine metric.
        chunk_size: None to score all references at once, or a Python int
            ``chunk_size < N``: the references are scanned in windows of that
            size (the last one shifted back to end at ``N``, its already
            scanned columns masked), each window's top ``min(k, chunk_size)``
            merged into the running top k (which starts as -inf placeholders).
        self_offset: None, or the reference index of the block's first query
            when the queries are the references themselves (query ``i`` of the
            block is then excluded from its own neighbours).

    Returns:
        ``TopK(values, indices)``: ``[b, k]`` scores, best first (the cosine
        similarity, or ``2 q . r - ||r||^2``), and int32 reference indices.

    Example:
    >>> r = tf.constant([[0.0], [1.0], [3.0]])
    >>> search_top_k(tf.constant([[2.9]]), r, 2, tf.reduce_sum(r * r, 1), chunk_size=2).indices.numpy().tolist()
    [[2, 1]]
    """
    self_columns = None
    if self_offset is not None:
        self_columns = tf.range(tf.shape(block)[0]) + tf.cast(self_offset, tf.int32)
    if chunk_size is None:
        scores = _scores(block, references, reference_sq_norms)
        if self_columns is not None:
            scores = _mask_self(scores, self_columns)
        values, indices = tf.math.top_k(scores, k=k, sorted=True)
        return TopK(values, indices)
    chunk_size = int(chunk_size)
    chunk_k = min(k, chunk_size) if isinstance(k, int) else tf.minimum(k, chunk_size)
    num_references = tf.shape(references)[0]
    num_chunks = (num_references + chunk_size - 1) // chunk_size

    def merge(i, values, indices):
        nominal = i * chunk_size
        window = tf.minimum(nominal, num_references - chunk_size)
        norms = None if reference_sq_norms is None else tf.slice(reference_sq_norms, [window], [chunk_size])
        scores = _scores(block, tf.slice(references, [window, 0], [chunk_size, -1]), norms)
        scanned = tf.range(chunk_size) < nominal - window
        scores = tf.where(scanned[tf.newaxis, :], tf.constant(-np.inf, scores.dtype), scores)
        if self_columns is not None:
            scores = _mask_self(scores, self_columns - window)
        chunk_values, chunk_indices = tf.math.top_k(scores, k=chunk_k, sorted=True)
        best, position = tf.math.top_k(tf.concat([values, chunk_values], 1), k=k, sorted=True)
        merged = tf.gather(tf.concat([indices, chunk_indices + window], 1), position, batch_dims=1)
        return i + 1, best, merged

    shape = [tf.shape(block)[0], k]
    start = (tf.constant(0), tf.fill(shape, tf.constant(-np.inf, block.dtype)), tf.fill(shape, -1))
    _, values, indices = tf.while_loop(lambda i, *_: i < num_chunks, merge, start)
    return TopK(values, indices)


def scores_to_values(block, scores, metric):
    """Scores of ``search_top_k`` as the reported values: cosine similarities or L2 distances.

    The L2 distance is ``sqrt(max(||q||^2 - (2 q . r - ||r||^2), 0))``.

    Example:
    >>> float(scores_to_values(tf.constant([[3.0]]), tf.constant([[2 * 3.0 * 1.0 - 1.0]]), "l2")[0, 0])
    2.0
    """
    if metric == "cosine":
        return scores
    block_sq_norms = tf.reduce_sum(tf.square(block), axis=1, keepdims=True)
    return tf.sqrt(tf.maximum(block_sq_norms - scores, 0.0))


@tf.function(reduce_retracing=True)
def _block_top_k(block, start, references, reference_sq_norms, k, exclude_self, chunk_size=None):
    """``search_top_k`` of one block, ``start`` = its first query's row (leave-one-out)."""
    return search_top_k(block, references, k, reference_sq_norms, chunk_size, start if exclude_self else None)


def prepare_references(references, metric):
    """The references as ``search_top_k`` takes them: ``(float32 [N, D], squared norms [N] or None)``.

    Cosine: unit rows and no norms; L2: the rows and their squared norms
    (summed in float64).

    Example:
    >>> prepare_references(np.array([[3.0, 4.0]]), "l2")[1].numpy().tolist()
    [25.0]
    """
    if metric not in METRICS:
        raise ValueError(f"`metric` must be one of {METRICS}. Received: metric={metric!r}")
    if metric == "cosine":
        return unit_rows(references), None
    references = tf.cast(references, tf.float32)
    sq_norms = np.sum(np.square(references.numpy().astype(np.float64)), axis=1)
    return references, tf.constant(sq_norms, tf.float32)


def _as_embeddings(array, name):
    array = np.asarray(array)
    if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"`{name}` must be a non-empty [N, D] array. Received: shape={array.shape}")
    return array.astype(np.float32, copy=False)


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
            ``min(block_size * Nr, NEIGHBOURS_SCRATCH_SIZE)`` floats.

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
    references, reference_sq_norms = prepare_references(references, metric)
    if exclude_self:
        queries = references
    else:
        queries = unit_rows(queries) if metric == "cosine" else tf.convert_to_tensor(queries)
    chunk_size = chunk_size_for(references.shape[0], min(int(block_size), queries.shape[0]), k,
                                NEIGHBOURS_SCRATCH_SIZE)
    for start in range(0, queries.shape[0], int(block_size)):
        block = queries[start : start + int(block_size)]
        values, indices = _block_top_k(
            block, tf.constant(start, tf.int32), references, reference_sq_norms, int(k), exclude_self, chunk_size
        )
        yield start, indices.numpy(), scores_to_values(block, values, metric).numpy()


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
