"""Online mining of positives and negatives from a distance matrix.

Every function takes a distance matrix `distances` [B, B] and boolean masks [B, B]
(row = anchor) and works with static shapes, so it compiles under XLA.
"""

import tensorflow as tf


def masked_maximum(values, mask):
    """Row-wise maximum of `values` over `mask`.

    Args:
        values: float [B, N].
        mask: bool [B, N].

    Returns:
        `(maximum [B], found [B] bool)`; `maximum` is 0 where a row has no masked entry.
    """
    found = tf.reduce_any(mask, axis=1)
    lowest = tf.fill(tf.shape(values), tf.constant(-float("inf"), values.dtype))
    maximum = tf.reduce_max(tf.where(mask, values, lowest), axis=1)
    return tf.where(found, maximum, tf.zeros_like(maximum)), found


def masked_minimum(values, mask):
    """Row-wise minimum of `values` over `mask`; 0 where a row has none. See `masked_maximum`."""
    maximum, found = masked_maximum(-values, mask)
    return -maximum, found


def hardest_positive(distances, positives):
    """Largest distance to a positive, per anchor: `(distance [B], found [B])`."""
    return masked_maximum(distances, positives)


def hardest_negative(distances, negatives):
    """Smallest distance to a negative, per anchor: `(distance [B], found [B])`."""
    return masked_minimum(distances, negatives)


def semihard_negatives(distances, negatives):
    """The semi-hard negative of every (anchor, positive) pair, FaceNet's rule as in tfa.

    For anchor a and candidate positive p, the negative is the closest n in N(a) with
    D[a, n] > D[a, p]; if there is none, the farthest n in N(a). Each anchor's negative
    distances are sorted once and every D[a, p] is located by binary search:
    O(B^2 log B) time and O(B^2) memory (tfa builds a [B*B, B] tensor).

    Args:
        distances: float [B, B], D[a, x].
        negatives: bool [B, B], N(a) per row.

    Returns:
        `(negative_distance [B, B], has_negative [B])`: `negative_distance[a, p]` is
        D[a, n*(a, p)], differentiable with respect to `distances`; rows of anchors
        without negatives hold 0.
    """
    fixed = tf.stop_gradient(distances)
    infinity = tf.fill(tf.shape(fixed), tf.constant(float("inf"), fixed.dtype))
    order = tf.argsort(tf.where(negatives, fixed, infinity), axis=1, stable=True)
    sorted_negatives = tf.gather(tf.where(negatives, fixed, infinity), order, batch_dims=1)
    count = tf.reduce_sum(tf.cast(negatives, tf.int32), axis=1)
    # Number of negatives at distance <= D[a, p]: the position of the first one beyond.
    beyond = tf.searchsorted(sorted_negatives, fixed, side="right", out_type=tf.int32)
    farthest = tf.maximum(count - 1, 0)[:, None]
    position = tf.where(beyond < count[:, None], beyond, farthest)
    column = tf.gather(order, position, batch_dims=1)
    negative_distance = tf.gather(distances, column, batch_dims=1)
    has_negative = count > 0
    zeros = tf.zeros_like(negative_distance)
    return tf.where(has_negative[:, None], negative_distance, zeros), has_negative
