"""Retrieval metrics from blocked nearest neighbours: Recall@K, MAP@R, R-precision.

Leave-one-out protocol: every sample is a query against all the others.
Definitions (pytorch-metric-learning's ``AccuracyCalculator``, Musgrave et al.
2020, "A Metric Learning Reality Check"), for a query of class c with
R = (number of samples of c) - 1 and rel(i) = 1 when its i-th neighbour is of
class c:

- Recall@K = 1 if any of the K nearest neighbours is of class c, else 0
  (Song et al. 2016; equals PML's ``precision_at_1`` for K = 1).
- R-precision = (1/R) * sum_{i<=R} rel(i).
- MAP@R = (1/R) * sum_{i<=R} rel(i) * precision@i.

Each metric is the mean over queries. Queries alone in their class (R = 0)
have no right answer and are left out of every mean. R is capped at
``max_r`` (as PML caps it at its ``k``), which bounds the neighbours fetched
per query.
"""

import logging

import numpy as np

from rankloss_tf.evaluation.neighbours import iterate_neighbours

__all__ = ["check_ks", "check_labels", "ranking_means", "ranking_sums", "retrieval_metrics"]

logger = logging.getLogger(__name__)


def check_ks(ks):
    """Validates ``ks`` (positive ints, strictly increasing) and returns them as a tuple.

    Example:
    >>> check_ks([1, 2, 4])
    (1, 2, 4)
    """
    try:
        ks = tuple(int(k) for k in ks)
    except (TypeError, ValueError):
        raise ValueError(f"`ks` must be a sequence of positive integers. Received: ks={ks!r}") from None
    if not ks or min(ks) < 1 or list(ks) != sorted(set(ks)):
        raise ValueError(
            f"`ks` must be non-empty, positive and strictly increasing. Received: ks={ks}"
        )
    return ks


def check_labels(embeddings, labels):
    """Validates ``[N, D]`` embeddings against ``[N]`` labels; returns both as arrays.

    Example:
    >>> embeddings, labels = check_labels(np.zeros((3, 2)), [[0], [1], [1]])
    >>> labels.tolist()
    [0, 1, 1]
    """
    embeddings = np.asarray(embeddings)
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if embeddings.ndim != 2 or embeddings.shape[0] < 2:
        raise ValueError(
            f"`embeddings` must be an [N, D] array with N >= 2. Received: shape={embeddings.shape}"
        )
    if labels.ndim != 1 or labels.shape[0] != embeddings.shape[0]:
        raise ValueError(
            f"`labels` must be [N] with N = {embeddings.shape[0]} (the embeddings' rows). "
            f"Received: shape={labels.shape}"
        )
    if np.issubdtype(embeddings.dtype, np.number) and not np.isfinite(embeddings).all():
        bad = int(np.count_nonzero(~np.isfinite(embeddings).all(axis=1)))
        raise ValueError(
            f"`embeddings` must be finite: the model produced NaN or infinite values (a diverged model?). "
            f"Received: {bad} of {embeddings.shape[0]} rows non-finite"
        )
    return embeddings, labels


def retrieval_metrics(embeddings, labels, ks=(1, 2, 4, 8), metric="cosine", block_size=1024, max_r=1000):
    """Recall@K, MAP@R and R-precision of leave-one-out retrieval.

    Args:
        embeddings: float ``[N, D]``.
        labels: ``[N]`` class labels (any type numpy can compare).
        ks: the K of Recall@K, strictly increasing, at most ``N - 1``.
        metric: ``"cosine"`` or ``"l2"``.
        block_size: queries per matmul block (memory ``block_size * N`` floats).
        max_r: cap on R for MAP@R and R-precision; a query's R is
            ``min(class size - 1, max_r)``.

    Returns:
        ``{"recall@K": float for each K, "map@r": float, "r_precision": float}``.

    Example:
    >>> import numpy as np
    >>> x = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    >>> retrieval_metrics(x, [0, 0, 1, 1], ks=(1,))
    {'recall@1': 1.0, 'map@r': 1.0, 'r_precision': 1.0}
    """
    embeddings, labels = check_labels(embeddings, labels)
    ks = check_ks(ks)
    if int(max_r) < 1:
        raise ValueError(f"`max_r` must be a positive integer. Received: max_r={max_r}")
    _, class_ids, counts = np.unique(labels, return_inverse=True, return_counts=True)
    r = np.minimum(counts[class_ids] - 1, int(max_r))
    num_queries = int(np.count_nonzero(r))
    if num_queries == 0:
        raise ValueError(
            "Retrieval metrics need a class with at least two samples. "
            f"Received: {len(labels)} labels, all distinct"
        )
    if num_queries < len(labels):
        logger.warning("%d of %d queries are alone in their class and left out of the retrieval metrics.", len(labels) - num_queries, len(labels))
    if counts.max() - 1 > int(max_r):
        logger.warning("R capped at max_r=%d for classes larger than %d samples.", max_r, max_r + 1)
    k = max(ks[-1], int(r.max()))
    sums = np.zeros(len(ks) + 2)
    for start, indices, _ in iterate_neighbours(embeddings, None, k, metric, block_size):
        block_ids = class_ids[start : start + len(indices)]
        block_r = r[start : start + len(indices)]
        valid = block_r > 0
        sums += ranking_sums((class_ids[indices] == block_ids[:, None])[valid], block_r[valid], ks)
    return ranking_means(sums, num_queries, ks)


def ranking_sums(matches, r, ks):
    """The ranking metrics of some queries, summed over them: the one computation of both protocols.

    Args:
        matches: bool ``[Q, k]``: whether a query's i-th neighbour is of its
            class (``k`` at least every R).
        r: int ``[Q]``, each query's R (>= 1).
        ks: the K of Recall@K (checked by ``check_ks``).

    Returns:
        float ``[len(ks) + 2]``: the Recall@K hits, then the sums of AP@R and of
        R-precision; ``ranking_means`` turns the sums of all queries into means.

    Example:
    >>> ranking_sums(np.array([[False, True], [True, True]]), np.array([1, 2]), (1, 2)).tolist()
    [1.0, 2.0, 1.0, 1.0]
    """
    ranks = np.arange(1, matches.shape[1] + 1)
    hits = [np.count_nonzero(matches[:, :top].any(axis=1)) for top in ks]
    relevant = matches & (ranks[None, :] <= r[:, None])
    hits_so_far = np.cumsum(relevant, axis=1)
    average_precision = np.sum(np.sum(relevant * hits_so_far / ranks, axis=1) / r)
    r_precision = np.sum(hits_so_far[:, -1] / r)
    return np.array([*hits, average_precision, r_precision], dtype=np.float64)


def ranking_means(sums, num_queries, ks):
    """``{"recall@K": ..., "map@r": ..., "r_precision": ...}`` from ``ranking_sums`` over ``num_queries`` queries.

    Example:
    >>> ranking_means(np.array([1.0, 2.0, 1.0, 1.0]), 2, (1, 2))
    {'recall@1': 0.5, 'recall@2': 1.0, 'map@r': 0.5, 'r_precision': 0.5}
    """
    metrics = {f"recall@{top}": float(hits / num_queries) for top, hits in zip(ks, sums[: len(ks)])}
    metrics["map@r"] = float(sums[len(ks)] / num_queries)
    metrics["r_precision"] = float(sums[len(ks) + 1] / num_queries)
    return metrics
