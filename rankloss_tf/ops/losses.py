"""Loss kernels: ``(labels, embeddings, **params) -> per-anchor losses [B]``.

Each kernel returns a vector whose mean is the documented loss, so Keras' reduction
(and its per-replica scaling under ``tf.distribute``) gives the right value. Math runs in
float32 (float64 input stays float64); the result has the dtype of ``embeddings``.
Batches without a valid tuple give 0 with zero, finite gradients; a batch of zero
samples gives an empty vector; a non-finite embedding anywhere makes every loss NaN.

Every kernel computes anchor rows against the whole batch, so two keyword arguments
are shared:
- ``anchors=(start, size)``: only anchors start .. start + size - 1 of the batch, each
  against the whole batch (its own column excluded); the result is their [size]
  losses, equal to that slice of the full result. Cross-replica mining gives each
  replica its own anchors against the gathered global batch: O(b x G) work, not G^2.
- ``share=(index, count)`` (contrastive, angular and the N-pair kernels): only share
  ``index`` of ``count`` equal shares of the batch's work, as [B] per-anchor losses: the
  ``count`` shares' vectors (and gradients) sum to the full result. Replicas that each
  compute one share and sum the vectors do the work of one device in all, wherever the
  rows of a class are: N-pair shares the tuples, contrastive the unordered pairs (each
  computed once, for both its samples), angular the anchors of the batch sorted by label
  (with P x K batches a share holds whole classes, so a pair's positive is among its rows).
- ``memory_budget``: bytes for the [rows, B] intermediates (default
  ``blocks.DEFAULT_MEMORY_BUDGET``); larger batches are computed in blocks of anchor
  rows and recomputed in the backward pass (``rankloss_tf.ops.blocks``).

Gradients may be taken inside a traced function (Keras' ``train_step``) or by a
``tf.GradientTape`` outside a ``tf.function`` traced with batch sizes unknown (an
``input_signature`` of ``None``, as custom training loops do): the blocks get every
tensor they read as an input (``blocks.blocked_rows``' ``constants``), never by closure,
which TensorFlow's ``tf.cond`` gradient refuses from outside its branch.
"""

import math

import tensorflow as tf

from rankloss_tf.ops.angular import angular_row_losses
from rankloss_tf.ops.batch import (  # (also imported from here by kernels in other files)
    _TEMPORARIES,
    _batch,
    _Batch,
    _check_anchors,
    _finish,
    _gather_rows,
    _num_positive_pairs,
    _per_anchor_mean,
    _row_geometry,
    _row_masks,
    _scatter_sum,
    _slice_rows,
    _static_or_dynamic,
)
from rankloss_tf.ops.blocks import block_rows, blocked_pairs, blocked_rows
from rankloss_tf.ops.checks import check_alpha, check_choice, check_non_negative
from rankloss_tf.ops.dense import (  # (the compat losses import them from here too)
    _semihard_row_sums,
    distances_and_masks,
    hard_from_distances,
    semihard_from_distances,
)
from rankloss_tf.ops.distances import check_distance
from rankloss_tf.ops.fused import contrastive_pair_sums, contrastive_rows, log1p_sum_exp, mining_distances, pair_distances
from rankloss_tf.ops.mining import mine_hard
from rankloss_tf.ops.shares import check_share, pair_tiles, sorted_rows
from rankloss_tf.ops.tuples import _npair_terms, _tuple_losses

NPAIR_VARIANTS = ("mc", "ovo")


