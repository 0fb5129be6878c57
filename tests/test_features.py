"""Frozen-backbone features: the on-disk cache (hit, miss, invalidation, atomicity)."""

import numpy as np
import pytest
import tensorflow as tf

from rankloss_tf.backbones import efficientnet_lite0, extract_features, feature_cache_path
from rankloss_tf.backbones import features as features_module

SIZE = 32


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """A random EfficientNet-Lite0 saved in the converted-weights format."""
    model = efficientnet_lite0(weights=None, image_size=SIZE)
    path = tmp_path_factory.mktemp("weights") / "lite0.npz"
    np.savez(path, **{f"{layer.name}/{w.name}": w.numpy() for layer in model.layers for w in layer.weights})
    return path


@pytest.fixture(scope="module")
def toy_images():
    images = np.random.default_rng(0).integers(0, 256, (10, SIZE, SIZE, 3), dtype=np.uint8)
    return images, np.arange(10, dtype=np.int32) % 3


def dataset(toy_images):
    return tf.data.Dataset.from_tensor_slices(toy_images)


def extract(toy_images, weights_file, cache_dir, **kwargs):
    kwargs = {"image_size": SIZE, "weights": str(weights_file), "dataset_id": "toy:train", **kwargs}
    return extract_features(dataset(toy_images), cache_dir=cache_dir, batch_size=4, verbose=0, **kwargs)


@pytest.fixture
def count_passes(monkeypatch):
    """Counts passes of the backbone over the dataset: a cache hit makes none."""
    passes = []
    original = features_module._embed

    def counting(*args, **kwargs):
        passes.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(features_module, "_embed", counting)
    return passes


def test_features_are_the_backbone_s_and_the_second_call_hits_the_cache(
    toy_images, weights_file, tmp_path, count_passes
):
    features, labels = extract(toy_images, weights_file, tmp_path)
    model = efficientnet_lite0(include_top=False, weights=weights_file, image_size=SIZE)
    np.testing.assert_allclose(features, model.predict(toy_images[0], verbose=0), atol=1e-5)
    np.testing.assert_array_equal(labels, toy_images[1])
    assert features.dtype == np.float32 and features.shape == (10, 1280)
    again = extract(toy_images, weights_file, tmp_path)
    assert len(count_passes) == 1
    np.testing.assert_array_equal(again[0], features)
    np.testing.assert_array_equal(again[1], labels)
    path = feature_cache_path("toy:train", "efficientnet_lite0", str(weights_file), SIZE, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_other_weights_dataset_or_size_miss_the_cache(toy_images, weights_file, tmp_path, count_passes):
    features, _ = extract(toy_images, weights_file, tmp_path)
    extract(toy_images, weights_file, tmp_path, dataset_id="toy:test")
    extract(toy_images, weights_file, tmp_path, image_size=SIZE + 8)
    changed = tmp_path / "changed.npz"
    arrays = dict(np.load(weights_file))
    arrays["bn1/beta"] = arrays["bn1/beta"] + 1.0
    np.savez(changed, **arrays)
    shifted, _ = extract(toy_images, changed, tmp_path)
    assert len(count_passes) == 4
    assert len(list(tmp_path.glob("toy_*.npz"))) == 4
    assert not np.allclose(shifted, features)


def test_corrupt_or_foreign_cache_files_are_recomputed(toy_images, weights_file, tmp_path, count_passes):
    features, _ = extract(toy_images, weights_file, tmp_path)
    (path,) = tmp_path.iterdir()
    path.write_bytes(b"truncated")
    np.testing.assert_array_equal(extract(toy_images, weights_file, tmp_path)[0], features)
    np.savez(path, features=features[:2], labels=np.arange(2), metadata='{"dataset": "other"}')
    again, labels = extract(toy_images, weights_file, tmp_path)
    assert len(count_passes) == 3 and again.shape == (10, 1280) and len(labels) == 10
    assert len(np.load(path)["labels"]) == 10


def test_an_interrupted_write_leaves_no_file(toy_images, weights_file, tmp_path, monkeypatch):
    def crash(file, **arrays):
        file.write(b"PK\x03\x04 partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        extract(toy_images, weights_file, tmp_path)
    assert not list(tmp_path.iterdir())


def test_batched_and_resized_inputs_without_cache(toy_images, weights_file, tmp_path):
    images, labels = toy_images
    unbatched, _ = extract(toy_images, weights_file, tmp_path, dataset_id=None)
    assert not list(tmp_path.iterdir())
    batched = extract_features(
        tf.data.Dataset.from_tensor_slices(toy_images).batch(3),
        image_size=SIZE, weights=str(weights_file), verbose=0,
    )
    np.testing.assert_allclose(batched[0], unbatched, atol=1e-5)
    larger = tf.image.resize(images, (2 * SIZE, 2 * SIZE), method="nearest").numpy()
    resized, _ = extract_features(
        tf.data.Dataset.from_tensor_slices((larger, labels)), image_size=SIZE, weights=str(weights_file), verbose=0
    )
    assert resized.shape == (10, 1280)


def test_bad_datasets_raise(weights_file):
    with pytest.raises(ValueError, match="element_spec"):
        extract_features(tf.data.Dataset.from_tensor_slices(np.zeros((2, 4))), weights=str(weights_file))
    empty = tf.data.Dataset.from_tensor_slices((np.zeros((0, SIZE, SIZE, 3), np.uint8), np.zeros(0)))
    with pytest.raises(ValueError, match="no images"):
        extract_features(empty, image_size=SIZE, weights=str(weights_file), verbose=0)
