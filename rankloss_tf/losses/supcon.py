"""Supervised contrastive and NT-Xent losses (Khosla et al. 2020; Chen et al. 2020): ``ops.supcon`` kernels, Keras classes."""

from rankloss_tf.losses.base import SERIALIZABLE, RankingLoss
from rankloss_tf.ops.checks import check_positive
from rankloss_tf.ops.supcon import ntxent_loss, supcon_loss

__all__ = ["SupConLoss", "NTXentLoss"]


class _TemperatureLoss(RankingLoss):
    def __init__(self, temperature, cross_replica, name, **kwargs):
        super().__init__(cross_replica=cross_replica, name=name, **kwargs)
        self.temperature = check_positive("temperature", temperature)

    def kernel_params(self):
        return {"temperature": self.temperature}


@SERIALIZABLE
class SupConLoss(_TemperatureLoss):
    """Supervised contrastive loss (Khosla et al. 2020); see ``ops.supcon``.

    Args:
        temperature: > 0 (default 0.1).
        cross_replica, name, reduction, dtype: see ``RankingLoss``.

    Example:
    >>> round(float(SupConLoss()([0, 0, 1, 1], [[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]])), 4)
    0.0638
    """

    kernel = staticmethod(supcon_loss)

    def __init__(self, temperature=0.1, cross_replica=False, name="supcon_loss", **kwargs):
        super().__init__(temperature, cross_replica, name, **kwargs)


@SERIALIZABLE
class NTXentLoss(_TemperatureLoss):
    """NT-Xent over every positive pair of a labelled batch (Chen et al. 2020); see ``ops.supcon``.

    Args:
        temperature: > 0 (default 0.07).
        cross_replica, name, reduction, dtype: see ``RankingLoss``.

    Example:
    >>> round(float(NTXentLoss()([0, 0, 1, 1], [[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]])), 4)
    0.0279
    """

    kernel = staticmethod(ntxent_loss)

    def __init__(self, temperature=0.07, cross_replica=False, name="ntxent_loss", **kwargs):
        super().__init__(temperature, cross_replica, name, **kwargs)
