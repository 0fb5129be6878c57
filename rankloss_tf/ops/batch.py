"""Batch geometry shared by the kernels: a checked batch, its anchor rows, their masks and distances.

A kernel standardises its inputs once into a ``_Batch`` (anchors ``start .. start +
size - 1`` against the batch itself or a reference set), computes per-anchor values in
blocks of rows (``rankloss_tf.ops.blocks``) from ``_row_geometry`` / ``_row_masks``,
scales them with ``_per_anchor_mean`` so that their mean is the loss, and ends with
``_finish`` (NaN unless every embedding is finite, the input dtype).
"""

from typing import NamedTuple

import tensorflow as tf

from rankloss_tf.ops.blocks import block_rows
from rankloss_tf.ops.checks import nan_unless_finite, standardize_inputs
from rankloss_tf.ops.distances import pairwise_distances
from rankloss_tf.ops.masks import label_counts

# How many float32 [rows, columns] tensors each loss keeps alive at once (block sizes).
_TEMPORARIES = {"semihard": 16, "hard": 12, "contrastive": 8, "npair": 8, "angular": 12}


def _per_anchor_mean(numerators, count, num_anchors):
    """Scales per-anchor sums so that their mean over ``num_anchors`` anchors is ``sum / count``."""
    return tf.math.divide_no_nan(numerators * tf.cast(num_anchors, numerators.dtype), tf.cast(count, numerators.dtype))


class _Batch(NamedTuple):
    """A standardised batch: anchors ``start .. start + size - 1`` of ``labels`` / ``embeddings``
    against ``reference_labels`` / ``reference`` (the batch itself when ``exclude_self``)."""

    labels: tf.Tensor
    embeddings: tf.Tensor
    reference_labels: tf.Tensor
    reference: tf.Tensor
    exclude_self: bool
    whole: bool
    start: object
    size: object
    dtype: tf.DType

    @property
    def tensors(self):
        """The float tensors the losses are differentiated against."""
        return [self.embeddings] if self.exclude_self else [self.embeddings, self.reference]

    def rows(self, tensors, start, size):
        """``(query rows [size, D], reference [R, D], row ids [size])`` of anchor rows start.. of the range."""
        first = self.start + start
        return _slice_rows(tensors[0], first, size), tensors[-1], first + tf.range(size)

    def num_anchors(self):
        return tf.shape(self.labels)[0]

    def block(self, loss, memory_budget):
        return block_rows(self.size, _static_or_dynamic(self.reference, 0), _static_or_dynamic(self.embeddings, 1),
                          _TEMPORARIES[loss], memory_budget)


def _slice_rows(tensor, start, size):
    """Rows start .. start + size - 1 (a dynamic start with a static size under XLA)."""
    begin = tf.stack([tf.cast(start, tf.int32)] + [0] * (tensor.shape.rank - 1))
    return tf.slice(tensor, begin, tf.stack([tf.cast(size, tf.int32)] + [-1] * (tensor.shape.rank - 1)))


def _static_or_dynamic(tensor, axis):
    size = tensor.shape[axis]
    return size if size is not None else tf.shape(tensor)[axis]


def _check_anchors(anchors):
    if anchors is None:
        return None
    if not isinstance(anchors, (tuple, list)) or len(anchors) != 2:
        raise ValueError(f"`anchors` must be a pair (start, size). Received: anchors={anchors!r}")
    return tuple(a if isinstance(a, int) else tf.cast(a, tf.int32) for a in anchors)


def _batch(labels, embeddings, anchors=None, reference_labels=None, reference_embeddings=None):
    """Checks the inputs of a kernel and returns its ``_Batch``."""
    dtype = tf.convert_to_tensor(embeddings).dtype
    labels, embeddings = standardize_inputs(labels, embeddings)
    anchors = _check_anchors(anchors)
    start, size = anchors if anchors is not None else (0, _static_or_dynamic(embeddings, 0))
    if reference_labels is None and reference_embeddings is None:
        return _Batch(labels, embeddings, labels, embeddings, True, anchors is None, start, size, dtype)
    if reference_labels is None or reference_embeddings is None:
        raise ValueError(
            "`reference_labels` and `reference_embeddings` go together. Received: "
            f"reference_labels is None: {reference_labels is None}, "
            f"reference_embeddings is None: {reference_embeddings is None}"
        )
    reference_labels, reference_embeddings = standardize_inputs(reference_labels, reference_embeddings)
    if embeddings.shape[-1] is not None and reference_embeddings.shape[-1] not in (None, embeddings.shape[-1]):
        raise ValueError(
            "`embeddings` and `reference_embeddings` must have the same dimension. "
            f"Received: embeddings.shape={embeddings.shape}, "
            f"reference_embeddings.shape={reference_embeddings.shape}"
        )
    reference_embeddings = tf.cast(reference_embeddings, embeddings.dtype)
    reference_labels = tf.cast(reference_labels, labels.dtype)
    return _Batch(labels, embeddings, reference_labels, reference_embeddings, False, anchors is None, start, size, dtype)


def _row_masks(batch, rows, num_columns):
    """Positives and negatives [size, R] of anchor rows ``rows``; the anchor's own column is neither."""
    same = tf.equal(tf.gather(batch.labels, rows)[:, None], batch.reference_labels[None, :])
    if not batch.exclude_self:
        return same, tf.logical_not(same), None
    own = tf.equal(rows[:, None], tf.range(num_columns)[None, :])
    return tf.logical_and(same, tf.logical_not(own)), tf.logical_not(same), own


def _row_geometry(batch, distance, tensors, start, size):
    """Distances, positives and negatives [size, R] of anchor rows ``start..`` of the range."""
    queries, reference, rows = batch.rows(tensors, start, size)
    positives, negatives, own = _row_masks(batch, rows, tf.shape(reference)[0])
    if callable(distance) and batch.exclude_self:  # a callable takes the whole batch: its rows
        distances = tf.gather(pairwise_distances(reference, distance), rows)
    else:
        distances = pairwise_distances(queries, distance, reference=reference)
    if own is not None:
        distances = tf.where(own, tf.zeros([], distances.dtype), distances)
    return distances, positives, negatives


def _num_positive_pairs(batch):
    """Ordered positive pairs of the whole batch (every anchor, not only the range)."""
    counts = label_counts(batch.labels, batch.reference_labels)
    return tf.reduce_sum(counts) - (tf.shape(batch.labels)[0] if batch.exclude_self else 0)


def _finish(batch, losses, no_rows=False):
    """NaN unless every embedding is finite, in the dtype of the input.

    With no row computed (``no_rows``, or an empty range of anchors), a zero gradient, not none.
    """
    if no_rows or (isinstance(batch.size, int) and batch.size == 0):
        losses += tf.add_n([tf.reduce_sum(tensor[:0]) for tensor in batch.tensors])
    for tensor in batch.tensors:
        losses = nan_unless_finite(losses, tensor)
    return tf.cast(losses, batch.dtype)


def _scatter_sum(values, ids, valid, size):
    """[size] sums of ``values`` [n] at ``ids`` [n], the entries without ``valid`` left out."""
    return tf.math.unsorted_segment_sum(values, tf.where(valid, ids, size), size + 1)[:-1]


@tf.custom_gradient
def _gather_rows(params, indices):
    """``tf.gather(params, indices)`` with a dense gradient (a sum over repeated rows).

    ``tf.gather`` alone hands a ``tf.IndexedSlices`` gradient to a ``tf.Variable`` input.
    """

    def gradient(upstream):
        return tf.math.unsorted_segment_sum(upstream, indices, tf.shape(params)[0]), None

    return tf.gather(params, indices), gradient
