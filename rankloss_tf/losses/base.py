"""The contract every loss class keeps: exact labels, per-anchor kernels, Keras' reduction, replicas.

Every class takes ``y_true`` = integer class labels [B] or [B, 1] and ``y_pred`` =
embeddings [B, D] (cosines [B, C] for a ``ClassLoss``). Labels keep their integer dtype
(Keras would cast them to float32, merging ids above 2**24). The kernel returns
per-anchor losses [B]; Keras reduces them (default "sum_over_batch_size") through
Keras' public ``Loss.__call__``, which also makes the per-replica scaling of
``tf.distribute`` right. A batch of zero samples gives loss 0; a non-finite embedding
gives NaN (so ``TerminateOnNaN`` stops); string labels are refused (map them to
integer ids), uint64 ids are compared exactly.

With ``cross_replica=True``, under a ``tf.distribute`` strategy with several replicas, each
replica gathers the labels and embeddings of all replicas and computes its own anchors'
losses against the global batch (the kernels' ``anchors`` argument: O(b x G) work and
memory for b local anchors, not G^2); N-pair tuples and angular pairs are formed over
the global batch. The contrastive, angular and N-pair losses split the global batch's
work into equal shares instead (the kernels' ``share`` argument: the unordered pairs,
each computed once; the anchors sorted by label, whole classes together; the tuples),
wherever the rows are, and sum the replicas' per-anchor vectors with one all-reduce of
G values. The summed gradients equal those of one device on the global batch.
Without a strategy the option changes nothing.
"""

import keras
import tensorflow as tf

from rankloss_tf.ops.checks import check_non_negative, check_positive, standardize_inputs
from rankloss_tf.ops.distances import check_distance

__all__ = ["RankingLoss", "ClassLoss", "MarginDistanceLoss", "reduce_losses"]

# Every class of this package is registered as "rankloss_tf>ClassName": the names .keras
# files of every release hold (the module a class lives in is not part of the name).
SERIALIZABLE = keras.saving.register_keras_serializable(package="rankloss_tf")


class _Reduction(keras.losses.Loss):
    """Keras' public reduction of per-anchor losses: ``Loss.__call__`` over an identity ``call``.

    ``keras.losses.Loss.__call__`` casts ``y_true`` to the loss dtype, which would merge
    integer labels above 2**24; the ranking losses compute their per-anchor vector
    first and hand only that vector to Keras for the weighting and reduction.
    """

    def call(self, y_true, y_pred):
        return y_pred


def reduce_losses(losses, sample_weight, reduction, dtype, name):
    """Keras' reduction of ``losses`` [B]; 0, not an empty tensor, for a batch of zero samples.

    Example:
    >>> float(reduce_losses(tf.constant([1.0, 3.0]), None, "sum_over_batch_size", "float32", "loss"))
    2.0
    """
    if losses.shape.rank == 1 and losses.shape[0] == 0 and reduction not in (None, "none"):
        return tf.zeros([], dtype)
    return _Reduction(name=name, reduction=reduction, dtype=dtype)(losses, losses, sample_weight=sample_weight)


