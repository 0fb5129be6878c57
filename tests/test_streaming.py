"""Streaming training data: the P x K sampler keeps references (paths, record positions), never decoded sets."""

import numpy as np
import pytest
import tensorflow as tf

from rankloss_tf import datasets
from rankloss_tf.data import pk_batches
from rankloss_tf.data import sources
from rankloss_tf.references import references_of


def _photo_folder(root, classes=6, per_class=4, size=(10, 7)):
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class_{c}").mkdir(parents=True)
        for i in range(per_class):
            image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            tf.io.write_file(str(root / f"class_{c}" / f"{i}.png"), tf.io.encode_png(image))
    return f"folder:{root}"


@pytest.fixture
def no_materialise(monkeypatch):
    """Fails a test that reads a dataset into memory."""
    def refuse(dataset):
        raise AssertionError("the dataset was materialised")

    monkeypatch.setattr(sources, "_materialise", refuse)


def _batches(dataset, epochs=2, seed=3):
    return [(x.numpy(), y.numpy()) for x, y in pk_batches(dataset, classes_per_batch=2, samples_per_class=3,
                                                            epochs=epochs, seed=seed)]


def test_folder_streams_the_batches_held_in_memory_would_give(tmp_path, monkeypatch):
    name = _photo_folder(tmp_path / "photos")
    images = datasets.load(name, "train", image_size=8, train_fraction=0.7)
    refs = references_of(images)
    assert refs is not None and refs.items.dtype.kind == "U" and len(refs) == 16
    in_memory = tf.data.Dataset.from_tensor_slices(tuple(np.stack(a) for a in zip(*images.as_numpy_iterator())))
    expected = _batches(in_memory)
    monkeypatch.setattr(sources, "_materialise", lambda dataset: pytest.fail("the folder was materialised"))
    streamed = _batches(images)
    assert len(streamed) == len(expected) == 4
    for (x, y), (x_mem, y_mem) in zip(streamed, expected):
        assert x.shape == (6, 8, 8, 3) and x.dtype == np.uint8
        np.testing.assert_array_equal(y, y_mem)
        np.testing.assert_allclose(x.astype(int), x_mem.astype(int), atol=1)


def test_streamed_resume_skips_to_the_same_batches(tmp_path, no_materialise):
    images = datasets.load(_photo_folder(tmp_path / "photos"), "train", image_size=8, train_fraction=0.7)
    whole = _batches(images, epochs=3)
    resumed = [(x.numpy(), y.numpy()) for x, y in
               pk_batches(images, classes_per_batch=2, samples_per_class=3, epochs=3, seed=3).skip(4)]
    assert len(resumed) == len(whole) - 4
    for (x, y), (x_whole, y_whole) in zip(resumed, whole[4:]):
        np.testing.assert_array_equal(y, y_whole)
        np.testing.assert_array_equal(x, x_whole)


def test_a_decode_fn_applies_after_the_read(tmp_path, no_materialise):
    images = datasets.load(_photo_folder(tmp_path / "photos"), "train", image_size=8, train_fraction=0.7)
    batch, _ = next(iter(pk_batches(images, classes_per_batch=2, samples_per_class=3,
                                    decode_fn=lambda image: tf.cast(image, tf.float32)[:4] / 255.0)))
    assert batch.shape == (6, 4, 8, 3) and batch.dtype == tf.float32


def test_transformed_datasets_are_held_in_memory_as_before(tmp_path):
    images = datasets.load(_photo_folder(tmp_path / "photos"), "train", image_size=8, train_fraction=0.7)
    assert references_of(images.map(lambda x, y: (x, y))) is None
    batch, _ = next(iter(pk_batches(images.map(lambda x, y: (x, y)), classes_per_batch=2, samples_per_class=3)))
    assert batch.shape == (6, 8, 8, 3)
