"""Anchor-row blocks and ranges: every kernel, blocked or by range, equals the whole batch."""

import numpy as np
import pytest
import tensorflow as tf

from rankloss_tf import ops
from rankloss_tf.ops.blocks import DEFAULT_MEMORY_BUDGET, block_rows, blocked_rows

KERNELS = [
    (ops.triplet_semihard_loss, {"margin": 0.5}),
    (ops.triplet_semihard_loss, {"distance": "cosine"}),
    (ops.triplet_hard_loss, {"soft": True}),
    (ops.triplet_hard_loss, {"distance": "squared_l2"}),
    (ops.contrastive_loss, {}),
    (ops.npair_loss, {"variant": "ovo"}),
    (ops.npair_loss, {}),
    (ops.angular_loss, {}),
    (ops.angular_loss, {"alpha": 80.0}),
    (ops.npair_angular_loss, {}),
]
IDS = [f"{k.__name__}-{'-'.join(map(str, kw.values()))}" for k, kw in KERNELS]
# A budget of a few rows: blocks of 1-3 rows, the last one pulled back over its neighbour.
TINY_BUDGET = 4 * 10 * 26 * 3


def _tolerance(kwargs):
    """float32 sums in another order; alpha 80 (scale 129) magnifies them."""
    return {"rtol": 1e-3 if kwargs.get("alpha", 0) > 66 else 2e-5, "atol": 2e-6}


