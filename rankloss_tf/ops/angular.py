"""The angular loss of a range of anchor rows, in O(rows x B) memory and O(B^2 K) time.

For L2-normalised embeddings x (rows of ``units``), C = x x^T, and the anchors a of the
rows, the angular loss of a positive pair (a, p) is (Wang et al. 2017, Eq. 8)

    l(a, p) = softplus(log sum_n exp(scale (C[a, n] + C[p, n])) - pair_weight C[a, p]),

n over the negatives of a. Only the B (K - 1) positive pairs of a batch of K samples
per class need the sum over n: one O(rows x B) pass per positive of the anchors (the
s-th positive p(a) of every anchor at once), not the O(B^3) product over all pairs.

For scale <= ``LOG_SPACE_SCALE`` (alpha up to about 65.9 degrees) the sums are products
of W = exp(scale (C - 1)), computed once per row; above, exp(scale (C - 1)) underflows
and each pass takes a log-sum-exp, exact for every alpha in (0, 90) degrees.

The gradient is written by hand (a custom gradient that recomputes each pass: no
autodiff through the loop, so it compiles under XLA, and no [rows, B] tensor is kept
for the backward pass). The passes add up the gradient of the rows' cosines, which
reaches the embeddings through two matmuls at the end, not two per pass.
"""

from typing import NamedTuple

import tensorflow as tf

from rankloss_tf.ops import mining
from rankloss_tf.ops.blocks import local_copies

# Above this scale (4 tan^2 alpha), products of two exp(scale (C - 1)) underflow float32.
LOG_SPACE_SCALE = 20.0


def _pass_statistics(anchor_cosines, partner_cosines, negatives, anchor_weights, scale, log_space,
                     partner_weights=None):
    """``(log_sums [r], found [r], probabilities [r, B])`` of one pass over the negatives.

    log_sums[a] = log sum_n exp(scale (C[a, n] + C[p(a), n])); probabilities are its
    softmax weights over n (0 off the negatives). ``partner_weights``: exp(scale (C[p(a), n]
    - 1)) when known already (then ``partner_cosines`` is not read).
    """
    zero = tf.zeros([], anchor_cosines.dtype)
    if log_space:
        exponents = tf.where(negatives, scale * (anchor_cosines + partner_cosines), -float("inf"))
        peak = tf.reduce_max(exponents, axis=1)
        found = peak > -float("inf")
        peak = tf.where(found, peak, zero)
        terms = tf.exp(exponents - peak[:, None])
        totals = tf.reduce_sum(terms, axis=1)
        safe = tf.where(found, totals, tf.ones([], totals.dtype))
        return peak + tf.math.log(safe), found, terms / safe[:, None]
    if partner_weights is None:
        partner_weights = tf.exp(scale * (partner_cosines - 1.0))
    terms = anchor_weights * partner_weights
    totals = tf.reduce_sum(terms, axis=1)
    found = totals > 0.0
    safe = tf.where(found, totals, tf.ones([], totals.dtype))
    return 2.0 * scale + tf.math.log(safe), found, terms / safe[:, None]


