"""A class folder's scan names why a file is left out."""

import pytest

from rankloss_tf import datasets
from tests.test_runs import make_folder


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RANKLOSS_TF_CACHE", str(tmp_path / "cache"))


def test_an_undecodable_file_s_reason_has_no_tensorflow_internals(tmp_path):
    root = make_folder(tmp_path / "photos", {"a": 2, "b": 2})
    (root / "a" / "broken.jpg").write_bytes(b"not an image at all")
    (path, why), = datasets.scan_folder(root).unreadable
    assert path == str(root / "a" / "broken.jpg")
    # "Unknown image file format. One of JPEG, PNG, GIF, BMP required." (the formats depend on TensorFlow's version)
    assert why.startswith("Unknown image file format. One of JPEG") and why.endswith(" required."), why
