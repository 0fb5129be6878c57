"""Online mining of positives and negatives from a distance matrix.

Every function takes a distance matrix ``distances`` [B, R] and boolean masks [B, R]
(row = anchor; R = B, or a reference set, or the global batch) and works row by row
with static shapes, so it runs on any block of anchor rows and compiles under XLA.
"""

import tensorflow as tf


def masked_maximum(values, mask):
    """Row-wise maximum of ``values`` over ``mask``.

    Args:
        values: float [B, N].
        mask: bool [B, N].

    Returns:
        ``(maximum [B], found [B] bool)``; ``maximum`` is 0 where a row has no masked entry.
    """
    found = tf.reduce_any(mask, axis=1)
    lowest = tf.constant(-float("inf"), values.dtype)
    maximum = tf.reduce_max(tf.where(mask, values, lowest), axis=1)
    return tf.where(found, maximum, tf.zeros([], maximum.dtype)), found


def masked_minimum(values, mask):
    """Row-wise minimum of ``values`` over ``mask``; 0 where a row has none. See ``masked_maximum``."""
    maximum, found = masked_maximum(-values, mask)
    return -maximum, found


# Batch-hard mining, in two forms with one rule: the farthest positive and the closest negative of
# every row; a row without a negative takes its largest entry (tfa's rule). The values (with their
# gradient) for the dense path, the columns for the kernels, which recompute the chosen pairs.


def hardest_positive(distances, positives):
    """Largest distance to a positive, per anchor: ``(distance [B], found [B])``; 0 where none."""
    return masked_maximum(distances, positives)


def hardest_negative(distances, negatives):
    """Smallest distance to a negative, per anchor: ``(distance [B], found [B])``; the row's
    largest distance where there is none (tfa's rule)."""
    closest, found = masked_minimum(distances, negatives)
    return tf.where(found, closest, tf.reduce_max(distances, axis=1)), found


def mine_hard(ordered, positives, negatives):
    """Batch-hard mining as columns: the farthest positive and the closest negative of every row.

    The column form of ``hardest_positive`` / ``hardest_negative``: the kernels mine on a
    matrix without gradient and recompute only the chosen pairs (``fused.pair_distances``).

    Args:
        ordered: float [rows, R], ordered like the distances (``fused.mining_distances``).
        positives: bool [rows, R].
        negatives: bool [rows, R].

    Returns:
        ``(positive [rows] int32, has_positive [rows] bool, negative [rows] int32)``:
        column indices; a row without a negative takes its largest entry (tfa's rule);
        ties take the first column.

    Example:
    >>> d = tf.constant([[0.0, 1.0, 4.0, 2.0]])
    >>> pos, neg = tf.constant([[False, True, False, False]]), tf.constant([[False, False, True, True]])
    >>> [t.numpy().tolist() for t in mine_hard(d, pos, neg)]
    [[1], [True], [3]]
    """
    lowest, highest = tf.constant(-float("inf"), ordered.dtype), tf.constant(float("inf"), ordered.dtype)
    positive = tf.argmax(tf.where(positives, ordered, lowest), axis=1, output_type=tf.int32)
    closest = tf.argmin(tf.where(negatives, ordered, highest), axis=1, output_type=tf.int32)
    negative = tf.where(tf.reduce_any(negatives, axis=1), closest, tf.argmax(ordered, axis=1, output_type=tf.int32))
    return positive, tf.reduce_any(positives, axis=1), negative


# Above this many positives per anchor, one pass per positive no longer pays: semi-hard
# mining sorts each row instead.
MAX_POSITIVE_PASSES = 32


def positive_slots(positives):
    """Rank of each positive among its anchor's positives, in column order.

    Args:
        positives: bool [B, R].

    Returns:
        int32 [B, R]: ``slot[a, p]`` = s for the s-th positive p of anchor a (from 0), -1
        where ``positives`` is False. Pass s of a per-positive loop handles ``slot == s``.
    """
    slot = tf.math.cumsum(tf.cast(positives, tf.int32), axis=1, exclusive=True)
    return tf.where(positives, slot, -1)