def angular_row_losses(units, labels, start, size, scale, pair_weight):
    """Per-anchor sum of the angular losses l(a, p) over its positive pairs, for a row range.

    Args:
        units: float [B, D], L2-normalised embeddings of the whole batch.
        labels: labels [B].
        start: first anchor row (int or int32 scalar).
        size: number of anchor rows (int or int32 scalar); anchors start .. start +
            size - 1, each against the whole batch (itself excluded).
        scale: 4 tan^2(alpha).
        pair_weight: 2 (1 + tan^2(alpha)).

    Returns:
        Float [size]: sum over p of l(a, p); a pair whose anchor has no negative adds 0.

    Example:
    >>> x = tf.math.l2_normalize(tf.constant([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]]), axis=1)
    >>> [round(float(v), 4) for v in angular_row_losses(x, tf.constant([0, 0, 1, 1]), 0, 4, 4.0, 4.0)]
    [0.3736, 0.3736, 0.3736, 0.3736]
    """
    batch_size = tf.shape(units)[0]
    rows = start + tf.range(size)
    same = tf.equal(tf.gather(labels, rows)[:, None], labels[None, :])
    pairs = tf.logical_and(same, tf.logical_not(tf.equal(rows[:, None], tf.range(batch_size)[None, :])))
    rows = _Rows(start, size, rows, pairs, tf.logical_not(same), mining.positive_slots(pairs),
                 tf.reduce_max(tf.reduce_sum(tf.cast(pairs, tf.int32), axis=1)))
    if isinstance(start, int) and start == 0 and size is not None and size == units.shape[0]:
        return _row_losses(units, rows, scale, pair_weight, partners_in_rows=None)
    # A P x K batch split over replicas keeps classes together: when every positive of the
    # rows is a row, its cosines are computed already (a gather, not a matmul per pass).
    columns = tf.range(batch_size)[None, :]
    inside = tf.logical_and(columns >= start, columns < start + size)
    partners_in_rows = tf.reduce_all(tf.logical_or(tf.logical_not(pairs), inside))
    return _row_losses(units, rows, scale, pair_weight, partners_in_rows)


class _Rows(NamedTuple):
    """Anchor rows start .. start + size - 1: ids [size], their positives and negatives
    [size, B], each positive's pass (``mining.positive_slots``) and the number of passes."""

    start: object
    size: object
    ids: tf.Tensor
    pairs: tf.Tensor
    negatives: tf.Tensor
    slot: tf.Tensor
    num_passes: tf.Tensor


def _pass_terms(rows, s, units, anchor_cosines, row_weights, gather_partners, scale, pair_weight):
    """Pass s of ``rows``: the s-th positive p(a) of every anchor, ``(column, partner units,
    valid, logit [rows] each, probabilities [rows, B])``.

    ``row_weights``: (exp(scale (C - 1)), the same kept at the negatives) of the rows, or
    Nones in log space; ``gather_partners``: every p(a) is one of the rows.
    """
    weights, anchor_weights = row_weights
    log_space, start, size = scale > LOG_SPACE_SCALE, rows.start, rows.size
    chosen = tf.equal(rows.slot, s)
    column = tf.argmax(tf.cast(chosen, tf.int32), axis=1, output_type=tf.int32)
    partner_units = tf.gather(units, column)
    partner_cosines = partner_weights = None
    if gather_partners:
        # (a row without a pass-s positive reads any row: its pass is not valid)
        partner_rows = tf.clip_by_value(column - start, 0, size - 1)
        if log_space:
            partner_cosines = tf.gather(anchor_cosines, partner_rows)
        else:
            partner_weights = tf.gather(weights, partner_rows)
    else:
        partner_cosines = tf.matmul(partner_units, units, transpose_b=True)
    log_sums, found, probabilities = _pass_statistics(
        anchor_cosines, partner_cosines, rows.negatives, anchor_weights, scale, log_space, partner_weights
    )
    pair_cosines = tf.gather(anchor_cosines, column[:, None], batch_dims=1)[:, 0]
    valid = tf.logical_and(tf.reduce_any(chosen, axis=1), found)
    return column, partner_units, valid, log_sums - pair_weight * pair_cosines, probabilities


