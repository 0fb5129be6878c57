"""Label masks, label counts and N-pair tuples shared by the loss kernels."""

import tensorflow as tf


def same_label_mask(labels):
    """``mask[i, j] = labels[i] == labels[j]``, bool [B, B] (diagonal True)."""
    return tf.equal(labels[:, None], labels[None, :])


def positive_mask(labels):
    """``mask[a, p]``: same label and a != p, bool [B, B]."""
    same = same_label_mask(labels)
    return tf.logical_and(same, tf.logical_not(tf.eye(tf.shape(labels)[0], dtype=tf.bool)))


def negative_mask(labels):
    """``mask[a, n]``: different labels, bool [B, B]."""
    return tf.logical_not(same_label_mask(labels))


def label_counts(labels, reference_labels):
    """How many entries of ``reference_labels`` equal each label: int32 [B], O((B + R) log R).

    One sort and two binary searches, no [B, R] mask; compiles under XLA.

    Example:
    >>> label_counts(tf.constant([3, 1, 5]), tf.constant([3, 1, 3, 2])).numpy().tolist()
    [2, 1, 0]
    """
    ordered = tf.sort(reference_labels)
    labels = tf.cast(labels, ordered.dtype)
    return tf.searchsorted(ordered, labels, side="right") - tf.searchsorted(ordered, labels, side="left")


def npair_tuples(labels):
    """Splits a batch into N-pair (anchor, positive) tuples by order of appearance.

    Within each class, samples are numbered 0, 1, 2, ... in batch order; samples 2k and
    2k + 1 form one tuple: the first is the anchor f_i, the second its positive f_i+.
    With Sohn's N-pair batches (N classes x 2 samples) this is one tuple per class; a
    class with K > 2 samples gives K // 2 tuples, and an odd last sample is unused.
    The negatives of a tuple are the positives of the tuples of the other classes.

    One stable sort of the labels finds the tuples: O(B log B), no [B, B] mask. A
    batch has at most B // 2 tuples, so the result has that static size (XLA) and the
    losses work on T x T = (B / 2)^2 similarities, not B x B.

    Args:
        labels: class labels [B].

    Returns:
        ``(anchors [T] int32, positives [T] int32, valid [T] bool)`` with T = B // 2:
        tuple t is (anchors[t], positives[t]) where ``valid[t]``; the padding entries
        after the last tuple have ``valid`` False and anchor indices distinct from the
        real anchors.
    """
    size = tf.shape(labels)[0]
    index = tf.range(size)
    order = tf.argsort(labels, stable=True)
    ordered = tf.gather(labels, order)
    # Class boundaries of the sorted labels (slices, not tf.roll: a fraction of the time).
    one = tf.minimum(size, 1)
    change = tf.not_equal(ordered[1:], ordered[:-1])
    starts = tf.concat([tf.ones([one], tf.bool), change], 0)
    has_next = tf.concat([tf.logical_not(change), tf.zeros([one], tf.bool)], 0)
    class_of = tf.cumsum(tf.cast(starts, tf.int32)) - 1
    first = tf.gather(tf.math.unsorted_segment_min(index, class_of, size), class_of)
    is_anchor = tf.logical_and(tf.equal((index - first) % 2, 0), has_next)
    # The anchors first, then the rest, each in order: a permutation built by counting
    # and inverted (O(B); a second sort took as long as the first).
    anchors_before = tf.cumsum(tf.cast(is_anchor, tf.int32), exclusive=True)
    num_anchors = tf.reduce_sum(tf.cast(is_anchor, tf.int32))
    slots = tf.where(is_anchor, anchors_before, num_anchors + index - anchors_before)
    picks = tf.math.invert_permutation(slots)[: size // 2]
    anchors = tf.gather(order, picks)
    positives = tf.gather(order, tf.minimum(picks + 1, tf.maximum(size - 1, 0)))
    return anchors, positives, tf.gather(is_anchor, picks)
