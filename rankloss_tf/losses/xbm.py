"""Cross-Batch Memory (Wang et al. 2020): a pair-based loss over the batch and a queue of past batches."""

import keras
import tensorflow as tf

from rankloss_tf.losses.base import SERIALIZABLE, reduce_losses
from rankloss_tf.losses.multi_similarity import MultiSimilarityLoss
from rankloss_tf.losses.supcon import NTXentLoss, SupConLoss
from rankloss_tf.ops.checks import check_count, standardize_inputs

__all__ = ["XBM"]


@SERIALIZABLE
class XBM(keras.losses.Loss):
    """Cross-Batch Memory (Wang et al. 2020): a pair-based loss over the batch and a queue of past batches.

    The wrapped loss's anchors are the batch's samples; their positives and negatives come
    from the batch and from the last ``memory_size`` embeddings (and labels) of earlier
    steps, kept in a first-in first-out queue of non-trainable ``tf.Variable``s. The queue
    holds detached copies (no gradient reaches past batches); the batch is written into it
    after the loss is computed, so a step never pairs a sample with its own copy. An empty
    queue gives the wrapped loss exactly. (PyTorch Metric Learning's ``CrossBatchMemory``
    writes the batch first and skips those self pairs: the same pairs, except that PML's
    queue of size M then holds M - B past samples.)

    Per replica: under a ``tf.distribute`` strategy, build the loss inside ``strategy.scope()``;
    the queue is a sync-on-read variable, one per replica, fed by that replica's batches.
    Gathering the queues would move memory_size x D floats across devices every step for
    what the XBM paper gets from one device's memory; the wrapped loss must not be
    ``cross_replica``. The queue is not saved with a model (it refills in memory_size / B
    steps); ``reset()`` empties it. Every call (``evaluate`` too) enqueues its batch.

    Args:
        loss: a ``MultiSimilarityLoss``, ``SupConLoss`` or ``NTXentLoss`` (their kernels take ``memory``).
        memory_size: queue length M >= 1 (the paper: about half the training set for small sets).
        embedding_dim: D, the width of the embeddings.
        name, reduction, dtype: Keras' ``Loss`` arguments.

    Example:
    >>> xbm = XBM(MultiSimilarityLoss(), memory_size=8, embedding_dim=2)
    >>> batch = ([0, 0, 1, 1], [[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]])
    >>> round(float(xbm(*batch)), 4), int(xbm.filled())
    (0.2688, 4)
    """

    def __init__(self, loss, memory_size, embedding_dim, name="xbm", reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if isinstance(loss, dict):
            loss = keras.saving.deserialize_keras_object(loss)
        if not isinstance(loss, (MultiSimilarityLoss, SupConLoss, NTXentLoss)) or loss.cross_replica:
            raise ValueError("`loss` must be a MultiSimilarityLoss, SupConLoss or NTXentLoss without cross_replica. "
                             f"Received: loss={loss!r}")
        self.loss, self.memory_size = loss, check_count("memory_size", memory_size)
        self.embedding_dim = check_count("embedding_dim", embedding_dim)
        per_replica = dict(trainable=False, synchronization=tf.VariableSynchronization.ON_READ,
                           aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        self._embeddings = tf.Variable(tf.zeros([memory_size, embedding_dim]), name="xbm_embeddings", **per_replica)
        self._labels = tf.Variable(tf.zeros([memory_size], tf.int64), name="xbm_labels", **per_replica)
        self._valid = tf.Variable(tf.zeros([memory_size], tf.bool), name="xbm_valid", **per_replica)
        self._next = tf.Variable(0, dtype=tf.int64, name="xbm_next", **per_replica)

    def filled(self):
        """How many queue slots hold a past sample."""
        return tf.reduce_sum(tf.cast(self._valid, tf.int32))

    def reset(self):
        """Empties the queue."""
        self._valid.assign(tf.zeros_like(self._valid))
        self._next.assign(0)

    def __call__(self, y_true, y_pred, sample_weight=None):
        with tf.name_scope(self.name):
            labels, embeddings = standardize_inputs(y_true, y_pred)
            memory = (self._labels.read_value(), self._embeddings.read_value(), self._valid.read_value())
            losses = type(self.loss).kernel(tf.cast(labels, tf.int64), embeddings, memory=memory,
                                            **self.loss.kernel_params())
            with tf.control_dependencies([losses]):
                self._enqueue(tf.cast(labels, tf.int64), tf.stop_gradient(embeddings))
            return reduce_losses(tf.cast(losses, self.dtype), sample_weight, self.reduction, self.dtype, self.name)

    def _enqueue(self, labels, embeddings):
        """Writes the last min(B, M) samples of the batch after the newest entry (a ring)."""
        size = tf.shape(labels, out_type=tf.int64)[0]
        kept = tf.minimum(size, self.memory_size)
        labels, embeddings = labels[size - kept:], tf.cast(embeddings[size - kept:], self._embeddings.dtype)
        slots = ((self._next + tf.range(kept, dtype=tf.int64)) % self.memory_size)[:, None]
        self._embeddings.assign(tf.tensor_scatter_nd_update(self._embeddings, slots, embeddings))
        self._labels.assign(tf.tensor_scatter_nd_update(self._labels, slots, labels))
        self._valid.assign(tf.tensor_scatter_nd_update(self._valid, slots, tf.ones([kept], tf.bool)))
        self._next.assign((self._next + kept) % self.memory_size)

    def get_config(self):
        config = super().get_config()
        config.update(loss=keras.saving.serialize_keras_object(self.loss), memory_size=self.memory_size,
                      embedding_dim=self.embedding_dim)
        return config
