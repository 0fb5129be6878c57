"""`rankloss_tf.compat.v1`: TF 1.14 contrib semantics, eager, XLA, and graph mode with a Session.

Graph mode is process-wide, so the Session run happens in `tests/_compat_v1_worker.py`.
"""

import ast
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from rankloss_tf import ops
from rankloss_tf.compat import v1
from tests import oracles
from tests.test_facility_location import cluster_loss_oracle

WORKER = Path(__file__).resolve().parent / "_compat_v1_worker.py"
KERNELS = ("contrastive_loss", "triplet_semihard_loss", "triplet_hard_loss", "npair_loss", "angular_loss", "npair_angular_loss")
LEARNING_RATE = 0.05
TRAIN_STEPS = 5


def lifted_struct_oracle(labels, embeddings, margin=1.0):
    """contrib's lifted structured loss, one Python loop over ordered positive pairs."""
    d = oracles.distance_matrix(embeddings, "l2")
    n = len(labels)
    terms = []
    for i in range(n):
        for j in range(n):
            if i == j or labels[i] != labels[j]:
                continue
            total = sum(math.exp(margin - d[i, k]) for k in range(n) if labels[k] != labels[i])
            total += sum(math.exp(margin - d[j, k]) for k in range(n) if labels[k] != labels[j])
            terms.append(max(math.log(total) + d[i, j], 0.0) ** 2 if total > 0 else 0.0)
    return 0.25 * sum(terms) / (len(terms) / 2.0) if terms else 0.0


def contrastive_oracle(binary, anchors, positives, margin):
    d = np.sqrt(np.sum((np.float64(anchors) - positives) ** 2, axis=1))
    return float(np.mean(binary * d**2 + (1 - binary) * np.maximum(margin - d, 0.0) ** 2))


def npairs_oracle(labels, anchors, positives, reg_lambda):
    a, p = np.float64(anchors), np.float64(positives)
    similarity = a @ p.T
    cross_entropy = []
    for i in range(len(labels)):
        targets = np.float64(labels == labels[i])
        targets /= targets.sum()
        log_softmax = similarity[i] - np.log(np.sum(np.exp(similarity[i])))
        cross_entropy.append(-np.sum(targets * log_softmax))
    l2 = 0.25 * reg_lambda * (np.mean(np.sum(a**2, 1)) + np.mean(np.sum(p**2, 1)))
    return float(np.mean(cross_entropy) + l2)


def npairs_multilabel_oracle(indicators, anchors, positives, reg_lambda):
    """As `npairs_oracle`, the target of pair i spread over j by the number of classes they share."""
    a, p = np.float64(anchors), np.float64(positives)
    similarity = a @ p.T
    cross_entropy = []
    for i in range(len(indicators)):
        shared = np.array([np.sum(indicators[i] * indicators[j]) for j in range(len(indicators))], np.float64)
        log_softmax = similarity[i] - np.log(np.sum(np.exp(similarity[i])))
        cross_entropy.append(-np.sum(shared / shared.sum() * log_softmax))
    l2 = 0.25 * reg_lambda * (np.mean(np.sum(a**2, 1)) + np.mean(np.sum(p**2, 1)))
    return float(np.mean(cross_entropy) + l2)


def interleaved(pair_labels, anchors, positives):
    batch = np.stack([anchors, positives], axis=1).reshape(-1, anchors.shape[1])
    return np.repeat(pair_labels, 2), batch


def make_batch(seed=0, pairs=6, dim=4, features=5):
    """N pairs (one label repeated), their 2N-sample batch, features and a projection."""
    rng = np.random.RandomState(seed)
    pair_labels = np.array([0, 1, 2, 3, 0, 4], np.int32)[:pairs]
    anchors = rng.normal(size=(pairs, dim)).astype(np.float32)
    positives = (anchors + 0.5 * rng.normal(size=(pairs, dim))).astype(np.float32)
    return {
        "labels": np.concatenate([pair_labels, pair_labels]),
        "pair_labels": pair_labels,
        "binary": rng.randint(0, 2, pairs).astype(np.int32),
        "embeddings": np.concatenate([anchors, positives]),
        "anchors": anchors,
        "positives": positives,
        "indicators": np.concatenate([np.ones((pairs, 1), np.int32), rng.randint(0, 2, (pairs, 3))], axis=1),
        "features": rng.normal(size=(2 * pairs, features)).astype(np.float32),
        "projection": (0.5 * rng.normal(size=(features, dim))).astype(np.float32),
    }


