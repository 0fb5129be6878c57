"""The contrastive loss: the ``ops.contrastive_loss`` kernel and its Keras class."""

from rankloss_tf.losses.base import SERIALIZABLE, MarginDistanceLoss
from rankloss_tf.ops.losses import contrastive_loss

__all__ = ["ContrastiveLoss"]


@SERIALIZABLE
class ContrastiveLoss(MarginDistanceLoss):
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

    kernel = staticmethod(contrastive_loss)
    shares = True

    def __init__(self, margin=1.0, distance="l2", cross_replica=False, name="contrastive_loss", **kwargs):
        super().__init__(margin, distance, cross_replica, name, **kwargs)
