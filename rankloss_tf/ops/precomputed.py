"""Losses on precomputed pair distances or similarity matrices (the inputs tfa and contrib take).

These kernels do not build distances from embeddings: the caller passes the distance of
each pair (contrastive) or the similarity matrix S = anchors @ positives^T (N-pair).
"""

import tensorflow as tf

from rankloss_tf.ops.checks import check_non_negative


def contrastive_from_distances(pair_labels, distances, margin=1.0):
    """Contrastive loss of pairs given their distances (Hadsell, Chopra, LeCun 2006).

        l = y d^2 + (1 - y) max(margin - d, 0)^2, elementwise,
    y = 1 for a pair of the same class, 0 otherwise.

    Args:
        pair_labels: binary labels [...] (cast to the dtype of ``distances``).
        distances: float distances [...] of the pairs, any shape matching ``pair_labels``.
        margin: float >= 0.

    Returns:
        The per-pair losses, shaped and typed like ``distances``.

    Example:
    >>> contrastive_from_distances([1.0, 0.0], [0.5, 0.5]).numpy().tolist()
    [0.25, 0.25]
    """
    margin = check_non_negative("margin", margin)
    distances = tf.convert_to_tensor(distances)
    pair_labels = tf.cast(pair_labels, distances.dtype)
    return pair_labels * tf.square(distances) + (1.0 - pair_labels) * tf.square(tf.maximum(margin - distances, 0.0))


def _softmax_targets_cross_entropy(affinity, similarity):
    """Row-wise softmax cross-entropy of ``similarity`` against ``affinity`` normalised to sum 1 per row."""
    targets = tf.math.divide_no_nan(affinity, tf.reduce_sum(affinity, axis=1, keepdims=True))
    return tf.nn.softmax_cross_entropy_with_logits(labels=targets, logits=similarity)


def _check_similarity(similarity):
    similarity = tf.convert_to_tensor(similarity)
    if similarity.shape.rank is not None and similarity.shape.rank != 2:
        raise ValueError(
            f"`similarity` must be a matrix [N, N]. Received: similarity.shape={similarity.shape}"
        )
    return similarity


def npairs_from_similarity(labels, similarity):
    """Multi-class N-pair loss of each anchor, from the similarity matrix (Sohn 2016).

    Row i of S = anchors @ positives^T is the logits of a softmax whose target spreads
    evenly over the columns j with labels[j] == labels[i]:
        l(i) = -sum_j t[i, j] log softmax(S[i])_j,  t[i, j] = [y_i = y_j] / #{k: y_k = y_i}.
    The mean of l over anchors is tfa's ``npairs_loss`` and the cross-entropy of contrib's.
    Labels are compared in their own dtype (int32 ids above 2**24 stay distinct).

    Reference: Sohn, "Improved Deep Metric Learning with Multi-class N-pair Loss
    Objective", NeurIPS 2016.

    Args:
        labels: class labels [N] (or [N, 1]) of the anchors.
        similarity: float [N, N].

    Returns:
        Per-anchor losses [N], dtype of ``similarity``.

    Example:
    >>> l = npairs_from_similarity([0, 1], [[1.0, 0.0], [0.0, 1.0]])
    >>> [round(float(v), 4) for v in l]
    [0.3133, 0.3133]
    """
    similarity = _check_similarity(similarity)
    labels = tf.reshape(tf.convert_to_tensor(labels), [-1])
    affinity = tf.cast(tf.equal(labels[:, None], labels[None, :]), similarity.dtype)
    return _softmax_targets_cross_entropy(affinity, similarity)


def npairs_multilabel_from_similarity(label_indicators, similarity):
    """Multi-label N-pair loss of each anchor, from the similarity matrix.

    With binary class indicators Y [N, C], the target of row i spreads over the columns
    in proportion to the number of classes they share with i:
        t[i, j] = (Y Y^T)[i, j] / sum_k (Y Y^T)[i, k],  l(i) = -sum_j t[i, j] log softmax(S[i])_j.
    With one class per row this is ``npairs_from_similarity``. A row without any class has
    no target and gives 0.

    Args:
        label_indicators: binary [N, C], dense (``tf.SparseTensor`` inputs are densified by
            the callers in ``rankloss_tf.compat``).
        similarity: float [N, N], S = anchors @ positives^T.

    Returns:
        Per-anchor losses [N], dtype of ``similarity``.

    Example:
    >>> l = npairs_multilabel_from_similarity([[1, 0], [0, 1]], [[1.0, 0.0], [0.0, 1.0]])
    >>> [round(float(v), 4) for v in l]
    [0.3133, 0.3133]
    """
    similarity = _check_similarity(similarity)
    indicators = tf.cast(label_indicators, similarity.dtype)
    if indicators.shape.rank is not None and indicators.shape.rank != 2:
        raise ValueError(
            f"`label_indicators` must be a matrix [N, num_classes]. Received: shape={indicators.shape}"
        )
    return _softmax_targets_cross_entropy(tf.matmul(indicators, indicators, transpose_b=True), similarity)


def npairs_l2_regularizer(anchors, positives, reg_lambda):
    """contrib's N-pair embedding regulariser: 0.25 reg_lambda (mean_i ||a_i||^2 + mean_i ||p_i||^2).

    Args:
        anchors: float [N, D].
        positives: float [N, D].
        reg_lambda: float >= 0.

    Returns:
        Scalar, dtype of ``anchors``.

    Example:
    >>> float(npairs_l2_regularizer([[2.0, 0.0]], [[0.0, 0.0]], 1.0))
    1.0
    """
    reg_lambda = check_non_negative("reg_lambda", reg_lambda)
    anchors, positives = tf.convert_to_tensor(anchors), tf.convert_to_tensor(positives)
    squared_norms = tf.reduce_mean(tf.reduce_sum(tf.square(anchors), axis=1)) + tf.reduce_mean(
        tf.reduce_sum(tf.square(tf.cast(positives, anchors.dtype)), axis=1)
    )
    return 0.25 * reg_lambda * squared_norms
