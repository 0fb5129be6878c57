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

    Args:
        labels: class labels [B].

    Returns:
        `(is_anchor [B] bool, is_positive [B] bool, partner [B] int32,
        negatives [B, B] bool)`: `partner[i]` is the index of anchor i's positive
        (meaningful where `is_anchor`), and `negatives[i, j]` is True when i is an
        anchor and j a positive of another class.
    """
    same = same_label_mask(labels)
    index = tf.range(tf.shape(labels)[0])
    earlier = index[:, None] > index[None, :]
    rank = tf.reduce_sum(tf.cast(tf.logical_and(same, earlier), tf.int32), axis=1)
    is_next = tf.logical_and(same, tf.equal(rank[None, :], rank[:, None] + 1))
    is_anchor = tf.logical_and(tf.equal(rank % 2, 0), tf.reduce_any(is_next, axis=1))
    partner = tf.argmax(tf.cast(is_next, tf.int32), axis=1, output_type=tf.int32)
    is_positive = tf.equal(rank % 2, 1)
    negatives = tf.logical_and(
        tf.logical_and(is_anchor[:, None], is_positive[None, :]), tf.logical_not(same)
    )
    return is_anchor, is_positive, partner, negatives
