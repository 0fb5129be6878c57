"""Loss kernels and Keras classes: golden values, NumPy oracles, compilation, gradients, errors."""

import functools

import numpy as np
import pytest
import tensorflow as tf
import keras

from rankloss_tf import losses, ops
from rankloss_tf.ops import losses as kernels
from tests import oracles

GOLDEN_E = np.array(
    [[1, 0, 0], [0.8, 0.6, 0], [0, 1, 0], [0, 0.6, 0.8], [0.6, 0, 0.8], [-0.6, -0.8, 0]], np.float32
)
GOLDEN_Y = np.array([0, 0, 1, 1, 2, 2])
DISTANCES = ("l2", "squared_l2", "cosine")

# (kernel, oracle, kwargs) for every loss and option.
CASES = [
    (ops.triplet_semihard_loss, oracles.triplet_semihard, {"margin": m, "distance": d})
    for m in (1.0, 0.2)
    for d in DISTANCES
]
CASES += [
    (ops.triplet_hard_loss, oracles.triplet_hard, {"margin": 1.0, "soft": s, "distance": d})
    for s in (False, True)
    for d in DISTANCES
]
CASES += [(ops.contrastive_loss, oracles.contrastive, {"margin": m, "distance": d}) for m in (1.0, 0.5) for d in DISTANCES]
CASES += [
    (ops.npair_loss, oracles.npair, {"variant": v, "l2_reg": r}) for v in ("mc", "ovo") for r in (0.0, 0.002)
]
CASES += [(ops.angular_loss, oracles.angular, {"alpha": a}) for a in (36.0, 45.0, 55.0, 75.0)]
CASES += [(ops.npair_angular_loss, oracles.npair_angular, {"alpha": a, "lam": lam}) for a in (36.0, 45.0) for lam in (0.5, 2.0)]
CASE_IDS = [f"{k.__name__}-{'-'.join(str(v) for v in kw.values())}" for k, _, kw in CASES]

KERAS_CLASSES = [
    (losses.ContrastiveLoss, ops.contrastive_loss, {"margin": 0.7, "distance": "cosine"}),
    (losses.TripletSemiHardLoss, ops.triplet_semihard_loss, {"margin": 0.3, "distance": "squared_l2"}),
    (losses.TripletHardLoss, ops.triplet_hard_loss, {"margin": 0.4, "soft": True, "distance": "l2"}),
    (losses.NPairLoss, ops.npair_loss, {"variant": "ovo", "l2_reg": 0.01}),
    (losses.AngularLoss, ops.angular_loss, {"alpha": 40.0}),
    (losses.NPairAngularLoss, ops.npair_angular_loss, {"alpha": 50.0, "lam": 1.5}),
]


def random_batch(seed, batch_size=24, dim=5, num_classes=None, pk=None):
    """Random embeddings with labels: either PK (P classes x K samples, shuffled) or free draws."""
    rng = np.random.RandomState(seed)
    if pk is not None:
        p, k = pk
        labels = rng.permutation(np.repeat(rng.choice(1000, p, replace=False), k))
    else:
        labels = rng.randint(0, num_classes, size=batch_size)
    embeddings = rng.normal(size=(len(labels), dim)).astype(np.float32)
    return labels.astype(np.int32), embeddings


BATCHES = [
    random_batch(0, pk=(6, 2)),  # N-pair layout
    random_batch(1, pk=(4, 5)),  # K > 2 (odd)
    random_batch(2, batch_size=20, num_classes=9),  # classes of size 1 and several
    random_batch(3, batch_size=16, num_classes=4),
    random_batch(4, batch_size=7, num_classes=20),  # mostly singletons
]


def mean(kernel, labels, embeddings, **kwargs):
    return float(tf.reduce_mean(kernel(labels, embeddings, **kwargs)))


@pytest.mark.parametrize(
    "margin,values",
    [(1.0, (0.81385547, 0.7, 0.8333333)), (0.2, (0.093967654, 0.15333334, 0.10666666))],
)
def test_golden_semihard(margin, values):
    for distance, expected in zip(DISTANCES, values):
        got = mean(ops.triplet_semihard_loss, GOLDEN_Y, GOLDEN_E, margin=margin, distance=distance)
        assert got == pytest.approx(expected, abs=1e-6)


def test_golden_hard():
    hard = (1.0419079, 1.1733333, 1.0866667)
    soft = (0.730117, 0.8600638, 0.7584966)
    for distance, h, s in zip(DISTANCES, hard, soft):
        assert mean(ops.triplet_hard_loss, GOLDEN_Y, GOLDEN_E, distance=distance) == pytest.approx(h, abs=1e-6)
        assert mean(ops.triplet_hard_loss, GOLDEN_Y, GOLDEN_E, soft=True, distance=distance) == pytest.approx(
            s, abs=1e-6
        )


