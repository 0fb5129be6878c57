"""Hand-fused passes of the elementwise-bound losses: fewer [rows, R] passes, fewer matmuls.

The triplet-hard, contrastive and N-pair kernels spend most of their time in
elementwise passes over [rows, R] matrices, not in the matmul, so autodiff's
generic backward pass (one or more passes per forward op, and two matmuls per
Gram matrix) dominates. Three rewrites keep the values and gradients:

- batch-hard mining selects one positive and one negative per anchor, so the
  gradient only flows through those 2 pairs: mine on a distance matrix without
  gradient (``mining.mine_hard``), then recompute the chosen distances from the
  gathered rows (``pair_distances``): the backward pass is O(rows x D).
- contrastive: every pair's loss is a function of its squared distance s, so the
  gradient is a coefficient matrix C = dL/ds times the geometry of s:
  dq = 2 (rowsum(C) q - C r), dr = 2 (colsum(C) r - C^T q) (``contrastive_rows``;
  ``contrastive_pair_sums`` for pairs that count for both their samples).
- N-pair mc and the angular term of N-pair + angular: log(1 + sum_j exp(q_i.k_j - o_i))
  over each tuple's negatives (``log1p_sum_exp``): the matmul, then one XLA-compiled
  pass that builds the negatives from the labels and keeps the unnormalised softmax
  weights P; the upstream scales the [rows, D] sides of the gradient's two matmuls
  (u P k = u (P k)), so the backward pass has no [rows, T] pass besides them. The pass
  shifts the exponentials by the largest of the first columns' instead of the row's
  (which would read the logits twice); where that could overflow, the exact pass.
"""

from typing import NamedTuple

import tensorflow as tf

from rankloss_tf.ops.blocks import local_copies
from rankloss_tf.ops.distances import safe_sqrt
from rankloss_tf.ops.mining import mine_hard  # (public here before it moved to mining)


def _squared_distances(queries, reference):
    """``||q_i - r_j||^2`` [rows, R], clipped at 0 (the Gram form)."""
    gram = tf.matmul(queries, reference, transpose_b=True)
    squared = (
        tf.reduce_sum(tf.square(queries), axis=1)[:, None] - 2.0 * gram + tf.reduce_sum(tf.square(reference), axis=1)[None, :]
    )
    return tf.maximum(squared, 0.0)


def _unit_if_cosine(tensor, distance):
    return tf.math.l2_normalize(tensor, axis=1) if distance == "cosine" else tensor


def mining_distances(queries, reference, distance):
    """A matrix [rows, R] ordered as the ``distance`` between the rows (no gradient).

    Squared L2 for "l2" and "squared_l2" (the same order), squared L2 of the unit
    vectors for "cosine" (twice the cosine distance): one pass fewer than the distances.

    Example:
    >>> mining_distances(tf.constant([[0.0, 0.0]]), tf.constant([[3.0, 4.0]]), "l2").numpy().tolist()
    [[25.0]]
    """
    queries, reference = tf.stop_gradient(queries), tf.stop_gradient(reference)
    return _squared_distances(_unit_if_cosine(queries, distance), _unit_if_cosine(reference, distance))


def pair_distances(queries, partners, distance):
    """The ``distance`` between row i of ``queries`` and row i of ``partners``: [rows].

    Computed from the differences (exact 0 for equal rows), differentiable, with the
    conventions of ``pairwise_distances`` (gradient 0 at zero "l2" distance).

    Example:
    >>> pair_distances(tf.constant([[0.0, 0.0]]), tf.constant([[3.0, 4.0]]), "l2").numpy().tolist()
    [5.0]
    """
    if distance == "cosine":
        cosine = tf.reduce_sum(tf.math.l2_normalize(queries, axis=1) * tf.math.l2_normalize(partners, axis=1), axis=1)
        return tf.maximum(1.0 - cosine, 0.0)
    squared = tf.reduce_sum(tf.square(queries - partners), axis=1)
    return squared if distance == "squared_l2" else safe_sqrt(squared)


