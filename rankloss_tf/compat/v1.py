"""TF 1.x ``tf.contrib.losses.metric_learning`` functions, for graph and Session code.

Same names, signatures and numbers as TF 1.15's contrib module; every function returns a
scalar and works eagerly, in ``tf.function``, and in TF 1.x graph mode with placeholders and
a ``tf.compat.v1.Session`` (after ``tf.compat.v1.disable_eager_execution()``):

    import rankloss_tf.compat.v1 as metric_learning
    loss = metric_learning.triplet_semihard_loss(labels, embeddings, margin=1.0)
    train_op = tf.compat.v1.train.AdamOptimizer(1e-3).minimize(loss)

Each function is a rename over ``rankloss_tf.ops`` kernels (this module imports no Keras).
Differences from contrib: where contrib returned NaN (a batch without a positive pair,
or with a single class for ``lifted_struct_loss``), these return 0; the gradient of a
zero distance is 0, not NaN; semi-hard mining and the lifted loss use O(B^2) memory
instead of O(B^3); ``cluster_loss`` runs in TensorFlow (no ``py_func`` to scikit-learn, no
summaries) and has no "ami" margin.

``angular_loss`` and ``npair_angular_loss`` (Wang et al. 2017) are added in the style of
contrib's ``npairs_loss``: ``labels`` [N] and N (anchor, positive) embedding pairs.
"""

import tensorflow as tf

from rankloss_tf.ops import facility_location, lifted, precomputed
from rankloss_tf.ops import losses as kernels
from rankloss_tf.ops.distances import pairwise_distances, safe_sqrt
from rankloss_tf.ops.checks import standardize_inputs

__all__ = [
    "angular_loss",
    "cluster_loss",
    "contrastive_loss",
    "lifted_struct_loss",
    "npair_angular_loss",
    "npairs_loss",
    "npairs_loss_multilabel",
    "pairwise_distance",
    "triplet_semihard_loss",
]


def _pairs(labels, embeddings_anchor, embeddings_positive):
    """Checks N (anchor, positive) pairs; returns ``(labels [N], anchors, positives)`` in float32/64."""
    labels, anchors = standardize_inputs(labels, embeddings_anchor)
    _, positives = standardize_inputs(labels, embeddings_positive)
    if anchors.shape[1] is not None and positives.shape[1] is not None and anchors.shape[1] != positives.shape[1]:
        raise ValueError(
            "`embeddings_anchor` and `embeddings_positive` must have the same dimension. "
            f"Received: embeddings_anchor.shape={anchors.shape}, embeddings_positive.shape={positives.shape}"
        )
    return labels, anchors, tf.cast(positives, anchors.dtype)


def _interleave(labels, anchors, positives):
    """The batch [a_0, p_0, a_1, p_1, ...] with labels [l_0, l_0, l_1, l_1, ...]."""
    embeddings = tf.reshape(tf.stack([anchors, positives], axis=1), [-1, tf.shape(anchors)[1]])
    return tf.repeat(labels, 2), embeddings


def triplet_semihard_loss(labels, embeddings, margin=1.0):
    """contrib's ``triplet_semihard_loss``: semi-hard mining on squared L2 distances.

    As in TF 1.x contrib, D is the squared Euclidean distance. For every ordered positive
    pair (a, p), n* is the closest negative with D[a, n] > D[a, p], else the farthest:
        loss = mean over positive pairs of max(D[a, p] - D[a, n*] + margin, 0).
    Equals ``rankloss_tf.ops.triplet_semihard_loss(..., distance="squared_l2")`` averaged.

    Reference: Schroff et al., "FaceNet", CVPR 2015.

    Args:
        labels: integer class labels [B].
        embeddings: float [B, D] (contrib expected them L2-normalised).
        margin: float >= 0.

    Returns:
        Scalar loss, the dtype of ``embeddings``.

    Example:
    >>> round(float(triplet_semihard_loss([0, 0], [[0.0, 1.0], [1.0, 0.0]])), 4)
    3.0
    """
    return tf.reduce_mean(kernels.triplet_semihard_loss(labels, embeddings, margin=margin, distance="squared_l2"))


