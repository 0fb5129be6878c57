"""Input checks and label masks shared by the loss kernels."""

import tensorflow as tf

_HALF_DTYPES = (tf.float16, tf.bfloat16)


def standardize_inputs(labels, embeddings):
    """Checks and reshapes a (labels, embeddings) batch for a loss kernel.

    Labels are compared exactly in their own dtype (never cast through float32), so
    int32 class ids such as 2**24 and 2**24 + 1 stay distinct.

    Args:
        labels: integer (or float) class labels, shape [B] or [B, 1].
        embeddings: float tensor [B, D].

    Returns:
        `(labels [B], embeddings [B, D] in float32, or float64 for float64 input)`.

    Raises:
        ValueError: wrong ranks, a non-float `embeddings`, or mismatched batch sizes.
    """
    embeddings = tf.convert_to_tensor(embeddings)
    labels = tf.convert_to_tensor(labels)
    if not embeddings.dtype.is_floating:
        raise ValueError(
            "`embeddings` must be a float tensor. "
            f"Received: embeddings.dtype={embeddings.dtype.name}"
        )
    if embeddings.shape.rank is not None and embeddings.shape.rank != 2:
        raise ValueError(
            "`embeddings` must have shape [batch_size, dim]. "
            f"Received: embeddings.shape={embeddings.shape}"
        )
    if labels.shape.rank is not None:
        if labels.shape.rank == 2 and labels.shape[1] == 1:
            labels = tf.reshape(labels, [-1])
        elif labels.shape.rank != 1:
            raise ValueError(
                "`labels` must have shape [batch_size] or [batch_size, 1]. "
                f"Received: labels.shape={labels.shape}"
            )
    else:
        labels = tf.reshape(labels, [-1])
    n_labels, n_embeddings = labels.shape[0], embeddings.shape[0]
    if n_labels is not None and n_embeddings is not None and n_labels != n_embeddings:
        raise ValueError(
            "`labels` and `embeddings` must have the same batch size. "
            f"Received: labels.shape={labels.shape}, embeddings.shape={embeddings.shape}"
        )
    if embeddings.dtype in _HALF_DTYPES:
        embeddings = tf.cast(embeddings, tf.float32)
    return labels, embeddings


def same_label_mask(labels):
    """`mask[i, j] = labels[i] == labels[j]`, bool [B, B] (diagonal True)."""
    return tf.equal(labels[:, None], labels[None, :])


def positive_mask(labels):
    """`mask[a, p]`: same label and a != p, bool [B, B]."""
    same = same_label_mask(labels)
    return tf.logical_and(same, tf.logical_not(tf.eye(tf.shape(labels)[0], dtype=tf.bool)))


def negative_mask(labels):
    """`mask[a, n]`: different labels, bool [B, B]."""
    return tf.logical_not(same_label_mask(labels))


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
        `(anchors [T] int32, positives [T] int32, valid [T] bool)` with T = B // 2:
        tuple t is (anchors[t], positives[t]) where `valid[t]`; the padding entries
        after the last tuple have `valid` False and anchor indices distinct from the
        real anchors.
    """
    size = tf.shape(labels)[0]
    index = tf.range(size)
    order = tf.argsort(labels, stable=True)
    ordered = tf.gather(labels, order)
    starts = tf.logical_or(tf.equal(index, 0), tf.not_equal(ordered, tf.roll(ordered, 1, axis=0)))
    class_of = tf.cumsum(tf.cast(starts, tf.int32)) - 1
    first = tf.gather(tf.math.unsorted_segment_min(index, class_of, size), class_of)
    has_next = tf.logical_and(index < size - 1, tf.equal(ordered, tf.roll(ordered, -1, axis=0)))
    is_anchor = tf.logical_and(tf.equal((index - first) % 2, 0), has_next)
    picks = tf.argsort(tf.cast(tf.logical_not(is_anchor), tf.int32), stable=True)[: size // 2]
    anchors = tf.gather(order, picks)
    positives = tf.gather(order, tf.minimum(picks + 1, tf.maximum(size - 1, 0)))
    return anchors, positives, tf.gather(is_anchor, picks)
