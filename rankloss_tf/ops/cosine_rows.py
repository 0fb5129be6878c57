"""Cosine-similarity rows of anchors against the batch and an optional memory of past samples.

The pair-based kernels of ``multi_similarity`` and ``supcon`` are functions of one row
of cosine similarities at a time: anchor a against every reference column (the batch,
then the memory of Cross-Batch Memory, ``rankloss_tf.losses.XBM``), with its
positives (same label, not a itself, a filled memory slot) and negatives (another label,
a filled slot). ``row_values`` runs such a row function over blocks of anchor rows
(``ops.blocks``): memory O(block x R), R = B + memory size, never [B, R] at once for
large batches, and the blocks are recomputed in the backward pass.

Cross-replica: ``anchors=(start, size)`` computes only those anchors' rows against the
whole (gathered) batch; the counts that normalise a loss (``ReferenceCounts``) are taken
over every anchor of the batch, so the replicas' slices together equal the full vector.
"""

from typing import NamedTuple

import tensorflow as tf

from rankloss_tf.ops.blocks import block_rows, blocked_rows
from rankloss_tf.ops.checks import nan_unless_finite, standardize_inputs


class CosineBatch(NamedTuple):
    """A checked batch: labels [B], unit-norm ``units`` [B, D], optional memory [M] / [M, D] /
    valid [M], the anchor range ``start .. start + size - 1`` and the output dtype."""

    labels: tf.Tensor
    units: tf.Tensor
    memory_labels: object
    memory_units: object
    memory_valid: object
    start: object
    size: object
    dtype: tf.DType

    @property
    def tensors(self):
        """The float tensors the losses are differentiated against."""
        return [self.units] if self.memory_units is None else [self.units, self.memory_units]

    def reference_labels(self):
        if self.memory_labels is None:
            return self.labels
        return tf.concat([self.labels, self.memory_labels], 0)

    def reference_valid(self):
        """bool [R]: filled reference slots (the batch always), or None without a memory."""
        if self.memory_valid is None:
            return None
        return tf.concat([tf.ones_like(self.labels, tf.bool), self.memory_valid], 0)


def _size(tensor, axis):
    size = tensor.shape[axis]
    return size if size is not None else tf.shape(tensor)[axis]


def cosine_batch(labels, embeddings, anchors=None, memory=None):
    """Checks a kernel's inputs and L2-normalises the embeddings (and the memory).

    Args:
        labels: class labels [B] or [B, 1].
        embeddings: float [B, D].
        anchors: optional ``(start, size)``: only those anchors' rows.
        memory: optional ``(labels [M], embeddings [M, D], valid [M] bool)`` of past samples.

    Returns:
        A ``CosineBatch``.

    Raises:
        ValueError: see ``checks.standardize_inputs``; a malformed ``anchors`` or ``memory``.

    Example:
    >>> batch = cosine_batch([0, 1], [[3.0, 4.0], [1.0, 0.0]])
    >>> batch.units.numpy().tolist()[0], batch.size
    ([0.6000000238418579, 0.800000011920929], 2)
    """
    dtype = tf.convert_to_tensor(embeddings).dtype
    labels, embeddings = standardize_inputs(labels, embeddings)
    units = tf.math.l2_normalize(embeddings, axis=1)
    if anchors is None:
        start, size = 0, _size(embeddings, 0)
    elif isinstance(anchors, (tuple, list)) and len(anchors) == 2:
        start, size = (a if isinstance(a, int) else tf.cast(a, tf.int32) for a in anchors)
    else:
        raise ValueError(f"`anchors` must be a pair (start, size). Received: anchors={anchors!r}")
    if memory is None:
        return CosineBatch(labels, units, None, None, None, start, size, dtype)
    if not isinstance(memory, (tuple, list)) or len(memory) != 3:
        raise ValueError(f"`memory` must be (labels, embeddings, valid). Received: memory={memory!r}")
    memory_labels, memory_embeddings = standardize_inputs(memory[0], memory[1])
    if memory_embeddings.shape[-1] not in (None, units.shape[-1]):
        raise ValueError("`memory` embeddings must have the dimension of `embeddings`. Received: "
                         f"memory embeddings shape={memory_embeddings.shape}, embeddings shape={embeddings.shape}")
    memory_units = tf.math.l2_normalize(tf.cast(memory_embeddings, units.dtype), axis=1)
    valid = tf.cast(tf.reshape(memory[2], [-1]), tf.bool)
    return CosineBatch(labels, units, tf.cast(memory_labels, labels.dtype), memory_units, valid, start, size, dtype)


