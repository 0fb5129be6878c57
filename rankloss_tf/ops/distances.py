"""Pairwise distances between embeddings, with finite gradients at zero distance."""

import tensorflow as tf

DISTANCES = ("l2", "squared_l2", "cosine")


def check_distance(distance, allow_callable=True):
    """Returns ``distance`` if it names a supported metric or is a callable.

    Args:
        distance: one of ``DISTANCES`` or a callable ``embeddings -> [B, B]``.
        allow_callable: False for the kernels whose passes are fused for the named
            metrics (batch-hard, contrastive): they refuse a callable instead of
            computing another metric.

    Raises:
        ValueError: if ``distance`` is neither one of ``DISTANCES`` nor an allowed callable.

    Example:
    >>> check_distance("cosine")
    'cosine'
    """
    if callable(distance) and not allow_callable:
        raise ValueError(
            f"This loss computes its distances in fused passes: `distance` must be one of {DISTANCES} "
            f"(a callable works with triplet_semihard_loss). Received: distance={distance!r}"
        )
    if not callable(distance) and distance not in DISTANCES:
        raise ValueError(
            f"`distance` must be one of {DISTANCES} or a callable. Received: distance={distance!r}"
        )
    return distance


def safe_sqrt(x):
    """Square root whose gradient is 0, not inf, where ``x`` <= 0.

    Args:
        x: float tensor of any shape.

    Returns:
        ``sqrt(max(x, 0))``, with a zero gradient wherever ``x <= 0``.
    """
    positive = x > 0.0
    one, zero = tf.ones([], x.dtype), tf.zeros([], x.dtype)
    return tf.where(positive, tf.sqrt(tf.where(positive, x, one)), zero)


def pairwise_distances(embeddings, distance="l2", reference=None):
    """All pairwise distances of a batch, or between a batch and a reference set.

    For rows x_i of ``embeddings`` and y_j of ``reference`` (default: ``embeddings``):
    - "squared_l2": ||x_i - y_j||^2 = ||x_i||^2 - 2 x_i.y_j + ||y_j||^2, clipped at 0;
    - "l2": its square root (gradient 0 at zero distance, never NaN);
    - "cosine": max(1 - cos(x_i, y_j), 0) (tfa's "angular" distance);
    - a callable ``distance(embeddings) -> [B, B]`` (tfa's callable ``distance_metric``),
      used as given and cast to the dtype of ``embeddings``; no ``reference`` then.
    Without ``reference``, the diagonal of "l2" and "squared_l2" is exactly 0.

    Args:
        embeddings: float tensor [B, D].
        distance: one of "l2", "squared_l2", "cosine", or a callable.
        reference: optional float tensor [R, D].

    Returns:
        Float tensor [B, B] (or [B, R]), the dtype of ``embeddings``.

    Example:
    >>> d = pairwise_distances(tf.constant([[0.0, 0.0], [3.0, 4.0]]))
    >>> d.numpy().tolist()
    [[0.0, 5.0], [5.0, 0.0]]
    """
    check_distance(distance)
    if callable(distance):
        if reference is not None:
            raise ValueError(
                "A callable `distance` takes one batch; it cannot be used with `reference`. "
                f"Received: distance={distance!r} and a `reference` set."
            )
        return tf.cast(distance(embeddings), embeddings.dtype)
    others = embeddings if reference is None else reference
    if distance == "cosine":
        unit = tf.math.l2_normalize(embeddings, axis=1)
        unit_others = unit if reference is None else tf.math.l2_normalize(others, axis=1)
        return tf.maximum(1.0 - tf.matmul(unit, unit_others, transpose_b=True), 0.0)
    squared = (
        tf.reduce_sum(tf.square(embeddings), axis=1)[:, None]
        - 2.0 * tf.matmul(embeddings, others, transpose_b=True)
        + tf.reduce_sum(tf.square(others), axis=1)[None, :]
    )
    squared = tf.maximum(squared, 0.0)
    if reference is None:
        squared = tf.linalg.set_diag(squared, tf.zeros_like(squared[:, 0]))
    if distance == "squared_l2":
        return squared
    return safe_sqrt(squared)