def test_golden_npair_and_angular():
    assert mean(ops.npair_loss, GOLDEN_Y, GOLDEN_E, l2_reg=0.0) == pytest.approx(1.0450543, abs=1e-6)
    assert mean(ops.angular_loss, GOLDEN_Y, GOLDEN_E, alpha=40) == pytest.approx(1.6044104, abs=1e-5)
    assert mean(ops.angular_loss, GOLDEN_Y, GOLDEN_E, alpha=45) == pytest.approx(2.0181359, abs=1e-5)


def test_golden_tfa_docstring_cases():
    labels, embeddings = [0, 0], [[0.0, 1.0], [1.0, 0.0]]
    assert mean(ops.triplet_semihard_loss, labels, embeddings) == pytest.approx(2.4142137, abs=1e-6)
    assert mean(ops.triplet_hard_loss, labels, embeddings) == pytest.approx(1.0, abs=1e-6)


def test_hand_worked_contrastive():
    # Pairs: (0,1) positive at distance 0.5 -> 0.25; (0,2) and (1,2) negatives at
    # distances 1 and 0.5 with margin 1 -> 0 and 0.25. Per anchor: [0.125, 0.25, 0.125].
    labels = [0, 0, 1]
    embeddings = [[0.0, 0.0], [0.5, 0.0], [1.0, 0.0]]
    got = ops.contrastive_loss(labels, embeddings).numpy()
    np.testing.assert_allclose(got, [0.125, 0.25, 0.125], atol=1e-7)


@pytest.mark.parametrize("kernel,oracle,kwargs", CASES, ids=CASE_IDS)
def test_matches_numpy_oracle(kernel, oracle, kwargs):
    for labels, embeddings in BATCHES:
        expected = oracle(labels, embeddings, **kwargs)
        got = mean(kernel, labels, embeddings, **kwargs)
        assert got == pytest.approx(expected, rel=2e-5, abs=2e-5), (labels, kwargs)


