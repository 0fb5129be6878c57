"""Fault injection: SIGINT or SIGKILL at every phase of `rankloss-tf train`, then a re-run.

The re-run finishes the job; the final model, metrics, history and export equal
those of an uninterrupted run (a resumed run skips the batches it already
trained on, so it sees the same batches), and nothing but the run directory and
the export is left on disk.
"""

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from rankloss_tf import cli
from rankloss_tf.export import SavedModelEmbedder

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("_fault_worker.py")
PHASES = ("load", "epoch", "checkpoint", "evaluate", "export")
ARGS = ["train", "--dataset", "digits", "--epochs", "3", "--steps-per-epoch", "3", "--embedding-dim", "8",
        "--no-plots", "--verbose", "0"]
RUN_FILES = [".lock", ".rankloss_tf_run", "history.csv", "metrics.json", "model.keras", "run.json", "state.json"]


def run_worker(phase, signame, out, export):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FAULT_EXPORT_NAME": export.name}
    command = [sys.executable, str(WORKER), phase, signame, *ARGS, "--out", str(out), "--export", str(export)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


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
    for mine, theirs in zip(keras.models.load_model(run / "model.keras").weights,
                            keras.models.load_model(base / "model.keras").weights):
        np.testing.assert_allclose(mine.numpy(), theirs.numpy(), atol=1e-4)
    images = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 1), dtype=np.uint8)
    np.testing.assert_allclose(SavedModelEmbedder(export)(images), SavedModelEmbedder(uninterrupted / "export")(images),
                               atol=1e-4)


def test_interrupt_message_of_the_cli(tmp_path, capsys, monkeypatch):
    from rankloss_tf.training import runner

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "evaluate", interrupt)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(ARGS + ["--out", str(tmp_path / "run")])
    assert exit_info.value.code == 130 and "resume" in capsys.readouterr().err
