"""Proxy-Anchor and ProxyNCA losses on ``ClassCosines`` output: the ``ops.proxy`` kernels and their Keras classes."""

from rankloss_tf.losses.base import SERIALIZABLE, ClassLoss
from rankloss_tf.ops.checks import check_non_negative, check_positive
from rankloss_tf.ops.proxy import proxy_anchor_from_cosines, proxy_nca_from_cosines

__all__ = ["ProxyAnchorLoss", "ProxyNCALoss"]


@SERIALIZABLE
class ProxyAnchorLoss(ClassLoss):
    """Proxy-Anchor loss (Kim et al. 2020) on ``ClassCosines`` output; see ``ops.proxy``.

    Args:
        margin: >= 0 (default 0.1). alpha: > 0 (default 32).
        class_lr_multiplier: the proxies' learning rate relative to the network's
            (default 1; Kim et al. 2020 train the proxies at 100 times the rate:
            ``ClassLoss``, ``ClassCosines``).
        name, reduction, dtype: Keras' ``Loss`` arguments.

    Example:
    >>> round(float(ProxyAnchorLoss()([0, 1], [[1.0, 0.0], [0.0, 1.0]])), 4)
    3.24
    >>> ProxyAnchorLoss(class_lr_multiplier=100).head_options()["lr_multiplier"]
    100.0
    """

    kernel = staticmethod(proxy_anchor_from_cosines)

    def __init__(self, margin=0.1, alpha=32.0, name="proxy_anchor_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.margin, self.alpha = check_non_negative("margin", margin), check_positive("alpha", alpha)

    def kernel_params(self):
        return {"margin": self.margin, "alpha": self.alpha}


@SERIALIZABLE
class ProxyNCALoss(ClassLoss):
    """ProxyNCA (softmax_scale 1) and ProxyNCA++ (softmax_scale 9) on ``ClassCosines`` output; see ``ops.proxy``.

    Args:
        softmax_scale: > 0 (default 1).
        class_lr_multiplier: the proxies' learning rate relative to the network's (default 1; ``ClassLoss``).
        name, reduction, dtype: Keras' ``Loss`` arguments.

    Example:
    >>> round(float(ProxyNCALoss()([0], [[1.0, 0.0]])), 4)
    0.1269
    """

    kernel = staticmethod(proxy_nca_from_cosines)

    def __init__(self, softmax_scale=1.0, name="proxy_nca_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.softmax_scale = check_positive("softmax_scale", softmax_scale)

    def kernel_params(self):
        return {"softmax_scale": self.softmax_scale}
