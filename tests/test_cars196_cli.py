"""`rankloss-tf train` with pretrained backbones: frozen cached features on real Cars196, fine-tuning, errors."""

import csv
import json
from pathlib import Path

import keras
import numpy as np
import pytest

from rankloss_tf import app
from rankloss_tf.app import cli
from rankloss_tf.backbones import files, weights
from rankloss_tf.datasets import load
from rankloss_tf.export import SavedModelEmbedder
from tests.conftest import run_cli

CARS196 = Path(__file__).resolve().parents[2] / "shared" / "data" / "cars196"
TRAIN_CLASSES, TEST_CLASSES, PER_CLASS = (1, 2, 3, 4), (99, 100, 101, 102), 5


@pytest.fixture
def tiny_cars196(tmp_path):
    """A local-layout Cars196 of 40 real images: 4 train and 4 test classes, 5 images each (links)."""
    if not (CARS196 / "labels.csv").is_file():
        pytest.skip(f"Cars196 data not found at {CARS196}")
    if not (files.default_cache_dir() / weights.WEIGHTS_FILENAME).is_file() and weights.installed_source() is None:
        pytest.skip("No ImageNet weights of efficientnet_lite0 on this machine")
    root = tmp_path / "cars196"
    root.mkdir()
    counts = {}
    with open(CARS196 / "labels.csv", newline="") as source, open(root / "labels.csv", "w", newline="") as out:
        reader = csv.DictReader(source)
        writer = csv.DictWriter(out, reader.fieldnames)
        writer.writeheader()
        for row in reader:
            class_id = int(row["class_id"])
            if class_id in TRAIN_CLASSES + TEST_CLASSES and counts.get(class_id, 0) < PER_CLASS:
                counts[class_id] = counts.get(class_id, 0) + 1
                folder = root / f"cropped_{row['split']}"
                folder.mkdir(exist_ok=True)
                (folder / row["file"]).symlink_to(CARS196 / f"cropped_{row['split']}" / row["file"])
                writer.writerow(row)
    for split in ("train", "test"):
        (root / f"cropped_{split}").mkdir(exist_ok=True)
    return root


def test_frozen_features_on_cars196_cached_then_reused_and_exported(tiny_cars196, tmp_path, capsys):
    cache, saved = tmp_path / "cache", tmp_path / "saved_model"
    common = ["train", "--dataset", "cars196", "--data-dir", tiny_cars196, "--view-sizes", "224", "--no-mirror-views",
              "--cache-dir", cache, "--classes-per-batch", "4", "--samples-per-class", "2", "--epochs", "2",
              "--steps-per-epoch", "3", "--embedding-dim", "32", "--no-plots", "--verbose", "0"]
    status, out, _ = run_cli(capsys, *common, "--out", tmp_path / "run1", "--export", saved)
    assert status == 0 and "frozen efficientnet_lite0 features" in out and "| recall@1 |" in out
    # The file name keeps the tail of the dataset id (a temporary path here, split, view): order by split.
    cached = sorted(cache.glob("*.npz"), key=lambda path: path.name.split("-")[0].split("_")[-2])
    assert [path.name.split("-")[0].split("_")[-2:] for path in cached] == [["test", "plain"], ["train", "plain"]]
    stamps = [path.stat().st_mtime_ns for path in cached]
    first = json.loads((tmp_path / "run1" / "metrics.json").read_text())
    assert first["protocol"] == "frozen features"
    assert first["config"]["image_size"] == 224 and first["config"]["weights"] == "imagenet"
    assert set(first["seconds"]) == {"fit", "evaluate", "total"}
    assert len(list(csv.DictReader((tmp_path / "run1" / "history.csv").open()))) == 2

    # Second run: both feature files are read back, not recomputed; same seed, same metrics.
    status, _, _ = run_cli(capsys, *common, "--out", tmp_path / "run2")
    assert status == 0
    assert set(cache.glob("*.npz")) == set(cached) and [path.stat().st_mtime_ns for path in cached] == stamps
    second = json.loads((tmp_path / "run2" / "metrics.json").read_text())
    assert second["metrics"] == pytest.approx(first["metrics"], abs=1e-6)

    # The export embeds raw uint8 images end to end as the head embeds the cached features.
    images, labels = (np.stack(a) for a in zip(*load("cars196", "test", data_dir=str(tiny_cars196)).as_numpy_iterator()))
    assert images.dtype == np.uint8 and images.shape == (20, 224, 224, 3)
    embeddings = SavedModelEmbedder(saved)(images).numpy()
    assert embeddings.shape == (20, 32)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    with np.load(cached[0]) as test_cache:
        np.testing.assert_array_equal(test_cache["labels"], labels)
        head = keras.models.load_model(tmp_path / "run1" / "model.keras").get_layer("projection_head")
        want = head(test_cache["features"]).numpy()
        np.testing.assert_allclose(embeddings, want / np.linalg.norm(want, axis=1, keepdims=True), atol=2e-4)


def test_fine_tune_trains_the_whole_network(tmp_path):
    config = app.TrainConfig(dataset="digits", backbone="efficientnet_lite0", weights="random", fine_tune=True,
                                  image_size=32, epochs=1, steps_per_epoch=1, embedding_dim=8, plots=False,
                                  out_dir=str(tmp_path), verbose=0)
    result = app.train(config)
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["protocol"] == "end to end" and record["config"]["fine_tune"] is True
    assert result.model.input_shape == (None, 8, 8, 1) and result.model.output_shape == (None, 8)
    assert len(result.model.trainable_weights) > 40  # the backbone's convolutions, not just the head (batch norm frozen)
    assert (tmp_path / "model.keras").is_file()


def test_cars196_defaults():
    config = app.TrainConfig(dataset="cars196").resolved()
    assert (config.image_size, config.embedding_dim, config.classes_per_batch, config.samples_per_class) == (
        224, 1280, 64, 2)
    assert (config.backbone, config.loss, config.weights, config.frozen) == (
        "efficientnet_lite0", "npair", "imagenet", True)
    assert (config.view_sizes, config.mirror_views) == ((224, 288), True)
    assert app.TrainConfig(dataset="cars196", backbone="small_cnn").resolved().frozen is False  # end to end


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--fine-tune"], "`fine_tune` applies to pretrained backbones"),
        (["--backbone", "resnet_typo"], "Unknown backbone"),
        (["--backbone", "efficientnet_lite0", "--weights", "/no/such.npz"], "python -m rankloss_tf.backbones.convert_weights"),
        (["--backbone", "efficientnet_lite0", "--weights", "random"], "worth nothing"),
    ],
)
def test_clear_errors(extra, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--dataset", "digits", "--out", str(tmp_path / "run"), *extra])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_imagenet_weights_say_how_to_get_them(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(files.CACHE_ENV_VAR, str(tmp_path / "empty_cache"))
    monkeypatch.setattr(weights, "installed_source", lambda: None)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--dataset", "digits", "--backbone", "efficientnet_lite0", "--image-size", "32",
                  "--out", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "python -m rankloss_tf.backbones.convert_weights" in err and "rankloss-tf[weights]" in err
