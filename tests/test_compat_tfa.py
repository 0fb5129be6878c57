"""`rankloss_tf.compat.tfa`: tfa 0.23's names, signatures and numbers."""

import numpy as np
import pytest
import tensorflow as tf
import keras

import rankloss_tf.compat.tfa as tfa_losses
from tests import oracles
from tests.test_losses import BATCHES, GOLDEN_E, GOLDEN_Y

METRICS = {"L2": "l2", "squared-L2": "squared_l2", "angular": "cosine"}


@pytest.mark.parametrize("metric,expected", [("L2", 0.81385547), ("squared-L2", 0.7), ("angular", 0.8333333)])
def test_semihard_golden(metric, expected):
    assert float(tfa_losses.triplet_semihard_loss(GOLDEN_Y, GOLDEN_E, distance_metric=metric)) == pytest.approx(
        expected, abs=1e-6
    )
    loss = tfa_losses.TripletSemiHardLoss(margin=1.0, distance_metric=metric)
    assert float(loss(GOLDEN_Y, GOLDEN_E)) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    "metric,hard,soft",
    [("L2", 1.0419079, 0.730117), ("squared-L2", 1.1733333, 0.8600638), ("angular", 1.0866667, 0.7584966)],
)
def test_hard_golden(metric, hard, soft):
    assert float(tfa_losses.TripletHardLoss(distance_metric=metric)(GOLDEN_Y, GOLDEN_E)) == pytest.approx(hard, abs=1e-6)
    assert float(tfa_losses.triplet_hard_loss(GOLDEN_Y, GOLDEN_E, soft=True, distance_metric=metric)) == pytest.approx(
        soft, abs=1e-6
    )


def test_docstring_cases():
    y, x = [0, 0], [[0.0, 1.0], [1.0, 0.0]]
    assert float(tfa_losses.TripletSemiHardLoss()(y, x)) == pytest.approx(2.4142137, abs=1e-6)
    assert float(tfa_losses.TripletHardLoss()(y, x)) == pytest.approx(1.0, abs=1e-6)


def test_npairs_golden():
    similarity = GOLDEN_E[0::2] @ GOLDEN_E[1::2].T
    assert float(tfa_losses.npairs_loss([0, 1, 2], similarity)) == pytest.approx(1.0450543, abs=1e-6)
    assert float(tfa_losses.NpairsLoss()([0, 1, 2], similarity)) == pytest.approx(1.0450543, abs=1e-6)


def test_npairs_shared_labels_split_the_target():
    similarity = np.array([[2.0, 1.0, 0.0], [0.5, 1.5, 0.0], [0.0, 0.3, 1.0]], np.float32)
    labels = [0, 0, 1]
    targets = np.array([[0.5, 0.5, 0], [0.5, 0.5, 0], [0, 0, 1]])
    log_softmax = similarity - np.log(np.exp(similarity).sum(1, keepdims=True))
    expected = -(targets * log_softmax).sum(1).mean()
    assert float(tfa_losses.npairs_loss(labels, similarity)) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("metric", sorted(METRICS))
def test_random_batches_match_tfa_rules(metric):
    for labels, embeddings in BATCHES:
        semi = oracles.triplet_semihard(labels, embeddings, 1.0, METRICS[metric])
        hard = oracles.triplet_hard(labels, embeddings, 1.0, False, METRICS[metric], skip_without_positive=False)
        assert float(tfa_losses.triplet_semihard_loss(labels, embeddings, distance_metric=metric)) == pytest.approx(
            semi, rel=2e-5, abs=2e-5
        )
        assert float(tfa_losses.triplet_hard_loss(labels, embeddings, distance_metric=metric)) == pytest.approx(
            hard, rel=2e-5, abs=2e-5
        )


def test_callable_distance_metric():
    def manhattan(embeddings):
        return tf.reduce_sum(tf.abs(embeddings[:, None, :] - embeddings[None, :, :]), axis=-1)

    labels, embeddings = BATCHES[0]
    d = np.abs(embeddings[:, None] - embeddings[None]).sum(-1)
    got = float(tfa_losses.triplet_semihard_loss(labels, embeddings, distance_metric=manhattan))
    pairs = [(a, p) for a in range(len(labels)) for p in range(len(labels)) if a != p and labels[a] == labels[p]]
    total = 0.0
    for a, p in pairs:
        negatives = [n for n in range(len(labels)) if labels[n] != labels[a]]
        beyond = [d[a, n] for n in negatives if d[a, n] > d[a, p]]
        total += max(d[a, p] - (min(beyond) if beyond else max(d[a, n] for n in negatives)) + 1.0, 0.0)
    assert got == pytest.approx(total / len(pairs), rel=1e-5)


def test_no_positive_pair_gives_zero_not_nan():
    assert float(tfa_losses.triplet_semihard_loss([0, 1, 2], np.eye(3, dtype=np.float32))) == 0.0


def test_hard_keeps_tfa_rule_for_anchors_without_positive():
    labels, embeddings = [0, 1, 2], np.float32([[0.0, 0.0], [0.3, 0.0], [0.0, 2.0]])
    # tfa: positive distance 0, loss = mean(max(1 - d_min_negative, 0)) = mean(0.7, 0.7, 0).
    assert float(tfa_losses.triplet_hard_loss(labels, embeddings)) == pytest.approx(1.4 / 3, rel=1e-6)


def test_contrastive_on_distances():
    y_true = np.array([1, 0, 0, 1], np.float32)
    y_pred = np.array([0.2, 0.3, 1.5, 0.0], np.float32)
    expected = np.array([0.04, 0.49, 0.0, 0.0])
    np.testing.assert_allclose(tfa_losses.contrastive_loss(y_true, y_pred).numpy(), expected, atol=1e-6)
    assert float(tfa_losses.ContrastiveLoss()(y_true, y_pred)) == pytest.approx(expected.mean(), rel=1e-6)


def test_bad_metric_and_config_round_trip():
    with pytest.raises(ValueError, match="distance_metric='cosine'"):
        tfa_losses.TripletSemiHardLoss(distance_metric="cosine")
    # As Keras 2 with tfa's reduction "none": the batch loss times each weight.
    weighted = tfa_losses.NpairsLoss()([0, 1], np.eye(2, dtype=np.float32), sample_weight=[1.0, 2.0])
    np.testing.assert_allclose(weighted.numpy(), [0.31326166, 0.6265233], rtol=1e-6)
    for loss in [
        tfa_losses.TripletSemiHardLoss(margin=0.5, distance_metric="angular"),
        tfa_losses.TripletHardLoss(soft=True),
        tfa_losses.ContrastiveLoss(margin=2.0),
        tfa_losses.NpairsLoss(),
    ]:
        restored = keras.losses.deserialize(keras.losses.serialize(loss))
        assert type(restored) is type(loss) and restored.get_config() == loss.get_config()
