"""Sample indices grouped by class, and seeded per-class sampling in TensorFlow."""

import numpy as np
import tensorflow as tf

SHORT_CLASS_RULES = ("repeat", "skip", "error")


def validate_pk(classes_per_batch, samples_per_class):
    """Checks P (classes per batch) and K (samples per class).

    Raises:
        ValueError: if ``classes_per_batch`` < 2 or ``samples_per_class`` < 1.
    """
    if not is_integer(classes_per_batch) or classes_per_batch < 2:
        raise ValueError(
            "`classes_per_batch` (P) must be an integer >= 2: a batch needs negatives. "
            f"Received: classes_per_batch={classes_per_batch!r}"
        )
    if not is_integer(samples_per_class) or samples_per_class < 1:
        raise ValueError(
            f"`samples_per_class` (K) must be an integer >= 1. Received: samples_per_class={samples_per_class!r}"
        )


def is_integer(value):
    """True for a Python or NumPy integer (not a bool)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def as_label_array(labels):
    """Returns ``labels`` as a 1-D integer NumPy array (shape [N] or [N, 1] accepted).

    Raises:
        ValueError: for non-integer labels or a rank other than 1 (or [N, 1]).
    """
    array = np.asarray(labels)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise ValueError(f"`labels` must have shape [N] or [N, 1]. Received: shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            "`labels` must be integer class ids (they are never cast through floats). "
            f"Received: dtype {array.dtype}"
        )
    if array.dtype not in (np.int32, np.int64):
        array = array.astype(np.int64)
    return array


class ClassIndex:
    """The positions of each class's samples, built once with one NumPy argsort.

    Sampling then happens in TensorFlow from a class position (0..num_classes-1)
    and a stateless seed: no Python runs per batch.

    Args:
        labels: integer labels [N].
        samples_per_class: K, the samples drawn per class.
        short_classes: what to do with classes holding fewer than K samples:
            "repeat" samples them with replacement (a shuffled cycle of their
            samples, so each sample appears before any appears twice), "skip"
            leaves them out, "error" raises a ValueError.

    Attributes:
        classes: the kept class labels (original values, sorted) [C].
        max_count: the size of the largest kept class.
    """

    def __init__(self, labels, samples_per_class, short_classes="repeat"):
        if short_classes not in SHORT_CLASS_RULES:
            raise ValueError(
                f"`short_classes` must be one of {SHORT_CLASS_RULES}. Received: short_classes={short_classes!r}"
            )
        labels = as_label_array(labels)
        if labels.size == 0:
            raise ValueError("`labels` is empty. Received: 0 samples")
        order = np.argsort(labels, kind="stable")
        classes, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
        short = counts < samples_per_class
        if short.any() and short_classes == "error":
            raise ValueError(
                f"{int(short.sum())} classes have fewer than samples_per_class={samples_per_class} samples "
                "and short_classes='error' (sampling without replacement). "
                f"Received: class {classes[short][0]!r} with {counts[short][0]} samples"
            )
        keep = ~short if short_classes == "skip" else np.ones_like(short)
        self.samples_per_class = int(samples_per_class)
        self.classes = classes[keep]
        self.max_count = int(counts[keep].max()) if keep.any() else 0
        self._order = tf.constant(order.astype(np.int64))
        self._starts = tf.constant(starts[keep].astype(np.int64))
        self._counts = tf.constant(counts[keep].astype(np.int64))

    @property
    def num_classes(self):
        """The number of classes that can be sampled."""
        return int(self.classes.size)

    def draw(self, positions, seed, samples=None):
        """Draws ``samples`` sample indices for each class position, in TensorFlow.

        Within a class, samples are distinct while the class has enough of them;
        a short class (kept by "repeat") cycles through a shuffled order of its
        samples. Cost O(P x largest class size) per call.

        Args:
            positions: int tensor [P] of class positions (0..num_classes-1).
            seed: stateless seed, int tensor [2].
            samples: samples per class; defaults to K.

        Returns:
            int64 tensor [P, samples] of indices into the data.
        """
        samples = self.samples_per_class if samples is None else samples
        positions = tf.cast(positions, tf.int64)
        starts = tf.gather(self._starts, positions)
        counts = tf.gather(self._counts, positions)
        width = self.max_count
        keys = tf.random.stateless_uniform([tf.size(positions), width], seed)
        valid = tf.range(width, dtype=tf.int64)[tf.newaxis, :] < counts[:, tf.newaxis]
        # Valid positions get keys in (-1, 0], padding -2: top_k returns a random
        # order of the valid positions first.
        _, shuffled = tf.math.top_k(tf.where(valid, -keys, -2.0), k=min(samples, width))
        take = tf.range(samples, dtype=tf.int64)[tf.newaxis, :] % counts[:, tf.newaxis]
        local = tf.gather(tf.cast(shuffled, tf.int64), take, batch_dims=1)
        return tf.gather(self._order, starts[:, tf.newaxis] + local)
