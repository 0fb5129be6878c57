"""Frozen-backbone features: the on-disk cache (hit, miss, invalidation, atomicity, parts, resume, content)."""

import logging

import numpy as np
import pytest
import tensorflow as tf

from rankloss_tf.backbones import efficientnet_lite0, extract_features, feature_cache_path
from rankloss_tf.backbones import feature_parts
from rankloss_tf.backbones import features as features_module
from rankloss_tf.references import References, streamed

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
    assert not [path for path in tmp_path.rglob("*") if path.is_file()]


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


@pytest.fixture
def count_images(monkeypatch):
    """Counts the images that go through the backbone."""
    seen = []
    original = features_module._embed

    def counting(*args, **kwargs):
        for features, labels in original(*args, **kwargs):
            seen.append(len(labels))
            yield features, labels

    monkeypatch.setattr(features_module, "_embed", counting)
    return seen


def test_damaged_cache_files_are_named_and_recomputed(toy_images, weights_file, tmp_path, count_images, caplog):
    features, _ = extract(toy_images, weights_file, tmp_path)
    (path,) = tmp_path.glob("*.npz")
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])  # a truncated zip: zipfile.BadZipFile
    with caplog.at_level(logging.WARNING):
        np.testing.assert_allclose(extract(toy_images, weights_file, tmp_path)[0], features, atol=1e-5)
    assert str(path) in caplog.text and "BadZipFile" in caplog.text
    arrays = dict(np.load(path))
    np.savez(path, **{**arrays, "metadata": np.array('{"format": 2, "backbone": ')})  # corrupted JSON
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        np.testing.assert_allclose(extract(toy_images, weights_file, tmp_path)[0], features, atol=1e-5)
    assert str(path) in caplog.text and sum(count_images) == 30


def test_extraction_writes_parts_and_resumes_after_a_kill(toy_images, weights_file, tmp_path, count_images,
                                                          monkeypatch):
    whole, labels = extract(toy_images, weights_file, tmp_path / "once", part_size=4)
    writes, original = [], feature_parts.atomic_savez

    def killed_at_the_second_part(path, **arrays):
        writes.append(path)
        if len(writes) == 2:
            raise KeyboardInterrupt
        return original(path, **arrays)

    monkeypatch.setattr(feature_parts, "atomic_savez", killed_at_the_second_part)
    with pytest.raises(KeyboardInterrupt):
        extract(toy_images, weights_file, tmp_path / "killed", part_size=4)
    (parts,) = (tmp_path / "killed").glob("*.parts")
    assert [p.name for p in parts.iterdir()] == ["part-00000.npz"]
    monkeypatch.setattr(feature_parts, "atomic_savez", original)
    count_images.clear()
    resumed, resumed_labels = extract(toy_images, weights_file, tmp_path / "killed", part_size=4)
    assert sum(count_images) == 6, "the part written before the kill was embedded again"
    np.testing.assert_allclose(resumed, whole, atol=1e-5)
    np.testing.assert_array_equal(resumed_labels, labels)
    assert [p.suffix for p in (tmp_path / "killed").iterdir()] == [".npz"], "the parts were not joined"


def test_a_folder_cut_from_48_to_25_images_is_not_served_old_features(tmp_path, weights_file, count_images):
    folder = tmp_path / "photos"
    rng = np.random.default_rng(1)
    for i in range(48):
        (folder / str(i % 3)).mkdir(parents=True, exist_ok=True)
        tf.io.write_file(str(folder / str(i % 3) / f"{i}.png"),
                         tf.io.encode_png(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)))

    def folder_features():
        paths = sorted(str(p) for p in folder.rglob("*.png"))
        refs = References(np.array(paths), [int(p.split("/")[-2]) for p in paths],
                          read=lambda path: tf.ensure_shape(tf.io.decode_png(tf.io.read_file(path), 3),
                                                            [SIZE, SIZE, 3]))
        return extract_features(streamed(refs), image_size=SIZE, weights=str(weights_file), verbose=0,
                                dataset_id=f"folder:{folder}:train", cache_dir=tmp_path / "cache", batch_size=16)

    assert len(folder_features()[0]) == 48
    for path in sorted(folder.rglob("*.png"))[25:]:
        path.unlink()
    features, labels = folder_features()
    assert len(features) == len(labels) == 25 and sum(count_images) == 48 + 25
    folder_features()
    assert sum(count_images) == 48 + 25, "an unchanged folder missed the cache"


