"""What a run owns and keeps: export paths, re-runs, changed configurations, locks, NaN, K = 1, the CLI's extras."""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from rankloss_tf import app
from rankloss_tf.app.run_dir import RunDirectory
from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--dataset", "digits", "--epochs", "2", "--steps-per-epoch", "2", "--embedding-dim", "8", "--no-plots",
        "--verbose", "0"]


def config(tmp_path, **overrides):
    fields = dict(dataset="digits", epochs=2, steps_per_epoch=2, embedding_dim=8, out_dir=str(tmp_path / "run"),
                  plots=False, verbose=0)
    return app.TrainConfig(**{**fields, **overrides})


class SeenEpochs(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)


def listing(root):
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*"))


# --- export paths: nothing that is not a previous export of this tool is replaced ------------------------------

def test_export_into_an_unrelated_directory_is_refused_before_training(tmp_path, capsys):
    mine = tmp_path / "my_photos"
    mine.mkdir()
    (mine / "holiday.jpg").write_bytes(b"precious")
    done = run_cli(capsys, "train", *FAST, "--out", tmp_path / "run", "--export", mine, "--overwrite")
    status, out = done.status, done.printed
    assert status == 2 and "not an export of rankloss_tf" in out
    assert (mine / "holiday.jpg").read_bytes() == b"precious"
    assert not (tmp_path / "run").exists()  # refused before any work


@pytest.mark.parametrize("where", ["same", "parent", "inside"])
def test_export_equal_to_inside_or_above_the_run_is_refused(tmp_path, capsys, where):
    run = tmp_path / "runs" / "a"
    export = {"same": run, "parent": tmp_path / "runs", "inside": run / "saved_model"}[where]
    done = run_cli(capsys, "train", *FAST, "--out", run, "--export", export, "--overwrite")
    status, out = done.status, done.printed
    assert status == 2 and "--export must not be equal to, inside or above the run directory --out" in out
    assert not run.exists()


def test_file_at_out_or_export_is_refused(tmp_path, capsys):
    file = tmp_path / "notes.txt"
    file.write_text("mine")
    done = run_cli(capsys, "train", *FAST, "--out", file)
    status, out = done.status, done.printed
    assert status == 2 and "is an existing file" in out
    done = run_cli(capsys, "train", *FAST, "--out", tmp_path / "run", "--export", file)
    status, out = done.status, done.printed
    assert status == 2 and "exists and is not a directory" in out
    assert file.read_text() == "mine" and not (tmp_path / "run").exists()


def test_out_that_holds_other_files_is_refused(tmp_path, capsys):
    (tmp_path / "thesis.tex").write_text("mine")
    done = run_cli(capsys, "train", *FAST, "--out", tmp_path)
    status, out = done.status, done.printed
    assert status == 2 and "not a rankloss-tf run" in out
    assert listing(tmp_path) == ["thesis.tex"]


def test_export_command_keeps_runs_and_needs_overwrite(tmp_path, capsys):
    run = tmp_path / "run"
    assert run_cli(capsys, "train", *FAST, "--out", run)[0] == 0
    before = listing(run)
    done = run_cli(capsys, "export", "--model", run, "--out", run, "--overwrite")
    status, out = done.status, done.printed
    assert status == 2 and "must not be equal to, inside or above the model --model" in out and listing(run) == before
    assert run_cli(capsys, "export", "--model", run, "--out", tmp_path / "e")[0] == 0
    done = run_cli(capsys, "export", "--model", run, "--out", tmp_path / "e")
    status, out = done.status, done.printed
    assert status == 2 and "--overwrite to replace it" in out
    assert run_cli(capsys, "export", "--model", run, "--out", tmp_path / "e", "--overwrite")[0] == 0


# --- re-runs, resume after fit, changed configurations --------------------------------------------------------

