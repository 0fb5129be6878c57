"""The content keys of the frozen-feature cache and of a folder gallery (issue 29).

A folder's key is its scan's fingerprint: the files are stamped once, by the
scan, never a second time; the same files reached through a symbolic link or a
relative path give the same key.
"""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from rankloss_tf import datasets, references
from rankloss_tf.backbones import content_key
from rankloss_tf.references import References
from rankloss_tf.retrieval.gallery import load_gallery

SIZE = 8


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RANKLOSS_TF_CACHE", str(tmp_path / "cache"))


def write_png(path, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    tf.io.write_file(str(path), tf.io.encode_png(image))


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "photos"
    for i in range(12):
        write_png(root / f"c{i % 4}" / f"{i}.png", i)
    return root


@pytest.fixture
def no_stamps(monkeypatch):
    """Makes stamping a file fail: call it after the scan."""
    def stamp(path):
        raise AssertionError(f"a file was stamped again after the scan: {path!r}")

    def forbid():
        monkeypatch.setattr(references, "file_stamp", stamp)

    return forbid


def train_key(name):
    return content_key(datasets.load(name, "train", image_size=SIZE))


def test_a_folder_s_key_is_its_scan_s_fingerprint_without_a_second_stamp(folder, no_stamps):
    fingerprint = datasets.scan_folder(folder).fingerprint
    train, test = (datasets.load(f"folder:{folder}", split, image_size=SIZE) for split in ("train", "test"))
    gallery = load_gallery(f"folder:{folder}", image_size=SIZE)
    no_stamps()
    keys = [content_key(train), content_key(test), gallery.content_key()]
    assert len(set(keys)) == 3, "the split and the tag are part of the key"
    assert references.references_of(train).key == gallery.references.key == fingerprint


def test_a_folder_s_key_changes_with_its_files_and_only_then(folder):
    before = train_key(f"folder:{folder}")
    assert train_key(f"folder:{folder}") == before
    image = next(iter(sorted(folder.rglob("*.png"))))
    write_png(image, 99)  # another image in the same file
    rewritten = train_key(f"folder:{folder}")
    assert rewritten != before
    write_png(folder / "c0" / "new.png", 100)
    assert train_key(f"folder:{folder}") not in (before, rewritten)
    gallery = load_gallery(f"folder:{folder}", image_size=SIZE).content_key()
    write_png(folder / "c1" / "new.png", 101)
    assert load_gallery(f"folder:{folder}", image_size=SIZE).content_key() != gallery


def test_a_linked_or_relative_folder_has_the_folder_s_key(folder, tmp_path, monkeypatch):
    linked = tmp_path / "link"
    linked.symlink_to(folder, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    names = [f"folder:{folder}", f"folder:{linked}", "folder:photos", "folder:./link/"]
    assert len({train_key(name) for name in names}) == 1
    assert len({load_gallery(name, image_size=SIZE).content_key() for name in names}) == 1
    assert len({datasets.scan_folder(datasets.folder_path(name)).fingerprint for name in names}) == 1
    # Paths left as given: messages and a gallery's paths name the folder as the user did.
    assert load_gallery("folder:photos").paths[0].startswith("photos/")


def test_files_without_a_scan_are_keyed_by_their_real_paths(folder, tmp_path, monkeypatch):
    linked = tmp_path / "link"
    linked.symlink_to(folder, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    relative = sorted(str(p.relative_to(tmp_path)) for p in folder.rglob("*.png"))

    def key(paths):
        return References(np.array(paths), np.zeros(len(paths)), read=tf.io.read_file).content_key()

    base = key([str(tmp_path / p) for p in relative])
    assert key(relative) == base
    assert key([p.replace("photos", "link", 1) for p in relative]) == base
    assert key(relative[:-1]) != base


def test_the_feature_cache_name_of_a_linked_or_relative_folder_is_the_folder_s(folder, tmp_path, monkeypatch):
    from rankloss_tf.app import TrainConfig
    from rankloss_tf.app.protocols import protocol

    linked = tmp_path / "link"
    linked.symlink_to(folder, target_is_directory=True)
    records = tmp_path / "records"
    records.mkdir()
    (records / "a.tfrecord").write_bytes(b"")
    (tmp_path / "records-link").symlink_to(records, target_is_directory=True)
    weights = tmp_path / "weights.npz"  # never read: the name of a split needs no backbone
    weights.write_bytes(b"")
    monkeypatch.chdir(tmp_path)

    config = TrainConfig(dataset=f"folder:{folder}", backbone="efficientnet_lite0", image_size=32,
                         weights=str(weights), verbose=0).resolved()

    def dataset_id(name, data_dir=None):
        named = dataclasses.replace(config, dataset=name, data_dir=data_dir)
        return protocol(named, (32, 32, 3))._dataset_id("train")

    assert len({dataset_id(f"folder:{p}") for p in (folder, linked, "photos", "link/")}) == 1
    patterns = [f"tfrecord:{records}/*.tfrecord", "tfrecord:records-link/*.tfrecord", "tfrecord:records/*.tfrecord"]
    assert len({dataset_id(p) for p in patterns}) == 1
    assert dataset_id("digits", data_dir="photos") == dataset_id("digits", data_dir=str(linked))


def write_mixed_folder(root):
    """4 classes of 4 small images of mixed kinds (PNG RGB, grey and RGBA, JPEG, GIF, sizes) and a broken file."""
    rng = np.random.default_rng(0)
    for i in range(16):
        side = 12 + 3 * (i % 5)
        image = rng.integers(0, 256, (side, side + i % 3, 3), dtype=np.uint8)
        path = root / f"c{i % 4}" / f"{i}"
        path.parent.mkdir(parents=True, exist_ok=True)
        kind = i % 4
        if kind == 0:
            data = tf.io.encode_png(image)
        elif kind == 1:
            data = tf.io.encode_png(image[..., :1])
        elif kind == 2:
            data = tf.io.encode_png(np.concatenate([image, np.full(image.shape[:2] + (1,), 255, np.uint8)], -1))
        else:
            data = tf.io.encode_jpeg(image)
        tf.io.write_file(str(path) + (".jpg" if kind == 3 else ".png"), data)
    (root / "c0" / "broken.jpg").write_bytes(b"no image")


def test_training_twice_on_a_folder_reads_the_features_from_the_cache(tmp_path, monkeypatch, capsys):
    """`rankloss-tf train` with a frozen backbone, twice on a folder of mixed images: the second run says it read
    every feature file from the cache, passes no image through the backbone and reports the same metrics."""
    import json

    from rankloss_tf.backbones import efficientnet_lite0
    from rankloss_tf.backbones import features as features_module
    from tests.conftest import run_cli

    weights = tmp_path / "lite0.npz"
    model = efficientnet_lite0(weights=None, image_size=32)
    np.savez(weights, **{f"{layer.name}/{w.name}": w.numpy() for layer in model.layers for w in layer.weights})
    write_mixed_folder(tmp_path / "mixed")
    passes, original = [], features_module._embed
    monkeypatch.setattr(features_module, "_embed", lambda *args, **kw: passes.append(1) or original(*args, **kw))

    def train(out):
        run = run_cli(capsys, "train", "--dataset", f"folder:{tmp_path / 'mixed'}", "--backbone", "efficientnet_lite0",
                      "--weights", weights, "--image-size", "32", "--view-sizes", "32", "--no-mirror-views",
                      "--epochs", "1", "--steps-per-epoch", "1", "--classes-per-batch", "2", "--embedding-dim", "8",
                      "--cache-dir", tmp_path / "features", "--no-plots", "--verbose", "0", "--out", tmp_path / out)
        assert run.status == 0, run.printed
        return run.printed, json.loads((tmp_path / out / "metrics.json").read_text())["metrics"]

    first, metrics = train("run1")
    assert "Frozen features: 2 feature files computed and cached in" in first and len(passes) == 2, first
    second, again = train("run2")
    assert f"Frozen features: all 2 feature files read from the cache {tmp_path / 'features'}" in second, second
    assert len(passes) == 2, "the second run passed images through the backbone"
    assert again == pytest.approx(metrics, abs=1e-6)
