"""The Keras loss classes: the kernels' values, serialisation, sample weights, reduction, model.fit
and custom training loops."""

import importlib
import sys

import numpy as np
import pytest
import tensorflow as tf
import keras

from rankloss_tf import losses, ops
from tests.loss_cases import BATCHES, KERAS_CLASSES, mean, random_batch


@pytest.mark.parametrize("cls,kernel,kwargs", KERAS_CLASSES)
def test_keras_class_equals_kernel_and_round_trips(cls, kernel, kwargs):
    labels, embeddings = BATCHES[2]
    loss = cls(**kwargs)
    assert float(loss(labels, embeddings)) == pytest.approx(mean(kernel, labels, embeddings, **kwargs), rel=1e-6)
    config = loss.get_config()
    clone = cls.from_config(config)
    assert clone.get_config() == config
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(restored) is cls and restored.get_config() == config


def test_sample_weight_weights_anchors():
    labels, embeddings = BATCHES[3]
    loss = losses.TripletHardLoss()
    per_anchor = ops.triplet_hard_loss(labels, embeddings).numpy()
    weights = np.linspace(0.0, 2.0, len(labels)).astype(np.float32)
    expected = np.sum(per_anchor * weights) / len(labels)
    assert float(loss(labels, embeddings, sample_weight=weights)) == pytest.approx(expected, rel=1e-5)