def test_training_again_on_a_cut_folder_recomputes_its_features(tmp_path, weights_file, count_images):
    """The runner's frozen-feature step (the path `rankloss-tf train` takes) on a folder cut from 48 to 25 images."""
    from rankloss_tf import datasets
    from rankloss_tf.app import TrainConfig
    from rankloss_tf.app.protocols import protocol

    folder = tmp_path / "photos"
    rng = np.random.default_rng(2)
    for i in range(48):
        (folder / f"c{i % 4}").mkdir(parents=True, exist_ok=True)
        tf.io.write_file(str(folder / f"c{i % 4}" / f"{i}.png"),
                         tf.io.encode_png(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)))
    config = TrainConfig(dataset=f"folder:{folder}", backbone="efficientnet_lite0", weights=str(weights_file),
                         image_size=SIZE, cache_dir=str(tmp_path / "cache"), verbose=0).resolved()

    def train_features():
        images = datasets.load(config.dataset, "train", image_size=SIZE, seed=config.seed)
        return protocol(config, (SIZE, SIZE, 3)).view_features(images, "train")[0]

    assert len(train_features()[0]) == 24
    for path in sorted(folder.rglob("*.png"), key=lambda p: int(p.stem))[25:]:
        path.unlink()
    features, labels = train_features()
    assert len(features) == len(labels) == 13, "the 48-image folder's features were reused"


@pytest.fixture
def count_builds(monkeypatch):
    """Counts the backbones the feature cache builds (to key it or to extract), from a cold memo."""
    builds, original = [], features_module.build_backbone
    monkeypatch.setattr(features_module, "build_backbone", lambda *args, **kw: builds.append(kw) or original(*args, **kw))
    features_module._backbone_key_of.cache_clear()
    yield builds
    features_module._backbone_key_of.cache_clear()


def test_cached_features_build_no_backbone_and_one_key_build_serves_every_split(
    toy_images, weights_file, tmp_path, count_builds
):
    first = extract(toy_images, weights_file, tmp_path)
    extract(toy_images, weights_file, tmp_path, dataset_id="toy:test")
    assert len(count_builds) == 3  # the key's backbone once, then one per extraction
    count_builds.clear()
    for dataset_id in ("toy:train", "toy:test", "toy:train"):  # every feature cached: no backbone at all
        again = extract(toy_images, weights_file, tmp_path, dataset_id=dataset_id)
    np.testing.assert_array_equal(again[0], first[0])
    assert count_builds == []
    features_module._backbone_key_of.cache_clear()  # a new process: one build for the key, none to extract
    extract(toy_images, weights_file, tmp_path)
    extract(toy_images, weights_file, tmp_path, dataset_id="toy:test")
    assert len(count_builds) == 1


def test_weights_rewritten_in_place_change_the_key_within_one_process(toy_images, tmp_path, count_passes):
    weights = tmp_path / "weights" / "lite0.npz"
    weights.parent.mkdir()
    model = efficientnet_lite0(weights=None, image_size=SIZE)
    arrays = {f"{layer.name}/{w.name}": w.numpy() for layer in model.layers for w in layer.weights}
    np.savez(weights, **arrays)
    before, _ = extract(toy_images, weights, tmp_path / "cache")
    arrays["bn1/beta"] = arrays["bn1/beta"] + 1.0
    np.savez(weights, **arrays)  # the same path, new content
    after, _ = extract(toy_images, weights, tmp_path / "cache")
    assert len(count_passes) == 2 and not np.allclose(before, after)
