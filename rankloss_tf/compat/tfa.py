"""Drop-in replacements for TensorFlow Addons 0.23's metric-learning losses.

Same names, signatures and numbers as `tfa.losses`, under Keras 3:

    import rankloss_tf.compat.tfa as tfa_losses
    model.compile(loss=tfa_losses.TripletSemiHardLoss(margin=1.0))

`distance_metric` takes tfa's names, "L2", "squared-L2" and "angular", or a callable
mapping embeddings [B, D] to a distance matrix [B, B]. The only difference from tfa:
where tfa returned NaN (a batch without a positive pair), these return 0. Semi-hard
mining here uses O(B^2) memory instead of tfa's O(B^3).
"""

import keras
import tensorflow as tf

from rankloss_tf.losses import RankingLoss
from rankloss_tf.ops.distances import pairwise_distances
from rankloss_tf.ops.checks import check_non_negative
from rankloss_tf.ops.losses import hard_from_distances, semihard_from_distances
from rankloss_tf.ops.checks import standardize_inputs
from rankloss_tf.ops.masks import negative_mask, positive_mask

__all__ = [
    "TripletSemiHardLoss",
    "TripletHardLoss",
    "ContrastiveLoss",
    "NpairsLoss",
    "triplet_semihard_loss",
    "triplet_hard_loss",
    "contrastive_loss",
    "npairs_loss",
]

_METRICS = {"L2": "l2", "squared-L2": "squared_l2", "angular": "cosine"}


def _distances(embeddings, distance_metric):
    if callable(distance_metric):
        return tf.cast(distance_metric(embeddings), embeddings.dtype)
    if distance_metric not in _METRICS:
        raise ValueError(
            f"`distance_metric` must be one of {sorted(_METRICS)} or a callable. "
            f"Received: distance_metric={distance_metric!r}"
        )
    return pairwise_distances(embeddings, _METRICS[distance_metric])


def _semihard_per_anchor(y_true, y_pred, margin=1.0, distance_metric="L2"):
    dtype = tf.convert_to_tensor(y_pred).dtype
    labels, embeddings = standardize_inputs(y_true, y_pred)
    distances = _distances(embeddings, distance_metric)
    losses = semihard_from_distances(distances, positive_mask(labels), negative_mask(labels), check_non_negative("margin", margin))
    return tf.cast(losses, dtype)


def _hard_per_anchor(y_true, y_pred, margin=1.0, soft=False, distance_metric="L2"):
    dtype = tf.convert_to_tensor(y_pred).dtype
    labels, embeddings = standardize_inputs(y_true, y_pred)
    distances = _distances(embeddings, distance_metric)
    losses = hard_from_distances(
        distances,
        positive_mask(labels),
        negative_mask(labels),
        check_non_negative("margin", margin),
        bool(soft),
        skip_anchors_without_positive=False,
    )
    return tf.cast(losses, dtype)


def triplet_semihard_loss(y_true, y_pred, margin=1.0, distance_metric="L2"):
    """tfa's `triplet_semihard_loss`: a scalar.

    Args:
        y_true: integer labels [B] or [B, 1].
        y_pred: embeddings [B, D] (not normalised by the loss).
        margin: float >= 0.
        distance_metric: "L2", "squared-L2", "angular" or a callable.

    Returns:
        Scalar loss in the dtype of `y_pred`.

    Example:
        >>> round(float(triplet_semihard_loss([0, 0], [[0.0, 1.0], [1.0, 0.0]])), 4)
        2.4142
    """
    return tf.reduce_mean(_semihard_per_anchor(y_true, y_pred, margin, distance_metric))


def triplet_hard_loss(y_true, y_pred, margin=1.0, soft=False, distance_metric="L2"):
    """tfa's `triplet_hard_loss`: a scalar (same arguments as `triplet_semihard_loss`, plus `soft`).

    Example:
        >>> float(triplet_hard_loss([0, 0], [[0.0, 1.0], [1.0, 0.0]]))
        1.0
    """
    return tf.reduce_mean(_hard_per_anchor(y_true, y_pred, margin, soft, distance_metric))


def contrastive_loss(y_true, y_pred, margin=1.0):
    """tfa's `contrastive_loss` on precomputed pair distances.

    l = y * d^2 + (1 - y) * max(margin - d, 0)^2, elementwise.

    Args:
        y_true: binary similarity labels [...] (1 = same class).
        y_pred: distances between the two embeddings of each pair [...].
        margin: float >= 0.

    Returns:
        The per-pair losses, shaped like `y_pred`.

    Example:
        >>> contrastive_loss([1.0, 0.0], [0.5, 0.5]).numpy().tolist()
        [0.25, 0.25]
    """
    y_pred = tf.convert_to_tensor(y_pred)
    y_true = tf.cast(y_true, y_pred.dtype)
    margin = check_non_negative("margin", margin)
    return y_true * tf.square(y_pred) + (1.0 - y_true) * tf.square(tf.maximum(margin - y_pred, 0.0))


