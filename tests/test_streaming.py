"""Streaming training data: the P x K sampler keeps references (paths, record positions), never decoded sets."""

import os

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
    assert refs is not None and refs.items.dtype.kind == "S" and len(refs) == 16
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


def test_tfrecord_files_written_from_a_folder_stream_the_folder_s_batches(tmp_path, no_materialise):
    name = _photo_folder(tmp_path / "photos")
    paths = datasets.write_folder(tmp_path / "photos", str(tmp_path / "records" / "photos"), records_per_file=7)
    assert len(paths) == 4 and all(p.endswith(f"-of-00004.tfrecord") for p in paths)
    records = datasets.load(f"tfrecord:{tmp_path}/records/photos-*.tfrecord", "train", image_size=8,
                            train_fraction=0.7)
    assert references_of(records).items.dtype == np.int64
    folder = datasets.load(name, "train", image_size=8, train_fraction=0.7)
    for (x, y), (x_folder, y_folder) in zip(_batches(records), _batches(folder)):
        np.testing.assert_array_equal(y, y_folder)
        np.testing.assert_allclose(x.astype(int), x_folder.astype(int), atol=1)
    test = datasets.load(f"tfrecord:{tmp_path}/records/photos-*.tfrecord", "test", train_fraction=0.7)
    assert sorted(set(int(y) for _, y in test)) == sorted(set(range(6)) - set(references_of(records).labels))


def test_tfrecord_errors_name_the_input(tmp_path):
    _photo_folder(tmp_path / "photos", classes=3)
    with pytest.raises(ValueError, match="No TFRecord file matches.*nothing-"):
        datasets.load(f"tfrecord:{tmp_path}/nothing-*", "train")
    prefix = str(tmp_path / "photos-records")
    datasets.write_folder(tmp_path / "photos", prefix)
    with pytest.raises(ValueError, match="exists.*photos-records-00000-of-00001"):
        datasets.write_folder(tmp_path / "photos", prefix)
    with tf.io.TFRecordWriter(str(tmp_path / "zipped.tfrecord"), options="GZIP") as writer:
        writer.write(b"not an example")
    with pytest.raises(ValueError, match="zipped.tfrecord"):
        datasets.load(f"tfrecord:{tmp_path}/zipped.tfrecord", "train")


def test_tfrecord_tool_exits_0_then_2_with_one_line(tmp_path, capsys):
    from rankloss_tf.datasets.tfrecord_writer import main

    _photo_folder(tmp_path / "photos", classes=2, per_class=2)
    argv = [str(tmp_path / "photos"), str(tmp_path / "r")]
    assert main(argv) == 0 and "tfrecord:" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: TFRecord file exists (pass overwrite=True, or --overwrite, to replace it). Received: '{tmp_path}/r-00000-of-00001.tfrecord'"]


def test_a_prepared_tfds_dataset_streams_its_records(tmp_path, no_materialise):
    tfds = pytest.importorskip("tensorflow_datasets")
    from rankloss_tf.datasets.tfds_sets import stream_prepared

    builder = tfds.testing.DummyMnist(data_dir=str(tmp_path))
    builder.download_and_prepare()
    images = stream_prepared(builder, "train+test", image_size=12, keep=lambda labels: labels < 6)
    refs = references_of(images)
    assert refs is not None and refs.items.dtype == np.int64 and len(refs) == 24
    expected = [int(y) for y in builder.as_dataset(split="train+test", shuffle_files=False).map(
        lambda example: example["label"]).as_numpy_iterator() if y < 6]
    assert sorted(refs.labels.tolist()) == sorted(expected)
    batch, labels = next(iter(pk_batches(images, classes_per_batch=3, samples_per_class=2)))
    assert batch.shape == (6, 12, 12, 3) and batch.dtype == tf.uint8 and int(tf.reduce_min(batch)) == 1
    assert stream_prepared(tfds.testing.DummyMnist(data_dir=str(tmp_path / "empty")), "train") is None