@pytest.mark.parametrize("kernel,oracle,kwargs", CASES[::2], ids=CASE_IDS[::2])
def test_eager_function_and_xla_agree(kernel, oracle, kwargs):
    labels, embeddings = BATCHES[1]
    eager = kernel(labels, embeddings, **kwargs).numpy()
    graph = tf.function(lambda y, x: kernel(y, x, **kwargs))(labels, embeddings).numpy()
    xla = tf.function(lambda y, x: kernel(y, x, **kwargs), jit_compile=True)(labels, embeddings).numpy()
    np.testing.assert_allclose(graph, eager, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(xla, eager, rtol=1e-4, atol=1e-5)


def _gradient(kernel, labels, embeddings, **kwargs):
    x = tf.Variable(embeddings)
    with tf.GradientTape() as tape:
        value = tf.reduce_mean(kernel(labels, x, **kwargs))
    return value.numpy(), tape.gradient(value, x).numpy()


@pytest.mark.parametrize("kernel,oracle,kwargs", CASES, ids=CASE_IDS)
def test_gradients_finite_with_identical_embeddings(kernel, oracle, kwargs):
    embeddings = np.tile(np.float32([[0.6, 0.8, 0.0]]), (6, 1))
    value, grad = _gradient(kernel, [0, 0, 1, 1, 2, 2], embeddings, **kwargs)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    value, grad = _gradient(kernel, [0, 0, 1, 1, 2, 2], np.zeros((6, 3), np.float32), **kwargs)
    assert np.all(np.isfinite(grad))


@pytest.mark.parametrize("kernel,oracle,kwargs", [c for c in CASES if c[0] is not ops.contrastive_loss])
def test_no_positive_pair_gives_zero(kernel, oracle, kwargs):
    rng = np.random.RandomState(7)
    value, grad = _gradient(kernel, np.arange(8), rng.normal(size=(8, 4)).astype(np.float32), **kwargs)
    assert value == 0.0
    assert np.all(grad == 0.0)


@pytest.mark.parametrize("kernel,oracle,kwargs", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("graph", [False, True], ids=["eager", "function"])
def test_a_batch_of_one_gives_zero_and_a_zero_gradient(kernel, oracle, kwargs, graph):
    x = tf.Variable([[0.6, 0.8, 0.0]])

    def step():
        with tf.GradientTape() as tape:
            value = tf.reduce_sum(kernel([3], x, **kwargs))
        return value, tape.gradient(value, x)

    value, grad = tf.function(step)() if graph else step()
    assert grad is not None, "no gradient (an optimizer would skip or fail on the variable)"
    assert float(value) == 0.0 and np.all(grad.numpy() == 0.0)


def test_gradient_matches_finite_differences():
    labels, embeddings = BATCHES[3]
    embeddings = embeddings.astype(np.float64)
    for kernel, kwargs in [
        (ops.triplet_semihard_loss, {}),
        (ops.triplet_hard_loss, {"soft": True}),
        (ops.contrastive_loss, {}),
        (ops.npair_loss, {}),
        (ops.angular_loss, {}),
        (ops.npair_angular_loss, {}),
    ]:
        theoretical, numerical = tf.test.compute_gradient(
            lambda x: tf.reduce_mean(kernel(labels, x, **kwargs)), [tf.constant(embeddings)], delta=1e-6
        )
        np.testing.assert_allclose(theoretical[0], numerical[0], rtol=1e-4, atol=1e-5, err_msg=kernel.__name__)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_low_and_high_precision_inputs(dtype):
    labels, embeddings = BATCHES[1]
    for kernel, _, kwargs in CASES[::3]:
        cast = tf.cast(embeddings, dtype)
        got = kernel(labels, cast, **kwargs)
        assert got.dtype == cast.dtype
        reference = kernel(labels, tf.cast(cast, tf.float32), **kwargs)
        tolerance = 1e-5 if dtype == "float64" else 2e-2
        np.testing.assert_allclose(
            tf.cast(got, tf.float32).numpy(), reference.numpy(), rtol=tolerance, atol=tolerance
        )


def test_large_int32_labels_stay_distinct():
    big = np.array([2**24, 2**24 + 1, 2**24, 2**24 + 1, 2**24 + 2, 2**24 + 2], np.int32)
    small = np.array([0, 1, 0, 1, 2, 2], np.int32)
    for cls, _, kwargs in KERAS_CLASSES:
        loss = cls(**kwargs)
        assert float(loss(big, GOLDEN_E)) == pytest.approx(float(loss(small, GOLDEN_E)), abs=1e-6)


def test_labels_of_shape_b_and_b1_agree():
    for cls, _, kwargs in KERAS_CLASSES:
        loss = cls(**kwargs)
        a = float(loss(GOLDEN_Y, GOLDEN_E))
        b = float(loss(GOLDEN_Y[:, None], GOLDEN_E))
        assert a == pytest.approx(b)


@pytest.mark.parametrize("cls,kernel,kwargs", KERAS_CLASSES)
def test_keras_class_equals_kernel_and_round_trips(cls, kernel, kwargs):
    labels, embeddings = BATCHES[2]
    loss = cls(**kwargs)
    assert float(loss(labels, embeddings)) == pytest.approx(mean(kernel, labels, embeddings, **kwargs), rel=1e-6)
    config = loss.get_config()
    clone = cls.from_config(config)
    assert clone.get_config() == config
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(restored) is cls and restored.get_config() == config


def test_sample_weight_weights_anchors():
    labels, embeddings = BATCHES[3]
    loss = losses.TripletHardLoss()
    per_anchor = ops.triplet_hard_loss(labels, embeddings).numpy()
    weights = np.linspace(0.0, 2.0, len(labels)).astype(np.float32)
    expected = np.sum(per_anchor * weights) / len(labels)
    assert float(loss(labels, embeddings, sample_weight=weights)) == pytest.approx(expected, rel=1e-5)


def test_get_builds_by_name():
    assert isinstance(losses.get("npair_angular", lam=1.0), losses.NPairAngularLoss)
    assert set(losses.LOSSES) == {"contrastive", "triplet_semihard", "triplet_hard", "npair", "angular", "npair_angular"}
    with pytest.raises(ValueError, match="Received: name='arcface'"):
        losses.get("arcface")


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda: losses.TripletSemiHardLoss(distance="euclidean"), "distance='euclidean'"),
        (lambda: losses.ContrastiveLoss(margin=-1.0), "margin=-1.0"),
        (lambda: losses.TripletHardLoss(margin=float("nan")), "margin=nan"),
        (lambda: losses.AngularLoss(alpha=90), "alpha=90"),
        (lambda: losses.AngularLoss(alpha=0), "alpha=0"),
        (lambda: losses.NPairAngularLoss(alpha=-5), "alpha=-5"),
        (lambda: losses.NPairAngularLoss(lam=-1), "lam=-1"),
        (lambda: losses.NPairLoss(variant="multi"), "variant='multi'"),
        (lambda: losses.NPairLoss(l2_reg=-0.1), "l2_reg=-0.1"),
    ],
)
def test_bad_options_raise(build, match):
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize("kernel", [k for k, _, _ in CASES[::4]])
def test_bad_shapes_raise(kernel):
    with pytest.raises(ValueError, match=r"embeddings.shape=\(4,\)"):
        kernel([0, 0, 1, 1], np.zeros(4, np.float32))
    with pytest.raises(ValueError, match=r"labels.shape=\(2, 2\)"):
        kernel([[0, 0], [1, 1]], np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match="same batch size"):
        kernel([0, 0, 1], np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match="float tensor"):
        kernel([0, 0, 1, 1], np.zeros((4, 3), np.int32))


