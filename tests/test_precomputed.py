"""`rankloss_tf.ops.precomputed`: losses on given pair distances or similarity matrices."""

import numpy as np
import pytest
import tensorflow as tf

from rankloss_tf.ops import precomputed


def cross_entropy_oracle(affinity, similarity):
    """Row by row: targets = affinity row / its sum, minus their dot product with log softmax."""
    losses = []
    for row, logits in zip(np.float64(affinity), np.float64(similarity)):
        if row.sum() == 0:
            losses.append(0.0)
            continue
        log_softmax = logits - np.log(np.sum(np.exp(logits - logits.max()))) - logits.max()
        losses.append(-np.sum(row / row.sum() * log_softmax))
    return np.array(losses)


def test_npairs_matches_oracle_with_shared_labels():
    rng = np.random.RandomState(0)
    labels = np.array([3, 1, 3, 2**24, 2**24 + 1], np.int32)
    similarity = rng.normal(size=(5, 5)).astype(np.float32) * 3
    affinity = [[float(a == b) for b in labels] for a in labels]
    np.testing.assert_allclose(
        precomputed.npairs_from_similarity(labels, similarity).numpy(),
        cross_entropy_oracle(affinity, similarity),
        rtol=1e-5,
    )


def test_multilabel_matches_oracle_and_reduces_to_single_label():
    rng = np.random.RandomState(1)
    indicators = rng.randint(0, 2, (6, 4))
    indicators[2] = 0  # a row without any class: no target, loss 0 (tfa: NaN)
    similarity = rng.normal(size=(6, 6)).astype(np.float32)
    affinity = [[float(np.sum(a * b)) for b in indicators] for a in indicators]
    got = precomputed.npairs_multilabel_from_similarity(indicators, similarity).numpy()
    np.testing.assert_allclose(got, cross_entropy_oracle(affinity, similarity), rtol=1e-5, atol=1e-7)
    labels = np.array([0, 2, 1, 2, 0, 3])
    np.testing.assert_allclose(
        precomputed.npairs_multilabel_from_similarity(np.eye(4)[labels], similarity).numpy(),
        precomputed.npairs_from_similarity(labels, similarity).numpy(),
        rtol=1e-6,
    )


def test_contrastive_and_regulariser_hand_worked():
    got = precomputed.contrastive_from_distances([1, 0, 0, 1], [0.2, 0.3, 1.5, 0.0], margin=1.0)
    np.testing.assert_allclose(got.numpy(), [0.04, 0.49, 0.0, 0.0], atol=1e-7)
    regulariser = precomputed.npairs_l2_regularizer([[1.0, 1.0], [0.0, 0.0]], [[3.0, 0.0], [0.0, 1.0]], 0.1)
    assert float(regulariser) == pytest.approx(0.25 * 0.1 * (1.0 + 5.0), rel=1e-6)


def test_eager_function_and_xla_agree_with_finite_gradients():
    rng = np.random.RandomState(2)
    similarity = tf.Variable(rng.normal(size=(5, 5)).astype(np.float32))
    indicators = rng.randint(0, 2, (5, 3))

    def total(s):
        return tf.reduce_mean(precomputed.npairs_multilabel_from_similarity(indicators, s)) + tf.reduce_mean(
            precomputed.npairs_from_similarity([0, 1, 0, 2, 1], s)
        )

    eager = float(total(similarity))
    for jit in (False, True):
        assert float(tf.function(total, jit_compile=jit)(similarity)) == pytest.approx(eager, rel=1e-6)
    with tf.GradientTape() as tape:
        value = total(similarity)
    assert np.all(np.isfinite(tape.gradient(value, similarity).numpy()))


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match=r"similarity.shape=\(3,\)"):
        precomputed.npairs_from_similarity([0, 1, 2], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"shape=\(3,\)"):
        precomputed.npairs_multilabel_from_similarity([1, 0, 1], np.eye(3))
    with pytest.raises(ValueError, match="margin=-0.5"):
        precomputed.contrastive_from_distances([1], [0.1], margin=-0.5)
    with pytest.raises(ValueError, match="reg_lambda=-1"):
        precomputed.npairs_l2_regularizer([[1.0]], [[1.0]], -1)
