"""The dense O(B^2) path kept for the compat losses: a distance matrix and masks, then mining.

The ``rankloss_tf.compat`` losses (tfa's and tf.contrib's exact rules, distances given
as a matrix) and the small losses without blocks (lifted structure) work on the whole
[B, B] distance matrix; the kernels of ``rankloss_tf.ops.losses`` compute blocks of
anchor rows instead, with the same mining (``rankloss_tf.ops.mining``).
"""

import tensorflow as tf

from rankloss_tf.ops.batch import _per_anchor_mean
from rankloss_tf.ops.checks import standardize_inputs
from rankloss_tf.ops.distances import check_distance, pairwise_distances
from rankloss_tf.ops.masks import negative_mask, positive_mask
from rankloss_tf.ops.mining import hardest_negative, hardest_positive, semihard_negatives


def distances_and_masks(labels, embeddings, distance):
    """Pairwise distances and positive / negative masks of a batch against itself.

    Args:
        labels: class labels [B] or [B, 1].
        embeddings: float [B, D].
        distance: "l2", "squared_l2", "cosine" or a callable ``embeddings -> [B, B]``.

    Returns:
        ``(distances [B, B], positives [B, B], negatives [B, B], dtype)``: the anchor is
        neither its own positive nor negative; ``dtype`` is the embeddings' dtype.

    Example:
    >>> d, pos, neg, _ = distances_and_masks([0, 0, 1], [[0.0], [1.0], [3.0]], "l2")
    >>> pos.numpy().astype(int).tolist()[0], neg.numpy().astype(int).tolist()[0]
    ([0, 1, 0], [0, 0, 1])
    """
    dtype = tf.convert_to_tensor(embeddings).dtype
    labels, embeddings = standardize_inputs(labels, embeddings)
    distances = pairwise_distances(embeddings, check_distance(distance))
    return distances, positive_mask(labels), negative_mask(labels), dtype


def _semihard_row_sums(distances, positives, negatives, margin):
    negative_distance, has_negative = semihard_negatives(distances, positives, negatives)
    negative_distance = tf.where(has_negative[:, None], negative_distance, tf.zeros([], negative_distance.dtype))
    pair_losses = tf.maximum(distances - negative_distance + margin, 0.0)
    return tf.reduce_sum(tf.where(positives, pair_losses, tf.zeros([], pair_losses.dtype)), axis=1)


def semihard_from_distances(distances, positives, negatives, margin):
    """Per-anchor semi-hard triplet losses (tfa's rule) from a distance matrix [B, B].

    As in tfa, the pairs of an anchor without any negative are compared with the anchor
    itself (distance 0) in place of a negative.
    """
    num_pairs = tf.reduce_sum(tf.cast(positives, tf.int32))
    return _per_anchor_mean(_semihard_row_sums(distances, positives, negatives, margin), num_pairs, tf.shape(distances)[0])


def hard_from_distances(distances, positives, negatives, margin, soft, skip_anchors_without_positive=True):
    """Per-anchor batch-hard triplet losses (tfa's rule) from a distance matrix [B, R].

    As in tfa, an anchor without a negative takes the row's largest distance as its
    hardest negative. An anchor without a positive contributes 0, unless
    ``skip_anchors_without_positive=False``, which reproduces tfa exactly (the row's
    smallest distance, the anchor itself, stands in for the positive).
    """
    positive_distance, has_positive = hardest_positive(distances, positives)
    negative_distance, _ = hardest_negative(distances, negatives)
    positive_distance = tf.where(has_positive, positive_distance, tf.reduce_min(distances, axis=1))
    gap = positive_distance - negative_distance
    losses = tf.math.softplus(gap) if soft else tf.maximum(gap + margin, 0.0)
    if skip_anchors_without_positive:
        losses = tf.where(has_positive, losses, tf.zeros([], losses.dtype))
    return losses