def _batch(seed=0, size=26):
    rng = np.random.RandomState(seed)
    labels = rng.permutation(np.repeat(np.arange(size // 3 + 1), 3)[:size]).astype(np.int32)
    return labels, rng.normal(size=(size, 5)).astype(np.float32)


def _value_and_gradient(kernel, labels, x, **kwargs):
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        values = kernel(labels, x, **kwargs)
        objective = tf.reduce_sum(values * tf.range(1.0, 1.0 + tf.cast(tf.size(values), tf.float32)) ** 0.5)
    return values, tape.gradient(objective, x)


@pytest.mark.parametrize("kernel,kwargs", KERNELS, ids=IDS)
@pytest.mark.parametrize("jit", [False, True])
def test_blocked_equals_whole_batch(kernel, kwargs, jit):
    labels, x = _batch()
    expected = _value_and_gradient(kernel, labels, x, **kwargs)
    blocked = lambda x: _value_and_gradient(kernel, labels, x, memory_budget=TINY_BUDGET, **kwargs)  # noqa: E731
    got = tf.function(blocked, jit_compile=True)(x) if jit else blocked(x)
    for value, reference in zip(got, expected):
        np.testing.assert_allclose(value.numpy(), reference.numpy(), **_tolerance(kwargs))


@pytest.mark.parametrize("kernel,kwargs", KERNELS, ids=IDS)
@pytest.mark.parametrize("classes_together", [False, True])
def test_anchor_ranges_sum_to_whole_batch(kernel, kwargs, classes_together):
    # Cross-replica form: each range's anchors against the whole batch; the values are
    # the range's slice, and the ranges' gradients add up to the whole batch's. With the
    # sampler's order a range holds whole classes (angular reads the partners' rows).
    labels, x = _batch(1)
    ranges = [(0, 7), (7, 13), (20, 6)]
    if classes_together:
        labels, ranges = np.sort(labels), [(0, 9), (9, 12), (21, 5)]
    values, gradient = (t.numpy() for t in _value_and_gradient(kernel, labels, x, **kwargs))
    total = np.zeros_like(gradient)
    for start, size in ranges:
        weights = np.arange(1.0, 27.0)[start : start + size] ** 0.5
        x_t = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(x_t)
            part = kernel(labels, x_t, anchors=(start, size), memory_budget=TINY_BUDGET, **kwargs)
            objective = tf.reduce_sum(part * weights.astype(np.float32))
        np.testing.assert_allclose(part.numpy(), values[start : start + size], **_tolerance(kwargs))
        total += tape.gradient(objective, x_t).numpy()
    np.testing.assert_allclose(total, gradient, **_tolerance(kwargs))


def test_block_size_follows_batch_dimension_and_budget():
    assert block_rows(4096, 4096, 128, 16) == 4096  # one block: plain autodiff
    assert block_rows(16384, 16384, 128, 16) < block_rows(8192, 8192, 128, 16) < 8192
    assert block_rows(16384, 16384, 4096, 16) < block_rows(16384, 16384, 128, 16)
    assert block_rows(16384, 16384, 128, 16, memory_budget=4 * DEFAULT_MEMORY_BUDGET) > block_rows(
        16384, 16384, 128, 16
    )
    with pytest.raises(ValueError, match="memory_budget=0"):
        block_rows(8, 8, 2, 4, memory_budget=0)


def test_blocked_rows_with_unknown_batch_size():
    # Keras traces with a None batch dimension: the choice of blocks is made at run time.
    rows = lambda t, start, size: tf.reduce_sum(  # noqa: E731
        tf.slice(t[0], tf.stack([start, 0]), tf.stack([size, -1])) * t[0][None, :, 0], axis=1
    )

    @tf.function(input_signature=[tf.TensorSpec([None, 1]), tf.TensorSpec([], tf.int32)])
    def run(x, block):
        with tf.GradientTape() as tape:
            tape.watch(x)
            values = blocked_rows(rows, [x], tf.shape(x)[0], block)
            total = tf.reduce_sum(values)
        return values, tape.gradient(total, x)

    x = tf.constant([[1.0], [2.0], [3.0]])
    for block in (1, 2, 3):
        values, gradient = run(x, block)
        assert values.numpy().tolist() == [6.0, 12.0, 18.0]
        assert gradient.numpy()[:, 0].tolist() == [12.0, 12.0, 12.0]


SHARE_KERNELS = [(k, kw) for k, kw in KERNELS if k in (ops.contrastive_loss, ops.npair_loss, ops.npair_angular_loss, ops.angular_loss)]
SHARE_KERNELS += [(ops.contrastive_loss, {"distance": "cosine", "margin": 0.5}), (ops.contrastive_loss, {"distance": "squared_l2"})]
SHARE_IDS = [f"{k.__name__}-{'-'.join(map(str, kw.values()))}" for k, kw in SHARE_KERNELS]


@pytest.mark.parametrize("kernel,kwargs", SHARE_KERNELS, ids=SHARE_IDS)
@pytest.mark.parametrize(
    "count,mode", [(1, "eager"), (2, "eager"), (3, "function"), (4, "xla"), (4, "eager"), (5, "eager"), (16, "eager")]
)
def test_shares_sum_to_whole_batch(kernel, kwargs, count, mode):
    # Cross-replica form: each share's tuples / pairs / sorted anchors wherever their rows
    # are; the shares' per-anchor vectors and gradients add up to the whole batch's. 26
    # samples, 3 per class: 8 N-pair tuples in 13 slots, odd chunks and half-chunks
    # (contrastive), a last run pulled back (angular); count 16: empty shares.
    labels, x = _batch(2)
    values, gradient = (t.numpy() for t in _value_and_gradient(kernel, labels, x, **kwargs))

    def share(x_t, index):
        return _value_and_gradient(kernel, labels, x_t, share=(index, count), memory_budget=TINY_BUDGET, **kwargs)

    if mode != "eager":
        share = tf.function(share, jit_compile=mode == "xla")
    parts = [share(tf.constant(x), tf.constant(index)) for index in range(count)]
    np.testing.assert_allclose(sum(p.numpy() for p, _ in parts), values, **_tolerance(kwargs))
    # Gradients of up to ~20 summed in another order: float32 rounding relative to their scale.
    tolerance = dict(_tolerance(kwargs), atol=1e-6 * np.abs(gradient).max())
    np.testing.assert_allclose(sum(g.numpy() for _, g in parts), gradient, **tolerance)
    if count > 1:
        assert sum(np.count_nonzero(p.numpy()) > 0 for p, _ in parts) > 1  # the work is really split


@pytest.mark.parametrize("kernel,kwargs", SHARE_KERNELS, ids=SHARE_IDS)
@pytest.mark.parametrize("budget", [None, TINY_BUDGET])
def test_shares_with_unknown_batch_size(kernel, kwargs, budget):
    # Keras traces a None batch dimension: chunks, halves and blocks are sized at run time.
    labels, x = _batch(3, size=23)
    values, gradient = (t.numpy() for t in _value_and_gradient(kernel, labels, x, **kwargs))

    @tf.function(input_signature=[tf.TensorSpec([None, 5]), tf.TensorSpec([None], tf.int32), tf.TensorSpec([], tf.int32)])
    def share(x_t, labels_t, index):
        return _value_and_gradient(kernel, labels_t, x_t, share=(index, 4), memory_budget=budget, **kwargs)

    parts = [share(tf.constant(x), tf.constant(labels), tf.constant(index)) for index in range(4)]
    np.testing.assert_allclose(sum(p.numpy() for p, _ in parts), values, **_tolerance(kwargs))
    tolerance = dict(_tolerance(kwargs), atol=1e-6 * np.abs(gradient).max())
    np.testing.assert_allclose(sum(g.numpy() for _, g in parts), gradient, **tolerance)


@pytest.mark.parametrize(
    "share,match",
    [((0,), "pair"), ((0, 0), "count"), ((2, 2), "index"), ((0, 2.0), "count"), ((0, True), "count"),
     ((0.7, 2), "index"), ((True, 2), "index"), (("1", 2), "index"), ((tf.constant(1.0), 2), "index"), ((-1, 4), "index")],
)
def test_share_errors_name_what_was_received(share, match):
    for kernel in (ops.npair_loss, ops.contrastive_loss, ops.angular_loss):
        with pytest.raises(ValueError, match=match):
            kernel([0, 0, 1, 1], np.eye(4, 2, dtype=np.float32), share=share)
    with pytest.raises(ValueError, match="cannot be combined"):
        ops.npair_angular_loss([0, 0, 1, 1], np.eye(4, 2, dtype=np.float32), share=(0, 2), anchors=(0, 2))
    with pytest.raises(ValueError, match="reference set"):
        ops.contrastive_loss([0, 1], np.eye(2, dtype=np.float32), share=(0, 2), reference_labels=[0],
                             reference_embeddings=np.eye(1, 2, dtype=np.float32))


# One of each kernel, run in blocks (both the blocks and the single block are traced either way), and
# the shares, a range of anchors and the unblocked kernels in one block.
OUTER_TAPE_KERNELS = [(k, dict(kw, memory_budget=TINY_BUDGET)) for k, kw in KERNELS[::2]] + [
    (ops.npair_angular_loss, {"memory_budget": TINY_BUDGET}),
    (ops.contrastive_loss, {"share": (1, 3)}),
    (ops.npair_loss, {"share": (0, 2)}),
    (ops.angular_loss, {"share": (2, 3)}),
    (ops.triplet_hard_loss, {"anchors": (4, 9), "memory_budget": TINY_BUDGET}),
    (ops.lifted_struct_loss, {}),
    (ops.cluster_loss, {"margin_multiplier": 1.0}),
    # Today's pair losses (ops/cosine_rows.py), blocked, on an anchor range, and the class losses' kernels.
    (ops.multi_similarity_loss, {"memory_budget": TINY_BUDGET}),
    (ops.multi_similarity_loss, {"epsilon": 0.1, "anchors": (4, 9), "memory_budget": TINY_BUDGET}),
    (ops.supcon_loss, {"memory_budget": TINY_BUDGET}),
    (ops.ntxent_loss, {"memory_budget": TINY_BUDGET}),
]
OUTER_TAPE_IDS = [f"{k.__name__}-{'-'.join(map(str, kw.values()))}" for k, kw in OUTER_TAPE_KERNELS]


@pytest.mark.parametrize("kernel,kwargs", OUTER_TAPE_KERNELS, ids=OUTER_TAPE_IDS)
def test_tape_outside_a_function_of_unknown_batch_size(kernel, kwargs):
    # A custom training loop: the tf.function traced with a None batch dimension, the tape
    # outside it. The run-time choice of blocks (a tf.cond) raised an AssertionError in
    # TensorFlow's cond gradient: the backward pass read the labels closed over outside it.
    labels, x = _batch(4, size=23)
    weights = tf.constant(np.arange(1.0, 24.0, dtype=np.float32) ** 0.5)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int32), tf.TensorSpec([None, 5])])
    def objective(labels, x):
        values = kernel(labels, x, **kwargs)
        return tf.reduce_sum(values * weights[: tf.size(values)])

    variable = tf.Variable(x)
    with tf.GradientTape() as tape:
        got = objective(tf.constant(labels), variable)
    got_gradient = tape.gradient(got, variable)
    with tf.GradientTape() as tape:
        values = kernel(labels, variable, **kwargs)
        expected = tf.reduce_sum(values * weights[: tf.size(values)])
    expected_gradient = tape.gradient(expected, variable)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), **_tolerance(kwargs))
    np.testing.assert_allclose(got_gradient.numpy(), expected_gradient.numpy(), **_tolerance(kwargs))
    assert np.abs(got_gradient.numpy()).max() > 0


def test_blocked_rows_hands_the_constants_to_the_rows():
    # What the rows read besides the differentiated tensors goes through the call, not a closure.
    scale = tf.constant([1.0, 0.0, 2.0])
    rows = lambda t, start, size, scale: scale[start : start + size] * tf.reduce_sum(  # noqa: E731
        tf.slice(t[0], tf.stack([start, 0]), tf.stack([size, -1])) * t[0][None, :, 0], axis=1
    )

    @tf.function(input_signature=[tf.TensorSpec([None, 1]), tf.TensorSpec([None]), tf.TensorSpec([], tf.int32)])
    def run(x, scale, block):
        return blocked_rows(rows, [x], tf.shape(x)[0], block, constants=scale)

    x = tf.Variable([[1.0], [2.0], [3.0]])
    for block in (1, 2, 3):
        with tf.GradientTape() as tape:
            total = tf.reduce_sum(run(x, scale, block))
        assert total.numpy() == pytest.approx(6.0 + 36.0)
        np.testing.assert_allclose(tape.gradient(total, x).numpy()[:, 0], [13.0, 7.0, 19.0], rtol=1e-6)