def _gather_replicas(labels, embeddings):
    """All replicas' (labels, embeddings), this replica's slice of the global batch, the context.

    Returns ``(labels, embeddings, start, size, context)``, or ``None`` outside a
    multi-replica context.
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync <= 1:
        return None
    labels, embeddings = standardize_inputs(labels, embeddings)
    # Pin both to this replica's device: MultiWorkerMirroredStrategy takes the gather's
    # destination from the tensor's device, and a tf.function input has none.
    labels, embeddings = tf.identity(labels), tf.identity(embeddings)
    local_size = tf.shape(labels)[0]
    sizes = context.all_gather(local_size[None], axis=0)
    replica = tf.cast(context.replica_id_in_sync_group, tf.int32)
    start = tf.reduce_sum(sizes[:replica])
    global_labels = context.all_gather(labels, axis=0)
    global_embeddings = context.all_gather(embeddings, axis=0)
    return global_labels, global_embeddings, start, local_size, context


class RankingLoss(keras.losses.Loss):
    """Base class: exact labels, per-anchor kernels, optional cross-replica mining.

    Subclasses set ``kernel`` (an ``ops`` function) and implement ``kernel_params()``.

    Args:
        cross_replica: mine over the global batch under a ``tf.distribute`` strategy.
        name: loss name.
        reduction: Keras reduction of the per-anchor losses.
        dtype: dtype of the returned loss (default: Keras' floatx).

    Example:
    >>> from rankloss_tf import ops
    >>> class SquaredSemiHard(RankingLoss):
    ...     kernel = staticmethod(ops.triplet_semihard_loss)
    ...     def kernel_params(self):
    ...         return {"margin": 0.2, "distance": "squared_l2"}
    >>> round(float(SquaredSemiHard()([0, 0, 1], [[0.0, 1.0], [1.0, 0.0], [0.0, 0.9]])), 4)
    1.29
    """

    kernel = None
    # Kernels with a ``share`` argument: under cross_replica, each replica computes an equal
    # share of the global batch's work (N-pair tuples, contrastive pairs, angular classes),
    # wherever its rows are, and the replicas sum their per-anchor vectors. The others
    # compute the replica's own anchors against the global batch.
    shares = False

    def __init__(self, cross_replica=False, name=None, reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.cross_replica = bool(cross_replica)

    def kernel_params(self):
        """The kernel's keyword arguments."""
        raise NotImplementedError

    def __call__(self, y_true, y_pred, sample_weight=None):
        """The reduced loss; labels keep their integer dtype (Keras' mask is not used)."""
        with tf.name_scope(self.name):
            losses = tf.cast(self.call(tf.convert_to_tensor(y_true), tf.convert_to_tensor(y_pred)), self.dtype)
            return reduce_losses(losses, sample_weight, self.reduction, self.dtype, self.name)

    def call(self, y_true, y_pred):
        """Per-anchor losses [B] for labels ``y_true`` and embeddings ``y_pred``."""
        kernel = type(self).kernel
        gathered = _gather_replicas(y_true, y_pred) if self.cross_replica else None
        if gathered is None:
            return kernel(y_true, y_pred, **self.kernel_params())
        labels, embeddings, start, size, context = gathered
        if not type(self).shares:
            losses = kernel(labels, embeddings, anchors=(start, size), **self.kernel_params())
            return tf.cast(losses, y_pred.dtype)
        share = (context.replica_id_in_sync_group, context.num_replicas_in_sync)
        losses = context.all_reduce("SUM", kernel(labels, embeddings, share=share, **self.kernel_params()))
        return tf.cast(tf.slice(losses, start[None], size[None]), y_pred.dtype)

    def get_config(self):
        config = super().get_config()
        config.update(self.kernel_params())
        config["cross_replica"] = self.cross_replica
        return config


class MarginDistanceLoss(RankingLoss):
    """Configuration shared by the losses that take a ``margin`` and a ``distance``.

    Example:
    >>> from rankloss_tf.losses import ContrastiveLoss
    >>> issubclass(ContrastiveLoss, MarginDistanceLoss)
    True
    """

    def __init__(self, margin, distance, cross_replica, name, **kwargs):
        super().__init__(cross_replica=cross_replica, name=name, **kwargs)
        self.margin = check_non_negative("margin", margin)
        self.distance = check_distance(distance)

    def kernel_params(self):
        return {"margin": self.margin, "distance": self.distance}


class ClassLoss(RankingLoss):
    """Base of the losses on ``ClassCosines`` output: ``y_pred`` = cosines [B, C], ``y_true`` = ids 0 .. C - 1.

    ``class_head = True`` tells a training loop (``rankloss-tf train``) to train through
    ``with_class_head``, with ``head_options()``: the head's ``sub_centers`` and the class
    vectors' learning-rate multiplier ``class_lr_multiplier`` (Kim et al. 2020 train the
    proxies at 100 times the network's rate; see ``ClassCosines``). Per replica only (no
    ``cross_replica``): see ``ops.proxy`` and ``ops.margin_softmax``.

    Args:
        class_lr_multiplier: > 0 (default 1), the class vectors' learning rate
            relative to the embedding network's, under Adam-like optimizers.
        cross_replica, name, reduction, dtype: as ``RankingLoss``.

    Example:
    >>> from rankloss_tf.losses import CosFaceLoss
    >>> loss = CosFaceLoss(class_lr_multiplier=100)
    >>> isinstance(loss, ClassLoss), loss.class_head, loss.head_options()
    (True, True, {'sub_centers': 1, 'lr_multiplier': 100.0})
    """

    class_head = True
    sub_centers = 1

    def __init__(self, cross_replica=False, name=None, class_lr_multiplier=1.0, **kwargs):
        if cross_replica:
            raise ValueError(f"{type(self).__name__} computes per replica. Received: cross_replica={cross_replica!r}")
        super().__init__(cross_replica=False, name=name, **kwargs)
        self.class_lr_multiplier = check_positive("class_lr_multiplier", class_lr_multiplier)

    def head_options(self):
        """The ``with_class_head`` arguments this loss trains with: ``sub_centers``, ``lr_multiplier``."""
        return {"sub_centers": self.sub_centers, "lr_multiplier": self.class_lr_multiplier}

    def get_config(self):
        # The default is left out: the configs saved before the option existed stay the same.
        config = super().get_config()
        if self.class_lr_multiplier != 1.0:
            config["class_lr_multiplier"] = self.class_lr_multiplier
        return config
