"""Frozen features at scale: the head trains from the feature files on disk (FeatureRows), as from memory."""

import logging
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from rankloss_tf import app, datasets
from rankloss_tf.app import protocols
from rankloss_tf.backbones import FeatureRows, efficientnet_lite0, extract_features, feature_parts
from rankloss_tf.backbones import features as features_module
from rankloss_tf.data import sources

SIZE = 32


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """A random EfficientNet-Lite0 in the converted-weights format (a weights file: the features are cached)."""
    keras.utils.set_random_seed(0)
    model = efficientnet_lite0(weights=None, image_size=SIZE)
    path = tmp_path_factory.mktemp("weights") / "lite0.npz"
    np.savez(path, **{f"{layer.name}/{w.name}": w.numpy() for layer in model.layers for w in layer.weights})
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(3)
    for i in range(96):
        (root / f"c{i % 8}").mkdir(exist_ok=True)
        tf.io.write_file(str(root / f"c{i % 8}" / f"{i}.png"),
                         tf.io.encode_png(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)))
    return root


@pytest.fixture(scope="module")
def features_cache(tmp_path_factory):
    """One feature cache for the runs of this module: the same folder's features are extracted once, not once per
    run (an extraction builds the backbone and embeds every view of a split; the cache is keyed by the images, the
    backbone and its weights, so a shared one changes no figure)."""
    return tmp_path_factory.mktemp("features")


@pytest.fixture
def streaming(monkeypatch):
    """Every cached feature set streams from disk; reading the training features into memory fails the test."""
    monkeypatch.setattr(protocols, "STREAM_FEATURES_BYTES", 0)
    monkeypatch.setattr(sources, "_materialise", lambda dataset: pytest.fail("a dataset was materialised"))
    for name in ("read_features", "join_parts"):
        original = getattr(features_module, name)

        def refuse_train(path, *args, original=original, **kwargs):
            assert "_train_" not in path.name, f"the training features were read into memory: {path}"
            return original(path, *args, **kwargs)

        monkeypatch.setattr(features_module, name, refuse_train)


def frozen_config(folder, weights_file, tmp_path, **overrides):
    fields = dict(dataset=f"folder:{folder}", backbone="efficientnet_lite0", weights=str(weights_file),
                  image_size=SIZE, view_sizes=(SIZE,), mirror_views=True, epochs=3, steps_per_epoch=3,
                  classes_per_batch=2, samples_per_class=3, embedding_dim=8, cache_dir=str(tmp_path / "cache"),
                  out_dir=str(tmp_path / "run"), plots=False, verbose=0)
    return app.TrainConfig(**{**fields, **overrides})


def head_batches(config, skip=0, count=6):
    images = datasets.load(config.dataset, "train", image_size=SIZE, seed=config.seed)
    method = protocols.protocol(config, (SIZE, SIZE, 3))
    return [(x.numpy(), y.numpy()) for x, y in method.batches(images, skip).take(count)]


def test_small_features_stay_in_memory_and_large_ones_stream(folder, weights_file, tmp_path, monkeypatch):
    config = frozen_config(folder, weights_file, tmp_path).resolved()
    images = datasets.load(config.dataset, "train", image_size=SIZE, seed=config.seed)
    method = protocols.protocol(config, (SIZE, SIZE, 3))
    features, labels = method.train_features(images)
    assert isinstance(features, np.ndarray) and features.shape[0] == labels.shape[0] == 2 * 48  # 2 views
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2 and not list((tmp_path / "cache").glob("*.parts"))
    monkeypatch.setattr(protocols, "STREAM_FEATURES_BYTES", features.nbytes - 1)
    rows, streamed_labels = method.train_features(images)
    assert isinstance(rows, FeatureRows) and rows.nbytes == features.nbytes
    np.testing.assert_array_equal(streamed_labels, labels)
    np.testing.assert_array_equal(rows.read(np.arange(len(rows))), features)


