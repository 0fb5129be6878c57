"""Tests of the dataset loaders (digits, omniglot, cars196, folders, TFDS sources)."""

import os
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from rankloss_tf import datasets
from rankloss_tf.data import pk_batches
from rankloss_tf.datasets import cars196, omniglot

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
OMNIGLOT = DATA / "omniglot"
CARS = DATA / "cars196"
needs_omniglot = pytest.mark.skipif(not omniglot.is_local_dir(OMNIGLOT), reason="Omniglot zips absent")
needs_cars = pytest.mark.skipif(not cars196.is_local_dir(CARS), reason="Cars196 directory absent")


def _arrays(dataset):
    images, labels = zip(*dataset.as_numpy_iterator())
    return np.stack(images), np.array(labels)


def test_digits_zero_shot_split():
    train_x, train_y = _arrays(datasets.load("digits", "train"))
    test_x, test_y = _arrays(datasets.load("digits", "test"))
    assert train_x.shape == (901, 8, 8, 1) and test_x.shape == (896, 8, 8, 1)
    assert train_x.dtype == np.uint8 and train_x.max() == 255 and train_y.dtype == np.int64
    assert set(train_y) == {0, 1, 2, 3, 4} and set(test_y) == {5, 6, 7, 8, 9}
    batch, labels = next(iter(pk_batches(datasets.load("digits", "train"), classes_per_batch=5, samples_per_class=4)))
    assert batch.shape == (20, 8, 8, 1) and len(set(labels.numpy())) == 5
    resized, _ = next(iter(datasets.load("digits", "test", image_size=16)))
    assert resized.shape == (16, 16, 1) and resized.dtype == tf.uint8


@needs_omniglot
def test_omniglot_local_alphabet_split():
    train_x, train_y = _arrays(datasets.load("omniglot", "train", data_dir=OMNIGLOT))
    test_x, test_y = _arrays(datasets.load("omniglot", "test", data_dir=OMNIGLOT))
    assert train_x.shape == (2720, 105, 105, 1) and test_x.shape == (2120, 105, 105, 1)
    assert len(set(train_y)) == 136 and len(set(test_y)) == 106 and not set(train_y) & set(test_y)
    assert set(np.unique(train_x)) == {0, 255}
    assert (np.bincount(train_y)[np.unique(train_y)] == 20).all(), "Greek / Latin duplicates not removed"


def _fake_tfds_omniglot(alphabets):
    """The TFDS builder's examples, made from the local zips: RGB images, shuffled order."""

    def as_dataset(self, split, *args, **kwargs):
        name = f"images_background_{split}"
        with zipfile.ZipFile(OMNIGLOT / f"{name}.zip") as archive:
            members = [m for m in archive.namelist() if m.endswith(".png")][::-1]
            rows = [(archive.read(m), m.split("/")) for m in members]
        images = np.stack([tf.io.decode_image(data, channels=3).numpy() for data, _ in rows])
        return tf.data.Dataset.from_tensor_slices({
            "image": images,
            "alphabet": np.array([alphabets.index(parts[1]) for _, parts in rows], np.int64),
            "alphabet_char_id": np.array([int(parts[2][len("character"):]) - 1 for _, parts in rows], np.int64),
            "label": np.array([int(parts[3].split("_")[0]) - 1 for _, parts in rows], np.int64),
        })

    return as_dataset


@needs_omniglot
def test_omniglot_tfds_gives_identical_classes_and_images(monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    alphabets = sorted(omniglot.TRAIN_ALPHABETS + omniglot.TEST_ALPHABETS)
    monkeypatch.setattr(omniglot, "tfds_alphabet_names", lambda info: alphabets)
    with tfds.testing.mock_data(as_dataset_fn=_fake_tfds_omniglot(alphabets)):
        from_tfds = _arrays(datasets.load("omniglot", "test"))
    local = _arrays(datasets.load("omniglot", "test", data_dir=OMNIGLOT))
    np.testing.assert_array_equal(from_tfds[1], local[1])
    np.testing.assert_array_equal(from_tfds[0], local[0])


@pytest.mark.parametrize(
    "name, train_range, test_range",
    [("cars196", (0, 97), (98, 195)), ("caltech_birds2011", (0, 99), (100, 199))],
)
def test_tfds_class_disjoint_protocol(name, train_range, test_range):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=40):
        for split, (low, high) in (("train", train_range), ("test", test_range)):
            images, labels = _arrays(datasets.load(name, split, image_size=32))
            assert images.shape[1:] == (32, 32, 3) and images.dtype == np.uint8
            assert labels.size > 0 and labels.min() >= low and labels.max() <= high