def _digits_pk(num_batches=12, p=5, k=4, seed=0):
    """PK batches of scikit-learn digits features (a real dataset)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int32)
    rng = np.random.RandomState(seed)
    xs, ys = [], []
    for _ in range(num_batches):
        for c in rng.choice(10, p, replace=False):
            idx = rng.choice(np.flatnonzero(y == c), k, replace=False)
            xs.append(x[idx])
            ys.append(y[idx])
    return np.concatenate(xs), np.concatenate(ys)


@pytest.mark.parametrize("cls,kernel,kwargs", KERAS_CLASSES)
def test_fit_lowers_loss_and_model_reloads(cls, kernel, kwargs, tmp_path):
    keras.utils.set_random_seed(0)
    x, y = _digits_pk()
    model = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(16), keras.layers.UnitNormalization()]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=cls(**kwargs))
    before = model.evaluate(x, y, batch_size=20, verbose=0)
    model.fit(x, y, batch_size=20, epochs=4, shuffle=False, verbose=0)
    after = model.evaluate(x, y, batch_size=20, verbose=0)
    assert after < before * 0.9
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    assert type(reloaded.loss) is cls
    assert reloaded.loss.get_config() == model.loss.get_config()
    assert reloaded.evaluate(x, y, batch_size=20, verbose=0) == pytest.approx(after, rel=1e-5)


@pytest.mark.parametrize("cls,kernel,kwargs", KERAS_CLASSES)
def test_custom_training_loop_with_the_tape_outside_a_function(cls, kernel, kwargs):
    # The step traced with a None batch dimension and differentiated by a tape outside it: an
    # AssertionError in TensorFlow's cond gradient before the blocks took their labels as inputs.
    keras.utils.set_random_seed(0)
    labels, x = random_batch(5, pk=(5, 4), dim=6)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4)])
    loss = cls(**kwargs)
    forward = tf.function(lambda y, x: loss(y, model(x)),
                          input_signature=[tf.TensorSpec([None], tf.int32), tf.TensorSpec([None, 6], tf.float32)])
    optimizer = keras.optimizers.SGD(1e-3)  # small steps: each lowers the loss
    values = []
    for step in range(3):
        with tf.GradientTape() as tape:
            value = forward(labels, x)
        gradients = tape.gradient(value, model.trainable_variables)
        if step == 0:
            with tf.GradientTape() as tape:
                expected = loss(labels, model(x))
            for got, reference in zip(gradients, tape.gradient(expected, model.trainable_variables)):
                np.testing.assert_allclose(got.numpy(), reference.numpy(), rtol=1e-4, atol=1e-6)
            assert float(value) == pytest.approx(float(expected), rel=1e-5)
        optimizer.apply(gradients, model.trainable_variables)
        values.append(float(value))
    assert np.isfinite(values).all() and values[2] < values[1] < values[0]


@pytest.mark.parametrize("cls,kernel,kwargs", KERAS_CLASSES)
def test_fit_takes_a_last_batch_of_one_sample(cls, kernel, kwargs):
    # 9 samples in batches of 4: the last batch has one sample and no pair or tuple.
    keras.utils.set_random_seed(0)
    x, y = _digits_pk()
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(8), keras.layers.UnitNormalization()])
    model.compile(optimizer="sgd", loss=cls(**kwargs))
    history = model.fit(x[:9], y[:9], batch_size=4, epochs=1, shuffle=False, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert all(np.isfinite(w).all() for w in model.get_weights())


def test_semihard_memory_is_quadratic():
    # A B=2048 batch would need a [B*B, B] float tensor of 32 GB in tfa's formulation.
    labels = np.repeat(np.arange(512), 4)
    embeddings = tf.math.l2_normalize(tf.random.stateless_normal([2048, 64], seed=[1, 2]), axis=1)
    value = tf.reduce_mean(ops.triplet_semihard_loss(labels, embeddings))
    assert np.isfinite(value.numpy())


@pytest.mark.parametrize("jit", [False, True])
def test_semihard_sorting_path_matches_oracle(monkeypatch, jit):
    # Batches with many positives per anchor are mined by sorting instead of per-positive passes.
    from rankloss_tf.ops import mining

    monkeypatch.setattr(mining, "MAX_POSITIVE_PASSES", 0)
    rng = np.random.RandomState(11)
    for batch_size, num_classes in [(40, 2), (30, 3), (24, 9)]:
        labels = rng.randint(0, num_classes, batch_size)
        embeddings = rng.normal(size=(batch_size, 4)).astype(np.float32)
        kernel = tf.function(lambda y, x: ops.triplet_semihard_loss(y, x, distance="squared_l2"), jit_compile=jit)
        got = float(tf.reduce_mean(kernel(labels, embeddings)))
        assert got == pytest.approx(oracles.triplet_semihard(labels, embeddings, 1.0, "squared_l2"), rel=2e-5)


def _angular_reference(units, labels, scale, pair_weight):
    """Per-anchor sums of l(a, p) on [B, B, B] tensors, in log space, differentiated by autodiff."""
    cosines = tf.matmul(units, units, transpose_b=True)
    same = labels[:, None] == labels[None, :]
    pairs, negatives = same & ~np.eye(len(labels), dtype=bool), ~same
    exponents = scale * (cosines[:, None, :] + cosines[None, :, :])  # [a, p, n]
    exponents = tf.where(negatives[:, None, :], exponents, -np.inf)
    valid = pairs & negatives.any(axis=1)[:, None]
    log_sums = tf.where(valid, tf.reduce_logsumexp(exponents, axis=2), 0.0)
    logits = log_sums - pair_weight * cosines
    return tf.reduce_sum(tf.where(valid, tf.math.softplus(logits), 0.0), axis=1)


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("scale", [4.0, 128.0])
def test_angular_row_losses_and_gradient(jit, scale):
    # Per-positive passes with a hand-written gradient, on every row or a range of rows;
    # scale 128 (alpha 80) takes the log-space path.
    from rankloss_tf.ops.angular import angular_row_losses

    rng = np.random.RandomState(5)
    for labels in [rng.randint(0, 9, 24), np.repeat(np.arange(6), 4), np.arange(8), rng.randint(0, 2, 20),
                   np.zeros(5, int)]:
        x = tf.math.l2_normalize(tf.constant(rng.normal(size=(len(labels), 6))), axis=1)
        upstream = tf.constant(rng.uniform(size=len(labels)))
        for start, size in [(0, len(labels)), (1, len(labels) // 2)]:

            def value_and_gradient(x, kernel):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    values = kernel(x)
                    objective = tf.reduce_sum(values * upstream[start : start + size])
                return values, tape.gradient(objective, x)

            rows = lambda x: angular_row_losses(x, tf.constant(labels), start, size, scale, scale / 2 + 2)  # noqa: E731
            got = tf.function(lambda x: value_and_gradient(x, rows), jit_compile=jit)(x)
            expected = value_and_gradient(
                x, lambda x: _angular_reference(x, labels, scale, scale / 2 + 2)[start : start + size]
            )
            for value, reference in zip(got, expected):
                np.testing.assert_allclose(value.numpy(), reference.numpy(), rtol=1e-9, atol=1e-10)


def _log1p_sum_exp_reference(q, k, offsets, negatives):
    """log(1 + sum over the negatives of exp(q_i . k_j - offsets_i)): TensorFlow's own logsumexp."""
    exponents = tf.where(negatives.mask(), tf.matmul(q, k, transpose_b=True) - offsets[:, None], -np.inf)
    return tf.reduce_logsumexp(tf.concat([tf.zeros_like(exponents[:, :1]), exponents], axis=1), axis=1)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("spread,estimated", [(1.0, True), (60.0, False)], ids=["estimated-shift", "exact-pass"])