def test_streamed_head_batches_equal_the_in_memory_ones_and_resume(folder, weights_file, tmp_path, monkeypatch,
                                                                   features_cache):
    config = frozen_config(folder, weights_file, tmp_path, cache_dir=str(features_cache)).resolved()
    in_memory = head_batches(config)
    monkeypatch.setattr(protocols, "STREAM_FEATURES_BYTES", 0)
    monkeypatch.setattr(sources, "_materialise", lambda dataset: pytest.fail("materialised"))
    streamed = head_batches(config)
    assert len(streamed) == len(in_memory) == 6
    for (x, y), (want_x, want_y) in zip(streamed, in_memory):
        np.testing.assert_array_equal(y, want_y)
        np.testing.assert_allclose(x, want_x, atol=1e-6)
    resumed = head_batches(config, skip=4, count=2)
    for (x, y), (want_x, want_y) in zip(resumed, in_memory[4:]):
        np.testing.assert_array_equal(y, want_y)
        np.testing.assert_allclose(x, want_x, atol=1e-6)


class Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt


def test_a_streamed_head_run_killed_after_an_epoch_ends_like_an_uninterrupted_one(folder, weights_file, tmp_path,
                                                                                  streaming, features_cache):
    whole = app.train(frozen_config(folder, weights_file, tmp_path / "whole", cache_dir=str(features_cache)))
    config = frozen_config(folder, weights_file, tmp_path / "cut", cache_dir=str(features_cache))
    with pytest.raises(KeyboardInterrupt):
        app.train(config, callbacks=[Interrupt()])
    resumed = app.train(config)
    assert resumed.resumed == "fitting" and resumed.history.epoch == [2]
    for mine, theirs in zip(resumed.model.weights, whole.model.weights):
        np.testing.assert_allclose(mine.numpy(), theirs.numpy(), atol=1e-5)
    assert resumed.metrics == pytest.approx(whole.metrics, abs=1e-5)


def test_extraction_keeps_its_parts_for_rows_and_joins_them_for_arrays(weights_file, tmp_path, caplog):
    images = np.random.default_rng(0).integers(0, 256, (10, SIZE, SIZE, 3), dtype=np.uint8)
    dataset = tf.data.Dataset.from_tensor_slices((images, np.arange(10) % 3))
    kwargs = dict(image_size=SIZE, weights=str(weights_file), dataset_id="toy:train", cache_dir=tmp_path,
                  batch_size=4, verbose=0, part_size=4)
    rows = extract_features(dataset, rows=True, **kwargs)
    (parts,) = tmp_path.glob("*.parts")
    assert len(rows) == 10 and len(rows.files) == 3 and (parts / "complete.json").is_file()
    assert not list(tmp_path.glob("*.npz")), "the parts were joined for a streamed head"
    read = rows.read(np.arange(10))
    features, labels = extract_features(dataset, **kwargs)  # arrays: the complete parts are joined, not recomputed
    np.testing.assert_array_equal(read, features)
    np.testing.assert_array_equal(rows.labels, labels)
    assert not parts.exists() and len(list(tmp_path.glob("*.npz"))) == 1
    joined = extract_features(dataset, rows=True, **kwargs)  # the joined cache file is read by row as it is
    np.testing.assert_array_equal(joined.read([9, 0, 5]), features[[9, 0, 5]])
    joined.files[0].write_bytes(b"damaged")
    with caplog.at_level(logging.WARNING):
        again = extract_features(dataset, rows=True, **kwargs)  # named, removed, extracted again as parts
    assert "cannot be read by row" in caplog.text and not joined.files[0].exists()
    np.testing.assert_array_equal(again.read(np.arange(10)), features)


def test_feature_rows_refuse_compressed_or_foreign_files_and_bad_rows(tmp_path):
    path = tmp_path / "toy.npz"
    batches = [(np.arange(6, dtype=np.float32).reshape(2, 3), np.array([0, 1]))] * 2
    feature_parts.write_parts(path, {"dataset": "toy"}, batches, part_size=4)
    (part,) = feature_parts.parts_dir(path).glob("*.npz")
    rows = FeatureRows([part], {"dataset": "toy"})
    with pytest.raises(IndexError, match=r"\[0, 4\)\. Received: 0 \.\. 4"):
        rows.read([0, 4])
    with pytest.raises(ValueError, match="toy.parts/part-00000.npz cannot be read by row: it is for other inputs"):
        FeatureRows([part], {"dataset": "other"})
    squeezed = tmp_path / "squeezed.npz"
    with np.load(part) as stored:
        np.savez_compressed(squeezed, **stored)
    assert zipfile.ZipFile(squeezed).getinfo("features.npy").compress_type == zipfile.ZIP_DEFLATED
    with pytest.raises(ValueError, match="squeezed.npz cannot be read by row: its features are compressed"):
        FeatureRows([squeezed], {"dataset": "toy"})