def test_tfds_online_products_official_split():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=4):
        image, label = next(iter(datasets.load("stanford_online_products", "test")))
    assert image.shape == (224, 224, 3) and image.dtype == tf.uint8 and label.dtype == tf.int64


def test_missing_tfds_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    with pytest.raises(ImportError, match=r"pip install rankloss-tf\[datasets\]"):
        datasets.load("stanford_online_products", "train")


@needs_cars
def test_cars196_local_protocol():
    train_paths, train_y = cars196.read_local_index(CARS, "train")
    test_paths, test_y = cars196.read_local_index(CARS, "test")
    assert train_y.size == 8054 and test_y.size == 8131
    assert (set(train_y), set(test_y)) == (set(range(98)), set(range(98, 196)))
    assert any("cropped_test" in p for p in train_paths) and any("cropped_train" in p for p in test_paths)
    train = datasets.load("cars196", "train", data_dir=CARS)
    assert train.cardinality().numpy() == 8054
    images, labels = next(iter(train.batch(3)))
    assert images.shape == (3, 224, 224, 3) and images.dtype == tf.uint8
    np.testing.assert_array_equal(labels, train_y[:3])
    small, _ = next(iter(datasets.load("cars196", "test", data_dir=CARS, image_size=64)))
    assert small.shape == (64, 64, 3)


@needs_cars
def test_cars196_paths_feed_the_sampler():
    paths, labels = cars196.read_local_index(CARS, "test")
    batches = pk_batches(np.array(paths), labels, classes_per_batch=2, samples_per_class=2,
                         decode_fn=datasets.image_decoder(image_size=32))
    images, batch_labels = next(iter(batches))
    assert images.shape == (4, 32, 32, 3) and batch_labels.numpy().min() >= 98


def _class_folder(root, classes, per_class=3):
    for c in range(classes):
        (root / f"class_{c}").mkdir()
        for i in range(per_class):
            image = np.full((6, 5, 3), 10 * c + i, np.uint8)
            tf.io.write_file(str(root / f"class_{c}" / f"{i}.png"), tf.io.encode_png(image))
    return f"folder:{root}"


def test_folder_class_disjoint_split(tmp_path):
    name = _class_folder(tmp_path, classes=5)
    train_x, train_y = _arrays(datasets.load(name, "train", train_fraction=0.6, seed=3))
    test_x, test_y = _arrays(datasets.load(name, "test", train_fraction=0.6, seed=3))
    assert len(set(train_y)) == 3 and len(set(test_y)) == 2
    assert set(train_y) | set(test_y) == set(range(5))
    assert (train_x[:, 0, 0, 0] // 10 == train_y).all(), "label does not match its class folder"
    other_splits = [set(_arrays(datasets.load(name, "train", train_fraction=0.6, seed=s))[1]) for s in range(4, 8)]
    assert any(other != set(train_y) for other in other_splits), "the seed does not change the split"


def test_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="Unknown dataset name.*'mnist'"):
        datasets.load("mnist", "train")
    with pytest.raises(ValueError, match="split"):
        datasets.load("digits", "validation")
    with pytest.raises(ValueError, match="no class sub-folder"):
        datasets.load(f"folder:{tmp_path}", "train")
    name = _class_folder(tmp_path, classes=3)
    with pytest.raises(ValueError, match="at least 2 classes"):
        datasets.load(name, "test", train_fraction=0.5)
    with pytest.raises(ValueError, match="image_size"):
        datasets.load("digits", "train", image_size=(0, 3))


@pytest.mark.parametrize("name, looked_for", [("omniglot", "images_background_small1.zip"),
                                              ("cars196", "labels.csv, cropped_train/")])
