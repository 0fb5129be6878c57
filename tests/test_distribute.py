"""Cross-replica mining under tf.distribute: one device on the global batch == R replicas.

Logical devices and clusters are process-wide, so the strategies run in fresh processes
(`tests/_distribute_worker.py`), all started at once: one process with 2 logical CPUs
(`model.fit` under MirroredStrategy with 2 replicas against one device fed the same global
batches, the epoch ending in a batch of one sample) and two worker processes of a
MultiWorkerMirroredStrategy on localhost (a custom loop: per-replica losses and gradients).
Tracing is the cost (each loss's mining graph once per replica and strategy): it took 309 s
when the mirrored process also ran a custom loop and a second `fit` for the last sample, at 2
and 4 replicas (`python tests/_distribute_worker.py mirrored --replicas 2 4 --loop` still does).
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from rankloss_tf.losses import registry

# The pair-based losses (a ClassLoss trains through a class head, per replica: tests/test_losses_modern*.py).
LOSSES = {name: loss for name, loss in registry().items() if not getattr(loss, "class_head", False)}

WORKER = Path(__file__).resolve().parent / "_distribute_worker.py"
# Every loss: one traced step covers all of them (one head each).
MULTIWORKER_LOSSES = tuple(sorted(LOSSES))
TIMEOUT = 600
# Differences from one device: float32 sums in another order.
LOSS_TOLERANCE = 1e-5
GRADIENT_TOLERANCE = 2e-6


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def _start(*args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("TF_CONFIG", None)
    return subprocess.Popen(
        [sys.executable, str(WORKER), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def _report(process):
    try:
        out, err = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
    assert process.returncode == 0, err[-4000:]
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def reports():
    """`{"mirrored": {replicas: {loss: figures}}, "multiworker": [one report per worker]}`."""
    ports = [str(_free_port()), str(_free_port())]
    mirrored = _start("mirrored", "--replicas", "2")
    workers = [
        _start("multiworker", "--task", str(task), "--ports", *ports, "--losses", *MULTIWORKER_LOSSES)
        for task in range(2)
    ]
    return {"mirrored": _report(mirrored), "multiworker": [_report(worker) for worker in workers]}


def _check(figures, with_fit):
    # Mining over each replica's own slice gives another loss, far outside the tolerance.
    assert figures["local_mining_loss"] > 10 * LOSS_TOLERANCE * max(1.0, figures["loss"])
    if not with_fit:
        assert figures["loop_loss"] <= LOSS_TOLERANCE * max(1.0, figures["loss"])
        assert figures["loop_gradients"] <= GRADIENT_TOLERANCE * max(1.0, figures["gradient_scale"])
    else:
        # SGD(0.1) steps: equal weights after the epoch mean equal gradients at every step.
        assert figures["fit_moved"] > 1e-2
        assert figures["fit_weights"] <= GRADIENT_TOLERANCE
        assert figures["fit_logged_loss"] <= LOSS_TOLERANCE * max(1.0, figures["loss"])
        # An epoch's last batch of one sample: replicas without a sample, no tuple anywhere.
        assert figures["last_sample_fit_finite"]


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_mirrored_fit_equals_one_device(reports, name):
    _check(reports["mirrored"]["2"][name], with_fit=True)


@pytest.mark.parametrize("name", MULTIWORKER_LOSSES)
def test_multiworker_custom_loop_equals_one_device(reports, name):
    for worker in reports["multiworker"]:
        _check(worker["2"][name], with_fit=False)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_cross_replica_changes_nothing_without_a_strategy(name):
    rng = np.random.RandomState(3)
    labels = np.repeat(np.arange(4), 2).astype(np.int32)
    embeddings = rng.normal(size=(8, 5)).astype(np.float32)
    expected = float(LOSSES[name]()(labels, embeddings))
    assert float(LOSSES[name](cross_replica=True)(labels, embeddings)) == expected
    with tf.distribute.OneDeviceStrategy("/cpu:0").scope():
        assert float(LOSSES[name](cross_replica=True)(labels, embeddings)) == expected
