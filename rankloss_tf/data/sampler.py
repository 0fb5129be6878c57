"""The class-balanced P x K batch sampler, as a pure, seeded tf.data pipeline."""

import tensorflow as tf

from rankloss_tf.data.class_index import ClassIndex, is_integer, validate_pk
from rankloss_tf.data.sources import IndexedExamples


class PKSampler:
    """Batches of P classes x K samples, the batches that ranking losses learn from.

    Every batch holds ``classes_per_batch`` (P) classes with ``samples_per_class``
    (K) samples each, grouped by class: ``[c1] * K + [c2] * K + ...`` (the
    losses accept any order). N-pair batches (Sohn 2016) are K = 2: the first
    sample of a class is its anchor, the second its positive.

    An epoch walks once through the usable classes in an order reshuffled
    every epoch, P at a time (C // P batches with ``drop_remainder``, else
    ceil(C / P), the last one smaller). ``select_classes`` turns each such
    group into the batch's classes: here the group itself, so every class is
    visited once per epoch; ``rankloss_tf.data.HardClassSampler`` overrides it
    (and nothing else) to pick confusable classes. Within a class, its K
    samples are drawn afresh each visit, distinct while the class has at
    least K samples. Everything after the one-off grouping of labels by class
    (a NumPy argsort) runs in tf.data, from stateless random ops seeded by
    (``seed``, epoch, batch): the same seed gives the same batches, no Python
    runs per batch, and 100k+ classes cost only their index arrays. Per batch
    the cost is O(P x largest class size).

    Args:
        data: the examples:
            (a) an array or tensor [N, ...], or a nested structure of them;
            (b) a finite ``tf.data.Dataset`` of (example, label) pairs
                (``labels=None``). One that ``rankloss_tf.datasets.load`` reads
                from files (a folder, TFRecords, local Cars196, TFDS) streams:
                only its references (paths, record positions) and labels stay
                in memory, each batch's examples are read, decoded and resized
                in parallel, and the batches equal those of the same examples
                held in memory. Any other is read once and held in memory to
                index it by class (an infinite one, e.g. after ``.repeat()``,
                is an error: the sampler repeats by itself);
            (c) file paths [N] (list or string array) with a ``decode_fn``.
        labels: integer class labels [N] (or [N, 1]) for (a) and (c).
        classes_per_batch: P >= 2.
        samples_per_class: K >= 1.
        decode_fn: optional function applied to each fetched example (a path,
            encoded bytes, ...) in parallel, e.g.
            ``rankloss_tf.datasets.image_decoder(image_size=224)``.
        short_classes: classes with fewer than K samples are sampled with
            replacement ("repeat": a shuffled cycle of their samples),
            left out ("skip"), or rejected ("error").
        seed: integer seed of the whole pipeline.

    Raises:
        ValueError: P < 2, K < 1, fewer than P classes to sample from (after
            ``short_classes``), a class shorter than K with ``short_classes="error"``,
            labels that are not integers or do not match the data, an
            infinite dataset.

    Example:
    >>> x = np.random.rand(100, 8).astype("float32")
    >>> y = np.repeat(np.arange(10), 10)
    >>> sampler = PKSampler(x, y, classes_per_batch=4, samples_per_class=2, seed=1)
    >>> [tuple(b[0].shape) for b in sampler.dataset(epochs=1)]
    [(8, 8), (8, 8)]
    """

    def __init__(
        self, data, labels=None, *, classes_per_batch, samples_per_class, decode_fn=None, short_classes="repeat",
        seed=0,
    ):
        validate_pk(classes_per_batch, samples_per_class)
        self._source = IndexedExamples(data, labels, decode_fn)
        self._index = ClassIndex(self._source.labels, samples_per_class, short_classes)
        if self._index.num_classes < classes_per_batch:
            raise ValueError(
                f"classes_per_batch={classes_per_batch} x samples_per_class={samples_per_class} needs at least "
                f"{classes_per_batch} classes (with short_classes={short_classes!r}). "
                f"Received: data with {self._index.num_classes} usable classes"
            )
        self.classes_per_batch = classes_per_batch
        self.samples_per_class = samples_per_class
        self.seed = seed

    @property
    def classes(self):
        """The labels of the sampled classes (original values), by class position."""
        return self._index.classes

    def select_classes(self, seed, positions):
        """The classes of one batch, from the next group of the epoch's class order.

        The one step that ``HardClassSampler`` overrides.

        Args:
            seed: stateless seed of this choice, int tensor [2].
            positions: int64 tensor [P] (smaller for an epoch's kept
                remainder) of the next class positions in the shuffled order.

        Returns:
            int64 tensor of class positions (indices into ``classes``): here
            ``positions`` itself.
        """
        del seed
        return positions

    def batches_per_epoch(self, drop_remainder=True):
        """C // P, or ceil(C / P) when the remainder is kept."""
        full, rest = divmod(self._index.num_classes, self.classes_per_batch)
        return full + int(bool(rest) and not drop_remainder)

    def dataset(self, *, epochs=None, drop_remainder=True, num_parallel_calls=tf.data.AUTOTUNE,
                prefetch=tf.data.AUTOTUNE):
        """The ``tf.data.Dataset`` of ``(examples [P*K, ...], labels [P*K])`` batches.

        Args:
            epochs: number of epochs; None repeats forever (then give
                ``steps_per_epoch`` to ``model.fit``).
            drop_remainder: drop an epoch's last group when it has fewer
                than P classes.
            num_parallel_calls: parallelism of the gather / decode step.
            prefetch: batches to prefetch (AUTOTUNE by default; 0 for none).

        Returns:
            The batches, with a known cardinality. Labels are the original
            label values (never cast through floats), int32 when given as
            int32, else int64.
        """
        if epochs is not None and (not is_integer(epochs) or epochs < 1):
            raise ValueError(f"`epochs` must be None or an integer >= 1. Received: epochs={epochs!r}")
        base_seed = tf.constant([self.seed, 0], tf.int64)
        fold_in = tf.random.experimental.stateless_fold_in

        def one_epoch(epoch):
            epoch_seed = fold_in(base_seed, epoch)
            order = tf.random.experimental.stateless_shuffle(
                tf.range(self._index.num_classes, dtype=tf.int64), fold_in(epoch_seed, 0)
            )

            def batch_indices(step, group):
                batch_seed = fold_in(epoch_seed, step)
                positions = self.select_classes(fold_in(batch_seed, -1), group)
                return tf.reshape(self._index.draw(positions, batch_seed), [-1])

            groups = tf.data.Dataset.from_tensor_slices(order).batch(self.classes_per_batch, drop_remainder)
            return groups.enumerate(start=1).map(batch_indices)

        epoch_ids = tf.data.Dataset.counter() if epochs is None else tf.data.Dataset.range(epochs)
        index_batches = epoch_ids.flat_map(one_epoch)
        batch_size = self.classes_per_batch * self.samples_per_class
        dataset = self._source.batches(index_batches, batch_size, num_parallel_calls).apply(
            tf.data.experimental.assert_cardinality(
                tf.data.INFINITE_CARDINALITY if epochs is None else self.batches_per_epoch(drop_remainder) * int(epochs)
            )
        )
        return dataset.prefetch(prefetch) if prefetch else dataset


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
    """P x K batches in one call: ``PKSampler(...).dataset(...)``.

    See ``PKSampler`` for the batches, the arguments and the errors; ``epochs``,
    ``drop_remainder``, ``num_parallel_calls`` and ``prefetch`` are those of
    ``PKSampler.dataset``.

    Returns:
        A ``tf.data.Dataset`` of ``(examples [P*K, ...], labels [P*K])``.

    Example:
    >>> x = np.random.rand(100, 8).astype("float32")
    >>> y = np.repeat(np.arange(10), 10)
    >>> ds = pk_batches(x, y, classes_per_batch=4, samples_per_class=2, epochs=1)
    >>> [tuple(b[0].shape) for b in ds]
    [(8, 8), (8, 8)]
    """
    sampler = PKSampler(data, labels, classes_per_batch=classes_per_batch, samples_per_class=samples_per_class,
                        decode_fn=decode_fn, short_classes=short_classes, seed=seed)
    return sampler.dataset(epochs=epochs, drop_remainder=drop_remainder, num_parallel_calls=num_parallel_calls,
                           prefetch=prefetch)