def test_finished_run_is_not_trained_again(tmp_path, capsys):
    first = app.train(config(tmp_path))
    rows = (tmp_path / "run" / "history.csv").read_text()
    seen = SeenEpochs()
    again = app.train(config(tmp_path), callbacks=[seen])
    assert seen.epochs == [] and again.resumed == "finished" and again.history is None
    assert again.metrics == first.metrics
    assert (tmp_path / "run" / "history.csv").read_text() == rows
    assert list(csv.DictReader(open(tmp_path / "run" / "history.csv")))[0].keys() == {"epoch", "loss"}  # no NA column
    done = run_cli(capsys, "train", *FAST, "--out", tmp_path / "run")
    status, out = done.status, done.printed
    assert status == 0 and "already finished" in out and "nothing was trained again" in out


def test_interrupted_evaluation_resumes_at_evaluation(tmp_path, monkeypatch):
    from rankloss_tf.app import runner

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "evaluate", interrupt)
    with pytest.raises(KeyboardInterrupt):
        app.train(config(tmp_path))
    assert RunDirectory(tmp_path / "run").phase == "fitted"
    monkeypatch.undo()
    seen = SeenEpochs()
    result = app.train(config(tmp_path), callbacks=[seen])
    assert seen.epochs == [] and result.resumed == "fitted" and set(result.metrics) >= {"recall@1", "nmi"}
    assert [row["epoch"] for row in csv.DictReader(open(tmp_path / "run" / "history.csv"))] == ["0", "1"]
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["seconds"]["total"] >= record["seconds"]["fit"] > 0


@pytest.mark.parametrize("change", [dict(loss="triplet_hard"), dict(epochs=3), dict(embedding_dim=16)])
def test_changed_configuration_is_refused_with_the_differences(tmp_path, change):
    app.train(config(tmp_path))
    name, value = next(iter(change.items()))
    with pytest.raises(ValueError, match=f"{name}: .* -> {value!r}.*another --out"):
        app.train(config(tmp_path, **change))
    # Presentation fields may change on a re-run.
    assert app.train(config(tmp_path, verbose=2, plots=False)).resumed == "finished"


def test_damaged_checkpoint_gives_a_way_out(tmp_path):
    class Stop(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        app.train(config(tmp_path), callbacks=[Stop()])
    checkpoint = next((tmp_path / "run" / "checkpoints").glob("epoch-*.weights.h5"))
    checkpoint.write_bytes(b"")
    with pytest.raises(ValueError, match="cannot be loaded.*Delete it to resume"):
        app.train(config(tmp_path))
    checkpoint.unlink()
    assert app.train(config(tmp_path)).resumed == "fitting"


# --- one writer at a time ------------------------------------------------------------------------------------

def test_second_writer_is_refused_and_a_dead_writers_lock_is_not(tmp_path):
    run = RunDirectory(tmp_path / "run")
    with run.locked():
        with pytest.raises(ValueError, match=f"pid {os.getpid()}.*is writing to this run directory"):
            app.train(config(tmp_path))
    # A lock file left by a killed process (no flock held) does not block.
    (tmp_path / "run" / ".lock").write_text("999999")
    assert app.train(config(tmp_path)).resumed is None


def test_a_lock_held_by_another_process_refuses_until_it_dies(tmp_path, capsys):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from rankloss_tf.app.run_dir import RunDirectory; "
         "held = RunDirectory(sys.argv[1]).locked(); held.__enter__(); print('locked', flush=True); time.sleep(120)",
         str(tmp_path / "r")], env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        done = run_cli(capsys, "train", *FAST, "--out", tmp_path / "r")
        status, out = done.status, done.printed
        assert status == 2 and f"pid {holder.pid}" in out and "is writing to this run directory" in out
        assert listing(tmp_path / "r") == [".lock", ".rankloss_tf_run"]
    finally:
        holder.kill()
        holder.wait()
    done = run_cli(capsys, "train", *FAST, "--out", tmp_path / "r")  # the dead holder's lock is stale
    status, out = done.status, done.printed
    assert status == 0
    assert [row["epoch"] for row in csv.DictReader(open(tmp_path / "r" / "history.csv"))] == ["0", "1"]


# --- NaN, K = 1, bad hyper-parameters ------------------------------------------------------------------------

