"""Every loss kernel against its NumPy oracle, and the kernels' contract: compilation, gradients,
zero and empty batches, dtypes, labels, errors."""

import functools

import numpy as np
import pytest
import tensorflow as tf

from rankloss_tf import losses, ops
from tests.loss_cases import ALL_KERNELS, BATCHES, CASES, CASE_IDS, GOLDEN_E, GOLDEN_Y, KERAS_CLASSES, mean, random_batch


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


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("kernel", sorted(set(ALL_KERNELS), key=lambda k: k.__name__))
def test_non_finite_embedding_makes_every_loss_non_finite(kernel, bad):
    labels, embeddings = random_batch(1, pk=(4, 4))
    embeddings[5, 2] = bad
    assert not np.isfinite(mean(kernel, labels, embeddings))


@pytest.mark.parametrize("kernel", sorted(set(ALL_KERNELS), key=lambda k: k.__name__))
def test_string_labels_raise(kernel):
    with pytest.raises(ValueError, match="labels.dtype=string"):
        kernel(np.array(["a", "a", "b", "b"]), np.ones((4, 3), np.float32))


@pytest.mark.parametrize("kernel", sorted(set(ALL_KERNELS), key=lambda k: k.__name__))
def test_uint64_labels_above_2_63_stay_distinct(kernel):
    labels, embeddings = random_batch(4, pk=(3, 2))
    big = (np.uint64(2**63) + labels.astype(np.uint64)).astype(np.uint64)
    assert mean(kernel, big, embeddings) == pytest.approx(mean(kernel, labels, embeddings), rel=1e-6)


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
