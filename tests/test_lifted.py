"""`rankloss_tf.ops.lifted`: the lifted structured loss (tfa / contrib form) in O(B^2) memory."""

import math

import numpy as np
import pytest
import tensorflow as tf

from rankloss_tf.ops import lifted, pairwise_distances
from tests import oracles
from tests.test_losses import BATCHES


def lifted_oracle(labels, embeddings, margin=1.0, distance="l2"):
    """One Python loop per ordered positive pair, the negatives of both rows summed term by term."""
    d = oracles.distance_matrix(embeddings, distance)
    n, terms = len(labels), []
    for i in range(n):
        for j in range(n):
            if i == j or labels[i] != labels[j]:
                continue
            exps = [math.exp(margin - d[i, k]) for k in range(n) if labels[k] != labels[i]]
            exps += [math.exp(margin - d[j, k]) for k in range(n) if labels[k] != labels[j]]
            terms.append(max(math.log(sum(exps)) + d[i, j], 0.0) ** 2 if exps else 0.0)
    return sum(terms) / (2 * len(terms)) if terms else 0.0


def mean_loss(labels, embeddings, **kwargs):
    return float(tf.reduce_mean(lifted.lifted_struct_loss(labels, embeddings, **kwargs)))


@pytest.mark.parametrize("distance", ["l2", "squared_l2", "cosine"])
@pytest.mark.parametrize("margin", [0.0, 1.0, 4.0])
def test_matches_oracle(margin, distance):
    for labels, embeddings in BATCHES:
        expected = lifted_oracle(labels, embeddings, margin, distance)
        assert mean_loss(labels, embeddings, margin=margin, distance=distance) == pytest.approx(
            expected, rel=1e-5, abs=1e-5
        )


def test_hand_worked_case():
    # D = [[0, 1, 1.5], [1, 0, 1.803], [1.5, 1.803, 0]]; the pair (0, 1) in both orders:
    # J = log(exp(1 - 1.5) + exp(1 - 1.803)) + 1 = 0.7439; loss = 2 J^2 / (2 * 2).
    expected = (math.log(math.exp(-0.5) + math.exp(1 - math.sqrt(3.25))) + 1.0) ** 2 / 2
    assert mean_loss([0, 0, 1], [[0.0, 0.0], [1.0, 0.0], [0.0, 1.5]]) == pytest.approx(expected, rel=1e-6)


def test_callable_distance_equals_the_named_one():
    labels, embeddings = BATCHES[0]
    named = mean_loss(labels, embeddings, distance="squared_l2")
    squared = lambda x: tf.reduce_sum(tf.square(x[:, None, :] - x[None, :, :]), axis=-1)  # noqa: E731
    assert mean_loss(labels, embeddings, distance=squared) == pytest.approx(named, rel=1e-5)


def test_eager_function_and_xla_agree():
    labels, embeddings = BATCHES[1]
    eager = mean_loss(labels, embeddings, margin=0.7)
    for jit in (False, True):
        compiled = tf.function(lambda y, x: lifted.lifted_struct_loss(y, x, margin=0.7), jit_compile=jit)
        assert float(tf.reduce_mean(compiled(labels, embeddings))) == pytest.approx(eager, rel=1e-5)


def test_degenerate_batches_give_zero_and_finite_gradients():
    x = tf.Variable(np.float32([[0.3, 0.4], [0.3, 0.4], [1.0, 0.0]]))
    with tf.GradientTape(persistent=True) as tape:
        single_class = tf.reduce_mean(lifted.lifted_struct_loss([0, 0, 0], x))
        no_pair = tf.reduce_mean(lifted.lifted_struct_loss([0, 1, 2], x))
        identical = tf.reduce_mean(lifted.lifted_struct_loss([0, 0, 1], x))
    assert float(single_class) == 0.0 and float(no_pair) == 0.0 and float(identical) > 0
    for value in (single_class, no_pair, identical):
        assert np.all(np.isfinite(tape.gradient(value, x).numpy()))


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16, tf.float64])
def test_precision_follows_the_input(dtype):
    labels, embeddings = BATCHES[0]
    loss = lifted.lifted_struct_loss(labels, tf.constant(embeddings, dtype))
    assert loss.dtype == dtype
    tolerance = 1e-2 if dtype == tf.bfloat16 else 2e-3
    assert float(tf.reduce_mean(tf.cast(loss, tf.float64))) == pytest.approx(
        lifted_oracle(labels, embeddings), rel=tolerance
    )


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="margin=-1"):
        lifted.lifted_struct_loss([0, 0], [[0.0], [1.0]], margin=-1)
    with pytest.raises(ValueError, match="distance='manhattan'"):
        lifted.lifted_struct_loss([0, 0], [[0.0], [1.0]], distance="manhattan")
    with pytest.raises(ValueError, match="same batch size"):
        lifted.lifted_struct_loss([0, 0, 1], [[0.0], [1.0]])
    with pytest.raises(ValueError, match="cannot be used with `reference`"):
        pairwise_distances(tf.zeros([2, 3]), lambda x: tf.zeros([2, 2]), reference=tf.zeros([4, 3]))
