"""Triplet losses (semi-hard, batch-hard): golden values, the sorting path, memory, reference sets, distances."""

import numpy as np
import pytest
import tensorflow as tf

from rankloss_tf import ops
from rankloss_tf.ops import losses as kernels
from tests import oracles
from tests.loss_cases import DISTANCES, GOLDEN_E, GOLDEN_Y, mean


@pytest.mark.parametrize(
    "margin,values",
    [(1.0, (0.81385547, 0.7, 0.8333333)), (0.2, (0.093967654, 0.15333334, 0.10666666))],
)
def test_golden_semihard(margin, values):
    for distance, expected in zip(DISTANCES, values):
        got = mean(ops.triplet_semihard_loss, GOLDEN_Y, GOLDEN_E, margin=margin, distance=distance)
        assert got == pytest.approx(expected, abs=1e-6)


def test_golden_hard():
    hard = (1.0419079, 1.1733333, 1.0866667)
    soft = (0.730117, 0.8600638, 0.7584966)
    for distance, h, s in zip(DISTANCES, hard, soft):
        assert mean(ops.triplet_hard_loss, GOLDEN_Y, GOLDEN_E, distance=distance) == pytest.approx(h, abs=1e-6)
        assert mean(ops.triplet_hard_loss, GOLDEN_Y, GOLDEN_E, soft=True, distance=distance) == pytest.approx(
            s, abs=1e-6
        )


def test_golden_tfa_docstring_cases():
    labels, embeddings = [0, 0], [[0.0, 1.0], [1.0, 0.0]]
    assert mean(ops.triplet_semihard_loss, labels, embeddings) == pytest.approx(2.4142137, abs=1e-6)
    assert mean(ops.triplet_hard_loss, labels, embeddings) == pytest.approx(1.0, abs=1e-6)


def test_semihard_memory_is_quadratic():
    # A B=2048 batch would need a [B*B, B] float tensor of 32 GB in tfa's formulation.
    labels = np.repeat(np.arange(512), 4)
    embeddings = tf.math.l2_normalize(tf.random.stateless_normal([2048, 64], seed=[1, 2]), axis=1)
    value = tf.reduce_mean(ops.triplet_semihard_loss(labels, embeddings))
    assert np.isfinite(value.numpy())


@pytest.mark.parametrize("jit", [False, True])
def test_semihard_sorting_path_matches_oracle(monkeypatch, jit):
    # Batches with many positives per anchor are mined by sorting instead of per-positive passes.
    from rankloss_tf.ops import mining

    monkeypatch.setattr(mining, "MAX_POSITIVE_PASSES", 0)
    rng = np.random.RandomState(11)
    for batch_size, num_classes in [(40, 2), (30, 3), (24, 9)]:
        labels = rng.randint(0, num_classes, batch_size)
        embeddings = rng.normal(size=(batch_size, 4)).astype(np.float32)
        kernel = tf.function(lambda y, x: ops.triplet_semihard_loss(y, x, distance="squared_l2"), jit_compile=jit)
        got = float(tf.reduce_mean(kernel(labels, embeddings)))
        assert got == pytest.approx(oracles.triplet_semihard(labels, embeddings, 1.0, "squared_l2"), rel=2e-5)


def _cross_distances(x, r, distance):
    d = oracles.distance_matrix(np.concatenate([x, r]), distance)
    return d[: len(x), len(x) :]


def test_reference_set_matches_loop_oracle():
    # Query vs reference (e.g. image anchors vs text embeddings): positives and negatives
    # come from the reference set only, and an anchor is never compared with itself.
    rng = np.random.RandomState(5)
    labels, x = rng.randint(0, 4, 10), rng.normal(size=(10, 3)).astype(np.float32)
    ref_labels, r = np.array([0, 1, 2, 3, 0, 1, 5]), rng.normal(size=(7, 3)).astype(np.float32)
    for distance in DISTANCES:
        d = _cross_distances(x, r, distance)
        pos = labels[:, None] == ref_labels[None, :]
        semi, hard, contrastive, pairs = 0.0, [], [], 0
        for a in range(len(x)):
            negatives = d[a][~pos[a]]
            for p in np.flatnonzero(pos[a]):
                beyond = negatives[negatives > d[a, p]]
                n = beyond.min() if len(beyond) else negatives.max()
                semi += max(d[a, p] - n + 1.0, 0.0)
                pairs += 1
            hard.append(max(d[a][pos[a]].max() - negatives.min() + 1.0, 0.0) if pos[a].any() else 0.0)
            terms = np.where(pos[a], d[a] ** 2, np.maximum(1.0 - d[a], 0.0) ** 2)
            contrastive.append(terms.mean())
        kwargs = {"distance": distance, "reference_labels": ref_labels, "reference_embeddings": r}
        assert mean(ops.triplet_semihard_loss, labels, x, **kwargs) == pytest.approx(semi / pairs, rel=1e-5)
        assert mean(ops.triplet_hard_loss, labels, x, **kwargs) == pytest.approx(np.mean(hard), rel=1e-5)
        assert mean(ops.contrastive_loss, labels, x, **kwargs) == pytest.approx(np.mean(contrastive), rel=1e-5)


def test_reference_set_errors():
    with pytest.raises(ValueError, match="go together"):
        ops.triplet_semihard_loss([0, 1], np.zeros((2, 3), np.float32), reference_labels=[0])
    with pytest.raises(ValueError, match="same dimension"):
        ops.triplet_hard_loss(
            [0, 1], np.zeros((2, 3), np.float32), reference_labels=[0], reference_embeddings=np.zeros((1, 4), np.float32)
        )


def test_a_callable_distance_is_honoured_or_refused():
    # Semi-hard mines on the callable's matrix; batch-hard and contrastive fuse their passes for
    # the named metrics and refuse a callable rather than compute squared L2 in its place.
    labels = np.array([0, 0, 1, 1], np.int32)
    x = np.array([[0.0, 0.0], [1.0, 2.0], [3.0, 1.0], [0.5, 4.0]], np.float32)

    def manhattan(e):
        return tf.reduce_sum(tf.abs(e[:, None, :] - e[None, :, :]), axis=-1)

    got = ops.triplet_semihard_loss(labels, x, distance=manhattan)
    l1 = np.abs(x[:, None, :] - x[None, :, :]).sum(-1)
    assert not np.allclose(got.numpy(), ops.triplet_semihard_loss(labels, x, distance="squared_l2").numpy())
    np.testing.assert_allclose(got.numpy(), kernels.semihard_from_distances(
        tf.constant(l1), tf.constant((labels[:, None] == labels[None]) & ~np.eye(4, dtype=bool)),
        tf.constant(labels[:, None] != labels[None]), 1.0).numpy(), rtol=1e-6)
    for kernel in (ops.triplet_hard_loss, ops.contrastive_loss):
        with pytest.raises(ValueError, match="fused passes.*Received: distance=<function"):
            kernel(labels, x, distance=manhattan)
