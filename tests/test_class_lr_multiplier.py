"""The class vectors' own learning rate (issue 31 part 3): ``class_lr_multiplier`` of a ``ClassLoss``."""

import keras
import numpy as np
import pytest

from rankloss_tf import losses
from rankloss_tf.losses import ClassCosines, ProxyAnchorLoss, with_class_head


def _trained_vectors(lr_multiplier, learning_rate, steps=5):
    """The class vectors (as the cosines see them: stored x multiplier) after Adam trains them alone."""
    keras.utils.set_random_seed(3)
    inputs = np.random.default_rng(0).normal(size=(16, 6)).astype("float32")
    labels = np.arange(16) % 4
    embedder = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5)])
    embedder.trainable = False  # only the class vectors train: their trajectory alone is compared
    model = with_class_head(embedder, 4, lr_multiplier=lr_multiplier)
    model.compile(keras.optimizers.Adam(learning_rate), loss=ProxyAnchorLoss())
    model.fit(inputs, labels, batch_size=16, epochs=steps, verbose=0)
    return model.get_layer("class_head").class_vectors.numpy() * lr_multiplier


def test_a_multiplier_trains_the_class_vectors_as_adam_at_that_multiple_of_the_rate():
    scaled = _trained_vectors(lr_multiplier=100.0, learning_rate=1e-4)
    reference = _trained_vectors(lr_multiplier=1.0, learning_rate=1e-2)
    unscaled = _trained_vectors(lr_multiplier=1.0, learning_rate=1e-4)
    np.testing.assert_allclose(scaled, reference, rtol=1e-4, atol=1e-5)
    assert np.abs(scaled - unscaled).max() > 1e-2


@pytest.mark.parametrize("name", ["proxy_anchor", "proxy_nca", "arcface", "cosface"])
def test_every_class_loss_takes_the_multiplier_and_keeps_it_in_its_config(name):
    loss = losses.get(name, class_lr_multiplier=50)
    again = type(loss).from_config(loss.get_config())
    assert again.head_options()["lr_multiplier"] == pytest.approx(50.0)
    assert losses.get(name).head_options()["lr_multiplier"] == pytest.approx(1.0)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), "fast"])
def test_a_multiplier_that_is_not_a_positive_number_is_refused_by_name(bad):
    with pytest.raises(ValueError, match="class_lr_multiplier"):
        ProxyAnchorLoss(class_lr_multiplier=bad)
    with pytest.raises(ValueError, match="lr_multiplier"):
        ClassCosines(3, lr_multiplier=bad)


def test_the_layer_keeps_its_multiplier_through_a_keras_file(tmp_path):
    embedder = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model = with_class_head(embedder, 4, **ProxyAnchorLoss(class_lr_multiplier=100).head_options())
    head = model.get_layer("class_head")
    assert np.linalg.norm(head.class_vectors.numpy(), axis=1).max() < 0.01  # 100 times shorter than drawn
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert loaded.get_layer("class_head").lr_multiplier == pytest.approx(100.0)
    np.testing.assert_allclose(loaded.get_layer("class_head").class_vectors.numpy(), head.class_vectors.numpy())


def test_train_builds_the_class_head_with_the_loss_options_multiplier():
    import tensorflow as tf

    from rankloss_tf.app import TrainConfig
    from rankloss_tf.app.protocols import protocol

    config = TrainConfig(dataset="digits", loss="proxy_anchor", loss_options={"class_lr_multiplier": 100},
                         verbose=0).resolved()
    images = tf.data.Dataset.from_tensor_slices((np.zeros((8, 8, 8, 1), np.uint8), np.arange(8) % 4))
    trained, _ = protocol(config, (8, 8, 1)).build(steps=2, images=images)
    head = trained.get_layer("class_head")
    assert (head.num_classes, head.lr_multiplier) == (4, pytest.approx(100.0))
