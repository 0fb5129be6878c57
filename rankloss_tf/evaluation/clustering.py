"""Clustering quality of embeddings: k-means, then NMI and pairwise F1.

k-means (scikit-learn, k = number of classes) clusters the embeddings; the
clusters are scored against the classes with:

- NMI: normalised mutual information, ``sklearn.metrics.
  normalized_mutual_info_score`` (arithmetic mean normalisation).
- F1: pairwise F1 of Song et al. 2016 ("Deep Metric Learning via Lifted
  Structured Feature Embedding", CVPR): over all unordered pairs of samples,
  a pair is a true positive when both are in the same class and in the same
  cluster, a false positive when in the same cluster but different classes,
  a false negative when in the same class but different clusters;
  P = TP / (TP + FP), R = TP / (TP + FN), F1 = 2PR / (P + R).
"""

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import normalized_mutual_info_score
from sklearn.metrics.cluster import pair_confusion_matrix

__all__ = ["cluster_scores", "clustering_metrics", "kmeans_clusters", "pairwise_f1"]


def pairwise_f1(labels, cluster_ids):
    """Pairwise F1 of a clustering against class labels (Song et al. 2016).

    Args:
        labels: ``[N]`` class labels.
        cluster_ids: ``[N]`` cluster assignments.

    Returns:
        The F1 score in [0, 1] (0 when no pair shares a class or a cluster).

    Example:
    >>> pairwise_f1([0, 0, 1, 1], [0, 0, 0, 1])  # TP=1, FP=2, FN=1
    0.4
    """
    # Ordered pairs: every count is doubled, which leaves F1 unchanged.
    (_, false_positives), (false_negatives, true_positives) = pair_confusion_matrix(
        np.asarray(labels), np.asarray(cluster_ids)
    )
    denominator = 2 * true_positives + false_positives + false_negatives
    return float(2 * true_positives / denominator) if denominator else 0.0


def cluster_scores(labels, cluster_ids):
    """``{"nmi": ..., "f1": ...}`` of a clustering against class labels.

    Example:
    >>> cluster_scores([0, 0, 1, 1], [3, 3, 4, 4])
    {'nmi': 1.0, 'f1': 1.0}
    """
    return {
        "nmi": float(normalized_mutual_info_score(labels, cluster_ids)),
        "f1": pairwise_f1(labels, cluster_ids),
    }


def kmeans_clusters(embeddings, num_clusters, seed=0):
    """k-means (k-means++ init, scikit-learn) cluster ids ``[N]`` of ``[N, D]`` embeddings.

    Example:
    >>> ids = kmeans_clusters(np.array([[0.0], [0.1], [5.0], [5.1]]), 2)
    >>> bool(ids[0] == ids[1] != ids[2] == ids[3])
    True
    """
    return KMeans(n_clusters=int(num_clusters), n_init="auto", random_state=seed).fit_predict(
        np.asarray(embeddings, np.float32)
    )


def clustering_metrics(embeddings, labels, seed=0):
    """NMI and pairwise F1 of k-means with k = number of classes.

    Args:
        embeddings: float ``[N, D]`` (L2-normalise them first for cosine geometry).
        labels: ``[N]`` class labels.
        seed: k-means random state.

    Returns:
        ``{"nmi": float, "f1": float}``.

    Example:
    >>> import numpy as np
    >>> x = np.array([[0.0], [0.1], [5.0], [5.1]])
    >>> clustering_metrics(x, [0, 0, 1, 1])
    {'nmi': 1.0, 'f1': 1.0}
    """
    labels = np.asarray(labels)
    cluster_ids = kmeans_clusters(embeddings, len(np.unique(labels)), seed)
    return cluster_scores(labels, cluster_ids)
