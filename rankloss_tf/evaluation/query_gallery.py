"""Query-vs-gallery retrieval metrics (the In-shop / SOP-style protocol): Recall@K and MAP@R.

Every query searches a separate gallery (no query is in it). For a query of
class c with R = (number of gallery items of class c), capped at ``max_r``,
and rel(i) = 1 when its i-th gallery neighbour has class c:

- Recall@K = 1 if any of the K nearest gallery items is of class c, else 0;
- MAP@R = (1/R) * sum_{i<=R} rel(i) * precision@i (Musgrave et al. 2020).

Means over the queries whose class has at least one gallery item (the others
have no right answer and are left out, with a log message). The gallery is
arrays (searched with ``nearest_neighbours``) or anything with a
``search_embeddings(embeddings, k)`` returning ``.labels`` (a
``rankloss_tf.retrieval.Index``).
"""

import logging

import numpy as np

from rankloss_tf.evaluation.neighbours import nearest_neighbours
from rankloss_tf.evaluation.retrieval import check_ks, check_labels, ranking_means, ranking_sums

__all__ = ["query_gallery_metrics"]

logger = logging.getLogger(__name__)


def query_gallery_metrics(query_embeddings, query_labels, gallery, gallery_labels=None, ks=(1, 2, 4, 8),
                          metric="cosine", max_r=1000, block_size=1024):
    """Recall@K and MAP@R of queries against a separate gallery.

    Args:
        query_embeddings: float ``[Nq, D]``.
        query_labels: int ``[Nq]``.
        gallery: float ``[Ng, D]`` embeddings, or an index with
            ``search_embeddings`` and ``labels`` (then ``gallery_labels`` and
            ``metric`` come from it).
        gallery_labels: int ``[Ng]`` when ``gallery`` is an array.
        ks: the K of Recall@K, increasing.
        metric: "cosine" or "l2" (array galleries).
        max_r: cap on R (bounds the neighbours fetched per query).
        block_size: queries per search block.

    Returns:
        ``{"recall@K": ..., "map@r": ...}`` (floats in [0, 1]).

    Raises:
        ValueError: bad shapes, ks, or no query whose class is in the gallery.

    Example:
    >>> g = np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])
    >>> query_gallery_metrics(np.array([[0.9, 0.1], [0.6, 0.8]]), [0, 1], g, [0, 1, 0], ks=(1, 2))
    {'recall@1': 0.5, 'recall@2': 1.0, 'map@r': 0.5}
    """
    ks = check_ks(ks)
    query_embeddings, query_labels = check_labels(query_embeddings, query_labels)
    is_index = hasattr(gallery, "search_embeddings")
    if is_index:
        gallery_labels = np.asarray(gallery.labels)
        size = len(gallery)
    else:
        gallery, gallery_labels = check_labels(gallery, gallery_labels)
        size = len(gallery_labels)
    classes, counts = np.unique(gallery_labels, return_counts=True)
    position = np.searchsorted(classes, query_labels)
    found = (position < len(classes)) & (classes[np.minimum(position, len(classes) - 1)] == query_labels)
    r = np.where(found, np.minimum(counts[np.minimum(position, len(classes) - 1)], int(max_r)), 0)
    if not found.any():
        raise ValueError(f"No query class is in the gallery. Received: {len(query_labels)} queries, {size} gallery items")
    if not found.all():
        logger.info("%d queries whose class is not in the gallery are left out.", int((~found).sum()))
    k = min(max(ks[-1], int(r.max())), size)
    if is_index:
        neighbour_labels = np.concatenate([
            gallery.search_embeddings(query_embeddings[s : s + block_size], k).labels
            for s in range(0, len(query_labels), block_size)
        ])
    else:
        indices, _ = nearest_neighbours(query_embeddings, gallery, k, metric, block_size)
        neighbour_labels = gallery_labels[indices]
    matches = (neighbour_labels == query_labels[:, None])[found]
    metrics = ranking_means(ranking_sums(matches, r[found], ks), int(found.sum()), ks)
    del metrics["r_precision"]
    return metrics