@pytest.mark.parametrize("jit", [False, True])
def test_log1p_sum_exp_past_the_head_columns(dtype, spread, estimated, jit):
    # 300 keys: more than the head columns whose peak shifts the sums. Spread out (logits of
    # thousands), the shifted sums would overflow: the exact pass takes over.
    from rankloss_tf.ops import fused

    rng = np.random.RandomState(3)
    rows, columns = 40, 300
    q, k = (tf.constant(rng.normal(size=(n, 16)) * spread, dtype) for n in (rows, columns))
    offsets = tf.constant(rng.normal(size=rows) * spread, dtype)
    negatives = fused.Negatives(*(tf.constant(x) for x in (rng.randint(0, 30, rows), rng.uniform(size=rows) < 0.9,
                                                           rng.randint(0, 30, columns), rng.uniform(size=columns) < 0.9)))
    upstream = tf.constant(rng.uniform(size=rows), dtype)

    def value_and_gradient(kernel, q, k, offsets):
        with tf.GradientTape() as tape:
            tape.watch([q, k, offsets])
            values = kernel(q, k, offsets, negatives)
        return [values] + tape.gradient(values, [q, k, offsets], output_gradients=tf.cast(upstream, values.dtype))

    got = tf.function(lambda *x: value_and_gradient(fused.log1p_sum_exp, *x), jit_compile=jit)(q, k, offsets)
    expected = value_and_gradient(_log1p_sum_exp_reference, *(tf.cast(x, tf.float64) for x in (q, k, offsets)))
    *_, safe = fused._log1p_sum_exp_estimated(tf.matmul(q, k, transpose_b=True), offsets, tuple(negatives),
                                              tf.constant(1.0, dtype))
    assert bool(safe) == estimated
    tolerance = 1e-5 if dtype == "float32" else 1e-10
    for value, reference in zip(got, expected):
        assert np.all(np.isfinite(value.numpy()))
        np.testing.assert_allclose(value.numpy(), reference.numpy(), rtol=tolerance, atol=tolerance * max(spread, 1.0))


