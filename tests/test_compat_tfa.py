"""`rankloss_tf.compat.tfa`: tfa 0.23's names, signatures, configs, saved models and numbers."""

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import keras

import rankloss_tf.compat.tfa as tfa_losses
from tests import oracles
from tests.test_lifted import lifted_oracle
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


FIXTURES = Path(__file__).resolve().parent / "fixtures" / "tfa"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())["models"]


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
@pytest.mark.parametrize("cls", [tfa_losses.TripletSemiHardLoss, tfa_losses.TripletHardLoss, tfa_losses.LiftedStructLoss])
def test_half_precision_returns_the_input_dtype(cls, dtype):
    labels, embeddings = BATCHES[0]
    loss = cls()(labels, tf.constant(embeddings, dtype))
    assert loss.dtype == dtype
    reference = float(cls()(labels, embeddings))
    assert float(loss) == pytest.approx(reference, rel=1e-2 if dtype == tf.bfloat16 else 2e-3)


@pytest.mark.parametrize("stem", sorted(s for s in EXPECTED if s.endswith("_object")))
def test_configs_equal_the_ones_tfa_saved(stem):
    saved = EXPECTED[stem]["loss_config"]
    cls = keras.saving.get_registered_object(saved["registered_name"])
    assert cls.__name__ == saved["class_name"]
    assert cls.from_config(saved["config"]).get_config() == saved["config"]


def test_npairs_configs_are_tfas():
    assert tfa_losses.NpairsLoss().get_config() == {"reduction": "none", "name": "npairs_loss"}
    assert tfa_losses.NpairsMultilabelLoss(name="nml").get_config() == {"reduction": "none", "name": "nml"}
    assert tfa_losses.TripletSemiHardLoss(reduction="sum").reduction == "none"  # tfa ignored it too


def test_addons_names_resolve():
    for name in ["TripletSemiHardLoss", "TripletHardLoss", "ContrastiveLoss", "NpairsLoss", "NpairsMultilabelLoss", "LiftedStructLoss"]:
        cls = getattr(tfa_losses, name)
        assert keras.saving.get_registered_name(cls) == f"Addons>{name}"
        assert keras.saving.get_registered_object(f"rankloss_tf.compat.tfa>{name}") is None  # 0.1's, unreleased
    for name in ["triplet_semihard_loss", "triplet_hard_loss", "contrastive_loss", "npairs_loss", "npairs_multilabel_loss", "lifted_struct_loss"]:
        assert keras.saving.get_registered_object(f"Addons>{name}") is getattr(tfa_losses, name)


@pytest.mark.parametrize("stem", sorted(EXPECTED))
def test_tfa_saved_models_load_with_their_loss(stem):
    data = np.load(FIXTURES / "batch.npz")
    model = keras.models.load_model(FIXTURES / f"{stem}.h5")
    assert model.loss is not None
    value = model.evaluate(data["features"], data["labels"], batch_size=len(data["labels"]), verbose=0)
    assert value == pytest.approx(EXPECTED[stem]["loss"], rel=1e-5)


@pytest.mark.parametrize("stem", ["semihard_object", "semihard_name", "lifted_function_name"])
def test_tfa_saved_models_continue_fit(stem, tmp_path):
    data = np.load(FIXTURES / "batch.npz")
    model = tfa_losses.load_model(FIXTURES / f"{stem}.h5")
    before = model.get_weights()
    history = model.fit(data["features"], data["labels"], batch_size=len(data["labels"]), epochs=3, verbose=0)
    assert history.history["loss"][0] == pytest.approx(EXPECTED[stem]["loss"], rel=1e-5)
    assert np.all(np.isfinite(history.history["loss"])) and not np.allclose(before[0], model.get_weights()[0])
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-2)  # the saved optimizer's configuration
    model.save(tmp_path / "model.keras")  # and the restored loss serialises again
    restored = keras.models.load_model(tmp_path / "model.keras")
    assert type(restored.loss) is type(model.loss)


def test_lifted_struct_matches_oracle():
    for labels, embeddings in BATCHES:
        expected = lifted_oracle(labels, embeddings, 0.8)
        assert float(tfa_losses.lifted_struct_loss(labels, embeddings, 0.8)) == pytest.approx(expected, rel=1e-5)
        assert float(tfa_losses.LiftedStructLoss(margin=0.8)(labels, embeddings)) == pytest.approx(expected, rel=1e-5)


def test_npairs_multilabel_dense_and_sparse():
    rng = np.random.RandomState(3)
    indicators = rng.randint(0, 2, (5, 3)).astype(np.int64)
    indicators[:, 0] = 1
    similarity = rng.normal(size=(5, 5)).astype(np.float32)
    shared = indicators @ indicators.T
    targets = shared / shared.sum(1, keepdims=True)
    log_softmax = similarity - np.log(np.exp(similarity).sum(1, keepdims=True))
    expected = -(targets * log_softmax).sum(1).mean()
    loss = tfa_losses.NpairsMultilabelLoss()
    assert float(loss(indicators, similarity)) == pytest.approx(expected, rel=1e-5)
    assert float(loss(tf.sparse.from_dense(indicators), similarity)) == pytest.approx(expected, rel=1e-5)
    assert float(tfa_losses.npairs_multilabel_loss(indicators, similarity)) == pytest.approx(expected, rel=1e-5)


def test_metric_learning_helpers():
    x = np.random.RandomState(4).normal(size=(5, 3)).astype(np.float32)
    for squared, distance in [(False, "l2"), (True, "squared_l2")]:
        np.testing.assert_allclose(
            tfa_losses.pairwise_distance(x, squared=squared).numpy(), oracles.distance_matrix(x, distance), atol=1e-5
        )
    np.testing.assert_allclose(tfa_losses.angular_distance(x).numpy(), oracles.distance_matrix(x, "cosine"), atol=1e-6)


def test_callable_metric_for_the_hard_loss_and_in_tf_function():
    labels, embeddings = BATCHES[1]
    squared = lambda x: tfa_losses.pairwise_distance(x, squared=True)  # noqa: E731
    expected = float(tfa_losses.triplet_hard_loss(labels, embeddings, distance_metric="squared-L2"))
    assert float(tfa_losses.triplet_hard_loss(labels, embeddings, distance_metric=squared)) == pytest.approx(expected)
    compiled = tf.function(lambda y, x: tfa_losses.TripletHardLoss(distance_metric=squared)(y, x))
    assert float(compiled(labels, embeddings)) == pytest.approx(expected, rel=1e-6)