def test_nan_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    class Poison(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if self.params and getattr(self, "epoch", 0) == 1:
                layer = self.model.get_layer("projection")
                layer.kernel.assign(np.full(layer.kernel.shape, np.nan, np.float32))

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

    with pytest.raises(app.DivergedError, match="epoch 2.*last good checkpoint \\(epoch 1"):
        app.train(config(tmp_path, epochs=3), callbacks=[Poison()])
    kept = list((tmp_path / "run" / "checkpoints").glob("epoch-*.weights.h5"))
    assert [p.name for p in kept] == ["epoch-0001.weights.h5"]
    assert not (tmp_path / "run" / "model.keras").exists()


def test_non_finite_embeddings_are_refused_by_evaluation():
    from rankloss_tf.evaluation import evaluate

    embeddings = np.eye(4, dtype=np.float32)
    embeddings[2, 0] = np.nan
    with pytest.raises(ValueError, match="must be finite.*1 of 4 rows"):
        evaluate(embeddings, [0, 0, 1, 1])


def test_one_sample_per_class_is_refused(tmp_path, capsys):
    done = run_cli(capsys, "train", *FAST, "--samples-per-class", "1", "--loss", "triplet_hard",
                   "--out", tmp_path / "run")
    status, out = done.status, done.printed
    assert status == 2 and "every loss needs pairs of samples of one class" in out
    with pytest.raises(ValueError, match="`samples_per_class` must be in \\[2, inf\\).*Received: samples_per_class=1"):
        config(tmp_path, samples_per_class=1).resolved()


def test_numpy_scalars_are_accepted_in_the_configuration(tmp_path):
    resolved = config(tmp_path, epochs=np.int64(2), learning_rate=np.float32(1e-3), loss="triplet_hard",
                      margin=np.float32(0.2)).resolved()
    assert resolved.epochs == 2


# --- the command line -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", [["-m", "rankloss_tf.app.cli"], ["-c", "from rankloss_tf.app.cli import main; main()"]])
def test_help_does_not_import_tensorflow(command):
    if command[0] == "-c":  # as the console script runs it
        command = ["-c", "import sys; sys.argv[0] = 'rankloss-tf'; from rankloss_tf.app.cli import main; main()"]
    result = subprocess.run([sys.executable, "-X", "importtime", *command, "train", "--help"], capture_output=True,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert result.returncode == 0 and "--samples-per-class" in result.stdout
    assert "| tensorflow" not in result.stderr and "| keras" not in result.stderr


def test_verbose_follows_the_terminal(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    assert config(tmp_path, verbose=None).resolved().verbose == 2
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert config(tmp_path, verbose=None).resolved().verbose == 1


def test_evaluate_takes_ks_and_image_size_and_names_singletons(tmp_path, capsys, caplog):
    run = tmp_path / "run"
    assert run_cli(capsys, "train", *FAST, "--out", run)[0] == 0
    done = run_cli(capsys, "evaluate", "--model", run, "--dataset", "digits", "--ks", "1,3",
                   "--no-clustering", "--image-size", "8", "--json", tmp_path / "m.json")
    status, out = done.status, done.printed
    assert status == 0 and "| recall@3 |" in out and "| recall@2 |" not in out
    assert set(json.loads((tmp_path / "m.json").read_text())) == {"recall@1", "recall@3", "map@r", "r_precision"}
    done = run_cli(capsys, "evaluate", "--model", run, "--dataset", "digits", "--json", tmp_path / "m.json")
    status, out = done.status, done.printed
    assert status == 2 and "not overwritten" in out
    done = run_cli(capsys, "evaluate", "--model", run, "--dataset", "digits", "--ks", "4,2")
    status, out = done.status, done.printed
    assert status == 2 and "increasing" in out


def test_loss_names_match_the_losses():
    from rankloss_tf import losses
    from rankloss_tf.app.config import LOSS_NAMES

    assert LOSS_NAMES == tuple(sorted(losses.registry()))


def test_offline_keras_applications_weights_give_a_clear_error(tmp_path, capsys, monkeypatch):
    import keras.src.utils.file_utils as file_utils

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://example.invalid/weights.h5: None -- no network")

    monkeypatch.setattr(file_utils, "get_file", offline)
    monkeypatch.setattr(keras.utils, "get_file", offline)
    done = run_cli(capsys, "train", *FAST, "--backbone", "mobilenet_v3_small", "--image-size", "32",
                   "--out", tmp_path / "run")
    status, out = done.status, done.printed
    assert status == 2 and "Could not build keras.applications.MobileNetV3Small" in out
    assert "--weights random" in out  # the command line's words, beside the library's


def test_infinite_dataset_is_refused_by_the_sampler():
    import tensorflow as tf

    from rankloss_tf.data import pk_batches

    ds = tf.data.Dataset.from_tensor_slices((np.zeros((8, 2), np.float32), np.repeat(np.arange(4), 2))).repeat()
    with pytest.raises(ValueError, match="infinite.*Received: cardinality INFINITE"):
        pk_batches(ds, classes_per_batch=2, samples_per_class=2)


@pytest.mark.parametrize("dataset", ["omniglot", "cars196"])
def test_data_dir_without_the_files_is_refused_not_downloaded_into(dataset, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    done = run_cli(capsys, "train", "--dataset", dataset, "--data-dir", tmp_path / "empty",
                   "--out", tmp_path / "run")
    status, out = done.status, done.printed
    assert status == 2 and "nothing is downloaded into a given data_dir" in out
    assert listing(tmp_path / "empty") == []


def test_evaluate_scores_the_official_one_shot_runs(tmp_path, capsys):
    runs = ROOT.parent / "shared" / "data" / "omniglot" / "all_runs.zip"
    if not runs.is_file():
        pytest.skip("all_runs.zip not found")
    run = tmp_path / "run"
    assert run_cli(capsys, "train", *FAST, "--out", run)[0] == 0
    done = run_cli(capsys, "evaluate", "--model", run, "--one-shot", runs, "--json", tmp_path / "m.json")
    status, out = done.status, done.printed
    assert status == 0 and "| one_shot_20way |" in out
    assert 0.0 <= json.loads((tmp_path / "m.json").read_text())["one_shot_20way"] <= 1.0
    # Test-time shifts: the default is the Omniglot recipe's; an explicit one is taken; a bad one is a clear error.
    done = run_cli(capsys, "evaluate", "--model", run, "--one-shot", runs, "--one-shot-shift", "2")
    assert done.status == 0 and "| one_shot_20way |" in done.printed
    done = run_cli(capsys, "evaluate", "--model", run, "--one-shot", runs, "--one-shot-shift", "-1")
    assert done.status == 2 and "Received: shift=-1" in done.printed
    done = run_cli(capsys, "evaluate", "--model", run)
    status, out = done.status, done.printed
    assert status == 2 and "needs --dataset, --one-shot or both" in out


# --- a run is ours only by its marker (issue 27.1) -------------------------------------------------------------

def one_line(out):
    """The command's output is (the "recipe: ..." and "Training ..." announcements and) one error line, no traceback."""
    rest = [line for line in out.strip().splitlines() if not line.startswith(("Training ", "recipe: "))]
    return len(rest) == 1 and rest[0].startswith("rankloss-tf: error: ")


def test_a_folder_with_a_foreign_run_json_is_refused_and_untouched(tmp_path, capsys):
    sacred = tmp_path / "sacred"  # what Sacred's file observer writes
    sacred.mkdir()
    files = {"run.json": '{"status": "RUNNING"}', "metrics.json": "{}", "history.csv": "epoch,loss\n0,1.0\n",
             ".notes.tmp-1": "draft", "state.json": '{"phase": "fitting"}'}
    for name, text in files.items():
        (sacred / name).write_text(text)
    done = run_cli(capsys, "train", *FAST, "--out", sacred)
    status, out = done.status, done.printed
    assert status == 2 and "no .rankloss_tf_run marker" in out and "0.1" in out and one_line(out)
    assert {p.name: p.read_text() for p in sacred.iterdir()} == files
    del files["state.json"]
    (sacred / "state.json").unlink()
    done = run_cli(capsys, "train", *FAST, "--out", sacred)
    status, out = done.status, done.printed
    assert status == 2 and "not a rankloss-tf run" in out
    assert {p.name: p.read_text() for p in sacred.iterdir()} == files


def test_resume_through_a_trailing_slash_or_a_symlink(tmp_path, capsys):
    run = tmp_path / "run"
    assert run_cli(capsys, "train", *FAST, "--out", run)[0] == 0
    (tmp_path / "link").symlink_to(run)
    for spelled in (f"{run}/", tmp_path / "link", f"{tmp_path}/link/"):
        done = run_cli(capsys, "train", *FAST, "--out", spelled)
        status, out = done.status, done.printed
        assert status == 0 and "already finished" in out, out


@pytest.mark.parametrize("damage", ["no metrics.json", "run.json a list", "unknown phase", "no model.keras"])
def test_damaged_run_directories_give_one_line(tmp_path, capsys, damage):
    run = tmp_path / "run"
    assert run_cli(capsys, "train", *FAST, "--out", run)[0] == 0
    if damage == "no metrics.json":
        (run / "metrics.json").unlink()
    elif damage == "run.json a list":
        (run / "run.json").write_text("[1, 2]")
    elif damage == "unknown phase":
        state = json.loads((run / "state.json").read_text())
        (run / "state.json").write_text(json.dumps({**state, "phase": "trained"}))
    else:
        (run / "model.keras").unlink()
        state = json.loads((run / "state.json").read_text())
        (run / "state.json").write_text(json.dumps({**state, "phase": "fitted"}))
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock"}
    done = run_cli(capsys, "train", *FAST, "--out", run)
    status, out = done.status, done.printed
    assert status == 2 and "The run directory is damaged" in out and one_line(out), out
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock"} == before


# --- paths that cannot be written, refused before any work (issue 27.9) ----------------------------------------

@pytest.fixture
def read_only(tmp_path):
    """A read-only file system (a tmpfs mounted ``ro``), or a skip where mounting is not allowed."""
    path = tmp_path / "read_only"
    path.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)], capture_output=True)
    if mount.returncode != 0:
        pytest.skip("mounting a tmpfs needs privileges this machine does not give")
    yield path
    subprocess.run(["umount", "-l", str(path)], check=True)


def test_out_under_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    done = run_cli(capsys, "train", *FAST, "--out", tmp_path / "notes.txt" / "run")
    status, out = done.status, done.printed
    assert status == 2 and "--out lies under a file" in out and one_line(out)
    assert listing(tmp_path) == ["notes.txt"]


def test_read_only_out_export_and_cache_are_refused_before_training(tmp_path, capsys, read_only, monkeypatch):
    done = run_cli(capsys, "train", *FAST, "--out", read_only / "run")
    status, out = done.status, done.printed
    assert status == 2 and "--out cannot be written" in out and one_line(out)
    done = run_cli(capsys, "train", *FAST, "--out", tmp_path / "run", "--export", read_only / "export")
    status, out = done.status, done.printed
    assert status == 2 and "--export cannot be written" in out and not (tmp_path / "run").exists()
    folder = make_folder(tmp_path / "photos", {name: 3 for name in "abcd"})
    monkeypatch.setenv("RANKLOSS_TF_CACHE", str(read_only / "cache"))
    done = run_cli(capsys, "train", *FOLDER_FAST, "--dataset", f"folder:{folder}", "--out", tmp_path / "run")
    status, out = done.status, done.printed
    assert status == 2 and "RANKLOSS_TF_CACHE" in out and one_line(out)
    assert not (tmp_path / "run").exists()


# --- a folder's split, recorded by class name (issues 27.4, 28.3, 27.11) --------------------------------------

FOLDER_FAST = ["--epochs", "1", "--steps-per-epoch", "1", "--embedding-dim", "8", "--image-size", "16",
               "--classes-per-batch", "2", "--samples-per-class", "2", "--no-plots", "--verbose", "0"]


def make_folder(root, counts):
    """A class folder of small PNGs: ``{class name: number of images}``, each class its own colour."""
    image_module = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    for number, (name, count) in enumerate(counts.items()):
        (root / name).mkdir(parents=True)
        for i in range(count):
            pixels = np.clip(rng.normal(40 * number, 20, (12, 12, 3)), 0, 255).astype(np.uint8)
            image_module.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def test_a_small_folder_scores_the_recall_at_k_it_has(tmp_path, capsys, monkeypatch):
    # 4 classes x 3 images: 6 held-out images. It trained, then failed at evaluation on every re-run
    # ("`k` must be between 1 and 5 ... k=8"; an outside probe); now it reports Recall@1, 2 and 4.
    monkeypatch.setenv("RANKLOSS_TF_CACHE", str(tmp_path / "cache"))
    folder = make_folder(tmp_path / "photos", {name: 3 for name in "abcd"})
    done = run_cli(capsys, "train", *FOLDER_FAST, "--dataset", f"folder:{folder}", "--out", tmp_path / "run")
    status, out = done.status, done.printed
    assert status == 0, out
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())["metrics"]
    assert {"recall@1", "recall@2", "recall@4"} <= set(metrics) and "recall@8" not in metrics
    done = run_cli(capsys, "evaluate", "--model", tmp_path / "run", "--dataset", f"folder:{folder}")
    status, out = done.status, done.printed
    assert status == 0 and "recall@4" in out and "recall@8" not in out, out