def _contrastive_terms(squared, same, margin, distance):
    """Pair losses and dL/ds [rows, R] of the contrastive pairs of squared distances s.

    ``same`` marks positives, every other column is a negative; a column whose
    squared distance is 0 with ``same`` set (the anchor's own) adds 0 to both.
    """
    if distance == "l2":
        distances = safe_sqrt(squared)
        hinge = tf.maximum(margin - distances, 0.0)
        # d(d^2)/ds = 1 and d(hinge^2)/ds = -hinge / d (0 at d = 0, as safe_sqrt's gradient).
        positive_slope = tf.cast(squared > 0.0, squared.dtype)
        negative_slope = -tf.math.divide_no_nan(hinge, distances)
        positive_losses = squared
    else:
        scale = 0.5 if distance == "cosine" else 1.0  # cosine distance = s / 2 on unit vectors
        distances = scale * squared
        hinge = tf.maximum(margin - distances, 0.0)
        positive_slope, negative_slope = 2.0 * scale * distances, -2.0 * scale * hinge
        positive_losses = tf.square(distances)
    return tf.where(same, positive_losses, tf.square(hinge)), tf.where(same, positive_slope, negative_slope)


@tf.function(jit_compile=True)
def _contrastive_coefficients(squared, same, margin, distance):
    """Pair losses' row sums and dL/ds [rows, R] of the contrastive pairs: one fused XLA pass."""
    pair_losses, slopes = _contrastive_terms(squared, same, margin, distance)
    return tf.reduce_sum(pair_losses, axis=1), slopes


@tf.function(jit_compile=True)
def _masked_contrastive_coefficients(squared, same, pairs, margin, distance):
    """Row sums, column sums and dL/ds [rows, R] of the contrastive pairs marked by ``pairs``."""
    pair_losses, slopes = _contrastive_terms(squared, same, margin, distance)
    zero = tf.zeros([], squared.dtype)
    pair_losses = tf.where(pairs, pair_losses, zero)
    return tf.reduce_sum(pair_losses, axis=1), tf.reduce_sum(pair_losses, axis=0), tf.where(pairs, slopes, zero)


@tf.function(jit_compile=True)
def _pair_weights(slopes, row_upstream, column_upstream):
    """M = slopes * (u_i + v_j) and its row and column sums."""
    weights = slopes * (row_upstream[:, None] + column_upstream[None, :])
    return weights, tf.reduce_sum(weights, axis=1), tf.reduce_sum(weights, axis=0)


def contrastive_pair_sums(queries, reference, same, pairs, margin, distance):
    """Contrastive losses of the marked pairs (i, j), summed per row and per column.

    The form in which each pair of a batch is computed once and counts for both its
    samples (cross-replica shares of the pairs): with l(i, j) the pair loss of
    ``contrastive_rows``, rows[i] = sum_j l(i, j) and columns[j] = sum_i l(i, j) over
    the pairs marked in ``pairs``. Gradient: the coefficient matrix
    M = dL/ds * (u_i + v_j) for upstream u (rows) and v (columns), then
    dq = 2 (rowsum(M) q - M r), dr = 2 (colsum(M) r - M^T q).

    Args:
        queries: float [rows, D].
        reference: float [R, D].
        same: bool [rows, R], True for positives.
        pairs: bool [rows, R], the pairs that count.
        margin: float >= 0.
        distance: "l2", "squared_l2" or "cosine".

    Returns:
        ``(rows [rows], columns [R])`` float.

    Example:
    >>> q, r = tf.constant([[0.0, 0.0]]), tf.constant([[0.6, 0.8], [3.0, 4.0]])
    >>> sums = contrastive_pair_sums(q, r, tf.constant([[True, False]]), tf.constant([[True, True]]), 6.0, "l2")
    >>> [v.numpy().tolist() for v in sums]
    [[2.0], [1.0, 1.0]]
    """
    queries, reference = _unit_if_cosine(queries, distance), _unit_if_cosine(reference, distance)
    # Computed outside the custom-gradient function (see contrastive_rows).
    squared = _squared_distances(tf.stop_gradient(queries), tf.stop_gradient(reference))
    row_sums, column_sums, slopes = _masked_contrastive_coefficients(
        squared, same, pairs, tf.cast(margin, squared.dtype), distance
    )

    @tf.custom_gradient
    def run(queries, reference):
        queries, reference = local_copies([queries, reference])

        def gradient(upstream, column_upstream=None):
            if column_upstream is None:  # the column sums unused
                column_upstream = tf.zeros(tf.shape(reference)[:1], upstream.dtype)
            # A copy of `slopes` made here, as in _symmetric_rows (a tf.cond around the loss).
            weights, row_totals, column_totals = _pair_weights(*local_copies([slopes]), upstream, column_upstream)
            query_grad = 2.0 * (row_totals[:, None] * queries - tf.matmul(weights, reference))
            reference_grad = 2.0 * (column_totals[:, None] * reference - tf.matmul(weights, queries, transpose_a=True))
            return query_grad, reference_grad

        return (tf.identity(row_sums), tf.identity(column_sums)), gradient

    return run(queries, reference)


