"""The issue-31 kernels: NumPy loop oracles, modes (eager / tf.function / XLA / bf16), edge cases, blocks, XBM."""

import math

import numpy as np
import pytest
import tensorflow as tf

from rankloss_tf import losses, ops
from rankloss_tf.losses import XBM, MultiSimilarityLoss, NTXentLoss, SupConLoss

RNG = np.random.RandomState(31)


def _units(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _log1p_sum_exp(values):
    return math.log1p(sum(math.exp(v) for v in values))


def ms_oracle(labels, embeddings, alpha=2.0, beta=50.0, base=0.5, epsilon=None):
    s = _units(embeddings) @ _units(embeddings).T
    total = 0.0
    for a in range(len(labels)):
        pos = [p for p in range(len(labels)) if p != a and labels[p] == labels[a]]
        neg = [n for n in range(len(labels)) if labels[n] != labels[a]]
        if epsilon is not None:
            hardest_neg = max((s[a, n] for n in neg), default=-np.inf)
            hardest_pos = min((s[a, p] for p in pos), default=np.inf)
            pos, neg = ([p for p in pos if s[a, p] - epsilon < hardest_neg],
                        [n for n in neg if s[a, n] + epsilon > hardest_pos])
        total += _log1p_sum_exp([-alpha * (s[a, p] - base) for p in pos]) / alpha
        total += _log1p_sum_exp([beta * (s[a, n] - base) for n in neg]) / beta
    return total / len(labels)


def supcon_oracle(labels, embeddings, temperature=0.1):
    z = _units(embeddings) @ _units(embeddings).T / temperature
    values = []
    for a in range(len(labels)):
        others = [j for j in range(len(labels)) if j != a]
        pos = [p for p in others if labels[p] == labels[a]]
        if pos and len(others) > 1:
            log_total = math.log(sum(math.exp(z[a, j]) for j in others))
            values.append(-np.mean([z[a, p] - log_total for p in pos]))
    return float(np.mean(values)) if values else 0.0


def ntxent_oracle(labels, embeddings, temperature=0.07):
    z = _units(embeddings) @ _units(embeddings).T / temperature
    values = []
    for a in range(len(labels)):
        neg = [math.exp(z[a, n]) for n in range(len(labels)) if labels[n] != labels[a]]
        for p in range(len(labels)):
            if p != a and labels[p] == labels[a]:
                values.append(-math.log(math.exp(z[a, p]) / (math.exp(z[a, p]) + sum(neg))))
    return float(np.mean(values)) if values else 0.0


def proxy_anchor_oracle(labels, embeddings, proxies, margin=0.1, alpha=32.0):
    s = _units(embeddings) @ _units(proxies).T
    classes = range(len(proxies))
    pull = [_log1p_sum_exp([-alpha * (s[i, c] - margin) for i in range(len(labels)) if labels[i] == c])
            for c in classes]
    push = [_log1p_sum_exp([alpha * (s[i, c] + margin) for i in range(len(labels)) if labels[i] != c]) for c in classes]
    return sum(pull) / len(set(labels)) + sum(push) / len(proxies)


def margin_softmax_oracle(labels, embeddings, weights, kind, margin, scale):
    s = _units(embeddings) @ _units(weights).T
    values = []
    for i, y in enumerate(labels):
        logits = scale * s[i].copy()
        theta = math.acos(min(max(s[i, y], -1.0), 1.0))
        if kind == "cosface":
            logits[y] = scale * (s[i, y] - margin)
        else:
            m = math.radians(margin)
            logits[y] = scale * (math.cos(theta + m) if theta <= math.pi - m else s[i, y] - m * math.sin(m))
        values.append(np.log(np.sum(np.exp(logits - logits.max()))) + logits.max() - logits[y])
    return float(np.mean(values))


def _batch(size=18, dim=6, classes=5):
    labels = RNG.randint(0, classes, size)
    return labels, (RNG.randn(size, dim) * 2).astype(np.float32)


PAIR_CASES = [
    (ops.multi_similarity_loss, ms_oracle, {}),
    (ops.multi_similarity_loss, ms_oracle, {"epsilon": 0.1}),
    (ops.multi_similarity_loss, ms_oracle, {"alpha": 1.0, "beta": 10.0, "base": 0.2}),
    (ops.supcon_loss, supcon_oracle, {}),
    (ops.supcon_loss, supcon_oracle, {"temperature": 0.5}),
    (ops.ntxent_loss, ntxent_oracle, {}),
    (ops.ntxent_loss, ntxent_oracle, {"temperature": 0.3}),
]
PAIR_IDS = ["ms", "ms_miner", "ms_options", "supcon", "supcon_t", "ntxent", "ntxent_t"]


@pytest.mark.parametrize("kernel, oracle, options", PAIR_CASES, ids=PAIR_IDS)
def test_pair_kernels_equal_loop_oracles(kernel, oracle, options):
    for _ in range(3):
        labels, embeddings = _batch()
        np.testing.assert_allclose(float(tf.reduce_mean(kernel(labels, embeddings, **options))),
                                   oracle(labels, embeddings, **options), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind, margin, scale", [("arcface", 28.6, 64.0), ("arcface", 120.0, 8.0), ("cosface", 0.35, 64.0)])
def test_margin_softmax_equals_loop_oracle(kind, margin, scale):
    labels, embeddings = _batch(classes=4)
    weights = RNG.randn(4, 6).astype(np.float32)
    kernel = ops.arcface_loss if kind == "arcface" else ops.cosface_loss
    np.testing.assert_allclose(float(tf.reduce_mean(kernel(labels, embeddings, weights, margin=margin, scale=scale))),
                               margin_softmax_oracle(labels, embeddings, weights, kind, margin, scale), rtol=1e-5)


def test_proxy_anchor_equals_loop_oracle_and_sub_centres_take_the_closest():
    labels, embeddings = _batch(classes=4)
    proxies = RNG.randn(4, 6).astype(np.float32)
    np.testing.assert_allclose(float(tf.reduce_mean(ops.proxy_anchor_loss(labels, embeddings, proxies))),
                               proxy_anchor_oracle(labels, embeddings, proxies), rtol=1e-5)
    centres = RNG.randn(4, 3, 6).astype(np.float32)
    cosines = _units(embeddings) @ _units(centres.reshape(12, 6)).T
    np.testing.assert_allclose(ops.class_cosines(embeddings, centres), cosines.reshape(-1, 4, 3).max(-1), atol=1e-6)


ALL_KERNELS = {
    "multi_similarity": lambda y, x: ops.multi_similarity_loss(y, x, epsilon=0.1),
    "supcon": ops.supcon_loss,
    "ntxent": ops.ntxent_loss,
    "proxy_anchor": lambda y, x: ops.proxy_anchor_loss(y, x, tf.ones([5, 6]) + tf.eye(5, 6)),
    "proxy_nca": lambda y, x: ops.proxy_nca_loss(y, x, tf.ones([5, 6]) + tf.eye(5, 6)),
    "arcface": lambda y, x: ops.arcface_loss(y, x, tf.ones([5, 2, 6]) + tf.eye(5, 6)[:, None]),
    "cosface": lambda y, x: ops.cosface_loss(y, x, tf.ones([5, 6]) + tf.eye(5, 6)),
}


@pytest.mark.parametrize("name", sorted(ALL_KERNELS))
def test_eager_function_xla_and_bfloat16_agree(name):
    kernel = ALL_KERNELS[name]
    labels, embeddings = _batch()
    labels, embeddings = tf.constant(labels), tf.constant(embeddings)

    def value_and_grad(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = tf.reduce_mean(tf.cast(kernel(labels, x), tf.float32))
        return value, tape.gradient(value, x)

    eager = value_and_grad(embeddings)
    for mode in (tf.function(value_and_grad), tf.function(value_and_grad, jit_compile=True)):
        for got, expected in zip(mode(embeddings), eager):
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    half = kernel(labels, tf.cast(embeddings, tf.bfloat16))
    assert half.dtype == tf.bfloat16
    np.testing.assert_allclose(float(tf.reduce_mean(tf.cast(half, tf.float32))), float(eager[0]), rtol=0.05, atol=0.05)


@pytest.mark.parametrize("name", sorted(ALL_KERNELS))
def test_nan_in_nan_out(name):
    labels, embeddings = _batch()
    embeddings[3, 2] = np.nan
    assert np.isnan(ALL_KERNELS[name](labels, embeddings).numpy()).all()


@pytest.mark.parametrize("name", ["multi_similarity", "supcon", "ntxent"])
def test_no_positive_pair_gives_zero_and_finite_zero_gradients(name):
    embeddings = tf.constant(RNG.randn(5, 4).astype(np.float32))
    kernel = {"multi_similarity": ops.multi_similarity_loss, "supcon": ops.supcon_loss, "ntxent": ops.ntxent_loss}[name]
    for labels in ([0, 1, 2, 3, 4], [7, 7, 7, 7, 7]):  # no positive pair; no negative pair
        with tf.GradientTape() as tape:
            tape.watch(embeddings)
            value = tf.reduce_mean(kernel(labels, embeddings, epsilon=0.1) if name == "multi_similarity"
                                   else kernel(labels, embeddings))
        gradient = tape.gradient(value, embeddings)
        if name != "multi_similarity" or labels[0] == 7:  # MS pushes negatives apart even without positives
            assert float(value) == 0.0
            np.testing.assert_array_equal(gradient.numpy(), 0.0)
        assert np.isfinite(gradient.numpy()).all()
    assert kernel(tf.zeros([0], tf.int32), tf.zeros([0, 4])).shape == (0,)
    with tf.GradientTape() as tape:  # a replica without anchors: a zero gradient, not none
        tape.watch(embeddings)
        value = kernel([0, 0, 1, 1, 2], embeddings, anchors=(2, 0))
    assert value.shape == (0,)
    np.testing.assert_array_equal(tape.gradient(value, embeddings).numpy(), 0.0)


def test_identical_embeddings_give_finite_gradients():
    embeddings = tf.ones([6, 4])
    for kernel in (ops.multi_similarity_loss, ops.supcon_loss, ops.ntxent_loss):
        with tf.GradientTape() as tape:
            tape.watch(embeddings)
            value = tf.reduce_mean(kernel([0, 0, 1, 1, 2, 2], embeddings))
        assert np.isfinite(tape.gradient(value, embeddings).numpy()).all()
    for kernel in (ops.arcface_loss, ops.cosface_loss, ops.proxy_anchor_loss, ops.proxy_nca_loss):
        with tf.GradientTape() as tape:
            tape.watch(embeddings)
            value = tf.reduce_mean(kernel([0, 0, 1, 1, 2, 2], embeddings, tf.ones([3, 4])))
        assert np.isfinite(tape.gradient(value, embeddings).numpy()).all()


@pytest.mark.parametrize("kernel", [ops.multi_similarity_loss, ops.supcon_loss, ops.ntxent_loss],
                         ids=["ms", "supcon", "ntxent"])
def test_blocks_and_anchor_ranges_equal_one_pass(kernel):
    labels, embeddings = _batch(size=40)
    embeddings = tf.constant(embeddings)

    def run(**options):
        with tf.GradientTape() as tape:
            tape.watch(embeddings)
            values = kernel(labels, embeddings, **options)
            value = tf.reduce_sum(values)
        return values, tape.gradient(value, embeddings)

    whole, whole_grad = run()
    blocked, blocked_grad = run(memory_budget=4 * 7 * 40 * 10)  # a few rows per block
    np.testing.assert_allclose(blocked, whole, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(blocked_grad, whole_grad, rtol=1e-4, atol=1e-6)
    parts = [kernel(labels, embeddings, anchors=(start, 10)) for start in range(0, 40, 10)]
    np.testing.assert_allclose(tf.concat(parts, 0), whole, rtol=1e-5, atol=1e-6)


def test_labels_above_two_to_the_24_stay_distinct():
    embeddings = RNG.randn(4, 3).astype(np.float32)
    big = tf.constant([2**24, 2**24 + 1, 2**24, 2**24 + 1], tf.int32)
    np.testing.assert_allclose(ops.supcon_loss(big, embeddings), ops.supcon_loss([0, 1, 0, 1], embeddings), rtol=1e-6)


def test_class_count_that_does_not_match_the_labels_is_a_clear_error():
    with pytest.raises(ValueError, match="num_classes - 1 = 2.*Received: labels from 0 to 3"):
        ops.arcface_loss([0, 3], tf.ones([2, 4]), tf.ones([3, 4]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="num_classes"):
        tf.function(lambda y: ops.proxy_anchor_loss(y, tf.ones([2, 4]), tf.ones([3, 4])))(tf.constant([0, 5]))
    xla = tf.function(lambda y: ops.cosface_loss(y, tf.ones([2, 4]), tf.ones([3, 4])), jit_compile=True)
    assert np.isnan(xla(tf.constant([0, 5])).numpy()[1])
    with pytest.raises(ValueError, match="weights"):
        ops.cosface_loss([0], tf.ones([1, 4]), tf.ones([3, 5]))


@pytest.mark.parametrize("call, match", [
    (lambda: ops.multi_similarity_loss([0], [[1.0]], alpha=0), "alpha"),
    (lambda: ops.supcon_loss([0], [[1.0]], temperature=-1), "temperature"),
    (lambda: ops.multi_similarity_loss([0], [[1.0]], base=float("nan")), "base"),
    (lambda: ops.arcface_loss([0], [[1.0]], [[1.0]], margin=180), "margin"),
    (lambda: ops.multi_similarity_loss([0], [[1.0]], memory=([0], [[1.0]])), "memory"),
    (lambda: losses.get("supcon", margin=1.0), "margin"),
])
def test_bad_options_are_value_errors(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_memory_adds_reference_columns_and_an_empty_one_changes_nothing():
    labels, embeddings = _batch(size=12)
    past_labels, past = _batch(size=8)
    valid = np.array([True] * 6 + [False] * 2)
    for kernel in (ops.multi_similarity_loss, ops.supcon_loss, ops.ntxent_loss):
        empty = (past_labels, past, np.zeros(8, bool))
        np.testing.assert_allclose(kernel(labels, embeddings, memory=empty), kernel(labels, embeddings), rtol=1e-6)
    # Multi-Similarity is per anchor: the batch's rows of the concatenated batch.
    joined_labels = np.concatenate([labels, past_labels[:6]])
    joined = np.concatenate([embeddings, past[:6]])
    np.testing.assert_allclose(ops.multi_similarity_loss(labels, embeddings, memory=(past_labels, past, valid)),
                               ops.multi_similarity_loss(joined_labels, joined, anchors=(0, 12)), rtol=1e-5)


def test_xbm_queue_is_a_ring_of_past_batches():
    xbm = XBM(SupConLoss(), memory_size=5, embedding_dim=6)
    labels, embeddings = _batch(size=4)
    first = float(xbm(labels, embeddings))
    np.testing.assert_allclose(first, float(SupConLoss()(labels, embeddings)), rtol=1e-6)
    assert int(xbm.filled()) == 4
    second_labels, second = _batch(size=4)
    memory = (labels, embeddings, np.ones(4, bool))
    expected = tf.reduce_mean(ops.supcon_loss(second_labels, second, memory=memory))
    np.testing.assert_allclose(float(xbm(second_labels, second)), float(expected), rtol=1e-5)
    assert int(xbm.filled()) == 5
    np.testing.assert_allclose(xbm._embeddings.numpy()[[0, 3, 4]], second[[1, 3, 0]] * [[1], [0], [1]] + embeddings[3] * [[0], [1], [0]], rtol=1e-6)  # slots 4, 0, 1, 2: the ring wrapped
    xbm.reset()
    assert int(xbm.filled()) == 0
    config = XBM.from_config(xbm.get_config()).get_config()
    assert config["memory_size"] == 5 and config["loss"]["class_name"] == "SupConLoss"
    with pytest.raises(ValueError, match="loss"):
        XBM(losses.get("triplet_hard"), memory_size=4, embedding_dim=2)


def test_xbm_trains_under_model_fit():
    import keras

    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4)])
    xbm = XBM(MultiSimilarityLoss(), memory_size=16, embedding_dim=4)
    model.compile(optimizer="adam", loss=xbm)
    labels, embeddings = _batch(size=32, classes=4)
    history = model.fit(embeddings, labels, batch_size=8, epochs=2, shuffle=False, verbose=0)
    assert np.isfinite(history.history["loss"]).all() and int(xbm.filled()) == 16


@pytest.mark.parametrize("name, options", [("multi_similarity", {"epsilon": 0.1}), ("supcon", {}), ("ntxent", {}),
                                           ("proxy_anchor", {"alpha": 16.0}), ("proxy_nca", {"softmax_scale": 9.0}),
                                           ("arcface", {"sub_centers": 3}), ("cosface", {"margin": 0.2})])
def test_short_names_and_config_round_trip(name, options):
    loss = losses.get(name, **options)
    again = type(loss).from_config(loss.get_config())
    assert again.get_config() == loss.get_config()
    for key, value in options.items():
        assert getattr(again, key) == value


@pytest.mark.slow  # a TensorFlow subprocess with two logical devices (~30 s loaded): the per-replica queue claim
def test_xbm_keeps_one_queue_per_replica_under_mirrored_strategy():
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    worker = Path(__file__).resolve().parent / "_xbm_mirrored_worker.py"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(worker)], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert np.isfinite(report["loss"]).all()
    assert report["filled"] == [12, 12] and report["distinct"]  # each replica queued its own batches