def test_folder_split_is_recorded_and_a_changed_folder_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RANKLOSS_TF_CACHE", str(tmp_path / "cache"))
    folder = make_folder(tmp_path / "photos", {name: 3 for name in "abcdef"})
    run = tmp_path / "run"
    assert run_cli(capsys, "train", *FOLDER_FAST, "--dataset", f"folder:{folder}", "--seed", "3", "--out", run)[0] == 0
    split = json.loads((run / "split.json").read_text())
    assert split["seed"] == 3 and split["train_fraction"] == 0.5
    assert sorted(split["train"] + split["test"]) == list("abcdef") and len(split["test"]) == 3

    done = run_cli(capsys, "evaluate", "--model", run, "--dataset", f"folder:{folder}", "--json",
                   tmp_path / "m.json")  # the recorded seed, not 0
    status, out = done.status, done.printed
    assert status == 0
    recorded = json.loads((run / "metrics.json").read_text())["metrics"]
    assert json.loads((tmp_path / "m.json").read_text()) == pytest.approx(recorded, abs=1e-4)
    done = run_cli(capsys, "evaluate", "--model", run, "--dataset", f"folder:{folder}", "--seed", "0")
    status, out = done.status, done.printed
    assert status == 2 and "trained with --seed 3" in out and one_line(out)

    # the export carries the split: evaluating it scores the run's held-out classes, not seed 0's
    assert run_cli(capsys, "export", "--model", run, "--out", tmp_path / "exported")[0] == 0
    marker = json.loads((tmp_path / "exported" / "rankloss_tf_export.json").read_text())
    assert marker["split"] == split
    done = run_cli(capsys, "evaluate", "--model", tmp_path / "exported", "--dataset", f"folder:{folder}",
                   "--json", tmp_path / "e.json")
    assert done.status == 0, done.printed
    assert json.loads((tmp_path / "e.json").read_text())["recall@1"] == pytest.approx(recorded["recall@1"], abs=1e-4)
    done = run_cli(capsys, "evaluate", "--model", tmp_path / "exported", "--dataset", f"folder:{folder}",
                   "--seed", "0")
    assert done.status == 2 and "trained with --seed 3" in done.printed and one_line(done.printed), done.printed

    moved = split["test"][0]
    (folder / moved).rename(folder / f"{moved}_renamed")
    done = run_cli(capsys, "train", *FOLDER_FAST, "--dataset", f"folder:{folder}", "--seed", "3", "--out", run)
    status, out = done.status, done.printed
    assert status == 2 and f"classes gone: {moved}" in out and f"new classes: {moved}_renamed" in out, out
    done = run_cli(capsys, "evaluate", "--model", run, "--dataset", f"folder:{folder}")
    status, out = done.status, done.printed
    assert status == 2 and f"classes gone: {moved}" in out


