"""The image sample of a folder or TFRecord files (what a recipe is chosen from) and the TFRecord writer command."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

from rankloss_tf.datasets import folder as folder_module
from rankloss_tf.datasets import image_sample
from rankloss_tf.datasets.image_sample import sample_dataset
from rankloss_tf.datasets.tfrecord import write_folder

ROOT = Path(__file__).resolve().parents[1]


def _class_folder(root, grey_classes, colour_classes, per_class):
    """Class folders, grey ones first (sorted names): ``per_class`` PNGs each."""
    rng = np.random.default_rng(0)
    for c in range(grey_classes + colour_classes):
        (root / f"c{c:02d}").mkdir(parents=True)
        for i in range(per_class):
            image = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
            if c < grey_classes:
                image[...] = image[..., :1]
            tf.io.write_file(str(root / f"c{c:02d}" / f"{i}.png"), tf.io.encode_png(image))
    return root


def test_a_folder_sample_stats_no_file_after_the_scan(tmp_path, monkeypatch):
    root = _class_folder(tmp_path / "photos", 1, 1, per_class=6)
    index = folder_module.scan_folder(root)
    assert index.fingerprint
    monkeypatch.setattr(folder_module, "scan_folder", lambda path: index)
    real_stat, stats = os.stat, []

    def counting_stat(path, *args, **kwargs):
        stats.append(path)
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", counting_stat)
    image_sample._sample_files.cache_clear()
    sample = sample_dataset(f"folder:{root}", count=4)
    assert sample.count == 4 and 0 < sample.colour_fraction < 1
    assert not [path for path in stats if str(root) in os.fsdecode(path)]


def test_a_changed_folder_file_is_sampled_anew(tmp_path):
    root = _class_folder(tmp_path / "photos", 1, 0, per_class=2)
    assert sample_dataset(f"folder:{root}").colour_fraction == 0.0
    colour = np.random.default_rng(1).integers(0, 256, (12, 12, 3), dtype=np.uint8)
    for path in (root / "c00").iterdir():
        tf.io.write_file(str(path), tf.io.encode_png(colour))
    assert sample_dataset(f"folder:{root}").colour_fraction == 1.0


def test_a_tfrecord_sample_spreads_over_class_sorted_files(tmp_path):
    root = _class_folder(tmp_path / "photos", 2, 2, per_class=20)  # 40 grey records, then 40 colour ones
    write_folder(root, str(tmp_path / "records" / "r"), records_per_file=30)
    sample = sample_dataset(f"tfrecord:{tmp_path}/records/r-*", count=8)
    assert sample.count == 8
    np.testing.assert_allclose(sample.colour_fraction, 0.5, atol=0.13)


def test_the_tfrecord_writer_runs_as_a_command_without_a_warning(tmp_path):
    _class_folder(tmp_path / "photos", 0, 2, per_class=2)
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-m", "rankloss_tf.datasets.tfrecord_writer",
                           str(tmp_path / "photos"), str(tmp_path / "r")], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "RuntimeWarning" not in done.stderr
    assert "tfrecord:" in done.stdout and (tmp_path / "r-00000-of-00001.tfrecord").is_file()
