"""The rankloss-tf command and app.train: smoke runs, resume, errors, demo choice."""

import csv
import json
from pathlib import Path

import keras
import numpy as np
import pytest

from rankloss_tf import app
from rankloss_tf.app import cli
from rankloss_tf.export import SavedModelEmbedder
from tests.conftest import run_cli

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
OMNIGLOT = SHARED_DATA / "omniglot"
METRIC_NAMES = {"recall@1", "recall@2", "recall@4", "recall@8", "map@r", "r_precision", "nmi", "f1"}


def test_train_evaluate_export_on_digits(tmp_path, capsys):
    run, saved = tmp_path / "run", tmp_path / "saved_model"
    status, out, _ = run_cli(capsys, "train", "--dataset", "digits", "--loss", "triplet_semihard", "--margin", "0.5",
                          "--epochs", "2", "--steps-per-epoch", "3", "--embedding-dim", "16", "--out", run,
                          "--export", saved, "--verbose", "0")
    assert status == 0
    assert "| recall@1 |" in out and "| f1 |" in out
    record = json.loads((run / "metrics.json").read_text())
    assert set(record["metrics"]) == METRIC_NAMES
    assert record["config"]["loss"] == "triplet_semihard" and record["config"]["margin"] == 0.5
    assert all(0.0 <= v <= 1.0 for v in record["metrics"].values())
    assert record["metrics"]["recall@1"] > 0.3  # 5 test classes: chance is ~0.2
    assert (run / "model.keras").is_file() and not (run / "checkpoints").exists()
    assert len(list(csv.DictReader((run / "history.csv").open()))) == 2
    assert sorted(p.name for p in (run / "plots").iterdir()) == ["recall_at_k.png", "retrieval_gallery.png", "tsne.png"]

    # evaluate the SavedModel: the same embeddings, so the same metrics.
    status, out, _ = run_cli(capsys, "evaluate", "--model", saved, "--dataset", "digits", "--json", tmp_path / "m.json")
    assert status == 0 and "| map@r |" in out
    assert json.loads((tmp_path / "m.json").read_text()) == pytest.approx(record["metrics"], abs=1e-6)

    # export the run directory again elsewhere; it embeds like the Keras model.
    status, out, _ = run_cli(capsys, "export", "--model", run, "--out", tmp_path / "again")
    assert status == 0 and "serving_default" in out
    images = np.random.default_rng(0).integers(0, 256, size=(3, 8, 8, 1), dtype=np.uint8)
    want = keras.models.load_model(run / "model.keras")(images).numpy()
    np.testing.assert_allclose(SavedModelEmbedder(tmp_path / "again")(images).numpy(), want, atol=1e-5)


def test_train_on_omniglot(tmp_path, capsys):
    if not OMNIGLOT.is_dir():
        pytest.skip(f"Omniglot data not found at {OMNIGLOT}")
    status, out, _ = run_cli(capsys, "train", "--dataset", "omniglot", "--data-dir", OMNIGLOT, "--epochs", "1",
                          "--steps-per-epoch", "2", "--classes-per-batch", "8", "--samples-per-class", "2",
                          "--no-plots", "--out", tmp_path / "run", "--verbose", "0")
    assert status == 0 and "| nmi |" in out
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(record["metrics"]) == METRIC_NAMES
    assert record["config"]["image_size"] == 32 and record["config"]["embedding_dim"] == 128
    assert keras.models.load_model(tmp_path / "run" / "model.keras").input_shape == (None, 105, 105, 1)


class Interrupt(keras.callbacks.Callback):
    """Raises KeyboardInterrupt at a given (epoch, batch); records the epochs it sees begin."""

    def __init__(self, at=None):
        super().__init__()
        self.at, self.epochs = at, []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)

    def on_train_batch_end(self, batch, logs=None):
        if (self.epochs[-1], batch) == self.at:
            raise KeyboardInterrupt