def test_data_dir_without_the_files_never_downloads(tmp_path, name, looked_for):
    with pytest.raises(ValueError, match=f"{looked_for}.*Received: data_dir='{tmp_path}'"):
        datasets.load(name, "train", data_dir=tmp_path)
    assert not any(tmp_path.iterdir()), "something was written into the user's data_dir"


def _png(path, value, shape=(6, 5, 3)):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(os.fsencode(path), "wb") as file:
        file.write(tf.io.encode_png(np.full(shape, value, np.uint8)).numpy())


def test_scan_folder_lists_what_it_leaves_out_and_skips_hidden_entries(tmp_path, monkeypatch):
    monkeypatch.setenv("RANKLOSS_TF_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "photos"
    for c in range(4):
        for i in range(2):
            _png(root / f"class_{c}" / f"{i}.png", 10 * c + i)
    _png(root / ".git" / "x.png", 0)  # a hidden folder is not a class
    _png(root / "class_0" / ".ipynb_checkpoints" / "0-checkpoint.png", 0)  # nor data inside a class
    (root / "class_1" / "dir.png").mkdir()  # a directory named like an image
    (root / "class_1" / "link.png").symlink_to(tmp_path / "missing.png")  # a broken link
    (root / "class_1" / "scan.tiff").write_bytes(b"II*\x00")  # a format TensorFlow does not decode
    (root / "class_2" / "locked.png").write_bytes(b"x")
    os.chmod(root / "class_2" / "locked.png", 0)  # unreadable (unless run as root: then undecodable)
    from PIL import Image

    Image.fromarray(np.full((6, 5, 3), 33, np.uint8)).save(root / "class_3" / "photo.webp")  # TensorFlow reads WebP
    latin = root / "class_2" / os.fsdecode(b"caf\xe9.png")  # a Latin-1 name, a valid image
    _png(latin, 22)
    (root / "class_0" / os.fsdecode(b"cass\xe9.jpg")).write_bytes(b"broken")  # Latin-1 and broken
    index = datasets.scan_folder(root)
    assert index.classes == ["class_0", "class_1", "class_2", "class_3"]
    assert str(latin) in index.files["class_2"] and len(index.files["class_0"]) == 2
    assert str(root / "class_3" / "photo.webp") in index.files["class_3"]
    left_out = {Path(p).name: reason for p, reason in index.unreadable}
    assert set(left_out) == {"dir.png", "link.png", "scan.tiff", "locked.png", os.fsdecode(b"cass\xe9.jpg")}
    assert "not read" in left_out["scan.tiff"] and "not a readable file" in left_out["link.png"]
    assert datasets.scan_folder(root).unreadable == index.unreadable  # from the cache
    for cached in (tmp_path / "cache" / "folders").iterdir():
        cached.write_text("{damaged")  # a damaged scan cache is recomputed
    assert datasets.scan_folder(root).unreadable == index.unreadable
    images = {int(image[0, 0, 0]): int(label) for split in ("train", "test")
              for image, label in datasets.load(f"folder:{root}", split, seed=0)}
    assert images[22] == 2  # the Latin-1 file is read, with its class's label
    assert datasets.folder.printable(latin).endswith("class_2/caf\\xe9.png")


def test_folder_prefix_is_parsed_in_one_place():
    assert datasets.folder_path("folder:/a/b") == "/a/b" and datasets.folder_path("digits") is None
    assert datasets.folder_path(None) is None


def test_training_on_a_folder_with_latin1_file_names(tmp_path, monkeypatch, capsys):
    from rankloss_tf.app import cli

    monkeypatch.setenv("RANKLOSS_TF_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "photos"
    for c in range(4):
        for i in range(6):
            _png(root / f"class_{c}" / os.fsdecode(b"caf\xe9 %d.png" % i), 40 * c + i, shape=(8, 8, 3))
    (root / "class_0" / os.fsdecode(b"cass\xe9.jpg")).write_bytes(b"broken")
    run = tmp_path / "run"
    status = cli.main(["train", "--dataset", f"folder:{root}", "--epochs", "1", "--image-size", "8", "--no-plots",
                       "--verbose", "0", "--out", str(run)])
    assert status == 0, capsys.readouterr().err[-2000:]
    assert "cass\\xe9.jpg\t" in (run / "unreadable_files.txt").read_text()
