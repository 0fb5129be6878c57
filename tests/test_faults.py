"""Fault injection: SIGINT or SIGKILL at every phase of `rankloss-tf train`, then a re-run.

The re-run finishes the job; the final model, metrics, history and export equal
those of an uninterrupted run (a resumed run skips the batches it already
trained on, so it sees the same batches), and nothing but the run directory and
the export is left on disk. Also: a run killed before its first phase takes a
corrected command, and an interrupted one is removed; a kill right after a checkpoint (its history
row is kept), a full disk during a checkpoint and images deleted mid-training
(exit 2, one line, the last checkpoint intact).
"""

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rankloss_tf.app import cli
from rankloss_tf.export import SavedModelEmbedder
from rankloss_tf.loading import load_model  # the one loader: it registers the package's Keras objects

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("_fault_worker.py")
PHASES = ("load", "epoch", "checkpoint", "evaluate", "export")
ARGS = ["train", "--dataset", "digits", "--epochs", "3", "--steps-per-epoch", "3", "--embedding-dim", "8",
        "--no-plots", "--verbose", "0"]
RUN_FILES = [".lock", ".rankloss_tf_run", "history.csv", "metrics.json", "model.keras", "run.json", "state.json"]


def run_worker(phase, signame, out, export, args=ARGS, **env):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FAULT_EXPORT_NAME": export.name, **env}
    command = [sys.executable, str(WORKER), phase, signame, *args, "--out", str(out), "--export", str(export)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


def error_line(result):
    """The one ``rankloss-tf: error:`` line of a command's stderr (and no traceback)."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("rankloss-tf: error: ")]
    assert len(lines) == 1 and result.stderr.rstrip().splitlines()[-1] == lines[0], result.stderr
    return lines[0]


def history(run):
    with open(run / "history.csv", newline="") as handle:
        return [(int(row["epoch"]), float(row["loss"])) for row in csv.DictReader(handle)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("uninterrupted")
    assert run_worker("none", "SIGINT", root / "run", root / "export").returncode == 0
    return root


@pytest.mark.slow
@pytest.mark.parametrize("signame, status", [("SIGKILL", -signal.SIGKILL), ("SIGINT", 130)])
def test_interrupted_at_every_phase_then_rerun_equals_uninterrupted(signame, status, tmp_path, uninterrupted):
    run, export = tmp_path / "run", tmp_path / "export"
    for phase in PHASES:
        result = run_worker(phase, signame, run, export)
        assert result.returncode == status, (phase, result.stdout, result.stderr)
        if signame == "SIGINT":
            assert "run the same command again to resume" in result.stderr
    result = run_worker("none", signame, run, export)
    assert result.returncode == 0, result.stderr

    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "run"]  # no temporary left behind
    assert sorted(p.name for p in run.iterdir()) == RUN_FILES
    base = uninterrupted / "run"
    assert [e for e, _ in history(run)] == [0, 1, 2]
    np.testing.assert_allclose([l for _, l in history(run)], [l for _, l in history(base)], rtol=1e-4)
    got, want = (json.loads((d / "metrics.json").read_text())["metrics"] for d in (run, base))
    assert got == pytest.approx(want, abs=1e-4)
    for mine, theirs in zip(load_model(run / "model.keras").weights, load_model(base / "model.keras").weights):
        np.testing.assert_allclose(mine.numpy(), theirs.numpy(), atol=1e-4)
    images = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 1), dtype=np.uint8)
    np.testing.assert_allclose(SavedModelEmbedder(export)(images), SavedModelEmbedder(uninterrupted / "export")(images),
                               atol=1e-4)


def test_interrupt_message_of_the_cli(tmp_path, capsys, monkeypatch):
    from rankloss_tf.app import runner

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "evaluate", interrupt)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(ARGS + ["--out", str(tmp_path / "run")])
    assert exit_info.value.code == 130 and "resume" in capsys.readouterr().err


@pytest.mark.slow  # two training subprocesses (~40 s under load): the one instant the phases above do not cover
def test_kill_between_the_checkpoint_and_the_history_row_keeps_the_row(tmp_path):
    run, export = tmp_path / "run", tmp_path / "export"
    result = run_worker("checkpointed", "SIGKILL", run, export)
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert [e for e, _ in history(run)] == [0, 1]  # the row is written before its checkpoint
    assert run_worker("none", "SIGKILL", run, export).returncode == 0
    assert [e for e, _ in history(run)] == [0, 1, 2]


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MiB tmpfs (None where mounting is not allowed: the worker then simulates ENOSPC)."""
    path = tmp_path / "disk"
    path.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(path)], capture_output=True).returncode:
        yield None
        return
    yield path
    subprocess.run(["umount", "-l", str(path)], check=True)


@pytest.mark.slow  # two training subprocesses (~40 s under load): a full disk must not cost the last checkpoint
def test_disk_full_during_a_checkpoint_exits_2_and_keeps_the_last_one(tmp_path, small_disk):
    root = small_disk or tmp_path
    run, export, filler = root / "run", tmp_path / "export", root / "filler"
    result = run_worker("disk-full", "SIGINT", run, export, FAULT_FILL=str(filler) if small_disk else "")
    assert result.returncode == 2 and "No space left on device" in error_line(result)
    assert "epoch-0002.weights.h5)" in error_line(result)  # the file, not its temporary
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch-0001.weights.h5"]  # no temporary
    assert [e for e, _ in history(run)] == [0, 1]
    filler.unlink(missing_ok=True)
    result = run_worker("none", "SIGINT", run, export)
    assert result.returncode == 0, result.stderr
    assert "Resuming" in result.stderr and "epoch 2 of 3" in result.stderr  # from the intact checkpoint
    assert [e for e, _ in history(run)] == [0, 1, 2]


@pytest.mark.slow  # one training subprocess on a folder (~30 s under load)
def test_images_deleted_mid_training_exit_2_naming_a_file(tmp_path, monkeypatch):
    from tests.test_runs import FOLDER_FAST, make_folder

    folder = make_folder(tmp_path / "photos", {name: 3 for name in "abcd"})
    args = ["train", "--dataset", f"folder:{folder}", *FOLDER_FAST, "--epochs", "2", "--steps-per-epoch", "2"]
    result = run_worker("delete-images", "SIGINT", tmp_path / "run", tmp_path / "export", args,
                        FAULT_FOLDER=str(folder), RANKLOSS_TF_CACHE=str(tmp_path / "cache"))
    assert result.returncode == 2
    assert "A file of the dataset disappeared" in error_line(result) and str(folder) in error_line(result)


@pytest.mark.slow  # two training subprocesses (~40 s under load)
def test_a_run_stopped_before_its_first_phase_takes_the_corrected_command(tmp_path):
    run, export = tmp_path / "run", tmp_path / "export"
    result = run_worker("started", "SIGINT", run, export, [*ARGS, "--classes-per-batch", "4"])
    assert result.returncode == 130 and not run.exists(), result.stderr  # nothing of it is left
    result = run_worker("started", "SIGKILL", run, export, [*ARGS, "--classes-per-batch", "4"])
    assert result.returncode == -signal.SIGKILL and (run / "run.json").is_file()
    result = run_worker("none", "SIGINT", run, export)  # the corrected command: another P, nothing was trained
    assert result.returncode == 0 and "another configuration" not in result.stderr, result.stderr
    assert json.loads((run / "run.json").read_text())["classes_per_batch"] == 5