def test_interrupted_run_resumes_from_last_epoch(tmp_path):
    config = app.TrainConfig(dataset="digits", epochs=4, steps_per_epoch=3, embedding_dim=8,
                                  out_dir=str(tmp_path), plots=False, verbose=0)
    first = Interrupt(at=(2, 1))
    with pytest.raises(KeyboardInterrupt):
        app.train(config, callbacks=[first])
    assert first.epochs == [0, 1, 2]
    assert (tmp_path / "checkpoints").is_dir() and not (tmp_path / "metrics.json").exists()

    second = Interrupt()
    result = app.train(config, callbacks=[second])
    assert second.epochs == [2, 3]  # epochs 0 and 1 were done and are not trained again
    assert len(result.history.epoch) == 2
    assert [int(row["epoch"]) for row in csv.DictReader((tmp_path / "history.csv").open())] == [0, 1, 2, 3]
    assert not (tmp_path / "checkpoints").exists() and (tmp_path / "metrics.json").is_file()


def test_normalize_option_trains_on_raw_embeddings(tmp_path, capsys):
    status, _, _ = run_cli(capsys, "train", "--dataset", "digits", "--loss", "npair", "--no-normalize",
                        "--samples-per-class", "2", "--epochs", "1", "--steps-per-epoch", "2",
                        "--embedding-dim", "8", "--no-plots", "--out", tmp_path / "run", "--verbose", "0")
    assert status == 0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["config"]["normalize"] is False
    images = np.random.default_rng(0).integers(0, 256, size=(4, 8, 8, 1), dtype=np.uint8)
    norms = np.linalg.norm(keras.models.load_model(tmp_path / "run" / "model.keras")(images).numpy(), axis=1)
    assert not np.allclose(norms, 1.0)
    # Defaults: normalised end to end; a frozen-feature head keeps N-pair / angular embeddings raw.
    assert app.TrainConfig(loss="npair").resolved().normalize
    assert not app.TrainConfig(loss="npair", backbone="efficientnet_lite0").resolved().normalize
    assert app.TrainConfig(loss="npair", backbone="efficientnet_lite0", normalize=True).resolved().normalize
    with pytest.raises(ValueError, match="normalize='yes'"):
        app.TrainConfig(dataset="digits", normalize="yes").resolved()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--dataset", "digits", "--loss", "hinge"], "invalid choice: 'hinge'"),
        (["train", "--dataset", "mnist_typo"], "Unknown dataset"),
        (["train", "--dataset", "omniglot", "--data-dir", "/no/such/dir"], "Received: data_dir='/no/such/dir'"),
        (["train", "--dataset", "digits", "--epochs", "0"], "--epochs: `epochs` must be in [1, inf). Received: epochs=0"),
        (["train", "--dataset", "digits", "--epochs", "two"], "--epochs: expected an integer. Received: 'two'"),
        (["train", "--dataset", "digits", "--alpha", "95"], "alpha=95"),
        (["train", "--dataset", "digits", "--loss", "triplet_hard", "--margin", "-1"], "margin=-1"),
        (["train", "--dataset", "digits", "--learning-rate", "nan"], "`learning_rate` must be a finite number"),
        (["train", "--dataset", "digits", "--loss", "npair", "--margin", "0.5"], "takes no margin"),
        (["train", "--dataset", "digits", "--classes-per-batch", "6"], "classes_per_batch=6"),
        (["evaluate", "--model", "/no/such/model", "--dataset", "digits"], "not found: /no/such/model"),
        (["export", "--model", "/", "--out", "x"], "must be a SavedModel directory, a .keras file"),
        (["serve"], "invalid choice: 'serve'"),
    ],
)
def test_clear_errors(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv + (["--out", str(tmp_path / "run")] if argv[0] == "train" else []))
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_demo_uses_omniglot_when_present_else_digits(tmp_path, monkeypatch):
    monkeypatch.delenv(cli.DATA_ENV, raising=False)
    assert cli._demo_config("runs/demo").dataset == "digits"
    assert cli._demo_config("runs/demo", tmp_path / "omniglot").dataset == "digits"  # absent
    (tmp_path / "omniglot").mkdir()
    monkeypatch.setenv(cli.DATA_ENV, str(tmp_path))
    config = cli._demo_config("runs/demo")
    assert (config.dataset, config.data_dir, config.resolved().loss) == ("omniglot", str(tmp_path / "omniglot"), "npair_angular")
    assert config.epochs == cli.DEMO["epochs"] < app.TrainConfig(dataset="omniglot").resolved().epochs
    assert config.export_dir == str(Path("runs/demo_saved_model"))
