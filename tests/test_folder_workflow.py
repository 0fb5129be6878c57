"""A user's own folder of images, end to end through the command line: train -> evaluate -> export -> serve.

The folder is built at test time from real images of ../shared/data (Omniglot PNGs and
Cars196 JPEGs; never copied into the repository): mixed formats (JPEG, PNG, BMP, GIF),
grey / RGB / RGBA / palette modes, different sizes, spaced and non-ASCII class names,
and one corrupt file.
"""

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from rankloss_tf import datasets
from rankloss_tf.app import cli

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
PIL = pytest.importorskip("PIL.Image")
FORMATS = [("JPEG", ".jpg", "L"), ("PNG", ".png", "RGBA"), ("BMP", ".bmp", "RGB"), ("GIF", ".gif", "P"),
           ("PNG", ".PNG", "L"), ("JPEG", ".jpeg", "RGB")]
CLASSES = ["Ünïcode café", "spaced name", "日本語", "cars a", "cars b", "plain"]


def _sources():
    omniglot, cars = SHARED / "omniglot" / "images_background_small1.zip", SHARED / "cars196" / "cropped_train"
    if not omniglot.is_file() or not cars.is_dir():
        pytest.skip("shared Omniglot / Cars196 data not found")
    images = []
    with zipfile.ZipFile(omniglot) as archive:
        names = sorted(n for n in archive.namelist() if n.endswith(".png"))
        by_class = {}
        for name in names:
            by_class.setdefault(name.rsplit("/", 1)[0], []).append(name)
        for members in list(by_class.values())[:4]:
            images.append([PIL.open(io.BytesIO(archive.read(m))) for m in members[:6]])
    files = sorted(cars.iterdir())[:12]
    images += [[PIL.open(f) for f in files[:6]], [PIL.open(f) for f in files[6:12]]]
    return images


def make_mixed_folder(root):
    """Writes 6 classes x 6 images in mixed formats and sizes, plus one corrupt file; returns the folder."""
    root.mkdir()
    for name, images in zip(CLASSES, _sources()):
        (root / name).mkdir()
        for i, (image, (fmt, suffix, mode)) in enumerate(zip(images, FORMATS)):
            size = (40 + 13 * i, 30 + 17 * i)
            image.convert("RGB").resize(size).convert(mode).save(root / name / f"img {i}{suffix}", format=fmt)
    (root / "plain" / "broken.jpg").write_bytes(b"not an image at all")
    (root / "notes.txt").write_text("not a class")
    return root


def test_scan_names_the_corrupt_file_and_keeps_the_rest(tmp_path, monkeypatch):
    monkeypatch.setenv("RANKLOSS_TF_CACHE", str(tmp_path / "cache"))
    folder = make_mixed_folder(tmp_path / "photos")
    index = datasets.scan_folder(folder)
    assert sorted(index.classes) == sorted(CLASSES)
    assert [Path(p).name for p, _ in index.unreadable] == ["broken.jpg"]
    assert all(len(files) == 6 for files in index.files.values())
    assert datasets.scan_folder(folder).unreadable == index.unreadable  # from the cache
    train = datasets.load(f"folder:{folder}", "train", image_size=24, seed=3)
    test = datasets.load(f"folder:{folder}", "test", image_size=24, seed=3)
    assert tuple(train.element_spec[0].shape) == (24, 24, 3)
    train_labels = {int(y) for _, y in train}
    test_labels = {int(y) for _, y in test}
    assert not train_labels & test_labels and len(train_labels | test_labels) == 6
    again = {int(y) for _, y in datasets.load(f"folder:{folder}", "train", image_size=24, seed=3)}
    assert again == train_labels  # seeded, reproducible split


def test_folder_trains_evaluates_exports_and_serves_with_cli_defaults(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RANKLOSS_TF_CACHE", str(tmp_path / "cache"))
    folder = make_mixed_folder(tmp_path / "photos")
    run, export = tmp_path / "run", tmp_path / "exported"
    # A quarter of the sampled images are colour photos: the photos recipe; the small CNN keeps this test fast.
    status = cli.main(["train", "--dataset", f"folder:{folder}", "--backbone", "small_cnn", "--epochs", "2",
                       "--no-plots", "--verbose", "0", "--out", str(run), "--export", str(export)])
    out = capsys.readouterr()
    assert status == 0 and "| recall@1 |" in out.out
    assert "recipe: photos (25% of them colour" in out.out and "backbone small_cnn given" in out.out
    assert "broken.jpg" in (run / "unreadable_files.txt").read_text()
    config = json.loads((run / "metrics.json").read_text())["config"]
    assert config["image_size"] == 64 and config["classes_per_batch"] == 3  # adapted to the folder

    assert json.loads((export / "rankloss_tf_export.json").read_text())["split"] == json.loads(
        (run / "split.json").read_text())  # train --export carries the run's held-out split
    assert cli.main(["evaluate", "--model", str(export), "--dataset", f"folder:{folder}", "--json",
                     str(tmp_path / "m.json")]) == 0
    assert cli.main(["evaluate", "--model", str(run), "--dataset", f"folder:{folder}"]) == 0
    assert cli.main(["export", "--model", str(run), "--out", str(tmp_path / "again")]) == 0

    code = ("import sys, numpy as np, tensorflow as tf; m = tf.saved_model.load(sys.argv[1]); "
            "f = m.signatures['serving_default']; "
            "a = f(images=tf.constant(np.zeros((2, 100, 70, 1), np.uint8)))['embeddings']; "
            "b = f(images=tf.constant(np.zeros((1, 64, 64, 3), np.uint8)))['embeddings']; "
            "print(a.shape[0], b.shape[0], bool(np.isfinite(a.numpy()).all()))")
    result = subprocess.run([sys.executable, "-c", code, str(export)], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.stdout.split() == ["2", "1", "True"], result.stderr
