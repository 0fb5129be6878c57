"""Keras ``Loss`` classes: thin, serialisable wrappers over ``rankloss_tf.ops`` kernels.

Every class takes ``y_true`` = integer class labels [B] or [B, 1] and ``y_pred`` =
embeddings [B, D]. Labels keep their integer dtype (Keras would cast them to float32,
merging ids above 2**24). The kernel returns per-anchor losses [B]; Keras reduces them
(default "sum_over_batch_size") through Keras' public ``Loss.__call__``, which also
makes the per-replica scaling of ``tf.distribute`` right. A batch of zero samples gives
loss 0; a non-finite embedding gives NaN (so ``TerminateOnNaN`` stops); string labels
are refused (map them to integer ids), uint64 ids are compared exactly.

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

Example:
>>> import keras
>>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
>>> model.compile(optimizer="adam", loss=AngularLoss(alpha=45))
"""

import importlib

import keras
import tensorflow as tf

from rankloss_tf.ops import losses as kernels
from rankloss_tf.ops.checks import check_alpha, check_choice, check_non_negative, standardize_inputs
from rankloss_tf.ops.distances import check_distance

__all__ = [
    "RankingLoss",
    "ContrastiveLoss",
    "TripletSemiHardLoss",
    "TripletHardLoss",
    "NPairLoss",
    "AngularLoss",
    "NPairAngularLoss",
    "LOSSES",
    "registry",
    "get",
]


class _Reduction(keras.losses.Loss):
    """Keras' public reduction of per-anchor losses: ``Loss.__call__`` over an identity ``call``.

    ``keras.losses.Loss.__call__`` casts ``y_true`` to the loss dtype, which would merge
    integer labels above 2**24; the ranking losses compute their per-anchor vector
    first and hand only that vector to Keras for the weighting and reduction.
    """

    def call(self, y_true, y_pred):
        return y_pred


def _reduce(losses, sample_weight, reduction, dtype, name):
    """Keras' reduction of ``losses`` [B]; 0, not an empty tensor, for a batch of zero samples."""
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
            return _reduce(losses, sample_weight, self.reduction, self.dtype, self.name)

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


class _MarginDistanceLoss(RankingLoss):
    """Configuration shared by the losses that take a ``margin`` and a ``distance``."""

    def __init__(self, margin, distance, cross_replica, name, **kwargs):
        super().__init__(cross_replica=cross_replica, name=name, **kwargs)
        self.margin = check_non_negative("margin", margin)
        self.distance = check_distance(distance)

    def kernel_params(self):
        return {"margin": self.margin, "distance": self.distance}


@keras.saving.register_keras_serializable(package="rankloss_tf")
class ContrastiveLoss(_MarginDistanceLoss):
    """Contrastive loss over all pairs of the batch; see ``ops.contrastive_loss``.

    l(a, b) = d^2 for same-label pairs, max(margin - d, 0)^2 otherwise, d = D[a, b].

    Reference: Hadsell, Chopra, LeCun, "Dimensionality Reduction by Learning an
    Invariant Mapping", CVPR 2006.

    Args:
        margin: float >= 0 (default 1.0).
        distance: "l2" (default), "squared_l2" or "cosine".
        cross_replica, name, reduction, dtype: see ``RankingLoss``.

    Example:
    >>> loss = ContrastiveLoss(margin=1.0)
    >>> float(loss([0, 0], [[0.0, 0.0], [0.0, 0.0]]))
    0.0
    """

    kernel = staticmethod(kernels.contrastive_loss)
    shares = True

    def __init__(self, margin=1.0, distance="l2", cross_replica=False, name="contrastive_loss", **kwargs):
        super().__init__(margin, distance, cross_replica, name, **kwargs)


