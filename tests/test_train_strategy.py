"""`rankloss-tf train --strategy`: the main job under tf.distribute (docs/distribute.md).

Logical devices and clusters are process-wide, so the strategies run in fresh processes:
MirroredStrategy over 2 logical CPUs (`tests/_distribute_worker.py train`) and two local
workers of a MultiWorkerMirroredStrategy running the command line (TF_CONFIG with free
127.0.0.1 ports), each with its own TMPDIR so that what a worker leaves behind is seen.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from rankloss_tf.app.cli import main
from rankloss_tf.io.atomic import is_temporary
from rankloss_tf.app import TrainConfig
from rankloss_tf.app.strategy import build_strategy, from_chief, is_chief

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).resolve().parent / "_distribute_worker.py"
TIMEOUT = 600
# Float32 sums in another order (per-replica gradients, all-reduced batch-norm moments) over 4 Adam steps.
WEIGHT_TOLERANCE = 1e-4
# A resumed two-worker run against an uninterrupted one-device run, 6 Adam steps: Adam's normalised update
# turns float32 rounding of near-zero gradient components into up to a learning rate (1e-3) a step.
RESUMED_TOLERANCE = 1e-3
RUN = ["train", "--dataset", "digits", "--steps-per-epoch", "2", "--no-plots", "--verbose", "0"]


def _env(**extra):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _free_ports(count):
    probes = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    for probe in probes:
        probe.bind(("127.0.0.1", 0))
    ports = [probe.getsockname()[1] for probe in probes]
    for probe in probes:
        probe.close()
    return ports


def _workers(out, tmp, epochs, ports=None):
    """Starts the two workers of one job on `out`; returns `[(process, its TMPDIR)]`."""
    ports = ports or _free_ports(2)
    started = []
    for task in range(2):
        scratch = tmp / f"tmp{task}"
        scratch.mkdir(exist_ok=True)
        tf_config = {"cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
                     "task": {"type": "worker", "index": task}}
        env = _env(TF_CONFIG=json.dumps(tf_config), TMPDIR=str(scratch))
        command = [sys.executable, "-m", "rankloss_tf.app.cli", *RUN, "--epochs", str(epochs), "--strategy",
                   "multi_worker", "--out", str(out)]
        started.append((subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                         env=env, cwd=tmp), scratch))
    return started


def _finish(process):
    try:
        out, err = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
    return process.returncode, out, err


def _weights(run):
    return keras.models.load_model(Path(run) / "model.keras").get_weights()


def _max_difference(a, b):
    return max(float(np.max(np.abs(u - v))) for u, v in zip(a, b))


def test_strategy_names_and_clear_errors(monkeypatch):
    assert build_strategy("default").num_replicas_in_sync == 1
    assert build_strategy("auto").num_replicas_in_sync == 1  # no GPU here
    assert is_chief(build_strategy("auto"))
    assert from_chief(build_strategy("default"), [np.arange(3)])[0].tolist() == [0.0, 1.0, 2.0]
    with pytest.raises(ValueError, match="Unknown strategy.*Received: strategy='ring'"):
        build_strategy("ring")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG.*not set"):
        build_strategy("multi_worker")
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {}}')
    with pytest.raises(ValueError, match="TF_CONFIG must be JSON like.*Received: TF_CONFIG="):
        build_strategy("multi_worker")
    with pytest.raises(ValueError, match="Unknown strategy"):
        TrainConfig(dataset="digits", strategy="ring").resolved()
    with pytest.raises(ValueError, match="No TPU found for --strategy tpu.*Received: tpu=None"):
        build_strategy("tpu")  # no TPU here, nor Colab's: one clear error, resolved only when asked for


def test_cli_strategy_errors_are_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(SystemExit) as exit_:
        main([*RUN, "--strategy", "multi_worker", "--out", str(tmp_path / "run")])
    assert exit_.value.code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "TF_CONFIG" in error
    assert not (tmp_path / "run").exists()
    with pytest.raises(SystemExit) as exit_:
        main([*RUN, "--strategy", "ring", "--out", str(tmp_path / "run")])
    assert exit_.value.code == 2


def test_strategy_is_not_part_of_the_result():
    """A run started on several devices may resume on another number of them: a step is the same."""
    one = TrainConfig(dataset="digits", strategy="default")
    assert one.results_differ(TrainConfig(dataset="digits", strategy="multi_worker")) == []


def test_mirrored_run_equals_one_device_run(tmp_path):
    """2 replicas (logical CPUs) with cross-replica mining and synchronized batch norm == one device; a mirrored
    run interrupted after an epoch resumes under the strategy and ends like the uninterrupted one."""
    process = subprocess.Popen([sys.executable, str(WORKER), "train", "--out", str(tmp_path), "--devices", "2"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    code, out, err = _finish(process)
    assert code == 0, err[-4000:]
    report = json.loads(out.strip().splitlines()[-1])
    assert report["replicas"] == 2
    np.testing.assert_allclose(report["mirrored"], report["default"], rtol=1e-5)
    assert report["default"][0] != report["default"][1]  # it trained
    assert report["weights"] <= WEIGHT_TOLERANCE
    assert report["resumed_epochs"] == 1  # it resumed at the second epoch, under the strategy
    assert report["resumed_weights"] <= WEIGHT_TOLERANCE


def _check_only_chief_wrote(out, tmp, workers, outputs):
    for (code, stdout, err), (_, scratch) in zip(outputs, workers):
        assert code == 0, err[-4000:]
        assert list(scratch.iterdir()) == [], "a worker left files in its TMPDIR"
    assert "Worker 1 done" in outputs[1][1]
    assert "Test metrics" in outputs[0][1]
    assert {p.name for p in tmp.iterdir()} - {"reference"} == {"run", "tmp0", "tmp1"}
    assert {"model.keras", "metrics.json", "history.csv", "state.json", ".rankloss_tf_run"} <= {
        p.name for p in out.iterdir()}
    assert json.loads((out / "state.json").read_text())["phase"] == "finished"


def test_two_workers_train_one_run_only_the_chief_writes(tmp_path):
    out = tmp_path / "run"
    workers = _workers(out, tmp_path, epochs=2)
    outputs = [_finish(process) for process, _ in workers]
    _check_only_chief_wrote(out, tmp_path, workers, outputs)
    history = (out / "history.csv").read_text().splitlines()
    assert len(history) == 3  # header + 2 epochs


@pytest.mark.slow  # three multi-worker jobs and one single-process run: about 2-3 minutes on 2 loaded cores
def test_a_killed_worker_fails_the_job_and_the_rerun_ends_like_an_uninterrupted_run(tmp_path):
    epochs = 3
    reference = tmp_path / "reference"
    assert main([*RUN, "--epochs", str(epochs), "--strategy", "default", "--out", str(reference)]) == 0
    out = tmp_path / "run"
    workers = _workers(out, tmp_path, epochs=epochs)
    deadline = time.monotonic() + TIMEOUT
    while not list((out / "checkpoints").glob("epoch-*.weights.h5")) and time.monotonic() < deadline:
        assert workers[0][0].poll() is None, _finish(workers[0][0])[2][-4000:]
        time.sleep(0.2)
    workers[1][0].send_signal(signal.SIGKILL)
    code, _, err = _finish(workers[0][0])
    _finish(workers[1][0])
    assert code == 2, err[-4000:]
    assert "worker" in err.strip().splitlines()[-1].lower()
    assert json.loads((out / "state.json").read_text())["phase"] == "fitting"
    left = list(workers[1][1].iterdir())
    assert len([path for path in left if is_temporary(path.name)]) == 1  # ours: the re-run removes it
    for path in left:  # TensorFlow's autograph files, which a killed process cannot remove: not ours
        if path.name.startswith("__autograph_generated_file"):
            path.unlink()
    rerun = _workers(out, tmp_path, epochs=epochs)
    outputs = [_finish(process) for process, _ in rerun]
    _check_only_chief_wrote(out, tmp_path, rerun, outputs)
    assert "Resuming" in outputs[0][2]
    assert _max_difference(_weights(out), _weights(reference)) <= RESUMED_TOLERANCE
    np.testing.assert_allclose(_losses(out), _losses(reference), rtol=1e-4)


def _losses(run):
    rows = (Path(run) / "history.csv").read_text().splitlines()
    column = rows[0].split(",").index("loss")
    return [float(row.split(",")[column]) for row in rows[1:]]


def test_bench_gpu_fit_step_runs_under_a_strategy():
    """`benchmarks/bench_gpu.py --strategy` times the fit step under the strategy (here one replica: one CPU)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_gpu

    step_s, replicas = bench_gpu.fit_step_time(32, (2, 2), 1, strategy="mirrored")
    assert step_s > 0 and replicas == 1
    assert "strategy mirrored, 1 replica(s)" in bench_gpu.markdown(
        {"device": "CPU", "tensorflow": "x", "date": "d", "losses": [],
         "evaluation": {"gallery": 1, "dim": 1, "time_s": 1.0},
         "fit": {"image": 32, "batch": 4, "step_s": step_s, "strategy": "mirrored", "replicas": replicas}})