@tf.function(jit_compile=True)
def _symmetric_weights(slopes, upstream):
    """M = slopes * (u_i + u_j), the coefficient matrix of a batch against itself (slopes symmetric)."""
    weights = slopes * (upstream[:, None] + upstream[None, :])
    return weights, tf.reduce_sum(weights, axis=1)


def contrastive_rows(queries, reference, same, margin, distance, own=None, symmetric=False):
    """Contrastive pair losses summed per row, with a fused gradient.

    For pairs (i, j), with d the ``distance``: d^2 where ``same`` (positives),
    max(margin - d, 0)^2 elsewhere (negatives); the ``own`` column of each row counts 0.

    Args:
        queries: float [rows, D].
        reference: float [R, D].
        same: bool [rows, R], True for positives.
        margin: float >= 0.
        distance: "l2", "squared_l2" or "cosine".
        own: optional int32 [rows], a column of each row left out (the anchor itself).
        symmetric: True when ``queries`` are the rows of ``reference``, in order (every row
            of a batch against itself, each row's own column left out, ``own`` unused): the
            backward pass takes one matmul instead of two (the coefficients are symmetric).

    Returns:
        Float [rows]: each row's summed pair losses. The backward pass is one
        coefficient matrix and two matmuls (autodiff: about three times the passes).

    Example:
    >>> q, r = tf.constant([[0.0, 0.0]]), tf.constant([[0.6, 0.8], [3.0, 4.0]])
    >>> contrastive_rows(q, r, tf.constant([[True, False]]), 6.0, "l2").numpy().tolist()
    [2.0]
    """
    if symmetric:
        return _symmetric_rows(reference, same, margin, distance)
    if distance == "cosine":
        queries, reference = tf.math.l2_normalize(queries, axis=1), tf.math.l2_normalize(reference, axis=1)

    # Computed outside the custom-gradient function: a tensor its gradient reads must come from
    # outside it when the loss runs inside a tf.cond branch (blocked_rows' dynamic sizes).
    squared = _squared_distances(tf.stop_gradient(queries), tf.stop_gradient(reference))
    if own is not None:
        entries = tf.stack([tf.range(tf.shape(own)[0]), own], axis=1)
        squared = tf.tensor_scatter_nd_update(squared, entries, tf.zeros(tf.shape(own), squared.dtype))
    sums, slopes = _contrastive_coefficients(squared, same, tf.cast(margin, squared.dtype), distance)

    @tf.custom_gradient
    def run(queries, reference):
        queries, reference = local_copies([queries, reference])

        def gradient(upstream):
            weights = slopes * upstream[:, None]
            # s_ij = |q_i|^2 - 2 q_i.r_j + |r_j|^2
            query_grad = 2.0 * (tf.reduce_sum(weights, axis=1)[:, None] * queries - tf.matmul(weights, reference))
            reference_grad = 2.0 * (
                tf.reduce_sum(weights, axis=0)[:, None] * reference - tf.matmul(weights, queries, transpose_a=True)
            )
            return query_grad, reference_grad

        return tf.identity(sums), gradient

    return run(queries, reference)


