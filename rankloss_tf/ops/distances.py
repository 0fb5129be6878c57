"""Pairwise distances between embeddings, with finite gradients at zero distance."""

import tensorflow as tf

DISTANCES = ("l2", "squared_l2", "cosine")


def check_distance(distance):
    """Returns `distance` if it names a supported metric.

    Raises:
        ValueError: if `distance` is not one of `DISTANCES`.
    """
    if distance not in DISTANCES:
        raise ValueError(
            f"`distance` must be one of {DISTANCES}. Received: distance={distance!r}"
        )
    return distance


def safe_sqrt(x):
    """Square root whose gradient is 0, not inf, where `x` <= 0.

    Args:
        x: float tensor of any shape.

    Returns:
        `sqrt(max(x, 0))`, with a zero gradient wherever `x <= 0`.
    """
    positive = x > 0.0
    return tf.where(positive, tf.sqrt(tf.where(positive, x, tf.ones_like(x))), 0.0)


def pairwise_distances(embeddings, distance="l2"):
    """All pairwise distances of a batch of embeddings.

    For rows x_i of `embeddings`:
    - "squared_l2": ||x_i - x_j||^2 = ||x_i||^2 - 2 x_i.x_j + ||x_j||^2, clipped at 0;
    - "l2": its square root (gradient 0 at zero distance, never NaN);
    - "cosine": max(1 - cos(x_i, x_j), 0) (tfa's "angular" distance).
    The diagonal of "l2" and "squared_l2" is exactly 0.

    Args:
        embeddings: float tensor [B, D].
        distance: one of "l2", "squared_l2", "cosine".

    Returns:
        Float tensor [B, B], the dtype of `embeddings`.

    Example:
        >>> d = pairwise_distances(tf.constant([[0.0, 0.0], [3.0, 4.0]]))
        >>> d.numpy().tolist()
        [[0.0, 5.0], [5.0, 0.0]]
    """
    check_distance(distance)
    if distance == "cosine":
        unit = tf.math.l2_normalize(embeddings, axis=1)
        return tf.maximum(1.0 - tf.matmul(unit, unit, transpose_b=True), 0.0)
    squared_norms = tf.reduce_sum(tf.square(embeddings), axis=1)
    squared = (
        squared_norms[:, None]
        - 2.0 * tf.matmul(embeddings, embeddings, transpose_b=True)
        + squared_norms[None, :]
    )
    off_diagonal = 1.0 - tf.eye(tf.shape(embeddings)[0], dtype=embeddings.dtype)
    squared = tf.maximum(squared, 0.0) * off_diagonal
    if distance == "squared_l2":
        return squared
    return safe_sqrt(squared)