def test_rotated_classes_of_a_streamed_folder_stay_streamed(tmp_path, no_materialise):
    from rankloss_tf.data.augment import rotated_classes

    images = datasets.load(_photo_folder(tmp_path / "photos", size=(8, 8)), "train", image_size=8,
                           train_fraction=0.7)
    rotated = rotated_classes(images, 4)
    assert references_of(rotated) is not None and len(references_of(rotated)) == 64
    in_memory = tf.data.Dataset.from_tensor_slices(tuple(np.stack(a) for a in zip(*images.as_numpy_iterator())))
    for (x, y), (x_mem, y_mem) in zip(rotated, rotated_classes(in_memory, 4)):
        assert int(y) == int(y_mem)
        np.testing.assert_array_equal(x.numpy(), x_mem.numpy())
    batch, labels = next(iter(pk_batches(rotated, classes_per_batch=4, samples_per_class=2)))
    assert batch.shape == (8, 8, 8, 3) and len(set(labels.numpy().tolist())) == 4


def test_train_on_tfrecord_files_end_to_end(tmp_path, monkeypatch):
    """`rankloss-tf train --dataset tfrecord:PATTERN` trains on streamed records, evaluates and writes its run."""
    from rankloss_tf.app import cli

    monkeypatch.setenv("RANKLOSS_TF_CACHE", str(tmp_path / "cache"))
    _photo_folder(tmp_path / "photos", classes=8, per_class=4)
    datasets.write_folder(tmp_path / "photos", str(tmp_path / "rec" / "photos"))
    argv = ["train", "--dataset", f"tfrecord:{tmp_path}/rec/photos-*.tfrecord", "--epochs", "1", "--steps-per-epoch",
            "2", "--image-size", "16", "--classes-per-batch", "2", "--samples-per-class", "2", "--embedding-dim", "8",
            "--no-plots", "--verbose", "0", "--out", str(tmp_path / "run")]
    assert cli.main(argv) == 0
    assert (tmp_path / "run" / "metrics.json").is_file()


def test_tfrecord_index_is_cached_by_file_and_a_changed_file_is_indexed_again(tmp_path, monkeypatch, caplog):
    from rankloss_tf.datasets import tfrecord

    monkeypatch.setenv("RANKLOSS_TF_CACHE", str(tmp_path / "cache"))
    _photo_folder(tmp_path / "photos", classes=4, per_class=3)
    paths = datasets.write_folder(tmp_path / "photos", str(tmp_path / "r"), records_per_file=5)
    indexed, original = [], tfrecord._index_file
    monkeypatch.setattr(tfrecord, "_index_file",
                        lambda path, label_of: indexed.append(path) or original(path, label_of))
    pattern = f"tfrecord:{tmp_path}/r-*.tfrecord"

    def load():
        records = datasets.load(pattern, "train", image_size=8)
        return references_of(records).items, references_of(records).labels, [x for x, _ in records]

    first = load()
    assert sorted(indexed) == sorted(paths) and len(list((tmp_path / "cache" / "tfrecords").glob("*.npz"))) == 3
    indexed.clear()
    second = load()
    assert indexed == [], "a second load read the records again"
    for mine, theirs in zip(second, first):
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs))
    stat = tf.io.gfile.stat(paths[1])
    os.utime(paths[1], ns=(stat.mtime_nsec + 10 ** 9, stat.mtime_nsec + 10 ** 9))  # touched: indexed again
    load()
    assert indexed == [paths[1]]
    indexed.clear()
    for cache in (tmp_path / "cache" / "tfrecords").glob("*.npz"):
        cache.write_bytes(b"damaged")
    with caplog.at_level("WARNING"):
        third = load()
    assert sorted(indexed) == sorted(paths) and "damaged TFRecord index cache" in caplog.text
    np.testing.assert_array_equal(third[1], first[1])
