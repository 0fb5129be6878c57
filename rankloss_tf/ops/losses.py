"""Loss kernels: `(labels, embeddings, **params) -> per-anchor losses [B]`.

Each kernel returns a vector whose mean is the documented loss, so Keras' reduction
(and its per-replica scaling under `tf.distribute`) gives the right value. Math runs in
float32 (float64 input stays float64); the result has the dtype of `embeddings`.
Batches without a valid tuple give 0 with zero, finite gradients.
"""

import math

import tensorflow as tf

from rankloss_tf.ops.angular import angular_pair_losses
from rankloss_tf.ops.distances import check_distance, pairwise_distances
from rankloss_tf.ops.masks import (
    negative_mask,
    npair_tuples,
    positive_mask,
    standardize_inputs,
)
from rankloss_tf.ops.mining import hardest_negative, hardest_positive, semihard_negatives

NPAIR_VARIANTS = ("mc", "ovo")


def check_margin(margin):
    """Returns `margin` as a float if it is finite and >= 0, else raises ValueError."""
    return check_non_negative("margin", margin)


def check_alpha(alpha):
    """Returns `alpha` (degrees) as a float if 0 < alpha < 90, else raises ValueError."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < alpha < 90.0:
        raise ValueError(
            f"`alpha` must be an angle in degrees with 0 < alpha < 90. Received: alpha={alpha!r}"
        )
    return float(alpha)


def check_non_negative(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"`{name}` must be a finite number >= 0. Received: {name}={value!r}")
    return float(value)


def _per_anchor_mean(numerators, count):
    """Scales per-anchor sums so that their mean over the batch is `sum / count` (0 if count is 0)."""
    batch_size = tf.cast(tf.shape(numerators)[0], numerators.dtype)
    return tf.math.divide_no_nan(numerators * batch_size, tf.cast(count, numerators.dtype))


def log1p_sum_exp(logits, mask):
    """Row-wise `log(1 + sum_j mask[i, j] * exp(logits[i, j]))`, stable, finite gradients.

    Args:
        logits: float [B, N].
        mask: bool [B, N].

    Returns:
        Float [B]; 0 for a row without masked entries.
    """
    lowest = tf.constant(-float("inf"), logits.dtype)
    masked = tf.where(mask, logits, lowest)
    shift = tf.stop_gradient(tf.maximum(tf.reduce_max(masked, axis=1), 0.0))
    total = tf.exp(-shift) + tf.reduce_sum(tf.exp(masked - shift[:, None]), axis=1)
    return shift + tf.math.log(total)


def distances_and_masks(labels, embeddings, distance, reference_labels=None, reference_embeddings=None):
    """Distances and positive / negative masks of a batch against itself or a reference set.

    Args:
        labels: class labels [B] or [B, 1].
        embeddings: float [B, D].
        distance: "l2", "squared_l2" or "cosine".
        reference_labels: optional labels [R] of a reference set (e.g. the gallery, or
            the other modality in cross-modal retrieval); given with
            `reference_embeddings` [R, D]. Anchors then come from the batch and
            positives / negatives from the reference set.

    Returns:
        `(distances [B, R], positives [B, R], negatives [B, R], dtype)`, R = B without a
        reference set (then the anchor itself is neither positive nor negative), and
        `dtype` the dtype of `embeddings` for the result.

    Raises:
        ValueError: bad shapes, or only one of the two reference arguments.
    """
    dtype = tf.convert_to_tensor(embeddings).dtype
    labels, embeddings = standardize_inputs(labels, embeddings)
    if reference_labels is None and reference_embeddings is None:
        distances = pairwise_distances(embeddings, distance)
        return distances, positive_mask(labels), negative_mask(labels), dtype
    if reference_labels is None or reference_embeddings is None:
        raise ValueError(
            "`reference_labels` and `reference_embeddings` go together. Received: "
            f"reference_labels is None: {reference_labels is None}, "
            f"reference_embeddings is None: {reference_embeddings is None}"
        )
    reference_labels, reference_embeddings = standardize_inputs(reference_labels, reference_embeddings)
    if embeddings.shape[-1] is not None and reference_embeddings.shape[-1] not in (None, embeddings.shape[-1]):
        raise ValueError(
            "`embeddings` and `reference_embeddings` must have the same dimension. "
            f"Received: embeddings.shape={embeddings.shape}, "
            f"reference_embeddings.shape={reference_embeddings.shape}"
        )
    reference_embeddings = tf.cast(reference_embeddings, embeddings.dtype)
    same = tf.equal(labels[:, None], tf.cast(reference_labels, labels.dtype)[None, :])
    distances = pairwise_distances(embeddings, distance, reference=reference_embeddings)
    return distances, same, tf.logical_not(same), dtype


def semihard_from_distances(distances, positives, negatives, margin):
    """Per-anchor semi-hard triplet losses (tfa's rule) from a distance matrix [B, B].

    As in tfa, the pairs of an anchor without any negative are compared with the anchor
    itself (distance 0) in place of a negative.
    """
    negative_distance, has_negative = semihard_negatives(distances, positives, negatives)
    negative_distance = tf.where(has_negative[:, None], negative_distance, tf.zeros([], negative_distance.dtype))
    pair_losses = tf.maximum(distances - negative_distance + margin, 0.0)
    pair_losses = tf.where(positives, pair_losses, tf.zeros([], pair_losses.dtype))
    num_pairs = tf.reduce_sum(tf.cast(positives, tf.int32))
    return _per_anchor_mean(tf.reduce_sum(pair_losses, axis=1), num_pairs)


def triplet_semihard_loss(
    labels, embeddings, margin=1.0, distance="l2", reference_labels=None, reference_embeddings=None
):
    """Triplet loss with semi-hard negative mining (FaceNet), tfa 0.23's rule.

    For every ordered positive pair (a, p), the negative n* is the closest n with a
    different label and D[a, n] > D[a, p]; if none, the farthest negative of a:
        l(a, p) = max(D[a, p] - D[a, n*] + margin, 0),
            loss = sum over positive pairs of l(a, p) / number of positive pairs.
    As in tfa, an anchor without any negative in the batch compares its pairs with
    itself (D[a, a] = 0 in place of D[a, n*]). A batch without a positive pair gives 0
    (tfa: NaN).

    Memory O(B^2), time O(B^2 log B): tfa's version builds a [B * B, B] tensor.

    Reference: Schroff, Kalenichenko, Philbin, "FaceNet", CVPR 2015.

    Args:
        labels: class labels [B] or [B, 1].
        embeddings: float [B, D].
        margin: float >= 0.
        distance: "l2" (default, not squared), "squared_l2" or "cosine".
        reference_labels: optional labels [R] of a reference set, with
            `reference_embeddings` [R, D]: positives and negatives are then taken from
            it (query vs gallery, or cross-modal: image anchors vs text references).
            See `distances_and_masks`.

    Returns:
        Per-anchor losses [B] whose mean is the loss, dtype of `embeddings`.

    Example:
        >>> loss = triplet_semihard_loss([0, 0], [[0.0, 1.0], [1.0, 0.0]])
        >>> round(float(tf.reduce_mean(loss)), 4)
        2.4142
    """
    margin, distance = check_margin(margin), check_distance(distance)
    distances, positives, negatives, dtype = distances_and_masks(
        labels, embeddings, distance, reference_labels, reference_embeddings
    )
    return tf.cast(semihard_from_distances(distances, positives, negatives, margin), dtype)


def hard_from_distances(distances, positives, negatives, margin, soft, skip_anchors_without_positive=True):
    """Per-anchor batch-hard triplet losses (tfa's rule) from a distance matrix [B, B].

    As in tfa, an anchor without a negative takes the row's largest distance as its
    hardest negative. An anchor without a positive contributes 0, unless
    `skip_anchors_without_positive=False`, which reproduces tfa exactly (the row's
    smallest distance, the anchor itself, stands in for the positive).
    """
    positive_distance, has_positive = hardest_positive(distances, positives)
    negative_distance, has_negative = hardest_negative(distances, negatives)
    positive_distance = tf.where(has_positive, positive_distance, tf.reduce_min(distances, axis=1))
    negative_distance = tf.where(has_negative, negative_distance, tf.reduce_max(distances, axis=1))
    gap = positive_distance - negative_distance
    losses = tf.math.softplus(gap) if soft else tf.maximum(gap + margin, 0.0)
    if skip_anchors_without_positive:
        losses = tf.where(has_positive, losses, tf.zeros([], losses.dtype))
    return losses


def triplet_hard_loss(
    labels, embeddings, margin=1.0, soft=False, distance="l2", reference_labels=None, reference_embeddings=None
):
    """Batch-hard triplet loss: hardest positive and hardest negative of every anchor.

        l(a) = max(max_{p in P(a)} D[a, p] - min_{n in N(a)} D[a, n] + margin, 0),
    or, with `soft=True`, softplus(max D[a, p] - min D[a, n]). The loss is the mean
    over anchors. As in tfa, an anchor without a negative uses its largest distance as
    min D[a, n]. An anchor without a positive contributes 0, so a batch without a
    positive pair gives 0 (tfa instead uses D[a, a] = 0 as its positive distance; the
    `rankloss_tf.compat.tfa` version does too).

    Reference: Hermans, Beyer, Leibe, "In Defense of the Triplet Loss", 2017.

    Args:
        labels: class labels [B] or [B, 1].
        embeddings: float [B, D].
        margin: float >= 0 (unused when `soft`).
        soft: use the soft-margin form.
        distance: "l2", "squared_l2" or "cosine".
        reference_labels: optional labels [R] of a reference set, with
            `reference_embeddings` [R, D]: positives and negatives are then taken from
            it (query vs gallery, or cross-modal: image anchors vs text references).
            See `distances_and_masks`.

    Returns:
        Per-anchor losses [B], dtype of `embeddings`.

    Example:
        >>> loss = triplet_hard_loss([0, 0], [[0.0, 1.0], [1.0, 0.0]])
        >>> float(tf.reduce_mean(loss))
        1.0
    """
    margin, distance = check_margin(margin), check_distance(distance)
    distances, positives, negatives, dtype = distances_and_masks(
        labels, embeddings, distance, reference_labels, reference_embeddings
    )
    return tf.cast(hard_from_distances(distances, positives, negatives, margin, bool(soft)), dtype)


def contrastive_loss(
    labels, embeddings, margin=1.0, distance="l2", reference_labels=None, reference_embeddings=None
):
    """Contrastive loss over all pairs of the batch (Hadsell, Chopra, LeCun 2006).

    For a pair (a, b), a != b, with d = D[a, b]:
        l(a, b) = d^2 if labels match, else max(margin - d, 0)^2
    (tfa's per-pair form, without the 1/2). Per anchor: the mean over its B - 1 pairs
    (or over the R references).
    Unlike the triplet losses, a batch of negatives only still has a loss: every pair
    of the batch is a valid pair.

    Args:
        labels: class labels [B] or [B, 1].
        embeddings: float [B, D].
        margin: float >= 0.
        distance: "l2", "squared_l2" or "cosine".
        reference_labels: optional labels [R] of a reference set, with
            `reference_embeddings` [R, D]: positives and negatives are then taken from
            it (query vs gallery, or cross-modal: image anchors vs text references).
            See `distances_and_masks`.

    Returns:
        Per-anchor losses [B], dtype of `embeddings`.

    Example:
        >>> loss = contrastive_loss([0, 1], [[0.0, 0.0], [0.6, 0.8]], margin=2.0)
        >>> round(float(tf.reduce_mean(loss)), 4)
        1.0
    """
    margin, distance = check_margin(margin), check_distance(distance)
    distances, positives, negatives, dtype = distances_and_masks(
        labels, embeddings, distance, reference_labels, reference_embeddings
    )
    zeros = tf.zeros([], distances.dtype)
    pair_losses = tf.where(positives, tf.square(distances), zeros)
    pair_losses += tf.where(negatives, tf.square(tf.maximum(margin - distances, 0.0)), zeros)
    num_pairs = tf.reduce_sum(tf.cast(tf.logical_or(positives, negatives), distances.dtype), axis=1)
    return tf.cast(tf.math.divide_no_nan(tf.reduce_sum(pair_losses, axis=1), num_pairs), dtype)


def _npair_terms(similarity, negatives, variant):
    """Per-tuple N-pair term from S [T, T] = anchors . positives: logits S[i, j] - S[i, i]."""
    logits = similarity - tf.linalg.diag_part(similarity)[:, None]
    if variant == "mc":
        return log1p_sum_exp(logits, negatives)
    softplus = tf.math.softplus(logits)
    return tf.reduce_sum(tf.where(negatives, softplus, tf.zeros([], softplus.dtype)), axis=1)


@tf.custom_gradient
def _gather_rows(params, indices):
    """`tf.gather(params, indices)` with a dense gradient (a sum over repeated rows).

    `tf.gather` alone hands a `tf.IndexedSlices` gradient to a `tf.Variable` input.
    """

    def gradient(upstream):
        return tf.math.unsorted_segment_sum(upstream, indices, tf.shape(params)[0]), None

    return tf.gather(params, indices), gradient


def _tuple_batch(labels, embeddings):
    """N-pair tuples of a batch: anchors, positives [T, D], valid [T] and negatives [T, T]."""
    anchors, positives, valid = npair_tuples(labels)
    tuple_labels = tf.gather(labels, anchors)
    negatives = tf.logical_and(
        tf.logical_and(valid[:, None], valid[None, :]),
        tf.not_equal(tuple_labels[:, None], tuple_labels[None, :]),
    )
    return anchors, _gather_rows(embeddings, anchors), _gather_rows(embeddings, positives), valid, negatives


def _tuple_losses_to_anchors(terms, valid, anchors, batch_size):
    """Per-tuple terms [T] -> per-anchor losses [B] whose mean is the mean over tuples."""
    terms = tf.where(valid, terms, tf.zeros([], terms.dtype))
    losses = tf.scatter_nd(anchors[:, None], terms, batch_size[None])
    return _per_anchor_mean(losses, tf.reduce_sum(tf.cast(valid, tf.int32)))


def npair_loss(labels, embeddings, variant="mc", l2_reg=0.002):
    """Multi-class N-pair loss (Sohn 2016), on a batch of (anchor, positive) tuples.

    Tuples come from the batch order (see `rankloss_tf.ops.masks.npair_tuples`): in an
    N-pair batch of N classes x 2 samples, the first sample of a class is its anchor f_i
    and the second its positive f_i+. With dot-product similarities,
        mc:  l(i) = log(1 + sum_{j != i} exp(f_i.f_j+ - f_i.f_i+)),
        ovo: l(i) = sum_{j != i} log(1 + exp(f_i.f_j+ - f_i.f_i+)),
    where j runs over the tuples of the other classes. The loss is the mean of l(i)
    over tuples plus the L2 regulariser of tf.contrib's npairs_loss:
        0.25 * l2_reg * (mean_i ||f_i||^2 + mean_i ||f_i+||^2).
    With `l2_reg=0` and variant "mc" it equals tfa's `npairs_loss` on
    S = anchors @ positives^T.

    Reference: Sohn, "Improved Deep Metric Learning with Multi-class N-pair Loss
    Objective", NeurIPS 2016.

    Args:
        labels: class labels [B] or [B, 1].
        embeddings: float [B, D] (not normalised by the loss).
        variant: "mc" (multi-class, default) or "ovo" (one-vs-one).
        l2_reg: weight of the embedding L2 regulariser, >= 0.

    Returns:
        Per-anchor losses [B] (0 for samples that are not an anchor; a tuple's
        regulariser is on its anchor), whose mean is the loss.

    Example:
        >>> loss = npair_loss([0, 0, 1, 1], [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], l2_reg=0.0)
        >>> round(float(tf.reduce_mean(loss)), 4)
        0.3133
    """
    if variant not in NPAIR_VARIANTS:
        raise ValueError(f"`variant` must be one of {NPAIR_VARIANTS}. Received: variant={variant!r}")
    l2_reg = check_non_negative("l2_reg", l2_reg)
    dtype = tf.convert_to_tensor(embeddings).dtype
    labels, embeddings = standardize_inputs(labels, embeddings)
    anchors, anchor_embeddings, positive_embeddings, valid, negatives = _tuple_batch(labels, embeddings)
    similarity = tf.matmul(anchor_embeddings, positive_embeddings, transpose_b=True)
    terms = _npair_terms(similarity, negatives, variant)
    if l2_reg > 0:
        squared_norms = tf.reduce_sum(tf.square(anchor_embeddings) + tf.square(positive_embeddings), axis=1)
        terms += 0.25 * l2_reg * squared_norms
    return tf.cast(_tuple_losses_to_anchors(terms, valid, anchors, tf.shape(labels)[0]), dtype)


def _angular_coefficients(alpha):
    tan_squared = math.tan(math.radians(check_alpha(alpha))) ** 2
    return 4.0 * tan_squared, 2.0 * (1.0 + tan_squared)


def angular_loss(labels, embeddings, alpha=45.0):
    """Angular loss, log-sum-exp batch form (Wang et al. 2017, Eq. 8).

    Embeddings are L2-normalised (x). With t = tan^2(alpha), for every ordered positive
    pair (a, p) and every n with a different label than a,
        f(a, p, n) = 4t (x_a + x_p).x_n - 2(1 + t) x_a.x_p,
        l(a, p) = log(1 + sum_n exp f(a, p, n)),
    and the loss is the mean over ordered positive pairs (0 without any). With unit-norm
    inputs this equals pytorch-metric-learning's `AngularLoss(alpha)`.

    The sum over n needs no [pairs, B, D] (or [B, B, B]) tensor: with W = exp(4t cos),
    sum_n exp(4t x_a.x_n) exp(4t x_p.x_n) = sum_n W[a, n] W[p, n], computed for the
    positive pairs only (`rankloss_tf.ops.angular`): O(B^2) memory, O(B^2 K) time for
    K samples per class.

    Reference: Wang, Zhou, Wen, Liu, Lin, "Deep Metric Learning with Angular Loss",
    ICCV 2017.

    Args:
        labels: class labels [B] or [B, 1].
        embeddings: float [B, D].
        alpha: the angle bound in degrees, 0 < alpha < 90 (the paper uses 36-55).

    Returns:
        Per-anchor losses [B] whose mean is the loss.

    Example:
        >>> x = [[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]]
        >>> round(float(tf.reduce_mean(angular_loss([0, 0, 1, 1], x))), 4)
        0.3736
    """
    scale, pair_weight = _angular_coefficients(alpha)
    dtype = tf.convert_to_tensor(embeddings).dtype
    labels, unit = standardize_inputs(labels, embeddings)
    # exp(4t (cos - 1)) spans [exp(-8t), 1]; products of two underflow float32 for t > 5.
    compute_dtype = tf.float64 if scale > 20.0 else unit.dtype
    unit = tf.math.l2_normalize(tf.cast(unit, compute_dtype), axis=1)
    cosines = tf.matmul(unit, unit, transpose_b=True)
    pairs = positive_mask(labels)
    pair_losses = angular_pair_losses(cosines, pairs, negative_mask(labels), scale, pair_weight)
    num_pairs = tf.reduce_sum(tf.cast(pairs, tf.int32))
    losses = _per_anchor_mean(pair_losses, num_pairs)
    return tf.cast(losses, dtype)


def npair_angular_loss(labels, embeddings, alpha=45.0, lam=2.0):
    """N-pair loss plus angular loss on the same tuples (Wang et al. 2017, Eq. 9).

    On the N-pair tuples of `npair_loss` (anchor f_i, positive f_i+, negatives the
    positives f_j+ of the other classes):
        l(i) = l_npair(i) + lam * log(1 + sum_j exp f(i, i+, j+)),
    with l_npair the multi-class N-pair term on the dot products of the embeddings as
    given, and f the angular term of `angular_loss` on L2-normalised embeddings. The
    loss is the mean over tuples (no L2 regulariser).

    Reference: Wang et al., "Deep Metric Learning with Angular Loss", ICCV 2017.

    Args:
        labels: class labels [B] or [B, 1].
        embeddings: float [B, D].
        alpha: angle in degrees, 0 < alpha < 90.
        lam: weight of the angular term, >= 0.

    Returns:
        Per-anchor losses [B] whose mean is the loss.

    Example:
        >>> x = [[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]]
        >>> round(float(tf.reduce_mean(npair_angular_loss([0, 0, 1, 1], x))), 4)
        0.7841
    """
    scale, pair_weight = _angular_coefficients(alpha)
    lam = check_non_negative("lam", lam)
    dtype = tf.convert_to_tensor(embeddings).dtype
    labels, embeddings = standardize_inputs(labels, embeddings)
    anchors, anchor_embeddings, positive_embeddings, valid, negatives = _tuple_batch(labels, embeddings)
    npair_terms = _npair_terms(
        tf.matmul(anchor_embeddings, positive_embeddings, transpose_b=True), negatives, "mc"
    )
    anchor_units = tf.math.l2_normalize(anchor_embeddings, axis=1)
    positive_units = tf.math.l2_normalize(positive_embeddings, axis=1)
    # logits[i, j] = 4t (x_i + x_i+) . x_j+ - 2 (1 + t) x_i . x_i+
    anchor_positive = tf.reduce_sum(anchor_units * positive_units, axis=1, keepdims=True)
    logits = scale * tf.matmul(anchor_units + positive_units, positive_units, transpose_b=True)
    logits -= pair_weight * anchor_positive
    terms = npair_terms + lam * log1p_sum_exp(logits, negatives)
    return tf.cast(_tuple_losses_to_anchors(terms, valid, anchors, tf.shape(labels)[0]), dtype)
