"""Drop-in replacements for TensorFlow Addons 0.23's metric-learning losses (``tfa.losses``).

Same names, signatures, configs and numbers as tfa, under Keras 3:

    import rankloss_tf.compat.tfa as tfa_losses
    model.compile(loss=tfa_losses.TripletSemiHardLoss(margin=1.0))

Importing this module registers every loss under tfa's Keras names (``Addons>TripletSemiHardLoss``,
``Addons>triplet_semihard_loss``, ...), so ``keras.models.load_model`` restores the loss of a
Keras 2 ``.h5`` model compiled with tfa. ``distance_metric`` takes tfa's names, "L2",
"squared-L2" and "angular", or a callable mapping embeddings [B, D] to distances [B, B].
Each function is a rename over a ``rankloss_tf.ops`` kernel; the classes hold its keyword
arguments, with tfa's ``reduction="none"`` (the functions already return the batch mean).

Differences from tfa: where tfa returned NaN (a batch without a positive pair, a single
class for the lifted loss, a multi-label row without a class), these return 0; semi-hard
mining and the lifted loss use O(B^2) memory instead of O(B^3).
"""

import keras
import tensorflow as tf

from rankloss_tf.compat.keras2 import load_model
from rankloss_tf.ops import lifted, precomputed
from rankloss_tf.ops.checks import check_non_negative
from rankloss_tf.ops.distances import pairwise_distances
from rankloss_tf.ops.losses import (
    distances_and_masks,
    hard_from_distances,
    semihard_from_distances,
)

__all__ = [
    "TripletSemiHardLoss",
    "TripletHardLoss",
    "ContrastiveLoss",
    "NpairsLoss",
    "NpairsMultilabelLoss",
    "LiftedStructLoss",
    "triplet_semihard_loss",
    "triplet_hard_loss",
    "contrastive_loss",
    "npairs_loss",
    "npairs_multilabel_loss",
    "lifted_struct_loss",
    "pairwise_distance",
    "angular_distance",
    "load_model",
]

_METRICS = {"L2": "l2", "squared-L2": "squared_l2", "angular": "cosine"}
_PACKAGE = "Addons"


def _distance(distance_metric):
    """tfa's ``distance_metric`` as a kernel ``distance``: a name of ``_METRICS`` or a callable."""
    if callable(distance_metric):
        return distance_metric
    if distance_metric not in _METRICS:
        raise ValueError(
            f"`distance_metric` must be one of {sorted(_METRICS)} or a callable. "
            f"Received: distance_metric={distance_metric!r}"
        )
    return _METRICS[distance_metric]


def _batch_mean(per_anchor, y_pred):
    """The mean of a per-anchor kernel result, in the dtype of ``y_pred`` (as tfa)."""
    return tf.cast(tf.reduce_mean(per_anchor), tf.convert_to_tensor(y_pred).dtype)


def triplet_semihard_loss(y_true, y_pred, margin=1.0, distance_metric="L2"):
    """tfa's ``triplet_semihard_loss``: ``ops.triplet_semihard_loss`` averaged.

    Args:
        y_true: integer labels [B] or [B, 1].
        y_pred: embeddings [B, D] (not normalised by the loss).
        margin: float >= 0.
        distance_metric: "L2", "squared-L2", "angular" or a callable.

    Returns:
        Scalar loss in the dtype of ``y_pred``.

    Example:
    >>> round(float(triplet_semihard_loss([0, 0], [[0.0, 1.0], [1.0, 0.0]])), 4)
    2.4142
    """
    margin, distance = check_non_negative("margin", margin), _distance(distance_metric)
    distances, positives, negatives, _ = distances_and_masks(y_true, y_pred, distance)
    return _batch_mean(semihard_from_distances(distances, positives, negatives, margin), y_pred)


def triplet_hard_loss(y_true, y_pred, margin=1.0, soft=False, distance_metric="L2"):
    """tfa's ``triplet_hard_loss`` (same arguments as ``triplet_semihard_loss``, plus ``soft``).

    As tfa, an anchor without a positive uses itself (distance 0) as its hardest positive.

    Example:
    >>> float(triplet_hard_loss([0, 0], [[0.0, 1.0], [1.0, 0.0]]))
    1.0
    """
    margin, distance = check_non_negative("margin", margin), _distance(distance_metric)
    distances, positives, negatives, _ = distances_and_masks(y_true, y_pred, distance)
    losses = hard_from_distances(
        distances, positives, negatives, margin, bool(soft), skip_anchors_without_positive=False
    )
    return _batch_mean(losses, y_pred)


