"""Training recipes in the pipeline: rotated classes, batch augmentation with exact resume, the fine-tune recipe."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from rankloss_tf import app, datasets
from rankloss_tf.data import augment
from rankloss_tf.app.recipes import recipe
from rankloss_tf.app.config import AUGMENTATION_NAMES
from rankloss_tf.fine_tune import BackboneRateAdam, freeze_batch_norm
from rankloss_tf.app.protocols import EndToEnd


def digits_config(tmp_path, **overrides):
    fields = dict(dataset="digits", epochs=3, steps_per_epoch=2, embedding_dim=8, out_dir=str(tmp_path / "run"),
                  plots=False, verbose=0, augment="affine", class_rotations=4)
    return app.TrainConfig(**{**fields, **overrides})


# --- rotated classes --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("turns", [1, 2, 4])
def test_rotated_classes_match_a_numpy_loop(turns):
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (5, 6, 6, 2), dtype=np.uint8), np.array([3, 0, 3, 1, 2])
    got = list(augment.rotated_classes(tf.data.Dataset.from_tensor_slices((images, labels)), turns)
               .as_numpy_iterator())
    want = [(np.rot90(image, k * 4 // turns, axes=(0, 1)), label * turns + k)
            for image, label in zip(images, labels) for k in range(turns)]
    assert len(got) == len(want) == 5 * turns
    for (image, label), (want_image, want_label) in zip(got, want):
        np.testing.assert_array_equal(image, want_image)
        assert label == want_label


def test_rotated_classes_refuse_bad_turns_and_non_square_images():
    square = tf.data.Dataset.from_tensor_slices((np.zeros((2, 4, 4, 1), np.uint8), [0, 1]))
    with pytest.raises(ValueError, match="Received: turns=3"):
        augment.rotated_classes(square, 3)
    wide = tf.data.Dataset.from_tensor_slices((np.zeros((2, 4, 6, 1), np.uint8), [0, 1]))
    with pytest.raises(ValueError, match="square images.*Received: image shape"):
        augment.rotated_classes(wide, 4)
    assert len(list(augment.rotated_classes(wide, 2))) == 4  # half turns keep the shape


# --- batch augmentation: names, and a stream resumed mid-way ------------------------------------------------------

def test_augmentation_names_match_the_library():
    assert tuple(augment.AUGMENTATIONS) == AUGMENTATION_NAMES
    assert augment.batch_augmentation("none") is None
    with pytest.raises(ValueError, match="Unknown augmentation.*Received: 'blur'"):
        augment.batch_augmentation("blur")


def test_augment_batches_started_late_continue_the_whole_stream():
    batches = tf.data.Dataset.from_tensor_slices(
        (np.random.default_rng(1).integers(0, 256, (6, 4, 16, 16, 1), dtype=np.uint8), np.zeros((6, 4), np.int64)))
    whole = [x for x, _ in augment.augment_batches(batches, augment.random_affine, seed=5).as_numpy_iterator()]
    late = [x for x, _ in augment.augment_batches(batches.skip(4), augment.random_affine, seed=5, start=4)
            .as_numpy_iterator()]
    np.testing.assert_array_equal(np.stack(late), np.stack(whole[4:]))
    restarted = [x for x, _ in augment.augment_batches(batches.skip(4), augment.random_affine, seed=5)
                 .as_numpy_iterator()]
    assert not np.array_equal(restarted[0], whole[4])  # the index, not the position after the skip, seeds a batch


def test_end_to_end_batches_resume_exactly_with_augmentation(tmp_path):
    config = digits_config(tmp_path).resolved()
    images = datasets.load("digits", "train")
    method = EndToEnd(config, images.element_spec[0].shape)
    whole = [x for x, _ in method.batches(images, skip=0).take(5).as_numpy_iterator()]
    resumed = [x for x, _ in method.batches(images, skip=3).take(2).as_numpy_iterator()]
    np.testing.assert_array_equal(np.stack(resumed), np.stack(whole[3:]))
    plain = EndToEnd(digits_config(tmp_path, augment="none").resolved(), images.element_spec[0].shape)
    assert not np.array_equal(next(iter(plain.batches(images, skip=0)))[0], whole[0])  # augmentation is on
    labels = np.concatenate([y for _, y in method.batches(images, skip=0).take(20).as_numpy_iterator()])
    assert labels.max() >= 10  # rotated classes: 10 digits x 4


class Interrupt(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def test_interrupted_augmented_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path):
    whole = app.train(digits_config(tmp_path / "whole"))
    config = digits_config(tmp_path / "cut")
    with pytest.raises(KeyboardInterrupt):
        app.train(config, callbacks=[Interrupt(epoch=1)])
    resumed = app.train(config)
    assert resumed.resumed == "fitting" and resumed.history.epoch == [2]
    for mine, theirs in zip(resumed.model.weights, whole.model.weights):
        np.testing.assert_allclose(mine.numpy(), theirs.numpy(), atol=1e-5)
    assert resumed.metrics == pytest.approx(whole.metrics, abs=1e-5)


def test_omniglot_recipe_and_frozen_features_refuse_augmentation():
    config = app.TrainConfig(dataset="omniglot").resolved()
    assert (config.augment, config.class_rotations) == (recipe("omniglot").augment, recipe("omniglot").class_rotations)
    assert app.TrainConfig(dataset="cars196", backbone="efficientnet_lite0").resolved().augment == "none"
    frozen = app.TrainConfig(dataset="omniglot", backbone="efficientnet_lite0").resolved()
    assert (frozen.augment, frozen.class_rotations) == ("none", 1)
    with pytest.raises(ValueError, match="cached frozen features.*Received: augment='crop_flip'"):
        app.TrainConfig(dataset="cars196", backbone="efficientnet_lite0", augment="crop_flip").resolved()


# --- the fine-tune recipe ---------------------------------------------------------------------------------------

def test_backbone_rate_adam_scales_the_backbone_step_only():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="projection")(keras.layers.Dense(4, name="body")(inputs)))
    before = [v.numpy().copy() for v in model.trainable_variables]
    optimizer = BackboneRateAdam(0.1, learning_rate=1e-2)
    gradients = [tf.ones_like(v) for v in model.trainable_variables]
    optimizer.apply_gradients(zip(gradients, model.trainable_variables))
    steps = {v.path: np.abs(v.numpy() - b).max() for v, b in zip(model.trainable_variables, before)}
    # Adam's first step with a constant gradient moves every weight by the learning rate.
    assert steps == pytest.approx({"body/kernel": 1e-3, "body/bias": 1e-3, "projection/kernel": 1e-2,
                                   "projection/bias": 1e-2}, rel=1e-3)
    assert keras.optimizers.deserialize(keras.optimizers.serialize(optimizer)).backbone_scale == 0.1
    with pytest.raises(ValueError, match="Received: backbone_scale=0"):
        BackboneRateAdam(0)


def test_frozen_batch_norm_keeps_its_statistics_in_fit():
    model = keras.Sequential([keras.Input((4,)), keras.layers.BatchNormalization(), keras.layers.Dense(1)])
    assert freeze_batch_norm(model) == 1
    model.compile(optimizer="sgd", loss="mse")
    model.fit(np.full((8, 4), 5.0), np.ones((8, 1)), epochs=1, verbose=0)
    np.testing.assert_array_equal(model.layers[0].moving_mean.numpy(), np.zeros(4))


class BatchNormWatch(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.before = self.state()

    def on_train_end(self, logs=None):
        self.after = self.state()

    def state(self):
        layers = self.model._flatten_layers(include_self=False, recursive=True)
        return {v.path: v.numpy().copy() for layer in layers for v in layer.weights
                if isinstance(layer, (keras.layers.BatchNormalization, keras.layers.Conv2D))}


@pytest.mark.slow
def test_fine_tune_trains_with_the_photo_recipe_and_frozen_batch_norm(tmp_path):
    config = app.TrainConfig(dataset="digits", backbone="efficientnet_lite0", weights="random", fine_tune=True,
                                  image_size=32, epochs=1, steps_per_epoch=2, embedding_dim=8,
                                  out_dir=str(tmp_path / "run"), plots=False, verbose=0)
    resolved = config.resolved()
    assert (resolved.augment, resolved.backbone_lr_scale) == ("crop_flip", 0.1)
    watch = BatchNormWatch()
    result = app.train(config, callbacks=[watch])
    batch_norm = [path for path in watch.before if "moving_" in path]
    assert batch_norm and all(np.array_equal(watch.before[p], watch.after[p]) for p in batch_norm)
    assert any(not np.array_equal(watch.before[p], watch.after[p]) for p in watch.before if "kernel" in p)
    assert isinstance(result.model.optimizer, BackboneRateAdam)
    assert isinstance(keras.models.load_model(tmp_path / "run" / "model.keras").optimizer, BackboneRateAdam)