@keras.saving.register_keras_serializable(package="rankloss_tf")
class TripletSemiHardLoss(_MarginDistanceLoss):
    """Triplet loss with semi-hard negative mining (FaceNet), equal to tfa 0.23's.

    For each ordered positive pair (a, p): n* = the closest negative farther than p
    (else the farthest negative); l = max(D[a, p] - D[a, n*] + margin, 0), averaged over
    positive pairs. O(B^2) memory; see ``ops.triplet_semihard_loss``.

    Reference: Schroff et al., "FaceNet", CVPR 2015.

    Args:
        margin: float >= 0 (default 1.0).
        distance: "l2" (default, not squared), "squared_l2" or "cosine".
        cross_replica, name, reduction, dtype: see ``RankingLoss``.

    Example:
    >>> loss = TripletSemiHardLoss()
    >>> round(float(loss([0, 0, 1], [[0.0, 1.0], [1.0, 0.0], [0.0, 0.9]])), 4)
    1.6915
    """

    kernel = staticmethod(kernels.triplet_semihard_loss)

    def __init__(self, margin=1.0, distance="l2", cross_replica=False, name="triplet_semihard_loss", **kwargs):
        super().__init__(margin, distance, cross_replica, name, **kwargs)


@keras.saving.register_keras_serializable(package="rankloss_tf")
class TripletHardLoss(_MarginDistanceLoss):
    """Batch-hard triplet loss (hardest positive, hardest negative per anchor), equal to tfa's.

    l(a) = max(max_p D[a, p] - min_n D[a, n] + margin, 0), or softplus of the gap when
    ``soft``; see ``ops.triplet_hard_loss``.

    Reference: Hermans, Beyer, Leibe, "In Defense of the Triplet Loss", 2017.

    Args:
        margin: float >= 0 (default 1.0).
        soft: soft-margin form (default False).
        distance: "l2" (default), "squared_l2" or "cosine".
        cross_replica, name, reduction, dtype: see ``RankingLoss``.

    Example:
    >>> loss = TripletHardLoss(margin=1.0)
    >>> float(loss([0, 0], [[0.0, 1.0], [1.0, 0.0]]))
    1.0
    """

    kernel = staticmethod(kernels.triplet_hard_loss)

    def __init__(self, margin=1.0, soft=False, distance="l2", cross_replica=False, name="triplet_hard_loss", **kwargs):
        super().__init__(margin, distance, cross_replica, name, **kwargs)
        self.soft = bool(soft)

    def kernel_params(self):
        return {**super().kernel_params(), "soft": self.soft}


@keras.saving.register_keras_serializable(package="rankloss_tf")
class NPairLoss(RankingLoss):
    """Multi-class N-pair loss (Sohn 2016) with tf.contrib's L2 embedding regulariser.

    Batches of N classes x 2 samples (the first sample of a class is its anchor, the
    second its positive); larger classes form several tuples. See ``ops.npair_loss``.

    Reference: Sohn, "Improved Deep Metric Learning with Multi-class N-pair Loss
    Objective", NeurIPS 2016.

    Args:
        variant: "mc" (default) or "ovo".
        l2_reg: regulariser weight, >= 0 (default 0.002).
        cross_replica, name, reduction, dtype: see ``RankingLoss``.

    Example:
    >>> loss = NPairLoss(l2_reg=0.0)
    >>> round(float(loss([0, 0, 1, 1], [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])), 4)
    0.3133
    """

    kernel = staticmethod(kernels.npair_loss)
    shares = True

    def __init__(self, variant="mc", l2_reg=0.002, cross_replica=False, name="npair_loss", **kwargs):
        super().__init__(cross_replica=cross_replica, name=name, **kwargs)
        self.variant = check_choice("variant", variant, kernels.NPAIR_VARIANTS)
        self.l2_reg = check_non_negative("l2_reg", l2_reg)

    def kernel_params(self):
        return {"variant": self.variant, "l2_reg": self.l2_reg}