def lifted_struct_loss(labels, embeddings, margin=1.0):
    """tfa's ``lifted_struct_loss``: ``ops.lifted.lifted_struct_loss`` (L2 distances) averaged.

    Example:
    >>> round(float(lifted_struct_loss([0, 0, 1], [[0.0, 0.0], [1.0, 0.0], [0.0, 1.5]])), 4)
    0.5546
    """
    return _batch_mean(lifted.lifted_struct_loss(labels, embeddings, margin=margin), embeddings)


def contrastive_loss(y_true, y_pred, margin=1.0):
    """tfa's ``contrastive_loss`` on precomputed pair distances: ``ops.precomputed.contrastive_from_distances``.

    Example:
    >>> contrastive_loss([1.0, 0.0], [0.5, 0.5]).numpy().tolist()
    [0.25, 0.25]
    """
    return precomputed.contrastive_from_distances(y_true, y_pred, margin)


def npairs_loss(y_true, y_pred):
    """tfa's ``npairs_loss`` on the similarity matrix S = anchors @ positives^T [N, N].

    Example:
    >>> round(float(npairs_loss([0, 1], [[1.0, 0.0], [0.0, 1.0]])), 4)
    0.3133
    """
    return tf.reduce_mean(precomputed.npairs_from_similarity(y_true, y_pred))


def npairs_multilabel_loss(y_true, y_pred):
    """tfa's ``npairs_multilabel_loss``: binary class indicators [N, C] (dense or ``tf.SparseTensor``).

    Example:
    >>> round(float(npairs_multilabel_loss([[1, 0], [0, 1]], [[1.0, 0.0], [0.0, 1.0]])), 4)
    0.3133
    """
    if isinstance(y_true, tf.SparseTensor):
        y_true = tf.sparse.to_dense(y_true)
    return tf.reduce_mean(precomputed.npairs_multilabel_from_similarity(y_true, y_pred))


def pairwise_distance(feature, squared=False):
    """tfa's ``metric_learning.pairwise_distance``: L2 (or squared) distances [B, B], zero diagonal.

    Example:
    >>> pairwise_distance([[0.0, 0.0], [3.0, 4.0]]).numpy().tolist()
    [[0.0, 5.0], [5.0, 0.0]]
    """
    return pairwise_distances(tf.convert_to_tensor(feature), "squared_l2" if squared else "l2")


def angular_distance(feature):
    """tfa's ``metric_learning.angular_distance``: max(1 - cos, 0) [B, B].

    Example:
    >>> angular_distance([[1.0, 0.0], [0.0, 2.0]]).numpy().tolist()
    [[0.0, 1.0], [1.0, 0.0]]
    """
    return pairwise_distances(tf.convert_to_tensor(feature), "cosine")


class _AddonsLoss(keras.losses.Loss):
    """tfa's ``LossFunctionWrapper`` with ``reduction="none"``: a function and its keyword arguments.

    The function returns the batch loss (a scalar) in the dtype of ``y_pred``. Labels reach
    it unchanged (no cast to float, so ``tf.SparseTensor`` labels and int32 ids above 2**24
    work). A ``sample_weight`` multiplies the scalar, as Keras 2 did with reduction "none".
    """

    function = None

    def __init__(self, name, **kwargs):
        kwargs.pop("reduction", None)  # tfa fixed it to "none" and ignored the argument.
        super().__init__(name=name, reduction="none", **kwargs)
        self._config_name = name  # tfa saved the name as given (None by default).

    def function_kwargs(self):
        """The keyword arguments passed to ``function`` (and saved in the config)."""
        return {}

    def __call__(self, y_true, y_pred, sample_weight=None):
        with tf.name_scope(self.name or type(self).__name__):
            loss = self.call(y_true, tf.convert_to_tensor(y_pred))
            if sample_weight is not None:
                loss = loss * tf.cast(sample_weight, loss.dtype)
            return loss

    def call(self, y_true, y_pred):
        if not isinstance(y_true, tf.SparseTensor):
            y_true = tf.convert_to_tensor(y_true)
        return type(self).function(y_true, y_pred, **self.function_kwargs())

    def get_config(self):
        return {"reduction": "none", "name": self._config_name, **self.function_kwargs()}