def test_get_builds_by_name():
    assert isinstance(losses.get("npair_angular", lam=1.0), losses.NPairAngularLoss)
    assert set(losses.LOSSES) == {"contrastive", "triplet_semihard", "triplet_hard", "npair", "angular", "npair_angular"}
    # Today's losses (MODERN_LOSSES) are in the registry too.
    assert set(losses.registry()) - set(losses.LOSSES) == {
        "multi_similarity", "supcon", "ntxent", "proxy_anchor", "proxy_nca", "arcface", "cosface"}
    assert losses.get("arcface").__class__.__name__ == "ArcFaceLoss"
    with pytest.raises(ValueError, match="Received: name='arcfase'"):
        losses.get("arcfase")


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda: losses.TripletSemiHardLoss(distance="euclidean"), "distance='euclidean'"),
        (lambda: losses.ContrastiveLoss(margin=-1.0), "margin=-1.0"),
        (lambda: losses.TripletHardLoss(margin=float("nan")), "margin=nan"),
        (lambda: losses.AngularLoss(alpha=90), "alpha=90"),
        (lambda: losses.AngularLoss(alpha=0), "alpha=0"),
        (lambda: losses.NPairAngularLoss(alpha=-5), "alpha=-5"),
        (lambda: losses.NPairAngularLoss(lam=-1), "lam=-1"),
        (lambda: losses.NPairLoss(variant="multi"), "variant='multi'"),
        (lambda: losses.NPairLoss(l2_reg=-0.1), "l2_reg=-0.1"),
    ],
)
def test_bad_options_raise(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def _digits_pk(num_batches=12, p=5, k=4, seed=0):
    """PK batches of scikit-learn digits features (a real dataset)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int32)
    rng = np.random.RandomState(seed)
    xs, ys = [], []
    for _ in range(num_batches):
        for c in rng.choice(10, p, replace=False):
            idx = rng.choice(np.flatnonzero(y == c), k, replace=False)
            xs.append(x[idx])
            ys.append(y[idx])
    return np.concatenate(xs), np.concatenate(ys)


@pytest.mark.parametrize("cls,kernel,kwargs", KERAS_CLASSES)
def test_fit_lowers_loss_and_model_reloads(cls, kernel, kwargs, tmp_path):
    keras.utils.set_random_seed(0)
    x, y = _digits_pk()
    model = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(16), keras.layers.UnitNormalization()]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=cls(**kwargs))
    before = model.evaluate(x, y, batch_size=20, verbose=0)
    model.fit(x, y, batch_size=20, epochs=4, shuffle=False, verbose=0)
    after = model.evaluate(x, y, batch_size=20, verbose=0)
    assert after < before * 0.9
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    assert type(reloaded.loss) is cls
    assert reloaded.loss.get_config() == model.loss.get_config()
    assert reloaded.evaluate(x, y, batch_size=20, verbose=0) == pytest.approx(after, rel=1e-5)


@pytest.mark.parametrize("cls,kernel,kwargs", KERAS_CLASSES)
def test_custom_training_loop_with_the_tape_outside_a_function(cls, kernel, kwargs):
    # The step traced with a None batch dimension and differentiated by a tape outside it: an
    # AssertionError in TensorFlow's cond gradient before the blocks took their labels as inputs.
    keras.utils.set_random_seed(0)
    labels, x = random_batch(5, pk=(5, 4), dim=6)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4)])
    loss = cls(**kwargs)
    forward = tf.function(lambda y, x: loss(y, model(x)),
                          input_signature=[tf.TensorSpec([None], tf.int32), tf.TensorSpec([None, 6], tf.float32)])
    optimizer = keras.optimizers.SGD(1e-3)  # small steps: each lowers the loss
    values = []
    for step in range(3):
        with tf.GradientTape() as tape:
            value = forward(labels, x)
        gradients = tape.gradient(value, model.trainable_variables)
        if step == 0:
            with tf.GradientTape() as tape:
                expected = loss(labels, model(x))
            for got, reference in zip(gradients, tape.gradient(expected, model.trainable_variables)):
                np.testing.assert_allclose(got.numpy(), reference.numpy(), rtol=1e-4, atol=1e-6)
            assert float(value) == pytest.approx(float(expected), rel=1e-5)
        optimizer.apply(gradients, model.trainable_variables)
        values.append(float(value))
    assert np.isfinite(values).all() and values[2] < values[1] < values[0]


@pytest.mark.parametrize("cls,kernel,kwargs", KERAS_CLASSES)
def test_fit_takes_a_last_batch_of_one_sample(cls, kernel, kwargs):
    # 9 samples in batches of 4: the last batch has one sample and no pair or tuple.
    keras.utils.set_random_seed(0)
    x, y = _digits_pk()
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(8), keras.layers.UnitNormalization()])
    model.compile(optimizer="sgd", loss=cls(**kwargs))
    history = model.fit(x[:9], y[:9], batch_size=4, epochs=1, shuffle=False, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert all(np.isfinite(w).all() for w in model.get_weights())


@pytest.mark.parametrize("cls", sorted(losses.LOSSES.values(), key=lambda c: c.__name__))
def test_non_finite_embedding_makes_keras_loss_nan(cls):
    labels, embeddings = random_batch(1, pk=(4, 4))
    embeddings[0] = np.nan
    assert np.isnan(float(cls()(labels, embeddings)))


@pytest.mark.parametrize("cls", sorted(losses.LOSSES.values(), key=lambda c: c.__name__))
def test_empty_batch_gives_zero(cls):
    assert float(cls()(np.zeros([0], np.int32), np.zeros([0, 3], np.float32))) == 0.0
    kernel = cls.kernel
    assert kernel(np.zeros([0], np.int32), np.zeros([0, 3], np.float32)).shape == (0,)


def test_numpy_scalar_options_accepted():
    assert losses.TripletSemiHardLoss(margin=np.float32(0.2)).margin == pytest.approx(0.2)
    assert losses.ContrastiveLoss(margin=np.int64(2)).margin == 2.0
    assert losses.AngularLoss(alpha=np.int64(40)).alpha == 40.0
    assert losses.NPairAngularLoss(lam=np.float64(1.5)).lam == 1.5
    assert mean(ops.npair_loss, [0, 0, 1, 1], np.eye(4, 3, dtype=np.float32), l2_reg=np.float32(0.1)) > 0
    with pytest.raises(ValueError, match="margin=True"):
        losses.TripletHardLoss(margin=True)


@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "sum", "mean", "mean_with_sample_weight", None])
def test_reduction_is_keras_own(reduction):
    # The per-anchor vector goes through Keras' public Loss.__call__: compare with a Keras
    # loss whose per-sample values are that vector.
    labels, embeddings = random_batch(0, pk=(3, 2))
    weights = np.linspace(0.5, 2.0, len(labels)).astype(np.float32)
    per_anchor = ops.triplet_hard_loss(labels, embeddings)

    class Given(keras.losses.Loss):
        def call(self, y_true, y_pred):
            return y_pred

    for sample_weight in (None, weights):
        expected = Given(reduction=reduction)(per_anchor, per_anchor, sample_weight=sample_weight)
        got = losses.TripletHardLoss(reduction=reduction)(labels, embeddings, sample_weight=sample_weight)
        np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-6)


def test_losses_modern_warns_and_re_exports_for_one_release():
    sys.modules.pop("rankloss_tf.losses_modern", None)
    with pytest.warns(DeprecationWarning, match="import its names from rankloss_tf.losses"):
        modern = importlib.import_module("rankloss_tf.losses_modern")
    for name in ["XBM", "ClassCosines", "ClassLoss", "ProxyAnchorLoss", "ArcFaceLoss", "with_class_head", "embedding_part"]:
        assert getattr(modern, name) is getattr(losses, name)
    assert modern.MODERN_LOSSES == {name: cls for name, cls in losses.registry().items() if name not in losses.LOSSES}