def _columns_by_positive_passes(fixed, positives, negatives, num_passes):
    """Semi-hard negative columns with one O(B^2) pass per positive of the anchors.

    Pass s handles the s-th positive of every anchor: O(B^2 K) for K samples per class.
    """
    infinity = tf.constant(float("inf"), fixed.dtype)
    negative_values = tf.where(negatives, fixed, infinity)
    farthest = tf.argmax(tf.where(negatives, fixed, -infinity), axis=1, output_type=tf.int32)
    slot = positive_slots(positives)

    def one_pass(s, columns):
        chosen = tf.equal(slot, s)
        positive_distance = tf.reduce_sum(tf.where(chosen, fixed, tf.zeros([], fixed.dtype)), axis=1)
        beyond = tf.where(negative_values > positive_distance[:, None], negative_values, infinity)
        closest = tf.argmin(beyond, axis=1, output_type=tf.int32)
        found = tf.reduce_min(beyond, axis=1) < float("inf")
        column = tf.where(found, closest, farthest)
        return s + 1, tf.where(chosen, column[:, None], columns)

    _, columns = tf.while_loop(
        lambda s, _: s < num_passes, one_pass, (tf.constant(0), tf.zeros_like(slot))
    )
    return columns


def _columns_by_sorting(fixed, negatives):
    """Semi-hard negative columns by sorting each anchor's row: O(B^2 log B).

    Sorting each row's negatives together with its query distances D[a, p] (ties:
    negatives first) counts, for every p, the negatives at distance <= D[a, p]; that
    count is the rank of the semi-hard negative among the sorted negatives. Only sorts,
    cumulative sums and scatters: no [B, B, B] intermediate, also under XLA.
    """
    num_columns = tf.shape(fixed)[1]
    infinity = tf.constant(float("inf"), fixed.dtype)
    negative_values = tf.where(negatives, fixed, infinity)
    order = tf.argsort(tf.concat([negative_values, fixed], axis=1), axis=1, stable=True)
    is_negative = tf.concat([tf.cast(negatives, tf.int32), tf.zeros_like(order[:, num_columns:])], axis=1)
    counts = tf.math.cumsum(tf.gather(is_negative, order, batch_dims=1), axis=1)
    rows = tf.broadcast_to(tf.range(tf.shape(fixed)[0])[:, None], tf.shape(order))
    counts = tf.scatter_nd(tf.stack([rows, order], axis=-1), counts, tf.shape(order))
    at_or_below = counts[:, num_columns:]
    count = tf.reduce_sum(tf.cast(negatives, tf.int32), axis=1)[:, None]
    position = tf.where(at_or_below < count, at_or_below, tf.maximum(count - 1, 0))
    return tf.gather(tf.argsort(negative_values, axis=1, stable=True), position, batch_dims=1)


def semihard_negatives(distances, positives, negatives):
    """The semi-hard negative of every (anchor, positive) pair, FaceNet's rule as in tfa.

    For anchor a and positive p, the negative is the closest n in N(a) with
    D[a, n] > D[a, p]; if there is none, the farthest n in N(a). Memory is O(B^2)
    (tfa builds a [B * B, B] tensor). Time is O(B^2 K) with one masked pass per
    positive when classes have K <= ``MAX_POSITIVE_PASSES`` + 1 samples in the batch;
    above that, each anchor's row is sorted once together with its positive
    distances, and a running count of negatives locates every D[a, p], O(B^2 log B).

    Args:
        distances: float [B, R], D[a, x] (R = B, or a reference set).
        positives: bool [B, R], P(a) per row.
        negatives: bool [B, R], N(a) per row.

    Returns:
        ``(negative_distance [B, B], has_negative [B])``: ``negative_distance[a, p]`` is
        D[a, n*(a, p)] for positive pairs, differentiable with respect to ``distances``
        (other entries are unspecified); rows of anchors without negatives hold 0.
    """
    fixed = tf.stop_gradient(distances)
    num_passes = tf.reduce_max(tf.reduce_sum(tf.cast(positives, tf.int32), axis=1))
    columns = tf.cond(
        num_passes <= MAX_POSITIVE_PASSES,
        lambda: _columns_by_positive_passes(fixed, positives, negatives, num_passes),
        lambda: _columns_by_sorting(fixed, negatives),
    )
    negative_distance = tf.gather(distances, columns, batch_dims=1)
    has_negative = tf.reduce_any(negatives, axis=1)
    return tf.where(has_negative[:, None], negative_distance, tf.zeros([], distances.dtype)), has_negative
