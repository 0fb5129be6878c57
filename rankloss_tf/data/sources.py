"""Random access to examples by index: in-memory arrays, streamed references, or a materialised tf.data.Dataset."""

import numpy as np
import tensorflow as tf

from rankloss_tf.data.class_index import as_label_array
from rankloss_tf.references import references_of


class IndexedExamples:
    """Examples that can be fetched by index inside a tf.data pipeline.

    Args:
        data: the examples, one of
            (a) an array / tensor [N, ...] or a nested structure (dict, tuple) of them;
            (b) a ``tf.data.Dataset`` of (example, label) pairs, with ``labels=None``:
                a dataset of ``rankloss_tf.datasets.load`` that reads files (a
                folder, TFRecords, local Cars196, TFDS) keeps only its references
                (paths, record positions) and labels, and reads the examples per
                batch (``rankloss_tf.references``); any other is iterated once
                and held in memory (examples and labels);
            (c) file paths (a list or string array [N]) with a ``decode_fn``.
        labels: integer labels [N] for (a) and (c); None for (b).
        decode_fn: optional function mapping one fetched example (e.g. a path
            or encoded bytes, a scalar string tensor) to the model input; for a
            streamed dataset it applies to the example read.

    Raises:
        ValueError: for missing / extra labels or mismatched lengths.
    """

    read_many = None  # references read a batch at a time (``References.read_many``)

    def __init__(self, data, labels=None, decode_fn=None):
        if isinstance(data, tf.data.Dataset):
            if labels is not None:
                raise ValueError(
                    "A tf.data.Dataset must yield (example, label) pairs; do not pass `labels`. "
                    f"Received: labels of type {type(labels).__name__}"
                )
            references = references_of(data)
            if references is None:
                data, labels = _materialise(data)
            else:
                data, labels, decode_fn = references.items, references.labels, _after(references.read, decode_fn)
                if references.read_many is not None and decode_fn is references.read:
                    self.read_many, decode_fn = references.read_many, None
        elif labels is None:
            raise ValueError("`labels` is required unless `data` is a tf.data.Dataset. Received: labels=None")
        self.labels = as_label_array(labels)
        if isinstance(data, (list, tuple)) and data and isinstance(data[0], (str, bytes)):
            data = np.asarray(data)
        self.examples = tf.nest.map_structure(tf.convert_to_tensor, data)
        for leaf in tf.nest.flatten(self.examples):
            if leaf.shape.rank == 0 or leaf.shape[0] != self.labels.shape[0]:
                raise ValueError(
                    f"Every example array needs the labels' length {self.labels.shape[0]} as first dimension. "
                    f"Received: shape {leaf.shape}"
                )
        self.decode_fn = decode_fn
        self._labels = tf.constant(self.labels)

    def batches(self, index_batches, batch_size, num_parallel_calls):
        """Maps a dataset of index vectors [B] to (examples [B, ...], labels [B]) batches.

        Arrays are gathered in one ``tf.gather`` per batch; with a ``decode_fn``
        every example is decoded in parallel, then the batches are rebuilt with
        the same sizes (so only the last input batch may be smaller than ``batch_size``).
        """
        if self.decode_fn is None:
            return index_batches.map(self.gather, num_parallel_calls=num_parallel_calls, deterministic=True)
        return (
            index_batches.unbatch()
            .map(self._decode_one, num_parallel_calls=num_parallel_calls, deterministic=True)
            .batch(batch_size)
        )

    def gather(self, indices):
        """Fetches undecoded examples (read, for references read a batch at a time) and labels at ``indices`` [B]."""
        examples = tf.nest.map_structure(lambda leaf: tf.gather(leaf, indices), self.examples)
        if self.read_many is not None:
            examples = self.read_many(examples)
        return examples, tf.gather(self._labels, indices)

    def _decode_one(self, index):
        example, label = self.gather(index)
        return self.decode_fn(example), label


def _after(read, decode_fn):
    """``read``, then ``decode_fn`` when one is given."""
    return read if decode_fn is None else lambda item: decode_fn(read(item))


def _check_finite(dataset):
    """Refuses a dataset that reading to its end would never finish.

    Infinite cardinality (e.g. ``.repeat()``) is refused; so is an unknown one
    read from an infinite dataset (e.g. ``.repeat().filter(...)``), which
    ``tf.data.experimental.assert_cardinality(n)`` lets through when it is finite.
    """
    cardinality = int(dataset.cardinality())
    if cardinality == tf.data.INFINITE_CARDINALITY:
        raise ValueError(
            "The dataset is infinite (e.g. `.repeat()`), so it cannot be read into memory: pass the finite "
            "dataset, the sampler repeats it by itself (`epochs=None`). Received: cardinality INFINITE"
        )
    if cardinality == tf.data.UNKNOWN_CARDINALITY and _reads_infinite(dataset):
        raise ValueError(
            "The dataset's size is unknown and it reads from an infinite dataset (e.g. `.repeat()` before "
            "`.filter()`), so reading it may never end: pass the finite dataset, or declare its size with "
            "`tf.data.experimental.assert_cardinality(n)`. Received: cardinality UNKNOWN"
        )


def _reads_infinite(dataset):
    """Whether an input of ``dataset``, however deep and not cut by a ``.take(n)``, has infinite cardinality."""
    pending = [dataset]
    while pending:
        node = pending.pop()
        if int(node.cardinality()) == tf.data.INFINITE_CARDINALITY:
            return True
        if type(node).__name__ != "_TakeDataset":
            pending.extend(node._inputs())  # tf.data exposes a pipeline's inputs only through this method.
    return False


def _materialise(dataset):
    """Reads a dataset of (example, label) pairs into NumPy arrays, in one pass."""
    spec = dataset.element_spec
    if not (isinstance(spec, tuple) and len(spec) == 2):
        raise ValueError(f"The dataset must yield (example, label) pairs. Received: element_spec {spec}")
    _check_finite(dataset)
    try:
        chunks = list(dataset.batch(4096).as_numpy_iterator())
    except tf.errors.InvalidArgumentError as error:
        raise ValueError(
            "The dataset's examples differ in shape, so they cannot be held in memory as arrays: resize "
            "them, or pass file paths / encoded bytes with a `decode_fn`. "
            f"Received: element_spec {spec}"
        ) from error
    if not chunks:
        raise ValueError("The dataset is empty. Received: 0 elements")
    examples = tf.nest.map_structure(lambda *parts: np.concatenate(parts), *[chunk[0] for chunk in chunks])
    labels = np.concatenate([chunk[1] for chunk in chunks])
    return examples, labels