# Same arguments as the worker's `graph_losses`.
def eager_losses(b, embeddings=None, anchors=None, positives=None, only=None):
    """`{name: loss}` for every compat.v1 loss, or only for the names in `only`."""
    embeddings = b["embeddings"] if embeddings is None else embeddings
    anchors = b["anchors"] if anchors is None else anchors
    positives = b["positives"] if positives is None else positives
    losses = {
        "triplet_semihard_loss": lambda: v1.triplet_semihard_loss(b["labels"], embeddings, margin=0.5),
        "lifted_struct_loss": lambda: v1.lifted_struct_loss(b["labels"], embeddings, margin=1.0),
        "contrastive_loss": lambda: v1.contrastive_loss(b["binary"], anchors, positives, margin=1.5),
        "npairs_loss": lambda: v1.npairs_loss(b["pair_labels"], anchors, positives, reg_lambda=0.01),
        "angular_loss": lambda: v1.angular_loss(b["pair_labels"], anchors, positives, alpha=40.0),
        "npair_angular_loss": lambda: v1.npair_angular_loss(b["pair_labels"], anchors, positives, alpha=45.0, lam=2.0),
        "npairs_loss_multilabel": lambda: v1.npairs_loss_multilabel(
            sparse_rows(b["indicators"]), anchors, positives, reg_lambda=0.01
        ),
        "cluster_loss": lambda: v1.cluster_loss(b["labels"], embeddings, margin_multiplier=2.0),
        "cluster_loss_greedy": lambda: v1.cluster_loss(b["labels"], embeddings, 2.0, enable_pam_finetuning=False),
    }
    return {name: loss() for name, loss in losses.items() if only is None or name in only}


def sparse_rows(indicators):
    """contrib's label format: one 1-D SparseTensor of class indicators per pair."""
    return [tf.sparse.from_dense(tf.constant(row, tf.float32)) for row in indicators]


def oracle_values(b):
    batch_labels, batch = interleaved(b["pair_labels"], b["anchors"], b["positives"])
    return {
        "triplet_semihard_loss": oracles.triplet_semihard(b["labels"], b["embeddings"], 0.5, "squared_l2"),
        "lifted_struct_loss": lifted_struct_oracle(b["labels"], b["embeddings"], 1.0),
        "contrastive_loss": contrastive_oracle(b["binary"], b["anchors"], b["positives"], 1.5),
        "npairs_loss": npairs_oracle(b["pair_labels"], b["anchors"], b["positives"], 0.01),
        "angular_loss": oracles.angular(batch_labels, batch, 40.0),
        "npair_angular_loss": oracles.npair_angular(batch_labels, batch, 45.0, 2.0),
        "npairs_loss_multilabel": npairs_multilabel_oracle(b["indicators"], b["anchors"], b["positives"], 0.01),
        "cluster_loss": cluster_loss_oracle(b["labels"], b["embeddings"], 2.0, pam=True),
        "cluster_loss_greedy": cluster_loss_oracle(b["labels"], b["embeddings"], 2.0, pam=False),
    }


NAMES = sorted(oracle_values(make_batch()))


@pytest.fixture(scope="module")
def batch():
    return make_batch()


@pytest.fixture(scope="module")
def worker_report(batch, tmp_path_factory):
    path = tmp_path_factory.mktemp("compat_v1") / "batch.npz"
    np.savez(path, **batch)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [sys.executable, str(WORKER), str(path)], capture_output=True, text=True, timeout=600, env=env
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["executing_eagerly"] is False
    return report


