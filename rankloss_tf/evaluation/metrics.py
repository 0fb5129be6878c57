"""``evaluate``: all retrieval and clustering metrics of a set of embeddings."""

import numpy as np

from rankloss_tf.evaluation.clustering import clustering_metrics
from rankloss_tf.evaluation.neighbours import METRICS
from rankloss_tf.evaluation.retrieval import check_labels, retrieval_metrics

__all__ = ["KS", "evaluate", "format_table", "ks_within"]

KS = (1, 2, 4, 8)  # the K of Recall@K reported by default


def evaluate(embeddings, labels, ks=KS, clustering=True, metric="cosine", block_size=1024,
             max_r=1000, seed=0):
    """Evaluates embeddings by leave-one-out retrieval and by k-means clustering.

    The standard zero-shot protocol: ``embeddings`` are of held-out classes;
    every sample queries all the others (see ``retrieval_metrics`` for
    Recall@K, MAP@R and R-precision, ``clustering_metrics`` for NMI and F1).
    Nearest neighbours are exact and found in blocks of ``block_size``
    queries: memory O(block_size x N), never N x N.

    Args:
        embeddings: float ``[N, D]``.
        labels: ``[N]`` (or ``[N, 1]``) class labels.
        ks: the K of Recall@K, strictly increasing.
        clustering: also run k-means (k = number of classes) for NMI and F1.
        metric: ``"cosine"`` (rows L2-normalised; also before k-means) or ``"l2"``.
        block_size: queries per nearest-neighbour block.
        max_r: cap on R for MAP@R and R-precision.
        seed: k-means random state.

    Returns:
        dict: ``"recall@K"`` for each K, ``"map@r"``, ``"r_precision"``, and
        with ``clustering`` ``"nmi"`` and ``"f1"``; all floats in [0, 1].

    Example:
    >>> import numpy as np
    >>> x = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    >>> evaluate(x, [0, 0, 1, 1], ks=(1, 2))
    {'recall@1': 1.0, 'recall@2': 1.0, 'map@r': 1.0, 'r_precision': 1.0, 'nmi': 1.0, 'f1': 1.0}
    """
    if metric not in METRICS:
        raise ValueError(f"`metric` must be one of {METRICS}. Received: metric={metric!r}")
    embeddings, labels = check_labels(embeddings, labels)
    result = retrieval_metrics(embeddings, labels, ks, metric, block_size, max_r)
    if clustering:
        points = np.asarray(embeddings, np.float32)
        if metric == "cosine":
            points = points / np.maximum(np.linalg.norm(points, axis=1, keepdims=True), 1e-12)
        result.update(clustering_metrics(points, labels, seed))
    return result


def format_table(metrics):
    """A Markdown table of a ``{name: value}`` metric dictionary.

    Example:
    >>> print(format_table({"recall@1": 0.5, "nmi": 0.25}))
    | metric | value |
    | --- | --- |
    | recall@1 | 0.5000 |
    | nmi | 0.2500 |
    """
    rows = [f"| {name} | {value:.4f} |" for name, value in metrics.items()]
    return "\n".join(["| metric | value |", "| --- | --- |", *rows])


def ks_within(count, ks=KS):
    """The K of ``ks`` that ``count`` samples can score (Recall@K needs K other samples); at least K = 1.

    Example:
    >>> ks_within(6), ks_within(100)
    ((1, 2, 4), (1, 2, 4, 8))
    """
    return tuple(k for k in ks if k < count) or tuple(ks[:1])