def masked_logsumexp(x, mask, axis=1, add_one=False):
    """log(sum over ``mask`` of exp(x), + 1 when ``add_one``); 0 where ``mask`` is empty.

    PyTorch Metric Learning's ``logsumexp(keep_mask=..., add_one=...)``; stable, with
    finite zero gradients at the masked-out entries.

    Example:
    >>> x = tf.constant([[0.0, 1.0], [2.0, 3.0]])
    >>> masked_logsumexp(x, tf.constant([[True, False], [False, False]]), add_one=True).numpy().tolist()
    [0.6931471824645996, 0.0]
    """
    peak = tf.reduce_max(tf.where(mask, x, -float("inf")), axis=axis)
    if add_one:
        peak = tf.maximum(peak, 0.0)
    found = tf.reduce_any(mask, axis=axis)
    peak = tf.stop_gradient(tf.where(found, peak, tf.zeros([], x.dtype)))
    shifted = tf.where(mask, x - tf.expand_dims(peak, axis), -float("inf"))
    total = tf.reduce_sum(tf.exp(shifted), axis=axis)
    if add_one:
        total += tf.exp(-peak)
    value = peak + tf.math.log(tf.where(total > 0.0, total, tf.ones([], total.dtype)))
    return tf.where(found, value, tf.zeros([], value.dtype))


def _slice_rows(tensor, start, size):
    """Rows start .. start + size - 1 (a dynamic start with a static size under XLA)."""
    return tf.slice(tensor, tf.stack([tf.cast(start, tf.int32), 0]), tf.stack([tf.cast(size, tf.int32), -1]))


def row_values(batch, row_fn, temporaries, memory_budget=None):
    """``row_fn(cosines [r, R], positives [r, R], negatives [r, R]) -> [r]`` over the anchor rows.

    Args:
        batch: a ``CosineBatch``.
        row_fn: the loss of each row, differentiable in the cosines.
        temporaries: how many float32 [r, R] tensors ``row_fn`` keeps at once (block size).
        memory_budget: bytes for a block's intermediates (``blocks.block_rows``).

    Returns:
        Float [size] (the anchors' rows); NaN everywhere if an embedding is not finite; a
        zero gradient, not none, for an empty range.
    """
    reference_labels, valid = batch.reference_labels(), batch.reference_valid()
    # Every tensor the rows read goes through the blocked call (``blocks.blocked_rows``'s
    # constants): a tape outside a tf.function of unknown batch size needs it. ``row_fn``
    # reads only its arguments and Python values.
    constants = {"labels": batch.labels, "reference_labels": reference_labels, "start": batch.start}
    if valid is not None:
        constants["valid"] = valid

    def rows(tensors, start, size, given):
        reference = tensors[0] if len(tensors) == 1 else tf.concat(tensors, 0)
        first = given["start"] + start
        ids = first + tf.range(size)
        cosines = tf.matmul(_slice_rows(tensors[0], first, size), reference, transpose_b=True)
        same = tf.equal(tf.gather(given["labels"], ids)[:, None], given["reference_labels"][None, :])
        own = tf.equal(ids[:, None], tf.range(tf.shape(reference)[0])[None, :])
        positives, negatives = tf.logical_and(same, tf.logical_not(own)), tf.logical_not(same)
        if "valid" in given:
            positives = tf.logical_and(positives, given["valid"][None, :])
            negatives = tf.logical_and(negatives, given["valid"][None, :])
        return row_fn(cosines, positives, negatives)

    num_columns = _size(batch.units, 0) if batch.memory_units is None else tf.shape(reference_labels)[0]
    block = block_rows(batch.size, num_columns, _size(batch.units, 1), temporaries, memory_budget)
    values = blocked_rows(rows, batch.tensors, batch.size, block, constants=constants)
    values += tf.add_n([tf.reduce_sum(tensor[:0]) for tensor in batch.tensors])  # a gradient even with no row
    for tensor in batch.tensors:
        values = nan_unless_finite(values, tensor)
    return values


class ReferenceCounts(NamedTuple):
    """Per anchor (every anchor of the batch, not only the range), int32 [B]: positives and negatives."""

    positives: tf.Tensor
    negatives: tf.Tensor


def _valid_counts(labels, reference_labels, valid):
    """How many valid entries of ``reference_labels`` equal each label (one sort, two binary searches)."""
    order = tf.argsort(reference_labels, stable=True)
    ordered = tf.gather(reference_labels, order)
    filled = tf.concat([[0], tf.cumsum(tf.cast(tf.gather(valid, order), tf.int32))], 0)
    labels = tf.cast(labels, ordered.dtype)
    right = tf.searchsorted(ordered, labels, side="right")
    left = tf.searchsorted(ordered, labels, side="left")
    return tf.gather(filled, right) - tf.gather(filled, left)


def reference_counts(batch):
    """Positives and negatives of every anchor among the reference columns, O(R log R), no [B, R] mask.

    Example:
    >>> reference_counts(cosine_batch([0, 0, 1], [[1.0], [1.0], [1.0]])).positives.numpy().tolist()
    [1, 1, 0]
    """
    reference_labels, valid = batch.reference_labels(), batch.reference_valid()
    if valid is None:
        valid = tf.ones_like(reference_labels, tf.bool)
    same = _valid_counts(batch.labels, reference_labels, valid)
    total = tf.reduce_sum(tf.cast(valid, tf.int32))
    return ReferenceCounts(same - 1, total - same)

