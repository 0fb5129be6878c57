"""Embedding model builders: uint8 input, unit-norm output, backbones, saving."""

import keras
import numpy as np
import pytest

from rankloss_tf.models import ImagePreprocessing, build_embedding_model, small_cnn


def uint8_images(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


@pytest.mark.parametrize(
    "input_shape, image_size, blocks",
    [((8, 8, 1), None, 2), ((105, 105, 1), (28, 28), 3), ((32, 32, 3), None, 4)],
)
def test_small_cnn_embeddings_are_unit_norm(input_shape, image_size, blocks):
    model = build_embedding_model(input_shape, embedding_dim=24, image_size=image_size)
    assert model.input.dtype == "uint8"
    embeddings = model(uint8_images((3, *input_shape))).numpy()
    assert embeddings.shape == (3, 24) and embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-5)
    features = small_cnn(input_shape, image_size=image_size)
    assert sum(isinstance(layer, keras.layers.Conv2D) for layer in features.layers) == blocks


def test_unnormalised_embeddings():
    model = build_embedding_model((8, 8, 1), embedding_dim=4, normalize=False)
    norms = np.linalg.norm(model(uint8_images((5, 8, 8, 1))).numpy(), axis=1)
    assert not np.allclose(norms, 1.0)


def test_preprocessing_resizes_tiles_and_scales():
    layer = ImagePreprocessing(image_size=(2, 2), channels=3)
    x = np.zeros((1, 4, 4, 1), np.uint8)
    x[0, :2, :2, 0] = 255
    out = np.asarray(layer(x))
    assert out.shape == (1, 2, 2, 3)
    np.testing.assert_allclose(out[0, :, :, 1], [[1.0, 0.0], [0.0, 0.0]])  # area: block means
    caffe = np.asarray(ImagePreprocessing(backbone="ResNet50")(np.full((1, 2, 2, 3), 255, np.uint8)))
    np.testing.assert_allclose(caffe[0, 0, 0], [255 - 103.939, 255 - 116.779, 255 - 123.68], rtol=1e-5)


def test_keras_applications_backbone_on_grayscale():
    model = build_embedding_model((32, 32, 1), embedding_dim=8, backbone="MobileNetV2", weights=None)
    embeddings = model(uint8_images((2, 32, 32, 1))).numpy()
    assert embeddings.shape == (2, 8)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-5)


def test_efficientnet_lite0_backbone():
    model = build_embedding_model((40, 40, 1), embedding_dim=8, backbone="efficientnet_lite0", image_size=(32, 32))
    embeddings = model(uint8_images((2, 40, 40, 1))).numpy()
    assert embeddings.shape == (2, 8) and np.isfinite(embeddings).all()
    # The backbone normalises its own 0..255 input: the preprocessing only resizes and tiles.
    preprocessing = model.layers[1].get_layer("preprocessing")
    assert np.asarray(preprocessing(np.full((1, 40, 40, 1), 200, np.uint8))).max() == pytest.approx(200)


def test_keras_file_round_trip(tmp_path):
    model = build_embedding_model((105, 105, 1), embedding_dim=16, image_size=(28, 28))
    x = uint8_images((4, 105, 105, 1))
    model.save(tmp_path / "model.keras")
    reloaded = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(reloaded(x).numpy(), model(x).numpy(), atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(input_shape=(8, 8, 1), backbone="resnet_nonexistent"), "backbone"),
        (dict(input_shape=(8, 8, 1), backbone="resnet50"), "side >= 32"),  # any spelling resolves
        (dict(input_shape=(8, 8), backbone="small_cnn"), "input_shape"),
        (dict(input_shape=(8, 8, 1), embedding_dim=0), "embedding_dim"),
        (dict(input_shape=(8, 8, 3), backbone="MobileNetV2", image_size=(8, 8, 8)), "image_size"),
        (dict(input_shape=(40, 32, 3), backbone="efficientnet_lite0"), "square"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_embedding_model(**kwargs)


def test_preprocessing_rejects_channel_mismatch():
    with pytest.raises(ValueError, match="channels"):
        ImagePreprocessing(channels=3)(np.zeros((1, 4, 4, 2), np.uint8))
