"""The Multi-Similarity loss (Wang et al. 2019): the ``ops.multi_similarity`` kernel and its Keras class."""

from rankloss_tf.losses.base import SERIALIZABLE, RankingLoss
from rankloss_tf.ops.checks import check_finite, check_non_negative, check_positive
from rankloss_tf.ops.multi_similarity import multi_similarity_loss

__all__ = ["MultiSimilarityLoss"]


@SERIALIZABLE
class MultiSimilarityLoss(RankingLoss):
    """Multi-Similarity loss (Wang et al. 2019); see ``ops.multi_similarity``.

    l(a) = 1/alpha log(1 + sum_p exp(-alpha (S_ap - base))) + 1/beta log(1 + sum_n exp(beta (S_an - base))).

    Args:
        alpha: > 0 (default 2). beta: > 0 (default 50). base: (default 0.5).
        epsilon: None (every pair, the default) or the pair miner's margin (the paper: 0.1).
        cross_replica, name, reduction, dtype: see ``RankingLoss``.

    Example:
    >>> round(float(MultiSimilarityLoss()([0, 0, 1, 1], [[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]])), 4)
    0.2688
    """

    kernel = staticmethod(multi_similarity_loss)

    def __init__(self, alpha=2.0, beta=50.0, base=0.5, epsilon=None, cross_replica=False,
                 name="multi_similarity_loss", **kwargs):
        super().__init__(cross_replica=cross_replica, name=name, **kwargs)
        self.alpha, self.beta = check_positive("alpha", alpha), check_positive("beta", beta)
        self.base = check_finite("base", base)
        self.epsilon = None if epsilon is None else check_non_negative("epsilon", epsilon)

    def kernel_params(self):
        return {"alpha": self.alpha, "beta": self.beta, "base": self.base, "epsilon": self.epsilon}
