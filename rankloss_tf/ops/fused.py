"""Hand-fused passes of the elementwise-bound losses: fewer [rows, R] passes, fewer matmuls.

The triplet-hard, contrastive and N-pair kernels spend most of their time in
elementwise passes over [rows, R] matrices, not in the matmul, so autodiff's
generic backward pass (one or more passes per forward op, and two matmuls per
Gram matrix) dominates. Three rewrites keep the values and gradients:

- batch-hard mining selects one positive and one negative per anchor, so the
  gradient only flows through those 2 pairs: mine on a distance matrix without
  gradient (``mine_hard``), then recompute the chosen distances from the
  gathered rows (``pair_distances``): the backward pass is O(rows x D).
- contrastive: every pair's loss is a function of its squared distance s, so the
  gradient is a coefficient matrix C = dL/ds times the geometry of s:
  dq = 2 (rowsum(C) q - C r), dr = 2 (colsum(C) r - C^T q) (``contrastive_rows``).
- N-pair mc: log(1 + sum_j exp(S_ij - S_ii)) = logsumexp_j(S_ij) - S_ii over the
  tuple's own column and its negatives, one fused softmax cross-entropy
  (``own_column_logsumexp``).
"""

import tensorflow as tf

from rankloss_tf.ops.blocks import local_copies
from rankloss_tf.ops.distances import safe_sqrt


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


def mine_hard(ordered, positives, negatives):
    """Batch-hard mining: the farthest positive and the closest negative of every row.

    Args:
        ordered: float [rows, R], ordered like the distances (``mining_distances``).
        positives: bool [rows, R].
        negatives: bool [rows, R].

    Returns:
        ``(positive [rows] int32, has_positive [rows] bool, negative [rows] int32)``:
        column indices; a row without a negative takes its largest entry (tfa's rule);
        ties take the first column.

    Example:
    >>> d = tf.constant([[0.0, 1.0, 4.0, 2.0]])
    >>> pos, neg = tf.constant([[False, True, False, False]]), tf.constant([[False, False, True, True]])
    >>> [t.numpy().tolist() for t in mine_hard(d, pos, neg)]
    [[1], [True], [3]]
    """
    lowest, highest = tf.constant(-float("inf"), ordered.dtype), tf.constant(float("inf"), ordered.dtype)
    positive = tf.argmax(tf.where(positives, ordered, lowest), axis=1, output_type=tf.int32)
    closest = tf.argmin(tf.where(negatives, ordered, highest), axis=1, output_type=tf.int32)
    negative = tf.where(tf.reduce_any(negatives, axis=1), closest, tf.argmax(ordered, axis=1, output_type=tf.int32))
    return positive, tf.reduce_any(positives, axis=1), negative


@tf.function(jit_compile=True)
def _contrastive_coefficients(squared, same, margin, distance):
    """Pair losses' row sums and dL/ds [rows, R] of the contrastive pairs: one fused XLA pass.

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
    pair_losses = tf.where(same, positive_losses, tf.square(hinge))
    return tf.reduce_sum(pair_losses, axis=1), tf.where(same, positive_slope, negative_slope)


@tf.function(jit_compile=True)
def _symmetric_weights(slopes, upstream):
    """M = slopes * (u_i + u_j), the coefficient matrix of a batch against itself (slopes symmetric)."""
    weights = slopes * (upstream[:, None] + upstream[None, :])
    return weights, tf.reduce_sum(weights, axis=1)


def contrastive_rows(queries, reference, same, margin, distance, own=None):
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
            When ``queries`` is ``reference`` (every row of a batch against itself), the
            backward pass takes one matmul instead of two (the coefficients are symmetric).

    Returns:
        Float [rows]: each row's summed pair losses. The backward pass is one
        coefficient matrix and two matmuls (autodiff: about three times the passes).

    Example:
    >>> q, r = tf.constant([[0.0, 0.0]]), tf.constant([[0.6, 0.8], [3.0, 4.0]])
    >>> contrastive_rows(q, r, tf.constant([[True, False]]), 6.0, "l2").numpy().tolist()
    [2.0]
    """
    if queries is reference:
        return _symmetric_rows(queries, same, margin, distance)
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


def own_column_logsumexp(logits, own, others):
    """Row-wise ``log(1 + sum_{j in others} exp(logits[i, j] - logits[i, own[i]]))``.

    One fused softmax cross-entropy over the own column and the ``others``.

    Args:
        logits: float [rows, T].
        own: int32 [rows], each row's own column.
        others: bool [rows, T], False at the own column.

    Returns:
        Float [rows]; 0 for a row whose ``others`` are all False.

    Example:
    >>> logits = tf.constant([[2.0, 2.0, 9.0]])
    >>> round(float(own_column_logsumexp(logits, tf.constant([0]), tf.constant([[False, True, False]]))[0]), 4)
    0.6931
    """
    keep = tf.logical_or(others, tf.equal(tf.range(tf.shape(logits)[1])[None, :], own[:, None]))
    logits = tf.where(keep, logits, tf.constant(-float("inf"), logits.dtype))
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=own, logits=logits)


__all__ = ["contrastive_rows", "mine_hard", "mining_distances", "own_column_logsumexp", "pair_distances"]