def triplet_semihard_loss(
    labels,
    embeddings,
    margin=1.0,
    distance="l2",
    reference_labels=None,
    reference_embeddings=None,
    anchors=None,
    memory_budget=None,
):
    """Triplet loss with semi-hard negative mining (FaceNet), tfa 0.23's rule.

    For every ordered positive pair (a, p), the negative n* is the closest n with a
    different label and D[a, n] > D[a, p]; if none, the farthest negative of a:
        l(a, p) = max(D[a, p] - D[a, n*] + margin, 0),
            loss = sum over positive pairs of l(a, p) / number of positive pairs.
    As in tfa, an anchor without any negative in the batch compares its pairs with
    itself (D[a, a] = 0 in place of D[a, n*]). A batch without a positive pair gives 0
    (tfa: NaN).

    Memory O(block x B), time O(B^2 K) (O(B^2 log B) for classes of more than 33
    samples): tfa's version builds a [B * B, B] tensor.

    Reference: Schroff, Kalenichenko, Philbin, "FaceNet", CVPR 2015.

    Args:
        labels: class labels [B] or [B, 1].
        embeddings: float [B, D].
        margin: float >= 0.
        distance: "l2" (default, not squared), "squared_l2" or "cosine".
        reference_labels: optional labels [R] of a reference set, with
            ``reference_embeddings`` [R, D]: positives and negatives are then taken from
            it (query vs gallery, or cross-modal: image anchors vs text references).
        anchors: optional ``(start, size)``: only those anchors' losses (module docstring).
        memory_budget: bytes for the blocked intermediates (module docstring).

    Returns:
        Per-anchor losses [B] (or [size]) whose mean is the loss, dtype of ``embeddings``.

    Example:
    >>> loss = triplet_semihard_loss([0, 0], [[0.0, 1.0], [1.0, 0.0]])
    >>> round(float(tf.reduce_mean(loss)), 4)
    2.4142
    """
    margin, distance = check_non_negative("margin", margin), check_distance(distance)
    batch = _batch(labels, embeddings, anchors, reference_labels, reference_embeddings)

    def rows(tensors, start, size, batch):
        return _semihard_row_sums(*_row_geometry(batch, distance, tensors, start, size), margin)

    sums = blocked_rows(rows, batch.tensors, batch.size, batch.block("semihard", memory_budget), constants=batch)
    return _finish(batch, _per_anchor_mean(sums, _num_positive_pairs(batch), batch.num_anchors()))


def triplet_hard_loss(
    labels,
    embeddings,
    margin=1.0,
    soft=False,
    distance="l2",
    reference_labels=None,
    reference_embeddings=None,
    anchors=None,
    memory_budget=None,
):
    """Batch-hard triplet loss: hardest positive and hardest negative of every anchor.

        l(a) = max(max_{p in P(a)} D[a, p] - min_{n in N(a)} D[a, n] + margin, 0),
    or, with ``soft=True``, softplus(max D[a, p] - min D[a, n]). The loss is the mean
    over anchors. As in tfa, an anchor without a negative uses its largest distance as
    min D[a, n]. An anchor without a positive contributes 0, so a batch without a
    positive pair gives 0 (tfa instead uses D[a, a] = 0 as its positive distance; the
    ``rankloss_tf.compat.tfa`` version does too).

    Reference: Hermans, Beyer, Leibe, "In Defense of the Triplet Loss", 2017.

    Args:
        labels: class labels [B] or [B, 1].
        embeddings: float [B, D].
        margin: float >= 0 (unused when ``soft``).
        soft: use the soft-margin form.
        distance: "l2", "squared_l2" or "cosine".
        reference_labels: optional labels [R] of a reference set, with
            ``reference_embeddings`` [R, D]: positives and negatives are then taken from
            it (query vs gallery, or cross-modal: image anchors vs text references).
        anchors: optional ``(start, size)``: only those anchors' losses (module docstring).
        memory_budget: bytes for the blocked intermediates (module docstring).

    Returns:
        Per-anchor losses [B] (or [size]), dtype of ``embeddings``.

    Example:
    >>> loss = triplet_hard_loss([0, 0], [[0.0, 1.0], [1.0, 0.0]])
    >>> float(tf.reduce_mean(loss))
    1.0
    """
    margin, soft = check_non_negative("margin", margin), bool(soft)
    distance = check_distance(distance, allow_callable=False)
    batch = _batch(labels, embeddings, anchors, reference_labels, reference_embeddings)

    def rows(tensors, start, size, batch):
        # The gradient flows through 2 pairs per anchor: mine without it, then recompute them.
        queries, reference, row_ids = batch.rows(tensors, start, size)
        positives, negatives, _ = _row_masks(batch, row_ids, tf.shape(reference)[0])
        positive, has_positive, negative = mine_hard(mining_distances(queries, reference, distance), positives, negatives)
        gap = pair_distances(queries, tf.gather(reference, positive), distance) - pair_distances(
            queries, tf.gather(reference, negative), distance
        )
        losses = tf.math.softplus(gap) if soft else tf.maximum(gap + margin, 0.0)
        return tf.where(has_positive, losses, tf.zeros([], losses.dtype))

    return _finish(batch, blocked_rows(rows, batch.tensors, batch.size, batch.block("hard", memory_budget), constants=batch))