@pytest.fixture(scope="module")
def session_report(worker_report):
    return worker_report["losses"]


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_kernels_take_labels_held_in_a_graph_variable(worker_report, batch, name):
    figures = worker_report["variable_labels"][name]
    x = tf.Variable(batch["embeddings"])
    with tf.GradientTape() as tape:
        value = tf.reduce_mean(getattr(ops, name)(batch["labels"], x))
    assert figures["value"] == pytest.approx(float(value), rel=1e-5, abs=1e-6)
    np.testing.assert_allclose(figures["gradient"], tape.gradient(value, x).numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_eager_equals_numpy_oracle(batch, name):
    got = float(eager_losses(batch, only=[name])[name])
    assert got == pytest.approx(oracle_values(batch)[name], rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_lifted_struct_matches_oracle_on_random_batches(seed):
    rng = np.random.RandomState(seed)
    labels = rng.randint(0, 4, 10)
    embeddings = rng.normal(size=(10, 3)).astype(np.float32) * (1 + seed)
    for margin in (0.5, 1.0, 3.0):
        expected = lifted_struct_oracle(labels, embeddings, margin)
        assert float(v1.lifted_struct_loss(labels, embeddings, margin)) == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_triplet_semihard_is_the_squared_distance_kernel(batch):
    expected = tf.reduce_mean(ops.triplet_semihard_loss(batch["labels"], batch["embeddings"], 0.5, "squared_l2"))
    assert float(v1.triplet_semihard_loss(batch["labels"], batch["embeddings"], 0.5)) == float(expected)


def test_npairs_equals_the_npair_kernel_on_distinct_labels(batch):
    labels = np.arange(6, dtype=np.int32)
    batch_labels, embeddings = interleaved(labels, batch["anchors"], batch["positives"])
    expected = tf.reduce_mean(ops.npair_loss(batch_labels, embeddings, l2_reg=0.01))
    got = v1.npairs_loss(labels, batch["anchors"], batch["positives"], reg_lambda=0.01)
    assert float(got) == pytest.approx(float(expected), rel=1e-5)


def test_degenerate_batches_give_zero_and_finite_gradients():
    x = tf.Variable(np.float32([[0.3, 0.4], [0.3, 0.4], [1.0, 0.0]]))
    with tf.GradientTape() as tape:
        values = [
            v1.lifted_struct_loss([0, 0, 0], x),  # no negative pair (contrib: NaN)
            v1.triplet_semihard_loss([0, 1, 2], x),  # no positive pair (contrib: NaN)
            v1.contrastive_loss([1], x[:1], x[1:2]),  # zero distance
        ]
        total = tf.add_n(values)
    assert [float(v) for v in values[:2]] == [0.0, 0.0]
    assert np.all(np.isfinite(tape.gradient(total, x).numpy()))


def test_pairs_must_have_the_same_dimension():
    with pytest.raises(ValueError, match=r"embeddings_positive.shape=\(2, 3\)"):
        v1.npairs_loss([0, 1], np.zeros((2, 4), np.float32), np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="reg_lambda=-1"):
        v1.npairs_loss([0, 1], np.zeros((2, 4), np.float32), np.zeros((2, 4), np.float32), reg_lambda=-1)


# SparseTensor labels do not compile; the multi-label kernel on dense labels is XLA-tested in test_precomputed.
@pytest.mark.parametrize("name", [name for name in NAMES if name != "npairs_loss_multilabel"])
def test_xla_equals_eager(batch, name):
    inputs = (batch["embeddings"], batch["anchors"], batch["positives"])
    compiled = tf.function(lambda e, a, p: eager_losses(batch, e, a, p, only=[name])[name], jit_compile=True)
    expected = float(eager_losses(batch, only=[name])[name])
    assert float(compiled(*inputs)) == pytest.approx(expected, rel=1e-5, abs=1e-6)


def _eager_gradients(batch, name):
    inputs = [tf.Variable(batch[k]) for k in ("embeddings", "anchors", "positives")]
    with tf.GradientTape() as tape:
        value = eager_losses(batch, *inputs, only=[name])[name]
    return value, tape.gradient(value, inputs, unconnected_gradients=tf.UnconnectedGradients.ZERO)


@pytest.mark.parametrize("name", NAMES)
def test_session_equals_eager(session_report, batch, name):
    figures = session_report[name]
    value, gradients = _eager_gradients(batch, name)
    assert figures["value"] == pytest.approx(float(value), rel=1e-5, abs=1e-6)
    for got, expected in zip(figures["gradients"], gradients):
        np.testing.assert_allclose(got, expected.numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_session_optimizer_steps_equal_eager_sgd(session_report, batch, name):
    figures = session_report[name]
    assert figures["train_losses"][-1] < figures["train_losses"][0]
    weights = tf.Variable(batch["projection"])
    half = len(batch["features"]) // 2
    for _ in range(TRAIN_STEPS):
        with tf.GradientTape() as tape:
            projected = batch["features"] @ weights
            loss = eager_losses(batch, projected, projected[:half], projected[half:], only=[name])[name]
        weights.assign_sub(LEARNING_RATE * tape.gradient(loss, weights))
    np.testing.assert_allclose(figures["trained_weights"], weights.numpy(), rtol=1e-4, atol=1e-5)


def test_npairs_multilabel_with_one_class_per_pair_is_npairs(batch):
    labels = np.array([0, 1, 2, 3, 0, 4])
    expected = v1.npairs_loss(labels, batch["anchors"], batch["positives"], reg_lambda=0.02)
    got = v1.npairs_loss_multilabel(sparse_rows(np.eye(5)[labels]), batch["anchors"], batch["positives"], 0.02)
    assert float(got) == pytest.approx(float(expected), rel=1e-6)


def test_npairs_multilabel_rejects_dense_labels(batch):
    with pytest.raises(TypeError, match="list of 1-D SparseTensors"):
        v1.npairs_loss_multilabel(batch["indicators"], batch["anchors"], batch["positives"])


def test_pairwise_distance(batch):
    for squared, distance in [(False, "l2"), (True, "squared_l2")]:
        expected = oracles.distance_matrix(batch["embeddings"], distance)
        np.testing.assert_allclose(v1.pairwise_distance(batch["embeddings"], squared).numpy(), expected, atol=1e-5)


def test_the_tf1_shim_imports_no_keras_layer():
    source = (Path(v1.__file__)).read_text()
    imported = {
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }
    assert all(name.startswith(("tensorflow", "rankloss_tf.ops")) for name in imported), imported