def npairs_loss(y_true, y_pred):
    """tfa's `npairs_loss`: softmax cross-entropy of a similarity matrix.

    Args:
        y_true: labels [N] of the anchors (same-label columns share the target mass).
        y_pred: similarity matrix [N, N], S = anchors @ positives^T.

    Returns:
        Scalar loss.

    Example:
        >>> round(float(npairs_loss([0, 1], [[1.0, 0.0], [0.0, 1.0]])), 4)
        0.3133
    """
    y_pred = tf.convert_to_tensor(y_pred)
    if y_pred.shape.rank is not None and y_pred.shape.rank != 2:
        raise ValueError(f"`y_pred` must be a similarity matrix [N, N]. Received: y_pred.shape={y_pred.shape}")
    labels = tf.reshape(tf.convert_to_tensor(y_true), [-1, 1])
    targets = tf.cast(tf.equal(labels, tf.transpose(labels)), y_pred.dtype)
    targets /= tf.reduce_sum(targets, axis=1, keepdims=True)
    return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=targets, logits=y_pred))


class _TfaTripletLoss(RankingLoss):
    """Shared config handling of the tfa-compatible triplet classes."""

    def __init__(self, margin, distance_metric, name, **kwargs):
        super().__init__(name=name, **kwargs)
        self.margin = check_non_negative("margin", margin)
        if not callable(distance_metric):
            _distances(tf.zeros([1, 1]), distance_metric)  # validates the name
        self.distance_metric = distance_metric


@keras.saving.register_keras_serializable(package="rankloss_tf.compat.tfa")
class TripletSemiHardLoss(_TfaTripletLoss):
    """tfa's `TripletSemiHardLoss(margin=1.0, distance_metric="L2", name=None)`.

    Example:
        >>> round(float(TripletSemiHardLoss()([0, 0], [[0.0, 1.0], [1.0, 0.0]])), 4)
        2.4142
    """

    kernel = staticmethod(_semihard_per_anchor)

    def __init__(self, margin=1.0, distance_metric="L2", name=None, **kwargs):
        super().__init__(margin, distance_metric, name or "triplet_semihard_loss", **kwargs)

    def kernel_params(self):
        return {"margin": self.margin, "distance_metric": self.distance_metric}


@keras.saving.register_keras_serializable(package="rankloss_tf.compat.tfa")
class TripletHardLoss(_TfaTripletLoss):
    """tfa's `TripletHardLoss(margin=1.0, soft=False, distance_metric="L2", name=None)`.

    Example:
        >>> float(TripletHardLoss()([0, 0], [[0.0, 1.0], [1.0, 0.0]]))
        1.0
    """

    kernel = staticmethod(_hard_per_anchor)

    def __init__(self, margin=1.0, soft=False, distance_metric="L2", name=None, **kwargs):
        super().__init__(margin, distance_metric, name or "triplet_hard_loss", **kwargs)
        self.soft = bool(soft)

    def kernel_params(self):
        return {"margin": self.margin, "soft": self.soft, "distance_metric": self.distance_metric}


@keras.saving.register_keras_serializable(package="rankloss_tf.compat.tfa")
class ContrastiveLoss(keras.losses.Loss):
    """tfa's `ContrastiveLoss(margin=1.0, reduction="sum_over_batch_size", name="contrastive_loss")`.

    `y_true` holds binary pair labels and `y_pred` the pair distances.

    Example:
        >>> float(ContrastiveLoss()([1.0, 0.0], [0.5, 0.5]))
        0.25
    """

    def __init__(self, margin=1.0, reduction="sum_over_batch_size", name="contrastive_loss", **kwargs):
        super().__init__(name=name, reduction=reduction, **kwargs)
        self.margin = check_non_negative("margin", margin)

    def call(self, y_true, y_pred):
        return contrastive_loss(y_true, y_pred, self.margin)

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}


@keras.saving.register_keras_serializable(package="rankloss_tf.compat.tfa")
class NpairsLoss(keras.losses.Loss):
    """tfa's `NpairsLoss(name="npairs_loss")`: `y_pred` is the similarity matrix [N, N].

    Example:
        >>> round(float(NpairsLoss()([0, 1], [[1.0, 0.0], [0.0, 1.0]])), 4)
        0.3133
    """

    def __init__(self, name="npairs_loss", **kwargs):
        super().__init__(name=name, **kwargs)

    def __call__(self, y_true, y_pred, sample_weight=None):
        # Labels are compared exactly: bypass Keras' cast of y_true to float32.
        if sample_weight is not None:
            raise ValueError(
                "NpairsLoss gives one value per batch and takes no `sample_weight`. "
                f"Received: sample_weight={sample_weight!r}"
            )
        with tf.name_scope(self.name):
            return tf.cast(npairs_loss(y_true, y_pred), self.dtype)

    def call(self, y_true, y_pred):
        return npairs_loss(y_true, y_pred)