@pytest.mark.parametrize("jit", [False, True])
def test_npair_tuples_match_the_loop_oracle(jit):
    from rankloss_tf.ops.masks import npair_tuples

    rng = np.random.RandomState(3)
    cases = [np.zeros(0, np.int64), np.array([4]), np.array([2**24 + 1, 2**24, 2**24 + 1, 2**24]),
             np.array([0.5, -1.0, 0.5, 0.5, -1.0])]
    cases += [rng.randint(0, n, size) for n, size in [(3, 11), (9, 24), (40, 30), (2, 64)]]
    tuples = tf.function(npair_tuples, jit_compile=jit)
    for labels in cases:
        anchors, positives, valid = (t.numpy() for t in tuples(tf.constant(labels)))
        assert len(anchors) == len(labels) // 2
        got = sorted(zip(anchors[valid].tolist(), positives[valid].tolist()))
        assert got == oracles.npair_tuples(labels.tolist()), labels
        assert len(set(anchors.tolist())) == len(anchors)


def _cross_distances(x, r, distance):
    d = oracles.distance_matrix(np.concatenate([x, r]), distance)
    return d[: len(x), len(x) :]


def test_reference_set_matches_loop_oracle():
    # Query vs reference (e.g. image anchors vs text embeddings): positives and negatives
    # come from the reference set only, and an anchor is never compared with itself.
    rng = np.random.RandomState(5)
    labels, x = rng.randint(0, 4, 10), rng.normal(size=(10, 3)).astype(np.float32)
    ref_labels, r = np.array([0, 1, 2, 3, 0, 1, 5]), rng.normal(size=(7, 3)).astype(np.float32)
    for distance in DISTANCES:
        d = _cross_distances(x, r, distance)
        pos = labels[:, None] == ref_labels[None, :]
        semi, hard, contrastive, pairs = 0.0, [], [], 0
        for a in range(len(x)):
            negatives = d[a][~pos[a]]
            for p in np.flatnonzero(pos[a]):
                beyond = negatives[negatives > d[a, p]]
                n = beyond.min() if len(beyond) else negatives.max()
                semi += max(d[a, p] - n + 1.0, 0.0)
                pairs += 1
            hard.append(max(d[a][pos[a]].max() - negatives.min() + 1.0, 0.0) if pos[a].any() else 0.0)
            terms = np.where(pos[a], d[a] ** 2, np.maximum(1.0 - d[a], 0.0) ** 2)
            contrastive.append(terms.mean())
        kwargs = {"distance": distance, "reference_labels": ref_labels, "reference_embeddings": r}
        assert mean(ops.triplet_semihard_loss, labels, x, **kwargs) == pytest.approx(semi / pairs, rel=1e-5)
        assert mean(ops.triplet_hard_loss, labels, x, **kwargs) == pytest.approx(np.mean(hard), rel=1e-5)
        assert mean(ops.contrastive_loss, labels, x, **kwargs) == pytest.approx(np.mean(contrastive), rel=1e-5)


def test_reference_set_errors():
    with pytest.raises(ValueError, match="go together"):
        ops.triplet_semihard_loss([0, 1], np.zeros((2, 3), np.float32), reference_labels=[0])
    with pytest.raises(ValueError, match="same dimension"):
        ops.triplet_hard_loss(
            [0, 1], np.zeros((2, 3), np.float32), reference_labels=[0], reference_embeddings=np.zeros((1, 4), np.float32)
        )


