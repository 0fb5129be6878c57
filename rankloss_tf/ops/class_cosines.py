"""Cosines between embeddings and per-class vectors (proxies, class weights), and class-label checks.

The proxy losses (``ops.proxy``) and the margin softmax losses (``ops.margin_softmax``)
are functions of the [B, C] cosines between the embeddings and one vector per class (the
largest over a class's sub-centres for sub-centre ArcFace). The Keras layer that owns
those vectors (``rankloss_tf.losses.ClassCosines``) outputs the same cosines.
"""

import tensorflow as tf

from rankloss_tf.ops.checks import standardize_inputs


def class_cosines(embeddings, weights):
    """Cosine similarities [B, C] of the embeddings and the class vectors.

    Args:
        embeddings: float [B, D].
        weights: float [C, D] (one vector per class) or [C, K, D] (K sub-centres per class:
            the largest cosine of the K).

    Returns:
        Float [B, C], computed on L2-normalised rows of both.

    Raises:
        ValueError: ``weights`` of another rank or dimension.

    Example:
    >>> class_cosines([[3.0, 4.0]], [[1.0, 0.0], [0.0, 2.0]]).numpy().round(2)
    array([[0.6, 0.8]], dtype=float32)
    """
    embeddings = tf.convert_to_tensor(embeddings)
    weights = tf.cast(tf.convert_to_tensor(weights), embeddings.dtype)
    if weights.shape.rank not in (2, 3) or weights.shape[-1] not in (None, embeddings.shape[-1]):
        raise ValueError("`weights` must have shape [num_classes, dim] or [num_classes, sub_centers, dim] with the "
                         f"embeddings' dim. Received: weights.shape={weights.shape}, embeddings.shape={embeddings.shape}")
    units = tf.math.l2_normalize(embeddings, axis=-1)
    centres = tf.math.l2_normalize(weights, axis=-1)
    if weights.shape.rank == 2:
        return tf.matmul(units, centres, transpose_b=True)
    return tf.reduce_max(tf.einsum("bd,ckd->bck", units, centres), axis=-1)


def class_batch(labels, cosines):
    """Checks a (labels, cosines) batch: ``(int32 labels [B], float cosines [B, C], valid [B], dtype)``.

    A label outside 0 .. C - 1 (a class count that does not match the labels) is a
    ``ValueError`` when the labels are known (eager), an ``InvalidArgumentError`` when a
    graph runs, and, under XLA (which drops assertions), a NaN loss for that sample.

    Example:
    >>> class_batch([2], [[0.1, 0.2]])
    Traceback (most recent call last):
    ...
    ValueError: Labels must be class ids 0 .. num_classes - 1 = 1 (the classes of the [B, C] cosines or of the proxies / weights). Received: labels from 2 to 2
    """
    dtype = tf.convert_to_tensor(cosines).dtype
    labels, cosines = standardize_inputs(labels, cosines)
    num_classes = cosines.shape[-1] if cosines.shape[-1] is not None else tf.shape(cosines)[-1]
    message = ("Labels must be class ids 0 .. num_classes - 1 = {} (the classes of the [B, C] cosines or of the "
               "proxies / weights). Received: labels from {} to {}")
    known = tf.get_static_value(labels)
    if known is not None and known.size and isinstance(num_classes, int):
        if known.min() < 0 or known.max() >= num_classes:
            raise ValueError(message.format(num_classes - 1, known.min(), known.max()))
    valid = tf.logical_and(labels >= 0, labels < tf.cast(num_classes, labels.dtype))
    if not tf.executing_eagerly():
        check = tf.debugging.Assert(tf.reduce_all(valid), [message.format("C - 1", "min", "max"), tf.reduce_min(labels),
                                                           tf.reduce_max(labels), num_classes])
        with tf.control_dependencies([check]):
            labels = tf.identity(labels)
    safe = tf.where(valid, labels, tf.zeros([], labels.dtype))
    return tf.cast(safe, tf.int32), cosines, valid, dtype


def float32_embeddings(embeddings):
    """Embeddings in float32 (float64 kept) for the math; the kernels return the input's dtype.

    Example:
    >>> float32_embeddings(tf.constant([[1.0]], tf.bfloat16)).dtype.name
    'float32'
    """
    embeddings = tf.convert_to_tensor(embeddings)
    return embeddings if embeddings.dtype in (tf.float32, tf.float64) else tf.cast(embeddings, tf.float32)
