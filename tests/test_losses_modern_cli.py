"""`rankloss-tf train --loss` with the issue-31 losses, end to end on digits (tiny runs)."""

import json

import keras
import numpy as np
import pytest

from rankloss_tf.app import cli
from rankloss_tf.export import SavedModelEmbedder
from tests.test_cars196_cli import tiny_cars196  # noqa: F401 (a fixture)


# ~20 s a run: proxy_anchor always (a class head: the wiring), the others as slow tests (each loss's own path
# through the runner: worth running before a release).
SLOW = pytest.mark.slow


@pytest.mark.parametrize("loss", ["proxy_anchor", pytest.param("arcface", marks=SLOW), pytest.param("cosface", marks=SLOW),
                                  pytest.param("multi_similarity", marks=SLOW), pytest.param("supcon", marks=SLOW)])
def test_train_runs_end_to_end_and_exports_only_the_embedding_network(loss, tmp_path, capsys):
    run, saved = tmp_path / "run", tmp_path / "saved"
    status = cli.main(["train", "--dataset", "digits", "--loss", loss, "--epochs", "2", "--steps-per-epoch",
                       "3", "--embedding-dim", "8", "--eval-every", "1", "--no-plots", "--out", str(run), "--export",
                       str(saved), "--verbose", "0"])
    out = capsys.readouterr().out
    assert status == 0, out
    record = json.loads((run / "metrics.json").read_text())
    assert record["config"]["loss"] == loss and 0.0 <= record["metrics"]["recall@1"] <= 1.0
    model = keras.models.load_model(run / "model.keras")
    assert model.output_shape == (None, 8)  # the embedding model: no class head
    assert not any("class_vectors" in weight.path for weight in model.weights)
    images = np.random.default_rng(0).integers(0, 256, size=(3, 8, 8, 1), dtype=np.uint8)
    np.testing.assert_allclose(SavedModelEmbedder(saved)(images).numpy(), model(images).numpy(), atol=1e-5)


@SLOW  # EfficientNet-Lite0 features of 40 real images (~2 min on a shared CPU): the frozen protocol's own wiring
def test_frozen_features_train_a_class_head_on_the_projection_head(tiny_cars196, tmp_path, capsys):
    run, saved = tmp_path / "run", tmp_path / "saved"
    status = cli.main(["train", "--dataset", "cars196", "--data-dir", str(tiny_cars196), "--loss", "proxy_anchor",
                       "--view-sizes", "224", "--no-mirror-views", "--cache-dir", str(tmp_path / "cache"),
                       "--classes-per-batch", "4", "--samples-per-class", "2", "--epochs", "2", "--steps-per-epoch",
                       "3", "--embedding-dim", "16", "--eval-every", "1", "--no-plots", "--out", str(run), "--export",
                       str(saved), "--verbose", "0"])
    out = capsys.readouterr().out
    assert status == 0 and "frozen efficientnet_lite0 features" in out, out
    model = keras.models.load_model(run / "model.keras")
    assert model.get_layer("projection_head").output_shape == (None, 16)
    assert not any("class_vectors" in weight.path for weight in model.weights)