def contrastive_loss(labels, embeddings_anchor, embeddings_positive, margin=1.0):
    """contrib's ``contrastive_loss`` on N pairs of embeddings (Hadsell et al. 2006).

    With d_i = ||a_i - p_i|| (not squared) and binary pair labels y_i (1 = same class):
        loss = mean_i [y_i d_i^2 + (1 - y_i) max(margin - d_i, 0)^2].

    Args:
        labels: binary pair labels [N].
        embeddings_anchor: float [N, D].
        embeddings_positive: float [N, D], the second embedding of each pair.
        margin: float >= 0.

    Returns:
        Scalar loss.

    Example:
    >>> float(contrastive_loss([1, 0], [[0.0, 0.0], [0.0, 0.0]], [[0.5, 0.0], [0.5, 0.0]]))
    0.25
    """
    dtype = tf.convert_to_tensor(embeddings_anchor).dtype
    labels, anchors, positives = _pairs(labels, embeddings_anchor, embeddings_positive)
    distances = safe_sqrt(tf.reduce_sum(tf.square(anchors - positives), axis=1))
    return tf.cast(tf.reduce_mean(precomputed.contrastive_from_distances(labels, distances, margin)), dtype)


def npairs_loss(labels, embeddings_anchor, embeddings_positive, reg_lambda=0.002, print_losses=False):
    """contrib's ``npairs_loss`` (Sohn 2016): cross-entropy of anchor-positive similarities.

    S = anchors @ positives^T; row i is the logits of a softmax whose target spreads
    evenly over the columns j with labels[j] == labels[i]. Plus the L2 regulariser
        0.25 * reg_lambda * (mean_i ||a_i||^2 + mean_i ||p_i||^2).

    Reference: Sohn, "Improved Deep Metric Learning with Multi-class N-pair Loss
    Objective", NeurIPS 2016.

    Args:
        labels: class labels [N] of the pairs.
        embeddings_anchor: float [N, D] (not normalised).
        embeddings_positive: float [N, D].
        reg_lambda: regulariser weight, >= 0.
        print_losses: log the cross-entropy and the regulariser (INFO level) when the
            loss is evaluated.

    Returns:
        Scalar loss.

    Example:
    >>> round(float(npairs_loss([0, 1], [[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]], reg_lambda=0.0)), 4)
    0.3133
    """
    dtype = tf.convert_to_tensor(embeddings_anchor).dtype
    labels, anchors, positives = _pairs(labels, embeddings_anchor, embeddings_positive)
    similarity = tf.matmul(anchors, positives, transpose_b=True)
    cross_entropy = tf.reduce_mean(precomputed.npairs_from_similarity(labels, similarity))
    l2_loss = precomputed.npairs_l2_regularizer(anchors, positives, reg_lambda)
    return tf.cast(_logged(cross_entropy, l2_loss, print_losses), dtype)


def _logged(cross_entropy, l2_loss, print_losses):
    """``cross_entropy + l2_loss``, logging both (INFO) when evaluated if ``print_losses``."""
    if print_losses:
        logged = tf.print(
            "cross entropy:", cross_entropy, "l2loss:", l2_loss, output_stream=tf.compat.v1.logging.info
        )
        with tf.control_dependencies([logged]):
            cross_entropy = tf.identity(cross_entropy)
    return l2_loss + cross_entropy


def _dense_label_rows(sparse_labels):
    """contrib's list of N 1-D `SparseTensor`s [C] -> dense indicators [N, C] (float32)."""
    if isinstance(sparse_labels, tf.SparseTensor) or not all(
        isinstance(row, tf.SparseTensor) for row in sparse_labels
    ):
        raise TypeError(
            f"`sparse_labels` must be a list of 1-D SparseTensors. Received: sparse_labels={sparse_labels!r}"
        )
    return tf.stack([tf.sparse.to_dense(tf.sparse.reorder(tf.cast(row, tf.float32))) for row in sparse_labels])


