"""N-pair and angular losses: golden values, the angular row pass, the fused log-sum-exp, the N-pair tuples."""

import numpy as np
import pytest
import tensorflow as tf

from rankloss_tf import ops
from tests import oracles
from tests.loss_cases import GOLDEN_E, GOLDEN_Y, mean, random_batch


def test_golden_npair_and_angular():
    assert mean(ops.npair_loss, GOLDEN_Y, GOLDEN_E, l2_reg=0.0) == pytest.approx(1.0450543, abs=1e-6)
    assert mean(ops.angular_loss, GOLDEN_Y, GOLDEN_E, alpha=40) == pytest.approx(1.6044104, abs=1e-5)
    assert mean(ops.angular_loss, GOLDEN_Y, GOLDEN_E, alpha=45) == pytest.approx(2.0181359, abs=1e-5)


def _angular_reference(units, labels, scale, pair_weight):
    """Per-anchor sums of l(a, p) on [B, B, B] tensors, in log space, differentiated by autodiff."""
    cosines = tf.matmul(units, units, transpose_b=True)
    same = labels[:, None] == labels[None, :]
    pairs, negatives = same & ~np.eye(len(labels), dtype=bool), ~same
    exponents = scale * (cosines[:, None, :] + cosines[None, :, :])  # [a, p, n]
    exponents = tf.where(negatives[:, None, :], exponents, -np.inf)
    valid = pairs & negatives.any(axis=1)[:, None]
    log_sums = tf.where(valid, tf.reduce_logsumexp(exponents, axis=2), 0.0)
    logits = log_sums - pair_weight * cosines
    return tf.reduce_sum(tf.where(valid, tf.math.softplus(logits), 0.0), axis=1)


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("scale", [4.0, 128.0])
def test_angular_row_losses_and_gradient(jit, scale):
    # Per-positive passes with a hand-written gradient, on every row or a range of rows;
    # scale 128 (alpha 80) takes the log-space path.
    from rankloss_tf.ops.angular import angular_row_losses

    rng = np.random.RandomState(5)
    for labels in [rng.randint(0, 9, 24), np.repeat(np.arange(6), 4), np.arange(8), rng.randint(0, 2, 20),
                   np.zeros(5, int)]:
        x = tf.math.l2_normalize(tf.constant(rng.normal(size=(len(labels), 6))), axis=1)
        upstream = tf.constant(rng.uniform(size=len(labels)))
        for start, size in [(0, len(labels)), (1, len(labels) // 2)]:

            def value_and_gradient(x, kernel):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    values = kernel(x)
                    objective = tf.reduce_sum(values * upstream[start : start + size])
                return values, tape.gradient(objective, x)

            rows = lambda x: angular_row_losses(x, tf.constant(labels), start, size, scale, scale / 2 + 2)  # noqa: E731
            got = tf.function(lambda x: value_and_gradient(x, rows), jit_compile=jit)(x)
            expected = value_and_gradient(
                x, lambda x: _angular_reference(x, labels, scale, scale / 2 + 2)[start : start + size]
            )
            for value, reference in zip(got, expected):
                np.testing.assert_allclose(value.numpy(), reference.numpy(), rtol=1e-9, atol=1e-10)


def _log1p_sum_exp_reference(q, k, offsets, negatives):
    """log(1 + sum over the negatives of exp(q_i . k_j - offsets_i)): TensorFlow's own logsumexp."""
    exponents = tf.where(negatives.mask(), tf.matmul(q, k, transpose_b=True) - offsets[:, None], -np.inf)
    return tf.reduce_logsumexp(tf.concat([tf.zeros_like(exponents[:, :1]), exponents], axis=1), axis=1)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("spread,estimated", [(1.0, True), (60.0, False)], ids=["estimated-shift", "exact-pass"])
@pytest.mark.parametrize("jit", [False, True])
def test_log1p_sum_exp_past_the_head_columns(dtype, spread, estimated, jit):
    # 300 keys: more than the head columns whose peak shifts the sums. Spread out (logits of
    # thousands), the shifted sums would overflow: the exact pass takes over.
    from rankloss_tf.ops import fused

    rng = np.random.RandomState(3)
    rows, columns = 40, 300
    q, k = (tf.constant(rng.normal(size=(n, 16)) * spread, dtype) for n in (rows, columns))
    offsets = tf.constant(rng.normal(size=rows) * spread, dtype)
    negatives = fused.Negatives(*(tf.constant(x) for x in (rng.randint(0, 30, rows), rng.uniform(size=rows) < 0.9,
                                                           rng.randint(0, 30, columns), rng.uniform(size=columns) < 0.9)))
    upstream = tf.constant(rng.uniform(size=rows), dtype)

    def value_and_gradient(kernel, q, k, offsets):
        with tf.GradientTape() as tape:
            tape.watch([q, k, offsets])
            values = kernel(q, k, offsets, negatives)
        return [values] + tape.gradient(values, [q, k, offsets], output_gradients=tf.cast(upstream, values.dtype))

    got = tf.function(lambda *x: value_and_gradient(fused.log1p_sum_exp, *x), jit_compile=jit)(q, k, offsets)
    expected = value_and_gradient(_log1p_sum_exp_reference, *(tf.cast(x, tf.float64) for x in (q, k, offsets)))
    *_, safe = fused._log1p_sum_exp_estimated(tf.matmul(q, k, transpose_b=True), offsets, tuple(negatives),
                                              tf.constant(1.0, dtype))
    assert bool(safe) == estimated
    tolerance = 1e-5 if dtype == "float32" else 1e-10
    for value, reference in zip(got, expected):
        assert np.all(np.isfinite(value.numpy()))
        np.testing.assert_allclose(value.numpy(), reference.numpy(), rtol=tolerance, atol=tolerance * max(spread, 1.0))


@pytest.mark.parametrize("jit", [False, True])
def test_npair_tuples_match_the_loop_oracle(jit):
    from rankloss_tf.ops.masks import npair_tuples

    rng = np.random.RandomState(3)
    cases = [np.zeros(0, np.int64), np.array([4]), np.array([2**24 + 1, 2**24, 2**24 + 1, 2**24]),
             np.array([0.5, -1.0, 0.5, 0.5, -1.0])]
    cases += [rng.randint(0, n, size) for n, size in [(3, 11), (9, 24), (40, 30), (2, 64)]]
    tuples = tf.function(npair_tuples, jit_compile=jit)
    for labels in cases:
        anchors, positives, valid = (t.numpy() for t in tuples(tf.constant(labels)))
        assert len(anchors) == len(labels) // 2
        got = sorted(zip(anchors[valid].tolist(), positives[valid].tolist()))
        assert got == oracles.npair_tuples(labels.tolist()), labels
        assert len(set(anchors.tolist())) == len(anchors)


@pytest.mark.parametrize("alpha", range(80, 90))
def test_angular_large_alpha_matches_oracle(alpha):
    # A violating batch: exp(4t (cos - 1)) underflows float64 from alpha 87 on; log space does not.
    labels, embeddings = random_batch(2, pk=(3, 3), dim=4)
    expected = oracles.angular(labels, embeddings, alpha=float(alpha))
    got = mean(ops.angular_loss, labels, embeddings, alpha=float(alpha))
    assert expected > 1.0
    assert got == pytest.approx(expected, rel=1e-3)
