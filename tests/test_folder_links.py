"""A class folder's scan follows the folders linked inside it, never loops, and names why a file is left out."""

import shutil

import pytest

from rankloss_tf import datasets
from rankloss_tf.datasets import folder as folder_module
from tests.test_runs import make_folder


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RANKLOSS_TF_CACHE", str(tmp_path / "cache"))


def test_a_folder_linked_inside_a_class_is_read_as_part_of_it(tmp_path):
    root = make_folder(tmp_path / "photos", {"a": 3, "b": 2, "c": 1, "d": 1})
    other = make_folder(tmp_path / "other", {"x": 8}) / "x"
    (root / "b" / "linked").symlink_to(other, target_is_directory=True)
    index = datasets.scan_folder(root)
    assert len(index.files["b"]) == 10 and str(root / "b" / "linked" / "7.png") in index.files["b"]
    assert index.unreadable == []
    labels = [int(label) for split in ("train", "test") for _, label in datasets.load(f"folder:{root}", split)]
    assert sorted(labels) == [0] * 3 + [1] * 10 + [2, 3]  # "folder:" is read through the same scan


def test_a_link_to_a_folder_above_it_is_left_out_and_listed(tmp_path):
    root = make_folder(tmp_path / "photos", {"a": 3, "b": 2, "c": 2})
    (root / "b" / "loop").symlink_to(root / "b", target_is_directory=True)  # its own class folder
    (root / "a" / "deep").mkdir()
    (root / "a" / "deep" / "up").symlink_to(tmp_path, target_is_directory=True)  # a folder holding the root
    (root / "all").symlink_to(root, target_is_directory=True)  # a class folder that is the root
    other = tmp_path / "other"
    other.mkdir()
    (root / "c" / "out").symlink_to(other, target_is_directory=True)  # a cycle of two links
    (other / "back").symlink_to(root / "c", target_is_directory=True)
    index = datasets.scan_folder(root)
    assert {name: len(files) for name, files in index.files.items()} == {"a": 3, "b": 2, "c": 2}
    left_out = dict(index.unreadable)
    cycles = [root / "b" / "loop", root / "a" / "deep" / "up", root / "all", root / "c" / "out" / "back"]
    assert sorted(left_out) == sorted(str(path) for path in cycles)
    assert all("cycle" in why for why in left_out.values())


def test_a_linked_file_is_keyed_by_its_real_path(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "photos", {"a": 2, "b": 2})
    first = make_folder(tmp_path / "first", {"x": 2}) / "x"
    second = tmp_path / "second"
    shutil.copytree(first, second)
    link = root / "b" / "linked"
    link.symlink_to(first, target_is_directory=True)
    monkeypatch.setattr(folder_module, "file_stamp", lambda path: [0, 0, 0, 0, ""])  # only the real paths differ
    before = datasets.scan_folder(root)
    alias = tmp_path / "alias"
    alias.symlink_to(root, target_is_directory=True)
    assert datasets.scan_folder(alias).fingerprint == before.fingerprint  # however the folder itself is reached
    link.unlink()
    link.symlink_to(second, target_is_directory=True)
    after = datasets.scan_folder(root)
    assert after.files == before.files and after.fingerprint != before.fingerprint
    keys = [datasets.class_references(index, [0, 1], tag="all").content_key() for index in (before, after)]
    assert keys[0] != keys[1]


def test_an_undecodable_file_s_reason_has_no_tensorflow_internals(tmp_path):
    root = make_folder(tmp_path / "photos", {"a": 2, "b": 2})
    (root / "a" / "broken.jpg").write_bytes(b"not an image at all")
    (path, why), = datasets.scan_folder(root).unreadable
    assert path == str(root / "a" / "broken.jpg")
    # "Unknown image file format. One of JPEG, PNG, GIF, BMP required." (the formats depend on TensorFlow's version)
    assert why.startswith("Unknown image file format. One of JPEG") and why.endswith(" required."), why