def _symmetric_rows(embeddings, same, margin, distance):
    """``contrastive_rows`` of a batch against itself, its own pairs left out."""
    if distance == "cosine":
        embeddings = tf.math.l2_normalize(embeddings, axis=1)

    fixed = tf.stop_gradient(embeddings)
    squared = tf.linalg.set_diag(_squared_distances(fixed, fixed), tf.zeros_like(fixed[:, 0]))
    sums, slopes = _contrastive_coefficients(squared, same, tf.cast(margin, squared.dtype), distance)

    @tf.custom_gradient
    def run(embeddings):
        (embeddings,) = local_copies([embeddings])

        def gradient(upstream):
            # dx = 2 (rowsum(W) + colsum(W)) x - 2 (W + W^T) x, W = slopes * u_i, slopes symmetric.
            # A copy of `slopes` made here: a tf.function capturing it directly breaks the
            # gradient of a tf.cond around the loss (blocked_rows' dynamic sizes).
            weights, totals = _symmetric_weights(*local_copies([slopes]), upstream)
            return 2.0 * (totals[:, None] * embeddings - tf.matmul(weights, embeddings))

        return tf.identity(sums), gradient

    return run(embeddings)


class Negatives(NamedTuple):
    """The negatives of rows against columns, given by their labels: the [rows, T] mask
    ``row_valid_i and column_valid_j and row_labels_i != column_labels_j``, built where
    it is used (inside the fused pass) rather than stored.

    Example:
    >>> Negatives([0, 1], [True, True], [0, 1, 2], [True, True, False]).mask().numpy().tolist()
    [[False, True, False], [True, False, False]]
    """

    row_labels: tf.Tensor
    row_valid: tf.Tensor
    column_labels: tf.Tensor
    column_valid: tf.Tensor

    def mask(self):
        """The bool [rows, T] mask."""
        row_labels, row_valid, column_labels, column_valid = (tf.convert_to_tensor(t) for t in self)
        both_valid = tf.logical_and(row_valid[:, None], column_valid[None, :])
        return tf.logical_and(both_valid, tf.not_equal(row_labels[:, None], column_labels[None, :]))


def _shifted_exponents(logits, offsets, negatives, scale):
    """``scale logits - offsets`` where ``negatives`` [rows, T], else -inf."""
    return tf.where(Negatives(*negatives).mask(), scale * logits - offsets[:, None], tf.constant(-float("inf"), logits.dtype))


def _parts(exponents, peak):
    """Values, the weights exp(exponent - peak), their row sums' share of the totals, and the
    totals exp(-peak) + sum of the weights: the 1 of log(1 + sum) is one of the terms."""
    terms = tf.exp(exponents - peak[:, None])
    sums = tf.reduce_sum(terms, axis=1)
    totals = tf.exp(-peak) + sums
    return peak + tf.math.log(totals), terms, sums / totals, totals


@tf.function(jit_compile=True)
def _log1p_sum_exp_parts(logits, offsets, negatives, scale):
    """``_parts`` shifted by each row's largest exponent (>= 0): one XLA pass that reads the
    logits twice (the peak, then the sums)."""
    exponents = _shifted_exponents(logits, offsets, negatives, scale)
    return _parts(exponents, tf.maximum(tf.reduce_max(exponents, axis=1), 0.0))


# The head columns whose largest exponent estimates a row's, and the largest total the estimated
# shift may leave (past it, the exact pass): the weights stay <= 2^64, so the gradient's
# sum_j P_ij k_j overflows only for keys past 2^64, whose squared norms already do.
_HEAD_COLUMNS = 128
_LARGEST_TOTAL = 2.0**64


