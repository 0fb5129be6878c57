"""Every loss under XLA (`jit_compile=True`) and Keras mixed precision, kernels and `model.fit`.

`fit` runs one model with one embedding head per loss, so one compiled train step covers
all six losses. Each (policy, jit_compile) pair is compared with the float32 run: the
same losses before training (to the policy's precision), and losses that go down. Under
XLA in float32 the whole trajectory is the same.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from rankloss_tf import losses
from rankloss_tf.ops import losses as kernels
from tests import oracles

NAMES = sorted(losses.LOSSES)
KERNELS = {name: getattr(kernels, f"{name}_loss") for name in NAMES}
POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")
EPOCHS = 4


def digits_batches(batches=2, p=5, k=4, seed=0):
    """PK batches (5 classes x 4 samples, class blocks) of scikit-learn digits, as one batch of 40."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x, y = (data.data / 16.0).astype(np.float32), data.target.astype(np.int32)
    rng = np.random.RandomState(seed)
    rows = [
        rng.choice(np.flatnonzero(y == c), k, replace=False) for _ in range(batches) for c in rng.choice(10, p, False)
    ]
    rows = np.concatenate(rows)
    return x[rows], y[rows]


@pytest.fixture
def policy():
    """Sets a global Keras dtype policy for one test and restores float32 afterwards."""
    yield keras.mixed_precision.set_global_policy
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("name", NAMES)
def test_kernel_under_xla_with_half_inputs(name, dtype):
    rng = np.random.RandomState(1)
    labels = rng.permutation(np.repeat(np.arange(4), 3)).astype(np.int32)
    embeddings = tf.cast(rng.normal(size=(12, 6)).astype(np.float32), dtype)
    compiled = tf.function(lambda y, x: KERNELS[name](y, x), jit_compile=True)
    got = compiled(labels, embeddings)
    assert got.dtype == embeddings.dtype
    expected = KERNELS[name](labels, tf.cast(embeddings, tf.float32))
    np.testing.assert_allclose(tf.cast(got, tf.float32).numpy(), expected.numpy(), rtol=2e-2, atol=2e-2)


def _fit(policy_name, jit_compile, dataset=False):
    keras.mixed_precision.set_global_policy(policy_name)
    keras.utils.set_random_seed(0)
    x, y = digits_batches()
    inputs = keras.Input((64,))
    hidden = keras.layers.Dense(32, activation="relu")(inputs)
    model = keras.Model(inputs, {name: keras.layers.Dense(16, name=name)(hidden) for name in NAMES})
    model.compile(
        optimizer=keras.optimizers.SGD(0.05),
        loss={name: losses.LOSSES[name]() for name in NAMES},
        jit_compile=jit_compile,
    )
    embeddings = model(x)
    initial = {f"{name}_loss": float(model.loss[name](y, embeddings[name])) for name in NAMES}
    if dataset:  # a tf.data pipeline: the batch dimension is None when Keras traces the step
        batches = tf.data.Dataset.from_tensor_slices((x, {name: y for name in NAMES})).batch(len(y))
        history = model.fit(batches, epochs=EPOCHS, verbose=0)
    else:
        history = model.fit(x, {name: y for name in NAMES}, batch_size=len(y), epochs=EPOCHS, shuffle=False, verbose=0)
    return model, initial, history.history


@pytest.fixture(scope="module")
def float32_run():
    keras.mixed_precision.set_global_policy("float32")
    return _fit("float32", jit_compile=False)[1:]


@pytest.mark.parametrize(
    "policy_name,jit_compile",
    [("float32", True), ("mixed_bfloat16", False), ("mixed_bfloat16", True), ("mixed_float16", False), ("mixed_float16", True)],
)
def test_fit_under_xla_and_mixed_precision(policy, float32_run, policy_name, jit_compile):
    model, initial, history = _fit(policy_name, jit_compile)
    float32_initial, float32_history = float32_run
    if policy_name == "mixed_float16":
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    if policy_name != "float32":
        assert model.get_layer(NAMES[0]).compute_dtype == policy_name.split("_")[1]
    for name in NAMES:
        key = f"{name}_loss"
        logged = history[key]
        assert np.all(np.isfinite(logged)), name
        assert logged[-1] < initial[key], name
        if policy_name == "float32":
            np.testing.assert_allclose(logged, float32_history[key], rtol=1e-4, err_msg=name)
        else:
            assert initial[key] == pytest.approx(float32_initial[key], rel=3e-2), name
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())


def test_evaluation_kernel_under_xla_and_half_precision():
    """The blocked kNN kernel compiles with XLA, and half-precision embeddings evaluate like float32."""
    from rankloss_tf.evaluation import evaluate
    from rankloss_tf.evaluation.neighbours import _block_top_k

    rng = np.random.RandomState(3)
    labels = np.repeat(np.arange(20), 5)
    embeddings = (rng.normal(size=(20, 16))[labels] + 0.3 * rng.normal(size=(100, 16))).astype(np.float32)
    references = tf.math.l2_normalize(embeddings, axis=1)
    block = references[:32]
    args = (block, tf.constant(0), references, None, 5, True)
    eager = _block_top_k.python_function(*args)
    compiled = tf.function(_block_top_k.python_function, jit_compile=True)(*args)
    # XLA and the eager kernels may order near-tied neighbours differently (and differ by CPU).
    scores = references.numpy().astype(np.float64)[:32] @ references.numpy().astype(np.float64).T
    oracles.assert_same_neighbours(compiled.indices.numpy(), eager.indices.numpy(), scores, atol=1e-5)
    np.testing.assert_allclose(compiled.values.numpy(), eager.values.numpy(), rtol=1e-5, atol=1e-6)

    reference = evaluate(embeddings, labels, clustering=False)
    for dtype in ("float16", "bfloat16"):
        got = evaluate(tf.cast(embeddings, dtype), labels, clustering=False)
        for key, value in reference.items():
            assert abs(got[key] - value) <= 0.03, (dtype, key, got[key], value)


def test_fit_under_xla_with_an_unknown_batch_size(float32_run):
    # Keras' default on a GPU is jit_compile=True, and a tf.data batch dimension is None at
    # trace time: the losses' run-time choice of blocks cannot be compiled by XLA, so under
    # XLA the rows run in one block (semi-hard failed to compile and angular aborted the
    # process before).
    _, _, history = _fit("float32", jit_compile=True, dataset=True)
    for name in NAMES:
        np.testing.assert_allclose(history[f"{name}_loss"], float32_run[1][f"{name}_loss"], rtol=1e-4, err_msg=name)
