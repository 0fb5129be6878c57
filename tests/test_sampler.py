"""Tests of the P x K batch sampler."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from rankloss_tf.data import pk_batches
from rankloss_tf.losses import TripletSemiHardLoss


def _toy(num_classes=10, per_class=6, short=None):
    labels = np.repeat(np.arange(num_classes) * 7 + 3, per_class)
    if short is not None:
        labels = labels[per_class - short:]  # the first class keeps `short` samples
    examples = np.arange(labels.size, dtype=np.float32)[:, None] * np.ones(3, np.float32)
    return examples, labels


def _check_pk(labels, p, k):
    values, counts = np.unique(labels, return_counts=True)
    assert values.size == p and (counts == k).all(), labels
    assert (labels.reshape(p, k) == labels.reshape(p, k)[:, :1]).all(), "batch is not grouped by class"


def test_every_batch_has_p_classes_of_k_distinct_samples():
    x, y = _toy()
    for examples, labels in pk_batches(x, y, classes_per_batch=4, samples_per_class=3, epochs=3, seed=5):
        _check_pk(labels.numpy(), 4, 3)
        rows = examples.numpy()[:, 0].astype(int)
        assert (y[rows] == labels.numpy()).all(), "examples do not match their labels"
        assert len(set(rows)) == rows.size, "a sample repeats although every class has K samples"


def test_deterministic_under_a_seed_and_different_across_seeds():
    x, y = _toy()

    def run(seed):
        ds = pk_batches(x, y, classes_per_batch=3, samples_per_class=2, epochs=2, seed=seed)
        return np.concatenate([e.numpy()[:, 0] for e, _ in ds])

    np.testing.assert_array_equal(run(1), run(1))
    assert not np.array_equal(run(1), run(2))


def test_every_class_visited_once_per_epoch_and_reshuffled():
    x, y = _toy(num_classes=12)
    ds = pk_batches(x, y, classes_per_batch=4, samples_per_class=2, epochs=3, seed=0)
    assert ds.cardinality().numpy() == 9
    batches = [labels.numpy()[::2] for _, labels in ds]
    epochs = [np.concatenate(batches[i:i + 3]) for i in (0, 3, 6)]
    for order in epochs:
        assert sorted(order) == sorted(np.unique(y))
    assert not all(np.array_equal(epochs[0], other) for other in epochs[1:])


def test_remainder_kept_or_dropped():
    x, y = _toy(num_classes=10)
    kept = [labels.shape[0] for _, labels in pk_batches(x, y, classes_per_batch=4, samples_per_class=2,
                                                         epochs=1, drop_remainder=False)]
    dropped = [labels.shape[0] for _, labels in pk_batches(x, y, classes_per_batch=4, samples_per_class=2, epochs=1)]
    assert kept == [8, 8, 4] and dropped == [8, 8]


def test_short_classes_repeat_skip_error():
    x, y = _toy(num_classes=5, per_class=4, short=2)
    short_label = y[0]
    seen = set()
    for examples, labels in pk_batches(x, y, classes_per_batch=5, samples_per_class=4, epochs=4):
        _check_pk(labels.numpy(), 5, 4)
        rows = examples.numpy()[labels.numpy() == short_label, 0]
        assert sorted(rows) == sorted(np.tile(np.unique(rows), 2)), "short class not cycled evenly"
        seen.update(rows)
    assert seen == {0.0, 1.0}
    skipped = pk_batches(x, y, classes_per_batch=4, samples_per_class=4, short_classes="skip", epochs=1)
    assert all(short_label not in labels.numpy() for _, labels in skipped)
    with pytest.raises(ValueError, match="fewer than samples_per_class=4"):
        pk_batches(x, y, classes_per_batch=4, samples_per_class=4, short_classes="error")


def test_labels_keep_integer_dtype_and_exact_values():
    big = np.array([2**24, 2**24 + 1, 2**40, 7], np.int64)
    y = np.repeat(big, 2)
    x = np.zeros((8, 1), np.float32)
    _, labels = next(iter(pk_batches(x, y, classes_per_batch=4, samples_per_class=2)))
    assert labels.dtype == tf.int64 and set(labels.numpy()) == set(big)
    _, labels32 = next(iter(pk_batches(x, y.astype(np.int32) % 1000, classes_per_batch=4, samples_per_class=2)))
    assert labels32.dtype == tf.int32


def test_inputs_dataset_files_and_nested():
    x, y = _toy(num_classes=6, per_class=4)
    from_dataset = pk_batches(tf.data.Dataset.from_tensor_slices((x, y)), classes_per_batch=3,
                              samples_per_class=2, epochs=1, seed=3)
    from_arrays = pk_batches(x, y, classes_per_batch=3, samples_per_class=2, epochs=1, seed=3)
    for (a, la), (b, lb) in zip(from_dataset, from_arrays):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(la, lb)
    paths = np.array([f"img_{int(v)}.png" for v in x[:, 0]])
    decode = lambda path: tf.strings.to_number(tf.strings.regex_replace(path, r"img_|\.png", ""))  # noqa: E731
    for (decoded, _), (arr, _) in zip(
        pk_batches(paths, y, classes_per_batch=3, samples_per_class=2, epochs=1, seed=3, decode_fn=decode),
        pk_batches(x, y, classes_per_batch=3, samples_per_class=2, epochs=1, seed=3),
    ):
        np.testing.assert_array_equal(decoded.numpy(), arr.numpy()[:, 0])
    nested, _ = next(iter(pk_batches({"a": x, "b": x[:, 0]}, y, classes_per_batch=2, samples_per_class=2)))
    assert nested["a"].shape == (4, 3) and nested["b"].shape == (4,)


def test_scales_to_many_classes():
    y = np.repeat(np.arange(25_000), 2)[::-1].copy()
    x = np.arange(y.size, dtype=np.int32)
    ds = pk_batches(x, y, classes_per_batch=64, samples_per_class=2, seed=0)
    for examples, labels in ds.take(20):
        _check_pk(labels.numpy(), 64, 2)
        assert (y[examples.numpy()] == labels.numpy()).all()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(classes_per_batch=1, samples_per_class=2), "classes_per_batch"),
        (dict(classes_per_batch=2, samples_per_class=0), "samples_per_class"),
        (dict(classes_per_batch=11, samples_per_class=2), "10 usable classes"),
        (dict(classes_per_batch=2, samples_per_class=2, short_classes="maybe"), "short_classes"),
    ],
)
def test_clear_errors(kwargs, message):
    x, y = _toy()
    with pytest.raises(ValueError, match=message):
        pk_batches(x, y, **kwargs)


def test_label_errors():
    x, y = _toy()
    with pytest.raises(ValueError, match="integer class ids"):
        pk_batches(x, y.astype(np.float32), classes_per_batch=2, samples_per_class=2)
    with pytest.raises(ValueError, match="first dimension"):
        pk_batches(x[:-1], y, classes_per_batch=2, samples_per_class=2)
    with pytest.raises(ValueError, match="labels"):
        pk_batches(x, classes_per_batch=2, samples_per_class=2)


def test_feeds_model_fit():
    x, y = _toy(num_classes=8, per_class=6)
    x = x + np.random.default_rng(0).normal(size=x.shape).astype(np.float32)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)])
    model.compile(optimizer="sgd", loss=TripletSemiHardLoss())
    history = model.fit(pk_batches(x, y, classes_per_batch=4, samples_per_class=3), steps_per_epoch=3,
                        epochs=2, shuffle=False, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


def test_infinite_dataset_is_refused_not_read_forever():
    x, y = _toy()
    finite = tf.data.Dataset.from_tensor_slices((x, y))
    with pytest.raises(ValueError, match="infinite"):
        pk_batches(finite.repeat(), classes_per_batch=2, samples_per_class=2)
    with pytest.raises(ValueError, match="unknown.*infinite"):
        pk_batches(finite.repeat().filter(lambda e, label: label > 3), classes_per_batch=2, samples_per_class=2)
    bounded = finite.repeat().filter(lambda e, label: label > 3).take(40)
    assert pk_batches(bounded, classes_per_batch=2, samples_per_class=2).cardinality() == tf.data.INFINITE_CARDINALITY


def test_pk_sampler_is_pk_batches():
    from rankloss_tf.data import PKSampler

    x, y = _toy()
    sampler = PKSampler(x, y, classes_per_batch=3, samples_per_class=2, seed=4)
    assert sampler.batches_per_epoch() == 3 and sampler.batches_per_epoch(drop_remainder=False) == 4
    for (a, la), (b, lb) in zip(sampler.dataset(epochs=2),
                                pk_batches(x, y, classes_per_batch=3, samples_per_class=2, epochs=2, seed=4)):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(la, lb)
    with pytest.raises(ValueError, match="epochs"):
        sampler.dataset(epochs=0)