@tf.function(jit_compile=True)
def _log1p_sum_exp_estimated(logits, offsets, negatives, scale):
    """``_parts`` shifted by the largest exponent of the first ``_HEAD_COLUMNS`` columns
    (>= 0, at most the row's: the totals are >= 1): one XLA pass that reads the logits
    once. Also returns whether every total is at most ``_LARGEST_TOTAL``."""
    row_labels, row_valid, column_labels, column_valid = negatives
    head = (row_labels, row_valid, column_labels[:_HEAD_COLUMNS], column_valid[:_HEAD_COLUMNS])
    peak = tf.maximum(tf.reduce_max(_shifted_exponents(logits[:, :_HEAD_COLUMNS], offsets, head, scale), axis=1), 0.0)
    parts = _parts(_shifted_exponents(logits, offsets, negatives, scale), peak)
    return parts + (tf.reduce_all(parts[3] <= _LARGEST_TOTAL),)


def _log1p_sum_exp_forward(logits, offsets, negatives, scale):
    """``_parts`` of the rows: the estimated shift when it is safe, else the exact one."""
    if logits.dtype not in (tf.float32, tf.float64):  # half types: the weights must stay <= 1
        return _log1p_sum_exp_parts(logits, offsets, negatives, scale)
    *parts, safe = _log1p_sum_exp_estimated(logits, offsets, negatives, scale)
    return tf.cond(safe, lambda: tuple(parts), lambda: _log1p_sum_exp_parts(logits, offsets, negatives, scale))


def log1p_sum_exp(queries, keys, offsets, negatives, scale=1.0):
    """Row-wise ``log(1 + sum_{j negative for i} exp(scale q_i . k_j - offsets[i]))``, fused.

    The N-pair terms: mc is ``log1p_sum_exp(anchors, positives, S_own, negatives)`` with
    S_own each row's own-tuple similarity, the angular term of N-pair + angular the same
    with scaled cosines. The forward pass is the matmul and one XLA-compiled pass that
    also keeps the softmax weights P (unnormalised, with their totals), shifted by the
    largest exponent of the first 128 columns: the logits are read once (float32 and
    float64; the exact shift, the row's largest, where a total passes 2^64, and for half
    types). The gradient is dq = scale u (P k),
    dk = scale P^T (u q), doffsets = -u rowsum(P): the upstream u scales the [rows, D]
    sides of the two matmuls, so the backward pass makes no [rows, T] pass of its own.

    Args:
        queries: float [rows, D].
        keys: float [T, D].
        offsets: float [rows].
        negatives: a ``Negatives`` of the rows against the T keys: the terms of each
            row's sum.
        scale: a Python float.

    Returns:
        Float [rows]; 0 for a row without negatives. Stable for any logits (the sum
        is shifted by its largest exponent).

    Example:
    >>> keys = tf.constant([[1.0], [1.0], [4.5]])
    >>> negatives = Negatives([0], [True], [0, 1, 2], [True, True, False])
    >>> values = log1p_sum_exp(tf.constant([[2.0]]), keys, tf.constant([2.0]), negatives)
    >>> round(float(values[0]), 4)
    0.6931
    """
    scale = float(scale)
    logits = tf.matmul(tf.stop_gradient(queries), tf.stop_gradient(keys), transpose_b=True)
    # (Stopped: the custom gradient below is theirs; a graph-mode custom gradient would otherwise
    # walk back through the cond into the labels, and ask for the gradient of a labels variable.)
    values, terms, weight_sums, totals = (tf.stop_gradient(t) for t in _log1p_sum_exp_forward(
        logits, tf.stop_gradient(offsets), tuple(negatives), tf.constant(scale, logits.dtype)
    ))

    @tf.custom_gradient
    def run(queries, keys, offsets):
        queries, keys = local_copies([queries, keys])
        terms_here, weight_sums_here, totals_here = local_copies([terms, weight_sums, totals])

        def gradient(upstream):
            # P = terms / totals: the division is folded into the row scale.
            scaled = (scale * upstream / totals_here)[:, None]
            d_queries = scaled * tf.matmul(terms_here, keys)
            d_keys = tf.matmul(terms_here, scaled * queries, transpose_a=True)
            return d_queries, d_keys, -upstream * weight_sums_here

        return tf.identity(values), gradient

    return run(queries, keys, offsets)


__all__ = ["Negatives", "contrastive_pair_sums", "contrastive_rows", "mine_hard", "mining_distances", "log1p_sum_exp", "pair_distances"]
