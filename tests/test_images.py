"""The one way uint8 images meet a model: its (H, W, C), conformation in eager and graph code, and its callers."""

import io
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from rankloss_tf.datasets.images import resize_uint8
from rankloss_tf.evaluation.one_shot import OneShotRun, _fit_to, one_shot_accuracy
from rankloss_tf.export import conform_images
from rankloss_tf.images import conform, model_image_shape
from tests.conftest import SHARED_DATA


def pixels(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def flat_model(shape):
    return keras.Sequential([keras.Input(shape, dtype="uint8"), keras.layers.Flatten()])


class Exported:
    image_shape = (6, 6, 3)


def test_model_image_shape_is_read_once_for_every_kind_of_model():
    assert model_image_shape(flat_model((8, 6, 1))) == (8, 6, 1)
    assert model_image_shape(Exported()) == (6, 6, 3)
    assert model_image_shape(lambda images: images, required=False) is None
    assert model_image_shape(flat_model((None, None, 3)), required=False) is None
    with pytest.raises(ValueError, match=r"one image input.*Received: input shape \(None, 4\)"):
        model_image_shape(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))


def test_conform_converts_channels_and_resizes():
    rgb = pixels((2, 9, 7, 3))
    rgba = np.concatenate([rgb, pixels((2, 9, 7, 1), seed=1)], axis=-1)
    gray = tf.image.rgb_to_grayscale(rgb).numpy()
    np.testing.assert_array_equal(conform(rgba, (9, 7, 1)).numpy(), gray)
    np.testing.assert_array_equal(conform(rgba, (9, 7, 3)).numpy(), rgb)
    np.testing.assert_array_equal(conform(gray, (9, 7, 3)).numpy(), np.repeat(gray, 3, axis=-1))
    resized = tf.image.resize(tf.cast(rgb, tf.float32), (4, 5), antialias=True)
    want = tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8).numpy()
    np.testing.assert_array_equal(conform(rgb, (4, 5, None)).numpy(), want)
    assert conform_images is conform  # the export's name for it


def test_conform_refuses_wrong_ranks_and_channels_eagerly_and_in_graphs():
    with pytest.raises(ValueError, match=r"rank 4.*Received: shape=\(9, 7, 3\)"):
        conform(pixels((9, 7, 3)), (9, 7, 3))
    with pytest.raises(ValueError, match=r"C in \(1, 3, 4\).*Received: shape=\(1, 9, 7, 2\)"):
        conform(pixels((1, 9, 7, 2)), (9, 7, 3))
    graph = tf.function(lambda images: conform(images, (9, 7, 1)),
                        input_signature=[tf.TensorSpec([None, None, None, None], tf.uint8)])
    assert graph(pixels((2, 9, 7, 4))).shape == (2, 9, 7, 1)
    for shape in [(1, 9, 7, 2), (1, 0, 7, 1)]:  # wrong ranks through a SavedModel signature: test_export
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"rank 4.*received shape"):
            graph(tf.zeros(shape, tf.uint8))


def test_loaders_resize_is_the_same_on_real_omniglot_characters():
    """The loaders' figures must not move: resize_uint8 through conform equals the formula it replaced."""
    archive = SHARED_DATA / "omniglot" / "images_background_small1.zip"
    if not archive.is_file():
        pytest.skip(f"shared data not found at {archive}")
    with zipfile.ZipFile(archive) as opened:
        names = [n for n in opened.namelist() if n.endswith(".png")][:8]
        images = [tf.io.decode_png(io.BytesIO(opened.read(n)).getvalue(), channels=1) for n in names]
    for image in images:
        before = tf.cast(tf.clip_by_value(tf.round(tf.image.resize(image, (32, 32), antialias=True)), 0.0, 255.0),
                         tf.uint8)
        np.testing.assert_array_equal(resize_uint8(image, 32).numpy(), before.numpy())
        assert resize_uint8(image, (105, 105)) is image


def test_one_shot_conforms_rgb_images_for_a_gray_model():
    """One-shot evaluation used to refuse RGB images for a one-channel model; it now conforms them."""
    rgb = np.stack([np.full((10, 10, 3), value, np.uint8) for value in (0, 120, 250)])
    np.testing.assert_array_equal(_fit_to(rgb, (5, 5, 1)), tf.image.rgb_to_grayscale(rgb[:, :5, :5]).numpy())
    run = OneShotRun("run01", support=rgb, queries=rgb[::-1], targets=np.array([2, 1, 0]))
    model = keras.Sequential([keras.Input((5, 5, 1), dtype="uint8"), keras.layers.Flatten(),
                              keras.layers.Rescaling(1 / 255.0), keras.layers.Lambda(lambda x: x + 1.0)])
    assert one_shot_accuracy(model, [run], metric="l2")["accuracy"] == 1.0