@keras.saving.register_keras_serializable(package="rankloss_tf")
class AngularLoss(RankingLoss):
    """Angular loss, log-sum-exp batch form (Wang et al. 2017, Eq. 8).

    On L2-normalised embeddings, t = tan^2(alpha): for ordered positive pairs (a, p),
    l = log(1 + sum_n exp(4t (x_a + x_p).x_n - 2(1 + t) x_a.x_p)). See ``ops.angular_loss``.

    Reference: Wang et al., "Deep Metric Learning with Angular Loss", ICCV 2017.

    Args:
        alpha: angle bound in degrees, 0 < alpha < 90 (default 45; the paper: 36-55).
        cross_replica, name, reduction, dtype: see ``RankingLoss``.

    Example:
    >>> loss = AngularLoss(alpha=45)
    >>> round(float(loss([0, 0, 1, 1], [[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]])), 4)
    0.3736
    """

    kernel = staticmethod(kernels.angular_loss)
    shares = True

    def __init__(self, alpha=45.0, cross_replica=False, name="angular_loss", **kwargs):
        super().__init__(cross_replica=cross_replica, name=name, **kwargs)
        self.alpha = check_alpha(alpha)

    def kernel_params(self):
        return {"alpha": self.alpha}


@keras.saving.register_keras_serializable(package="rankloss_tf")
class NPairAngularLoss(RankingLoss):
    """N-pair loss + lam * angular loss on the same tuples (Wang et al. 2017, Eq. 9).

    See ``ops.npair_angular_loss``.

    Reference: Wang et al., "Deep Metric Learning with Angular Loss", ICCV 2017.

    Args:
        alpha: angle in degrees, 0 < alpha < 90 (default 45).
        lam: weight of the angular term, >= 0 (default 2.0).
        cross_replica, name, reduction, dtype: see ``RankingLoss``.

    Example:
    >>> loss = NPairAngularLoss(alpha=45, lam=2.0)
    >>> round(float(loss([0, 0, 1, 1], [[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]])), 4)
    0.7841
    """

    kernel = staticmethod(kernels.npair_angular_loss)
    shares = True

    def __init__(self, alpha=45.0, lam=2.0, cross_replica=False, name="npair_angular_loss", **kwargs):
        super().__init__(cross_replica=cross_replica, name=name, **kwargs)
        self.alpha = check_alpha(alpha)
        self.lam = check_non_negative("lam", lam)

    def kernel_params(self):
        return {"alpha": self.alpha, "lam": self.lam}


LOSSES = {
    "contrastive": ContrastiveLoss,
    "triplet_semihard": TripletSemiHardLoss,
    "triplet_hard": TripletHardLoss,
    "npair": NPairLoss,
    "angular": AngularLoss,
    "npair_angular": NPairAngularLoss,
}


def get(name, **kwargs):
    """Builds a loss from its short name, as used by the command line.

    Args:
        name: a short name of ``registry()``: "contrastive", "triplet_semihard",
            "triplet_hard", "npair", "angular", "npair_angular", and today's
            losses ("multi_similarity", "supcon", "ntxent", "proxy_anchor",
            "proxy_nca", "arcface", "cosface").
        **kwargs: the loss class's arguments.

    Returns:
        A ``RankingLoss`` instance.

    Raises:
        ValueError: for an unknown name.

    Example:
    >>> get("angular", alpha=40).alpha
    40.0
    """
    known = registry()
    if name not in known:
        raise ValueError(f"Unknown loss. Expected one of {sorted(known)}. Received: name={name!r}")
    return known[name](**kwargs)


def registry():
    """Every short name and its class: the losses of this module and those of ``losses_modern``.

    ``losses_modern`` builds on this module, so it is imported here when asked
    for (no registration at import time: nothing depends on what was imported before).

    Example:
    >>> sorted(registry())[:3]
    ['angular', 'arcface', 'contrastive']
    """
    modern = importlib.import_module("rankloss_tf.losses_modern").MODERN_LOSSES
    return {**LOSSES, **modern}