def contrastive_loss(
    labels,
    embeddings,
    margin=1.0,
    distance="l2",
    reference_labels=None,
    reference_embeddings=None,
    anchors=None,
    memory_budget=None,
    share=None,
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
            ``reference_embeddings`` [R, D]: positives and negatives are then taken from
            it (query vs gallery, or cross-modal: image anchors vs text references).
        anchors: optional ``(start, size)``: only those anchors' losses (module docstring).
        memory_budget: bytes for the blocked intermediates (module docstring).
        share: optional ``(index, count)``: only that share of the unordered pairs, as
            [B] per-anchor losses (module docstring); not with a reference set.

    Returns:
        Per-anchor losses [B] (or [size]), dtype of ``embeddings``.

    Example:
    >>> loss = contrastive_loss([0, 1], [[0.0, 0.0], [0.6, 0.8]], margin=2.0)
    >>> round(float(tf.reduce_mean(loss)), 4)
    1.0
    """
    margin, distance = check_non_negative("margin", margin), check_distance(distance, allow_callable=False)
    share = check_share(share, anchors)
    batch = _batch(labels, embeddings, anchors, reference_labels, reference_embeddings)
    if share is not None:
        if not batch.exclude_self:
            raise ValueError("`share` splits the pairs of a batch with itself, not against a reference set. "
                             f"Received: share={share!r} with reference_embeddings")
        sums = sum(_tile_sums(batch, tile, margin, distance, memory_budget) for tile in pair_tiles(batch.size, *share))
        return _finish(batch, tf.math.divide_no_nan(sums, tf.cast(batch.size - 1, sums.dtype)))

    def rows(tensors, start, size, batch):
        queries, reference, row_ids = batch.rows(tensors, start, size)
        # One call covers every row (see blocked_rows): the batch against itself.
        symmetric = batch.whole and batch.exclude_self and isinstance(start, int)
        num_columns = tf.shape(reference)[0]
        same = tf.equal(tf.gather(batch.labels, row_ids)[:, None], batch.reference_labels[None, :])
        own = row_ids if batch.exclude_self else None
        sums = contrastive_rows(queries, reference, same, margin, distance, own, symmetric=symmetric)
        # Every column but the anchor's own is a pair.
        num_pairs = tf.cast(num_columns - (1 if batch.exclude_self else 0), sums.dtype)
        return tf.math.divide_no_nan(sums, num_pairs)

    return _finish(batch, blocked_rows(rows, batch.tensors, batch.size, batch.block("contrastive", memory_budget), constants=batch))


def _tile_sums(batch, tile, margin, distance, memory_budget):
    """Per-sample contrastive sums [B] of the pairs of a ``shares.PairTile``, in blocks of its rows."""
    num_columns = _static_or_dynamic(tile.columns, 0)
    column_labels = tf.gather(batch.labels, tile.columns)

    def pairs(tensors, start, size, fresh, constants):
        tile, labels, column_labels = constants
        ids = _slice_rows(tile.rows, start, size)
        rows_in = tf.logical_and(_slice_rows(tile.rows_in, start, size), fresh)
        counted = tf.logical_and(
            tf.logical_and(rows_in[:, None], tile.columns_in[None, :]), tf.not_equal(ids[:, None], tile.columns[None, :])
        )
        same = tf.equal(tf.gather(labels, ids)[:, None], column_labels[None, :])
        queries, reference = _gather_rows(tensors[0], ids), _gather_rows(tensors[0], tile.columns)
        row_sums, column_sums = contrastive_pair_sums(queries, reference, same, counted, margin, distance)
        return row_sums, tf.where(tile.column_totals, column_sums, tf.zeros([], column_sums.dtype))

    num_rows = _static_or_dynamic(tile.rows, 0)
    dim = _static_or_dynamic(batch.embeddings, 1)
    block = block_rows(num_rows, num_columns, dim, _TEMPORARIES["contrastive"], memory_budget)
    values, totals = blocked_pairs(pairs, batch.tensors, num_rows, num_columns, block, (tile, batch.labels, column_labels))
    return _scatter_sum(values, tile.rows, tile.rows_in, batch.size) + _scatter_sum(
        totals, tile.columns, tile.columns_in, batch.size
    )


def npair_loss(labels, embeddings, variant="mc", l2_reg=0.002, anchors=None, memory_budget=None, share=None):
    """Multi-class N-pair loss (Sohn 2016), on a batch of (anchor, positive) tuples.

    Tuples come from the batch order (see ``rankloss_tf.ops.masks.npair_tuples``): in an
    N-pair batch of N classes x 2 samples, the first sample of a class is its anchor f_i
    and the second its positive f_i+. With dot-product similarities,
        mc:  l(i) = log(1 + sum_{j != i} exp(f_i.f_j+ - f_i.f_i+)),
        ovo: l(i) = sum_{j != i} log(1 + exp(f_i.f_j+ - f_i.f_i+)),
    where j runs over the tuples of the other classes. The loss is the mean of l(i)
    over tuples plus the L2 regulariser of tf.contrib's npairs_loss:
        0.25 * l2_reg * (mean_i ||f_i||^2 + mean_i ||f_i+||^2).
    With ``l2_reg=0`` and variant "mc" it equals tfa's ``npairs_loss`` on
    S = anchors @ positives^T.

    Reference: Sohn, "Improved Deep Metric Learning with Multi-class N-pair Loss
    Objective", NeurIPS 2016.

    Args:
        labels: class labels [B] or [B, 1].
        embeddings: float [B, D] (not normalised by the loss).
        variant: "mc" (multi-class, default) or "ovo" (one-vs-one).
        l2_reg: weight of the embedding L2 regulariser, >= 0.
        anchors: optional ``(start, size)``: only the tuples whose anchor is among those
            samples, the tuples still formed over the whole batch (module docstring).
        memory_budget: bytes for the blocked intermediates (module docstring).
        share: optional ``(index, count)``: only that share of the tuples, as [B]
            per-anchor losses; the ``count`` shares sum to the full result (module docstring).

    Returns:
        Per-anchor losses [B] (0 for samples that are not an anchor; a tuple's
        regulariser is on its anchor), whose mean is the loss.

    Example:
    >>> loss = npair_loss([0, 0, 1, 1], [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], l2_reg=0.0)
    >>> round(float(tf.reduce_mean(loss)), 4)
    0.3133
    """
    variant = check_choice("variant", variant, NPAIR_VARIANTS)
    l2_reg = check_non_negative("l2_reg", l2_reg)

    def tuple_terms(anchor_embeddings, own_positives, positives, others):
        terms = _npair_terms(anchor_embeddings, own_positives, positives, others, variant)
        if l2_reg > 0:
            terms += 0.25 * l2_reg * tf.reduce_sum(tf.square(anchor_embeddings) + tf.square(own_positives), axis=1)
        return terms

    share = check_share(share, anchors)
    return _tuple_losses(_batch(labels, embeddings, anchors), tuple_terms, memory_budget, share)


def _angular_coefficients(alpha):
    tan_squared = math.tan(math.radians(check_alpha(alpha))) ** 2
    return 4.0 * tan_squared, 2.0 * (1.0 + tan_squared)


def angular_loss(labels, embeddings, alpha=45.0, anchors=None, memory_budget=None, share=None):
    """Angular loss, log-sum-exp batch form (Wang et al. 2017, Eq. 8).

    Embeddings are L2-normalised (x). With t = tan^2(alpha), for every ordered positive
    pair (a, p) and every n with a different label than a,
        f(a, p, n) = 4t (x_a + x_p).x_n - 2(1 + t) x_a.x_p,
        l(a, p) = log(1 + sum_n exp f(a, p, n)),
    and the loss is the mean over ordered positive pairs (0 without any). With unit-norm
    inputs this equals pytorch-metric-learning's ``AngularLoss(alpha)``.

    The sum over n needs no [pairs, B, D] (or [B, B, B]) tensor: it is computed for
    the positive pairs only, one pass per positive (``rankloss_tf.ops.angular``):
    O(block x B) memory, O(B^2 K) time for K samples per class; in log space for
    alpha above about 66 degrees, so that every alpha in (0, 90) is exact.

    Reference: Wang, Zhou, Wen, Liu, Lin, "Deep Metric Learning with Angular Loss",
    ICCV 2017.

    Args:
        labels: class labels [B] or [B, 1].
        embeddings: float [B, D].
        alpha: the angle bound in degrees, 0 < alpha < 90 (the paper uses 36-55).
        anchors: optional ``(start, size)``: only those anchors' losses (module docstring).
        memory_budget: bytes for the blocked intermediates (module docstring).
        share: optional ``(index, count)``: only that share of the anchors, classes
            together, as [B] per-anchor losses (module docstring).

    Returns:
        Per-anchor losses [B] (or [size]) whose mean is the loss.

    Example:
    >>> x = [[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]]
    >>> round(float(tf.reduce_mean(angular_loss([0, 0, 1, 1], x))), 4)
    0.3736
    """
    scale, pair_weight = _angular_coefficients(alpha)
    share = check_share(share, anchors)
    batch = _batch(labels, embeddings, anchors)
    units = tf.math.l2_normalize(batch.embeddings, axis=1)
    labels, first, size, block = batch.labels, batch.start, batch.size, batch.block("angular", memory_budget)
    if share is not None:  # sorted rows first .. first + size - 1, classes together
        order, first, size, counted = sorted_rows(batch.labels, *share)
        units, labels = _gather_rows(units, order), tf.gather(batch.labels, order)
        block = block_rows(size, batch.size, _static_or_dynamic(units, 1), _TEMPORARIES["angular"], memory_budget)

    def rows(tensors, start, size, constants):
        labels, first = constants
        return angular_row_losses(tensors[0], labels, first + start, size, scale, pair_weight)

    sums = blocked_rows(rows, [units], size, block, (labels, first))
    if share is not None:
        sums = _scatter_sum(sums, tf.gather(order, first + tf.range(size)), counted, batch.size)
    return _finish(batch, _per_anchor_mean(sums, _num_positive_pairs(batch), batch.num_anchors()))


def npair_angular_loss(
    labels, embeddings, alpha=45.0, lam=2.0, anchors=None, memory_budget=None, share=None
):
    """N-pair loss plus angular loss on the same tuples (Wang et al. 2017, Eq. 9).

    On the N-pair tuples of ``npair_loss`` (anchor f_i, positive f_i+, negatives the
    positives f_j+ of the other classes):
        l(i) = l_npair(i) + lam * log(1 + sum_j exp f(i, i+, j+)),
    with l_npair the multi-class N-pair term on the dot products of the embeddings as
    given, and f the angular term of ``angular_loss`` on L2-normalised embeddings. The
    loss is the mean over tuples (no L2 regulariser).

    Reference: Wang et al., "Deep Metric Learning with Angular Loss", ICCV 2017.

    Args:
        labels: class labels [B] or [B, 1].
        embeddings: float [B, D].
        alpha: angle in degrees, 0 < alpha < 90.
        lam: weight of the angular term, >= 0.
        anchors: optional ``(start, size)``: see ``npair_loss``.
        memory_budget: bytes for the blocked intermediates (module docstring).
        share: optional ``(index, count)``: see ``npair_loss``.

    Returns:
        Per-anchor losses [B] whose mean is the loss.

    Example:
    >>> x = [[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]]
    >>> round(float(tf.reduce_mean(npair_angular_loss([0, 0, 1, 1], x))), 4)
    0.7841
    """
    scale, pair_weight = _angular_coefficients(alpha)
    lam = check_non_negative("lam", lam)

    def tuple_terms(anchor_embeddings, own_positives, positives, others):
        npair_terms = _npair_terms(anchor_embeddings, own_positives, positives, others, "mc")
        anchor_units = tf.math.l2_normalize(anchor_embeddings, axis=1)
        own_units = tf.math.l2_normalize(own_positives, axis=1)
        # f(i, i+, j+) = 4t (x_i + x_i+) . x_j+ - 2 (1 + t) x_i . x_i+
        pair_terms = pair_weight * tf.reduce_sum(anchor_units * own_units, axis=1)
        positive_units = tf.math.l2_normalize(positives, axis=1)
        return npair_terms + lam * log1p_sum_exp(anchor_units + own_units, positive_units, pair_terms, others, scale)

    share = check_share(share, anchors)
    return _tuple_losses(_batch(labels, embeddings, anchors), tuple_terms, memory_budget, share)