def _row_losses(units, rows, scale, pair_weight, partners_in_rows):
    """``angular_row_losses`` of ``rows``. ``partners_in_rows``: None when the rows are the
    whole batch, else a bool tensor: every positive of the rows is one of them."""
    # A static batch size where known: XLA needs the segment count of the backward pass's
    # unsorted_segment_sum at compile time, and cannot always fold tf.shape inside its loops.
    batch_size = units.shape[0] if units.shape[0] is not None else tf.shape(units)[0]
    start, size = rows.start, rows.size
    log_space, whole = scale > LOG_SPACE_SCALE, partners_in_rows is None

    def loop(body, initial):
        return tf.while_loop(lambda s, *_: s < rows.num_passes, body, (tf.constant(0), *initial))[1:]

    def either(function, *args):
        """``function(*args, gather_partners)``: a tf.cond outside any gradient (none flows through it)."""
        if whole:
            return function(*args, True)
        return tf.cond(partners_in_rows, lambda: function(*args, True), lambda: function(*args, False))

    def row_terms(units):
        anchor_units = units if whole else tf.slice(units, tf.stack([tf.cast(start, tf.int32), 0]), tf.stack([size, -1]))
        anchor_cosines = tf.matmul(anchor_units, units, transpose_b=True)
        weights = anchor_weights = None
        if not log_space:
            # exp(scale (C - 1)) once per row: a pass whose partners are rows gathers theirs.
            weights = tf.exp(scale * (anchor_cosines - 1.0))
            anchor_weights = tf.where(rows.negatives, weights, tf.zeros([], weights.dtype))
        return anchor_units, anchor_cosines, (weights, anchor_weights)

    def forward(units, gather_partners):
        _, anchor_cosines, row_weights = row_terms(units)
        zero = tf.zeros([], units.dtype)

        def one_pass(s, total):
            _, _, valid, logits, _ = _pass_terms(
                rows, s, units, anchor_cosines, row_weights, gather_partners, scale, pair_weight
            )
            return s + 1, total + tf.where(valid, tf.math.softplus(logits), zero)

        return loop(one_pass, [tf.zeros([size], units.dtype)])[0]

    def backward(units, upstream, gather_partners):
        # Recomputed here so that the forward pass keeps no [rows, B] tensor for it.
        anchor_units, anchor_cosines, row_weights = row_terms(units)
        zero = tf.zeros([], units.dtype)
        row_index = tf.range(size)

        def one_backward_pass(s, d_units, d_cosines):
            """d_cosines [rows, B]: the gradient of the rows' cosines, summed over the passes (two
            matmuls at the end, not two per pass); d_units: what reaches units otherwise."""
            column, partner_units, valid, logits, probabilities = _pass_terms(
                rows, s, units, anchor_cosines, row_weights, gather_partners, scale, pair_weight
            )
            d_logits = tf.where(valid, upstream * tf.math.sigmoid(logits), zero)
            # d log_sums / d C[a, n] = d log_sums / d C[p(a), n] = scale * probabilities[a, n];
            # d logits / d C[a, p(a)] = -pair_weight.
            shared = (scale * d_logits)[:, None] * probabilities
            d_cosines += shared
            d_cosines = tf.tensor_scatter_nd_add(
                d_cosines, tf.stack([row_index, column], axis=1), -pair_weight * d_logits
            )
            if gather_partners:  # C[p(a), n] is row p(a) - start of the rows' cosines
                partner_rows = tf.clip_by_value(column - start, 0, size - 1)
                return s + 1, d_units, tf.tensor_scatter_nd_add(d_cosines, partner_rows[:, None], shared)
            # C[p(a), n] = x_p(a) . x_n, computed per pass: its gradient too.
            d_units += tf.matmul(shared, partner_units, transpose_a=True)
            d_units += tf.math.unsorted_segment_sum(tf.matmul(shared, units), column, batch_size)
            return s + 1, d_units, d_cosines

        d_units, d_cosines = loop(one_backward_pass, [tf.zeros_like(units), tf.zeros_like(anchor_cosines)])
        # C_rows = anchor_units @ units^T
        d_units += tf.matmul(d_cosines, anchor_units, transpose_a=True)
        return tf.tensor_scatter_nd_add(d_units, rows.ids[:, None], tf.matmul(d_cosines, units))

    @tf.custom_gradient
    def losses(units):
        (units,) = local_copies([units])
        return either(forward, units), lambda upstream: either(backward, units, upstream)

    return losses(units)