def npairs_loss_multilabel(
    sparse_labels, embeddings_anchor, embeddings_positive, reg_lambda=0.002, print_losses=False
):
    """contrib's ``npairs_loss_multilabel``: N-pair loss with several classes per pair.

    The target of anchor i spreads over the positives j in proportion to the number of
    classes they share, |Y_i intersect Y_j| (normalised per row), plus the regulariser of
    ``npairs_loss``. With one class per pair it equals ``npairs_loss``.

    Args:
        sparse_labels: list of N 1-D `tf.SparseTensor`s of dense shape [num_classes], the
            binary class indicators of each pair.
        embeddings_anchor: float [N, D] (not normalised).
        embeddings_positive: float [N, D].
        reg_lambda: regulariser weight, >= 0.
        print_losses: log the cross-entropy and the regulariser (INFO) when evaluated.

    Returns:
        Scalar loss.

    Raises:
        TypeError: ``sparse_labels`` is not a list of ``tf.SparseTensor`` (as contrib).

    Example:
    >>> rows = [tf.sparse.from_dense([1.0, 0.0]), tf.sparse.from_dense([0.0, 1.0])]
    >>> eye = [[1.0, 0.0], [0.0, 1.0]]
    >>> round(float(npairs_loss_multilabel(rows, eye, eye, reg_lambda=0.0)), 4)
    0.3133
    """
    indicators = _dense_label_rows(sparse_labels)
    dtype = tf.convert_to_tensor(embeddings_anchor).dtype
    # One row of class indicators per pair: they stand in for the labels in the shape checks.
    _, anchors, positives = _pairs(tf.range(len(sparse_labels)), embeddings_anchor, embeddings_positive)
    similarity = tf.matmul(anchors, positives, transpose_b=True)
    cross_entropy = tf.reduce_mean(precomputed.npairs_multilabel_from_similarity(indicators, similarity))
    l2_loss = precomputed.npairs_l2_regularizer(anchors, positives, reg_lambda)
    return tf.cast(_logged(cross_entropy, l2_loss, print_losses), dtype)


def lifted_struct_loss(labels, embeddings, margin=1.0):
    """contrib's ``lifted_struct_loss`` (Oh Song et al. 2016), on L2 distances.

    For every positive pair (i, j), i != j, with D the Euclidean distance:
        J_ij = log(sum_{k in N(i)} exp(margin - D_ik) + sum_{l in N(j)} exp(margin - D_jl)) + D_ij,
        loss = 1/(2 P) * sum over ordered positive pairs of max(J_ij, 0)^2,
    with P the number of ordered positive pairs (contrib's 0.25 / (P / 2)). The sums
    are computed as per-row log-sum-exps, in O(B^2) memory (contrib tiles [B^2, B]).

    Reference: Oh Song, Xiang, Jegelka, Savarese, "Deep Metric Learning via Lifted
    Structured Feature Embedding", CVPR 2016.

    Args:
        labels: integer class labels [B].
        embeddings: float [B, D] (not normalised).
        margin: float >= 0.

    Returns:
        Scalar loss; 0 without a positive pair or without any negative pair.

    Example:
    >>> round(float(lifted_struct_loss([0, 0, 1], [[0.0, 0.0], [1.0, 0.0], [0.0, 1.5]])), 4)
    0.5546
    """
    dtype = tf.convert_to_tensor(embeddings).dtype
    return tf.cast(tf.reduce_mean(lifted.lifted_struct_loss(labels, embeddings, margin=margin)), dtype)


def pairwise_distance(feature, squared=False):
    """contrib's ``pairwise_distance``: L2 (or squared L2) distances [B, B], zero diagonal.

    Example:
    >>> pairwise_distance([[0.0, 0.0], [3.0, 4.0]], squared=True).numpy().tolist()
    [[0.0, 25.0], [25.0, 0.0]]
    """
    return pairwise_distances(tf.convert_to_tensor(feature), "squared_l2" if squared else "l2")