def _register(name):
    """Registers under tfa's ``Addons>`` name, the one saved files hold."""
    return keras.saving.register_keras_serializable(package=_PACKAGE, name=name)


for _function in (
    triplet_semihard_loss,
    triplet_hard_loss,
    lifted_struct_loss,
    contrastive_loss,
    npairs_loss,
    npairs_multilabel_loss,
):
    keras.saving.register_keras_serializable(package=_PACKAGE)(_function)
del _function


@_register("TripletSemiHardLoss")
class TripletSemiHardLoss(_AddonsLoss):
    """tfa's ``TripletSemiHardLoss(margin=1.0, distance_metric="L2", name=None)``.

    Example:
    >>> round(float(TripletSemiHardLoss()([0, 0], [[0.0, 1.0], [1.0, 0.0]])), 4)
    2.4142
    """

    function = staticmethod(triplet_semihard_loss)

    def __init__(self, margin=1.0, distance_metric="L2", name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.margin = check_non_negative("margin", margin)
        _distance(distance_metric)
        self.distance_metric = distance_metric

    def function_kwargs(self):
        return {"margin": self.margin, "distance_metric": self.distance_metric}


@_register("TripletHardLoss")
class TripletHardLoss(TripletSemiHardLoss):
    """tfa's ``TripletHardLoss(margin=1.0, soft=False, distance_metric="L2", name=None)``.

    Example:
    >>> float(TripletHardLoss()([0, 0], [[0.0, 1.0], [1.0, 0.0]]))
    1.0
    """

    function = staticmethod(triplet_hard_loss)

    def __init__(self, margin=1.0, soft=False, distance_metric="L2", name=None, **kwargs):
        super().__init__(margin=margin, distance_metric=distance_metric, name=name, **kwargs)
        self.soft = bool(soft)

    def function_kwargs(self):
        return {"margin": self.margin, "soft": self.soft, "distance_metric": self.distance_metric}


@_register("LiftedStructLoss")
class LiftedStructLoss(_AddonsLoss):
    """tfa's ``LiftedStructLoss(margin=1.0, name=None)``.

    Example:
    >>> round(float(LiftedStructLoss()([0, 0, 1], [[0.0, 0.0], [1.0, 0.0], [0.0, 1.5]])), 4)
    0.5546
    """

    function = staticmethod(lifted_struct_loss)

    def __init__(self, margin=1.0, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.margin = check_non_negative("margin", margin)

    def function_kwargs(self):
        return {"margin": self.margin}


@_register("NpairsLoss")
class NpairsLoss(_AddonsLoss):
    """tfa's ``NpairsLoss(name="npairs_loss")``: ``y_pred`` is the similarity matrix [N, N].

    Example:
    >>> round(float(NpairsLoss()([0, 1], [[1.0, 0.0], [0.0, 1.0]])), 4)
    0.3133
    """

    function = staticmethod(npairs_loss)

    def __init__(self, name="npairs_loss", **kwargs):
        super().__init__(name=name, **kwargs)


@_register("NpairsMultilabelLoss")
class NpairsMultilabelLoss(_AddonsLoss):
    """tfa's ``NpairsMultilabelLoss(name="npairs_multilabel_loss")``: ``y_true`` class indicators [N, C].

    Example:
    >>> round(float(NpairsMultilabelLoss()([[1, 0], [0, 1]], [[1.0, 0.0], [0.0, 1.0]])), 4)
    0.3133
    """

    function = staticmethod(npairs_multilabel_loss)

    def __init__(self, name="npairs_multilabel_loss", **kwargs):
        super().__init__(name=name, **kwargs)


@_register("ContrastiveLoss")
class ContrastiveLoss(keras.losses.Loss):
    """tfa's ``ContrastiveLoss(margin=1.0, reduction="sum_over_batch_size", name="contrastive_loss")``.

    ``y_true`` holds binary pair labels and ``y_pred`` the pair distances; Keras reduces the
    per-pair losses (this is the one tfa metric-learning class with a reduction).

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

