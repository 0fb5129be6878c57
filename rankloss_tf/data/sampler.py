"""The class-balanced P x K batch sampler, as a pure, seeded tf.data pipeline."""

import tensorflow as tf

from rankloss_tf.data.class_index import ClassIndex, validate_pk
from rankloss_tf.data.sources import IndexedExamples


def pk_batches(
    data,
    labels=None,
    *,
    classes_per_batch,
    samples_per_class,
    decode_fn=None,
    short_classes="repeat",
    epochs=None,
    seed=0,
    drop_remainder=True,
    num_parallel_calls=tf.data.AUTOTUNE,
    prefetch=tf.data.AUTOTUNE,
):
    """Batches of P classes x K samples, the batches that ranking losses learn from.

    Every batch holds `classes_per_batch` (P) distinct classes with
    `samples_per_class` (K) samples each, grouped by class:
    `[c1] * K + [c2] * K + ...` (the losses accept any order). N-pair batches
    (Sohn 2016) are K = 2: the first sample of a class is its anchor, the
    second its positive.

    An epoch visits every class exactly once, in an order reshuffled every
    epoch (C // P batches with `drop_remainder`, else ceil(C / P), the last
    one smaller). Within a class, its K samples are drawn afresh each visit,
    distinct while the class has at least K samples. Everything after the
    one-off grouping of labels by class (a NumPy argsort) runs in tf.data, from
    stateless random ops seeded by (`seed`, epoch, batch): the same seed gives
    the same batches, no Python runs per batch, and 100k+ classes cost only
    their index arrays. Per batch the cost is O(P x largest class size).

    Args:
        data: the examples:
            (a) an array or tensor [N, ...], or a nested structure of them;
            (b) a `tf.data.Dataset` of (example, label) pairs (`labels=None`): it
                is read once and held in memory to index it by class; for large
                data prefer (c), or a dataset of encoded bytes with `decode_fn`;
            (c) file paths [N] (list or string array) with a `decode_fn`.
        labels: integer class labels [N] (or [N, 1]) for (a) and (c).
        classes_per_batch: P >= 2.
        samples_per_class: K >= 1.
        decode_fn: optional function applied to each fetched example (a path,
            encoded bytes, ...) in parallel, e.g.
            `rankloss_tf.datasets.image_decoder(image_size=224)`.
        short_classes: classes with fewer than K samples are sampled with
            replacement ("repeat": a shuffled cycle of their samples),
            left out ("skip"), or rejected ("error").
        epochs: number of epochs; None repeats forever (then give
            `steps_per_epoch` to `model.fit`).
        seed: integer seed of the whole pipeline.
        drop_remainder: drop an epoch's last batch when it has fewer than P classes.
        num_parallel_calls: parallelism of the gather / decode step.
        prefetch: number of batches to prefetch (AUTOTUNE by default; 0 for none).

    Returns:
        A `tf.data.Dataset` of `(examples [P*K, ...], labels [P*K])`. Labels are
        the original label values (never cast through floats), int32 when given
        as int32, else int64.

    Raises:
        ValueError: P < 2, K < 1, fewer than P classes to sample from (after
            `short_classes`), a class shorter than K with `short_classes="error"`,
            labels that are not integers or do not match the data.

    Example:
    >>> x = np.random.rand(100, 8).astype("float32")
    >>> y = np.repeat(np.arange(10), 10)
    >>> ds = pk_batches(x, y, classes_per_batch=4, samples_per_class=2, epochs=1)
    >>> [tuple(b[0].shape) for b in ds]
    [(8, 8), (8, 8)]
    """
    validate_pk(classes_per_batch, samples_per_class)
    if epochs is not None and (not isinstance(epochs, int) or epochs < 1):
        raise ValueError(f"`epochs` must be None or an integer >= 1. Received: epochs={epochs!r}")
    source = IndexedExamples(data, labels, decode_fn)
    index = ClassIndex(source.labels, samples_per_class, short_classes)
    if index.num_classes < classes_per_batch:
        raise ValueError(
            f"classes_per_batch={classes_per_batch} x samples_per_class={samples_per_class} needs at least "
            f"{classes_per_batch} classes (with short_classes={short_classes!r}). "
            f"Received: data with {index.num_classes} usable classes"
        )
    batch_size = classes_per_batch * samples_per_class
    base_seed = tf.constant([seed, 0], tf.int64)

    def one_epoch(epoch):
        epoch_seed = tf.random.experimental.stateless_fold_in(base_seed, epoch)
        order = tf.random.experimental.stateless_shuffle(
            tf.range(index.num_classes, dtype=tf.int64), tf.random.experimental.stateless_fold_in(epoch_seed, 0)
        )
        index_batches = (
            tf.data.Dataset.from_tensor_slices(order)
            .batch(classes_per_batch, drop_remainder=drop_remainder)
            .enumerate(start=1)
            .map(
                lambda step, positions: tf.reshape(
                    index.draw(positions, tf.random.experimental.stateless_fold_in(epoch_seed, step)), [-1]
                )
            )
        )
        return source.batches(index_batches, batch_size, num_parallel_calls)

    epoch_ids = tf.data.Dataset.counter() if epochs is None else tf.data.Dataset.range(epochs)
    dataset = epoch_ids.flat_map(one_epoch)
    per_epoch = index.num_classes // classes_per_batch
    if not drop_remainder and index.num_classes % classes_per_batch:
        per_epoch += 1
    dataset = dataset.apply(
        tf.data.experimental.assert_cardinality(
            tf.data.INFINITE_CARDINALITY if epochs is None else per_epoch * epochs
        )
    )
    return dataset.prefetch(prefetch) if prefetch else dataset