ALL_KERNELS = [k for k, _, _ in CASES[::4]] + [ops.angular_loss, ops.npair_angular_loss]


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("kernel", sorted(set(ALL_KERNELS), key=lambda k: k.__name__))
def test_non_finite_embedding_makes_every_loss_non_finite(kernel, bad):
    labels, embeddings = random_batch(1, pk=(4, 4))
    embeddings[5, 2] = bad
    assert not np.isfinite(mean(kernel, labels, embeddings))


@pytest.mark.parametrize("cls", sorted(losses.LOSSES.values(), key=lambda c: c.__name__))
def test_non_finite_embedding_makes_keras_loss_nan(cls):
    labels, embeddings = random_batch(1, pk=(4, 4))
    embeddings[0] = np.nan
    assert np.isnan(float(cls()(labels, embeddings)))


@pytest.mark.parametrize("alpha", range(80, 90))
def test_angular_large_alpha_matches_oracle(alpha):
    # A violating batch: exp(4t (cos - 1)) underflows float64 from alpha 87 on; log space does not.
    labels, embeddings = random_batch(2, pk=(3, 3), dim=4)
    expected = oracles.angular(labels, embeddings, alpha=float(alpha))
    got = mean(ops.angular_loss, labels, embeddings, alpha=float(alpha))
    assert expected > 1.0
    assert got == pytest.approx(expected, rel=1e-3)


@pytest.mark.parametrize("cls", sorted(losses.LOSSES.values(), key=lambda c: c.__name__))
def test_empty_batch_gives_zero(cls):
    assert float(cls()(np.zeros([0], np.int32), np.zeros([0, 3], np.float32))) == 0.0
    kernel = cls.kernel
    assert kernel(np.zeros([0], np.int32), np.zeros([0, 3], np.float32)).shape == (0,)


@pytest.mark.parametrize("kernel", sorted(set(ALL_KERNELS), key=lambda k: k.__name__))
def test_string_labels_raise(kernel):
    with pytest.raises(ValueError, match="labels.dtype=string"):
        kernel(np.array(["a", "a", "b", "b"]), np.ones((4, 3), np.float32))


@pytest.mark.parametrize("kernel", sorted(set(ALL_KERNELS), key=lambda k: k.__name__))
def test_uint64_labels_above_2_63_stay_distinct(kernel):
    labels, embeddings = random_batch(4, pk=(3, 2))
    big = (np.uint64(2**63) + labels.astype(np.uint64)).astype(np.uint64)
    assert mean(kernel, big, embeddings) == pytest.approx(mean(kernel, labels, embeddings), rel=1e-6)


def test_numpy_scalar_options_accepted():
    assert losses.TripletSemiHardLoss(margin=np.float32(0.2)).margin == pytest.approx(0.2)
    assert losses.ContrastiveLoss(margin=np.int64(2)).margin == 2.0
    assert losses.AngularLoss(alpha=np.int64(40)).alpha == 40.0
    assert losses.NPairAngularLoss(lam=np.float64(1.5)).lam == 1.5
    assert mean(ops.npair_loss, [0, 0, 1, 1], np.eye(4, 3, dtype=np.float32), l2_reg=np.float32(0.1)) > 0
    with pytest.raises(ValueError, match="margin=True"):
        losses.TripletHardLoss(margin=True)


@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "sum", "mean", "mean_with_sample_weight", None])
def test_reduction_is_keras_own(reduction):
    # The per-anchor vector goes through Keras' public Loss.__call__: compare with a Keras
    # loss whose per-sample values are that vector.
    labels, embeddings = random_batch(0, pk=(3, 2))
    weights = np.linspace(0.5, 2.0, len(labels)).astype(np.float32)
    per_anchor = ops.triplet_hard_loss(labels, embeddings)

    class Given(keras.losses.Loss):
        def call(self, y_true, y_pred):
            return y_pred

    for sample_weight in (None, weights):
        expected = Given(reduction=reduction)(per_anchor, per_anchor, sample_weight=sample_weight)
        got = losses.TripletHardLoss(reduction=reduction)(labels, embeddings, sample_weight=sample_weight)
        np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-6)