def cluster_loss(
    labels, embeddings, margin_multiplier, enable_pam_finetuning=True, margin_type="nmi", print_losses=False
):
    """contrib's ``cluster_loss``: the facility-location clustering loss (Song et al. 2017).

    ``rankloss_tf.ops.facility_location.cluster_loss``: loss-augmented greedy medoids (one
    per class), optionally refined by PAM, against the classes' own best medoids:
        loss = max(F(S*) + margin_multiplier (1 - NMI(y, S*)) - F_gt, 0),
    F the negated sum of L2 distances to the nearest medoid.

    Reference: Song, Jegelka, Rathod, Murphy, "Deep Metric Learning via Facility
    Location", CVPR 2017.

    Args:
        labels: class labels [B] or [B, 1].
        embeddings: float [B, D] (contrib expected them L2-normalised).
        margin_multiplier: weight of the structured margin, >= 0.
        enable_pam_finetuning: refine the medoids with PAM swaps.
        margin_type: "nmi" (default), "vmeasure", "ari" or "const" (contrib's "ami" is
            not provided).
        print_losses: log the loss (INFO) when evaluated.

    Returns:
        Scalar loss.

    Example:
    >>> float(cluster_loss([0, 0, 1, 1], [[0.0, 0.0], [0.1, 0.0], [1.0, 1.0], [1.1, 1.0]], 1.0))
    0.0
    """
    loss = facility_location.cluster_loss(
        labels, embeddings, margin_multiplier, enable_pam_finetuning=enable_pam_finetuning, margin_type=margin_type
    )
    if print_losses:
        logged = tf.print("clustering_loss:", loss, output_stream=tf.compat.v1.logging.info)
        with tf.control_dependencies([logged]):
            loss = tf.identity(loss)
    return loss


def angular_loss(labels, embeddings_anchor, embeddings_positive, alpha=45.0):
    """Angular loss (Wang et al. 2017, Eq. 8) on N (anchor, positive) pairs, contrib style.

    The pairs form the batch [a_0, p_0, a_1, p_1, ...] (pair i has class labels[i]); on
    L2-normalised embeddings, with t = tan^2(alpha), every ordered positive pair (x, y) of
    that batch and every sample n of another class,
        loss = mean over (x, y) of log(1 + sum_n exp(4t (x + y).n - 2(1 + t) x.y)),
    i.e. ``rankloss_tf.ops.angular_loss`` on that batch.

    Reference: Wang, Zhou, Wen, Liu, Lin, "Deep Metric Learning with Angular Loss", ICCV 2017.

    Args:
        labels: class labels [N] of the pairs.
        embeddings_anchor: float [N, D].
        embeddings_positive: float [N, D].
        alpha: angle bound in degrees, 0 < alpha < 90.

    Returns:
        Scalar loss.

    Example:
    >>> round(float(angular_loss([0, 1], [[1.0, 0.0], [0.0, 1.0]], [[0.8, 0.6], [-0.6, 0.8]])), 4)
    0.3736
    """
    dtype = tf.convert_to_tensor(embeddings_anchor).dtype
    batch_labels, batch = _interleave(*_pairs(labels, embeddings_anchor, embeddings_positive))
    return tf.cast(tf.reduce_mean(kernels.angular_loss(batch_labels, batch, alpha=alpha)), dtype)


def npair_angular_loss(labels, embeddings_anchor, embeddings_positive, alpha=45.0, lam=2.0):
    """N-pair loss + lam * angular loss on N (anchor, positive) pairs (Wang et al. 2017, Eq. 9).

    For anchor a_i, its positive p_i and the positives p_j of the pairs of other classes:
        l(i) = log(1 + sum_j exp(a_i.p_j - a_i.p_i))
               + lam * log(1 + sum_j exp(4t (x_ai + x_pi).x_pj - 2(1 + t) x_ai.x_pi)),
    x the L2-normalised embeddings, t = tan^2(alpha); the loss is the mean over pairs (no
    L2 regulariser), i.e. ``rankloss_tf.ops.npair_angular_loss`` on [a_0, p_0, a_1, p_1, ...].

    Reference: Wang et al., "Deep Metric Learning with Angular Loss", ICCV 2017.

    Args:
        labels: class labels [N] of the pairs.
        embeddings_anchor: float [N, D] (not normalised).
        embeddings_positive: float [N, D].
        alpha: angle in degrees, 0 < alpha < 90.
        lam: weight of the angular term, >= 0.

    Returns:
        Scalar loss.

    Example:
    >>> round(float(npair_angular_loss([0, 1], [[1.0, 0.0], [0.0, 1.0]], [[0.8, 0.6], [-0.6, 0.8]])), 4)
    0.7841
    """
    dtype = tf.convert_to_tensor(embeddings_anchor).dtype
    batch_labels, batch = _interleave(*_pairs(labels, embeddings_anchor, embeddings_positive))
    return tf.cast(tf.reduce_mean(kernels.npair_angular_loss(batch_labels, batch, alpha=alpha, lam=lam)), dtype)
