"""N-pair and angular losses (Sohn 2016; Wang et al. 2017): the ``ops`` kernels and their Keras classes."""

from rankloss_tf.losses.base import SERIALIZABLE, RankingLoss
from rankloss_tf.ops.checks import check_alpha, check_choice, check_non_negative
from rankloss_tf.ops.losses import NPAIR_VARIANTS, angular_loss, npair_angular_loss, npair_loss

__all__ = ["NPairLoss", "AngularLoss", "NPairAngularLoss"]


@SERIALIZABLE
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

    kernel = staticmethod(npair_loss)
    shares = True

    def __init__(self, variant="mc", l2_reg=0.002, cross_replica=False, name="npair_loss", **kwargs):
        super().__init__(cross_replica=cross_replica, name=name, **kwargs)
        self.variant = check_choice("variant", variant, NPAIR_VARIANTS)
        self.l2_reg = check_non_negative("l2_reg", l2_reg)

    def kernel_params(self):
        return {"variant": self.variant, "l2_reg": self.l2_reg}


@SERIALIZABLE
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

    kernel = staticmethod(angular_loss)
    shares = True

    def __init__(self, alpha=45.0, cross_replica=False, name="angular_loss", **kwargs):
        super().__init__(cross_replica=cross_replica, name=name, **kwargs)
        self.alpha = check_alpha(alpha)

    def kernel_params(self):
        return {"alpha": self.alpha}


@SERIALIZABLE
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

    kernel = staticmethod(npair_angular_loss)
    shares = True

    def __init__(self, alpha=45.0, lam=2.0, cross_replica=False, name="npair_angular_loss", **kwargs):
        super().__init__(cross_replica=cross_replica, name=name, **kwargs)
        self.alpha = check_alpha(alpha)
        self.lam = check_non_negative("lam", lam)

    def kernel_params(self):
        return {"alpha": self.alpha, "lam": self.lam}
