"""Triplet losses: semi-hard (FaceNet) and batch-hard mining, the ``ops`` kernels and their Keras classes."""

from rankloss_tf.losses.base import SERIALIZABLE, MarginDistanceLoss
from rankloss_tf.ops.losses import triplet_hard_loss, triplet_semihard_loss

__all__ = ["TripletSemiHardLoss", "TripletHardLoss"]


@SERIALIZABLE
class TripletSemiHardLoss(MarginDistanceLoss):
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

    kernel = staticmethod(triplet_semihard_loss)

    def __init__(self, margin=1.0, distance="l2", cross_replica=False, name="triplet_semihard_loss", **kwargs):
        super().__init__(margin, distance, cross_replica, name, **kwargs)


@SERIALIZABLE
class TripletHardLoss(MarginDistanceLoss):
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

    kernel = staticmethod(triplet_hard_loss)

    def __init__(self, margin=1.0, soft=False, distance="l2", cross_replica=False, name="triplet_hard_loss", **kwargs):
        super().__init__(margin, distance, cross_replica, name, **kwargs)
        self.soft = bool(soft)

    def kernel_params(self):
        return {**super().kernel_params(), "soft": self.soft}