def test_one_image_per_test_class_is_refused_before_training(tmp_path, capsys, monkeypatch):
    from rankloss_tf.datasets import scan_folder
    from rankloss_tf.app.split import folder_split

    monkeypatch.setenv("RANKLOSS_TF_CACHE", str(tmp_path / "cache"))
    folder = make_folder(tmp_path / "photos", {name: 3 for name in "abcdef"})
    test = folder_split(scan_folder(folder), seed=0)["test"]
    for name in test:
        for extra in sorted((folder / name).iterdir())[1:]:
            extra.unlink()
    done = run_cli(capsys, "train", *FOLDER_FAST, "--dataset", f"folder:{folder}", "--out", tmp_path / "run")
    status, out = done.status, done.printed
    assert status == 2 and f"Add images to these classes: {', '.join(sorted(test))}" in out
    assert one_line(out) and not (tmp_path / "run").exists()


def test_images_deleted_mid_training_name_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("RANKLOSS_TF_CACHE", str(tmp_path / "cache"))
    folder = make_folder(tmp_path / "photos", {name: 3 for name in "abcd"})

    class DeleteImages(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            for image in folder.rglob("*.png"):
                image.unlink()

    settings = dict(dataset=f"folder:{folder}", epochs=3, steps_per_epoch=2, image_size=16, classes_per_batch=2,
                    samples_per_class=2)
    with pytest.raises(ValueError, match=r"A file of the dataset disappeared while it was read \(.*photos/.*\.png"):
        app.train(config(tmp_path, **settings), callbacks=[DeleteImages()])


def test_a_class_folder_deleted_mid_training_gives_the_advice_that_holds(tmp_path, monkeypatch):
    from rankloss_tf.app.split import folder_split
    from rankloss_tf.datasets import scan_folder

    monkeypatch.setenv("RANKLOSS_TF_CACHE", str(tmp_path / "cache"))
    folder = make_folder(tmp_path / "photos", {name: 3 for name in "abcdef"})
    gone = folder_split(scan_folder(folder), seed=0)["train"][0]

    class DeleteClass(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            shutil.rmtree(folder / gone, ignore_errors=True)

    settings = dict(dataset=f"folder:{folder}", epochs=3, steps_per_epoch=2, image_size=16, classes_per_batch=3,
                    samples_per_class=2)  # every batch holds each of the 3 training classes
    with pytest.raises(ValueError, match=r"A file of the dataset disappeared while it was read") as error:
        app.train(config(tmp_path, **settings), callbacks=[DeleteClass()])
    said = str(error.value)
    assert f"classes gone: {gone}" in said and "Restore the folder, or train afresh in another --out" in said, said
    assert "run the same command again" not in said and "\n" not in said
    with pytest.raises(ValueError, match=f"changed since this run recorded its split \\(classes gone: {gone}"):
        app.train(config(tmp_path, **settings))  # the advice holds: the same command is refused


def test_a_damaged_history_or_split_gives_one_line(tmp_path, capsys):
    from rankloss_tf.app.callbacks import EpochHistory

    (tmp_path / "history.csv").write_text("not,a\nhistory,file\n")
    with pytest.raises(ValueError, match="history.csv is not a history this package wrote"):
        EpochHistory(tmp_path / "history.csv", initial_epoch=1).on_train_begin()
    run = tmp_path / "run"
    assert run_cli(capsys, "train", *FAST, "--out", run)[0] == 0
    (run / "split.json").write_text("[]")
    done = run_cli(capsys, "evaluate", "--model", run, "--dataset", f"folder:{tmp_path}")
    status, out = done.status, done.printed
    assert status == 2 and "split.json is damaged" in out and one_line(out)


def test_a_latin_1_file_name_does_not_stop_the_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RANKLOSS_TF_CACHE", str(tmp_path / "cache"))
    folder = make_folder(tmp_path / "photos", {name: 3 for name in "abcdef"})
    latin = os.path.join(os.fsencode(folder / "a"), b"caf\xe9.png")  # not UTF-8: a surrogate in a str
    with open(latin, "wb") as handle:
        handle.write((folder / "a" / "0.png").read_bytes())
    run = tmp_path / "run"
    done = run_cli(capsys, "train", *FOLDER_FAST, "--dataset", f"folder:{folder}", "--out", run)
    status, out = done.status, done.printed
    assert status == 0, out
    if (run / "unreadable_files.txt").exists():  # listed as the disk spells it, when TensorFlow cannot open it
        assert latin in (run / "unreadable_files.txt").read_bytes()
