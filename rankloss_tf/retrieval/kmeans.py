"""The coarse quantiser of the IVF index: k-means in TensorFlow (no faiss or scikit-learn needed).

Lloyd iterations on a random sample of the gallery (``SAMPLE_PER_LIST`` rows
per centroid, faiss' rule of thumb), assignments by blocked matmul + argmax.
For the cosine metric the centroids are kept unit length (spherical k-means:
the nearest centroid is the one of largest dot product); for L2 the nearest
centroid maximises ``2 x . c - ||c||^2``. An empty cluster keeps its previous
centroid.
"""

import numpy as np
import tensorflow as tf

from rankloss_tf.evaluation.neighbours import unit_rows

__all__ = ["assign", "train_centroids"]

SAMPLE_PER_LIST = 64
ITERATIONS = 12
ASSIGN_BLOCK = 16384  # rows per assignment matmul: a [16384, lists] score block


@tf.function(reduce_retracing=True)
def _nearest(block, centroids, spherical):
    scores = tf.matmul(block, centroids, transpose_b=True)
    if not spherical:
        scores = 2.0 * scores - tf.reduce_sum(tf.square(centroids), axis=1)[tf.newaxis, :]
    return tf.cast(tf.argmax(scores, axis=1), tf.int32)


def assign(rows, centroids, metric, decode=None):
    """The nearest centroid of each prepared row: int32 ``[N]``; ``decode``: codes -> float rows, per block.

    Example:
    >>> assign(np.array([[0.9, 0.1], [0.0, 1.0]], np.float32), np.eye(2, dtype=np.float32), "cosine").tolist()
    [0, 1]
    """
    centroids = tf.constant(centroids, tf.float32)
    spherical = metric == "cosine"
    decode = decode or (lambda block: block)
    parts = [
        _nearest(tf.constant(decode(rows[start : start + ASSIGN_BLOCK]), tf.float32), centroids, spherical).numpy()
        for start in range(0, len(rows), ASSIGN_BLOCK)
    ]
    return np.concatenate(parts) if parts else np.zeros((0,), np.int32)


def _update(sample, labels, centroids, metric):
    count = len(centroids)
    sums = tf.math.unsorted_segment_sum(sample, labels, count).numpy()
    sizes = np.bincount(labels, minlength=count)
    new = np.where(sizes[:, None] > 0, sums / np.maximum(sizes, 1)[:, None], centroids)
    return unit_rows(new).numpy() if metric == "cosine" else new.astype(np.float32)


def train_centroids(rows, lists, metric, iterations=ITERATIONS, seed=0, decode=None):
    """k-means centroids ``float32 [lists, D]`` of prepared gallery rows ``[N, D]``.

    Args:
        rows: prepared references (unit rows for cosine).
        lists: number of centroids, ``1 <= lists <= N``.
        metric: "cosine" (spherical k-means) or "l2".
        iterations: Lloyd iterations.
        seed: sample and initialisation seed.
        decode: None, or codes -> float rows (the sample is decoded).

    Example:
    >>> rows = np.array([[0.0], [0.1], [5.0], [5.2]], np.float32)
    >>> sorted(round(float(c), 2) for c in train_centroids(rows, 2, "l2")[:, 0])
    [0.05, 5.1]
    """
    rng = np.random.default_rng(seed)
    n = len(rows)
    take = min(n, max(lists, SAMPLE_PER_LIST * lists))
    sample = rows[np.sort(rng.choice(n, take, replace=False))] if take < n else np.asarray(rows)
    sample = np.asarray(sample if decode is None else decode(sample), np.float32)
    centroids = sample[rng.choice(len(sample), lists, replace=False)]
    for _ in range(iterations):
        labels = assign(sample, centroids, metric)
        centroids = _update(tf.constant(sample), labels, centroids, metric)
    return centroids.astype(np.float32)
