"""Lifted structured loss (Oh Song et al. 2016), tfa's and contrib's batch form, in O(B^2) memory."""

import tensorflow as tf

from rankloss_tf.ops.batch import _per_anchor_mean
from rankloss_tf.ops.checks import check_non_negative
from rankloss_tf.ops.dense import distances_and_masks


def _row_logsumexp(logits, mask):
    """Row-wise log(sum_j mask[i, j] exp(logits[i, j])); a row without entries gives the dtype's lowest value.

    Masked-out entries are set to that lowest finite value, not -inf, so that
    ``tf.math.reduce_logsumexp`` and its gradient stay finite on every row.
    """
    lowest = tf.constant(logits.dtype.min, logits.dtype)
    has_entries = tf.reduce_any(mask, axis=1)
    row = tf.math.reduce_logsumexp(tf.where(mask, logits, lowest), axis=1)
    return tf.where(has_entries, row, lowest), has_entries


def lifted_struct_from_distances(distances, positives, negatives, margin):
    """Per-anchor lifted structured losses from a distance matrix [B, B].

    With r_i = log(sum_{k in N(i)} exp(margin - D[i, k])), for every ordered positive
    pair (i, j):
        J(i, j) = log(exp(r_i) + exp(r_j)) + D[i, j],
        loss = sum over ordered positive pairs of max(J(i, j), 0)^2 / (2 P),
    P the number of ordered positive pairs. A pair whose two rows have no negative
    contributes 0 (it still counts in P, as in tfa). The row's share of that sum is
    scaled so that the mean of the result over anchors is the loss.

    Args:
        distances: float [B, B].
        positives: bool [B, B], same label and not the anchor itself.
        negatives: bool [B, B], different labels.
        margin: float >= 0.

    Returns:
        Per-anchor losses [B], dtype of ``distances``.
    """
    row, has_negative = _row_logsumexp(margin - distances, negatives)
    shape = tf.shape(distances)
    both_rows = tf.stack([tf.broadcast_to(row[:, None], shape), tf.broadcast_to(row[None, :], shape)], axis=-1)
    pair_terms = tf.math.reduce_logsumexp(both_rows, axis=-1)
    valid = tf.logical_and(positives, tf.logical_or(has_negative[:, None], has_negative[None, :]))
    hinge = tf.maximum(tf.where(valid, pair_terms + distances, tf.zeros([], distances.dtype)), 0.0)
    num_pairs = tf.reduce_sum(tf.cast(positives, tf.int32))
    sums = 0.5 * tf.reduce_sum(tf.square(hinge), axis=1)
    return _per_anchor_mean(sums, num_pairs, tf.shape(sums)[0])


def lifted_struct_loss(labels, embeddings, margin=1.0, distance="l2"):
    """Lifted structured loss on all the pairs of a batch (tfa 0.23 / contrib's form).

    For every ordered positive pair (i, j), with D the pairwise distances,
        J(i, j) = log(sum_{k in N(i)} exp(margin - D[i, k]) + sum_{l in N(j)} exp(margin - D[j, l])) + D[i, j],
        loss = 1 / (2 P) * sum over ordered positive pairs of max(J(i, j), 0)^2,
    P the number of ordered positive pairs (tfa's 0.25 / (P / 2)). The two sums are per-row
    log-sum-exps combined pairwise: O(B^2) memory, where tfa tiles a [B^2, B] tensor.
    A batch without a positive pair, or with a single class, gives 0 (tfa: NaN).

    Reference: Oh Song, Xiang, Jegelka, Savarese, "Deep Metric Learning via Lifted
    Structured Feature Embedding", CVPR 2016.

    Args:
        labels: class labels [B] or [B, 1].
        embeddings: float [B, D] (not normalised by the loss).
        margin: float >= 0.
        distance: "l2" (default, as tfa), "squared_l2", "cosine", or a callable
            mapping embeddings [B, D] to distances [B, B].

    Returns:
        Per-anchor losses [B] whose mean is the loss, dtype of ``embeddings``.

    Example:
    >>> loss = lifted_struct_loss([0, 0, 1], [[0.0, 0.0], [1.0, 0.0], [0.0, 1.5]])
    >>> round(float(tf.reduce_mean(loss)), 4)
    0.5546
    """
    margin = check_non_negative("margin", margin)
    distances, positives, negatives, dtype = distances_and_masks(labels, embeddings, distance)
    return tf.cast(lifted_struct_from_distances(distances, positives, negatives, margin), dtype)