def test_a_callable_distance_is_honoured_or_refused():
    # Semi-hard mines on the callable's matrix; batch-hard and contrastive fuse their passes for
    # the named metrics and refuse a callable rather than compute squared L2 in its place.
    labels = np.array([0, 0, 1, 1], np.int32)
    x = np.array([[0.0, 0.0], [1.0, 2.0], [3.0, 1.0], [0.5, 4.0]], np.float32)

    def manhattan(e):
        return tf.reduce_sum(tf.abs(e[:, None, :] - e[None, :, :]), axis=-1)

    got = ops.triplet_semihard_loss(labels, x, distance=manhattan)
    l1 = np.abs(x[:, None, :] - x[None, :, :]).sum(-1)
    assert not np.allclose(got.numpy(), ops.triplet_semihard_loss(labels, x, distance="squared_l2").numpy())
    np.testing.assert_allclose(got.numpy(), kernels.semihard_from_distances(
        tf.constant(l1), tf.constant((labels[:, None] == labels[None]) & ~np.eye(4, dtype=bool)),
        tf.constant(labels[:, None] != labels[None]), 1.0).numpy(), rtol=1e-6)
    for kernel in (ops.triplet_hard_loss, ops.contrastive_loss):
        with pytest.raises(ValueError, match="fused passes.*Received: distance=<function"):
            kernel(labels, x, distance=manhattan)


@pytest.mark.parametrize("kernel,oracle,kwargs", CASES[::3], ids=CASE_IDS[::3])
def test_unknown_embedding_shape_under_tf_function_gives_the_eager_gradient(kernel, oracle, kwargs):
    # A Keras-traced batch: [None, None] embeddings, sizes known only at run time. Small batches
    # took the run-time block choice whose backward loop lost a static size (a ValueError).
    rng = np.random.RandomState(9)
    shares = [None] if kernel in (ops.triplet_semihard_loss, ops.triplet_hard_loss) else [None, (0, 2), (1, 2)]
    # Batches of one and of no tuple too (the last batch of an epoch): their gradient is 0.
    for labels in ([0], [0, 1], [0, 0], [0, 0, 1], [0, 0, 1, 1, 2, 2], rng.randint(0, 5, 17)):
        x = tf.constant(rng.normal(size=(len(labels), 4)).astype(np.float32))
        labels = tf.constant(labels, tf.int32)
        for share in shares:
            options = dict(kwargs, **({} if share is None else {"share": share}))

            def value_and_gradient(labels, x, options=options):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    value = tf.reduce_sum(kernel(labels, x, **options))
                return value, tape.gradient(value, x)

            expected = value_and_gradient(labels, x)
            known_labels = tf.function(functools.partial(value_and_gradient, labels),
                                       input_signature=[tf.TensorSpec([None, None], tf.float32)])
            unknown_labels = tf.function(value_and_gradient, input_signature=[
                tf.TensorSpec([None], tf.int32), tf.TensorSpec([None, None], tf.float32)])
            for got in (known_labels(x), unknown_labels(labels, x)):
                for a, b in zip(got, expected):
                    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kernel,oracle,kwargs", CASES[::3], ids=CASE_IDS[::3])
@pytest.mark.parametrize("mode", ["eager", "function", "xla"])
def test_an_empty_anchor_range_gives_no_loss_and_a_zero_gradient(kernel, oracle, kwargs, mode):
    labels, x = random_batch(5, batch_size=13, dim=4, num_classes=5)
    x = tf.constant(x)

    def value_and_gradient(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            losses = kernel(labels, x, anchors=(5, 0), **kwargs)
            total = tf.reduce_sum(losses)
        return losses, tape.gradient(total, x)

    run = value_and_gradient if mode == "eager" else tf.function(value_and_gradient, jit_compile=mode == "xla")
    losses, gradient = run(x)
    assert losses.shape == (0,) and gradient is not None
    np.testing.assert_array_equal(gradient.numpy(), np.zeros((13, 4), np.float32))


@pytest.mark.parametrize("distance", DISTANCES)
def test_contrastive_rows_symmetric_form_equals_the_general_one(distance):
    # `symmetric=True` (a batch against itself, one backward matmul) is asked for explicitly, not
    # guessed from `queries is reference`; both forms give the same values and gradients.
    from rankloss_tf.ops.fused import contrastive_rows

    labels, x = random_batch(6, batch_size=11, num_classes=3)
    x = tf.constant(x)
    same = tf.equal(labels[:, None], labels[None, :])

    def value_and_gradient(symmetric):
        with tf.GradientTape() as tape:
            tape.watch(x)
            rows = contrastive_rows(x, x, same, 1.5, distance, tf.range(11), symmetric=symmetric)
            total = tf.reduce_sum(rows * tf.range(1.0, 12.0))
        return rows, tape.gradient(total, x)

    for got, want in zip(value_and_gradient(True), value_and_gradient(False)):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5)
