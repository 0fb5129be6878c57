"""The angular loss's sum over positive pairs, in O(B^2) memory and O(B^2 K) time.

For cosines C [B, B], W = exp(scale (C - 1)) and A = W kept at the negatives of each
anchor, the angular loss of a positive pair (a, p) is

    l(a, p) = softplus(2 scale - pair_weight C[a, p] + log sum_n A[a, n] W[p, n]).

Only the B (K - 1) positive pairs of a batch of K samples per class need the sum over
n, so `angular_pair_losses` runs one O(B^2) pass per positive of the anchors instead
of the O(B^3) product A @ W^T, and differentiates by hand (a custom gradient, no
autodiff through the loop, so it compiles under XLA) without keeping any [B, B]
per-pair tensor. Above `mining.MAX_POSITIVE_PASSES` positives per anchor (a few large
classes) the product is used.
"""

import tensorflow as tf

from rankloss_tf.ops import mining


def _weights(cosines, negatives, scale):
    weights = tf.exp(scale * (cosines - 1.0))
    return weights, tf.where(negatives, weights, tf.zeros([], weights.dtype))


def _pair_logits(sums, pair_cosines, valid, scale, pair_weight):
    safe_sums = tf.where(valid, sums, tf.ones([], sums.dtype))
    return 2.0 * scale - pair_weight * pair_cosines + tf.math.log(safe_sums), safe_sums


def angular_pair_losses(cosines, pairs, negatives, scale, pair_weight):
    """Per-anchor sum of the angular losses l(a, p) over its positive pairs.

    Args:
        cosines: float [B, B], C = x x^T of L2-normalised embeddings.
        pairs: bool [B, B], the positive pairs (a, p).
        negatives: bool [B, B], the negatives n of each anchor a.
        scale: 4 tan^2(alpha).
        pair_weight: 2 (1 + tan^2(alpha)).

    Returns:
        Float [B]: sum over p of l(a, p); a pair whose anchor has no negative adds 0.
    """
    slot = mining.positive_slots(pairs)
    num_passes = tf.reduce_max(tf.reduce_sum(tf.cast(pairs, tf.int32), axis=1))
    use_passes = num_passes <= mining.MAX_POSITIVE_PASSES
    num_rows = tf.shape(cosines)[0]

    def loop(body, initial):
        return tf.while_loop(lambda s, _: s < num_passes, body, (tf.constant(0), initial))[1]

    def pass_terms(s, cosines, weights, anchor_weights):
        """Pass s: the s-th positive p(a) of every anchor, its sum and logit ([B] each)."""
        chosen = tf.equal(slot, s)
        column = tf.argmax(tf.cast(chosen, tf.int32), axis=1, output_type=tf.int32)
        partner_weights = tf.gather(weights, column)  # W[p(a), :]
        sums = tf.reduce_sum(anchor_weights * partner_weights, axis=1)
        valid = tf.logical_and(tf.reduce_any(chosen, axis=1), sums > 0.0)
        pair_cosines = tf.gather(cosines, column[:, None], batch_dims=1)[:, 0]
        logits, safe_sums = _pair_logits(sums, pair_cosines, valid, scale, pair_weight)
        return chosen, column, partner_weights, valid, logits, safe_sums

    def product_terms(cosines, weights, anchor_weights):
        """All pairs at once: [B, B] sums and logits from one product."""
        sums = tf.matmul(anchor_weights, weights, transpose_b=True)
        valid = tf.logical_and(pairs, sums > 0.0)
        logits, safe_sums = _pair_logits(sums, cosines, valid, scale, pair_weight)
        return valid, logits, safe_sums

    @tf.custom_gradient
    def losses(cosines):
        weights, anchor_weights = _weights(cosines, negatives, scale)
        zero = tf.zeros([], cosines.dtype)

        def one_pass(s, total):
            _, _, _, valid, logits, _ = pass_terms(s, cosines, weights, anchor_weights)
            return s + 1, total + tf.where(valid, tf.math.softplus(logits), zero)

        def by_product():
            valid, logits, _ = product_terms(cosines, weights, anchor_weights)
            return tf.reduce_sum(tf.where(valid, tf.math.softplus(logits), zero), axis=1)

        result = tf.cond(use_passes, lambda: loop(one_pass, tf.zeros([num_rows], cosines.dtype)), by_product)

        def gradient(upstream):
            # Recomputed here so that the forward pass keeps no [B, B] tensor for it.
            weights, anchor_weights = _weights(cosines, negatives, scale)

            def one_backward_pass(s, d_cosines):
                chosen, column, partner_weights, valid, logits, safe_sums = pass_terms(
                    s, cosines, weights, anchor_weights
                )
                d_logits = tf.where(valid, upstream * tf.math.sigmoid(logits), zero)  # [B]
                # d sum / d C[a, n] = d sum / d C[p(a), n] = scale A[a, n] W[p(a), n].
                shared = (scale * d_logits / safe_sums)[:, None] * anchor_weights * partner_weights
                d_cosines += shared + tf.math.unsorted_segment_sum(shared, column, num_rows)
                d_cosines -= tf.where(chosen, pair_weight * d_logits[:, None], zero)
                return s + 1, d_cosines

            def by_product_backward():
                valid, logits, safe_sums = product_terms(cosines, weights, anchor_weights)
                d_logits = tf.where(valid, upstream[:, None] * tf.math.sigmoid(logits), zero)  # [B, B]
                d_sums = d_logits / safe_sums
                d_anchor_weights = tf.matmul(d_sums, weights)
                d_weights = tf.matmul(d_sums, anchor_weights, transpose_a=True)
                return scale * (anchor_weights * d_anchor_weights + weights * d_weights) - pair_weight * d_logits

            return tf.cond(use_passes, lambda: loop(one_backward_pass, tf.zeros_like(cosines)), by_product_backward)

        return result, gradient

    return losses(cosines)
