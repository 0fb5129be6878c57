"""ArcFace and CosFace on ``ClassCosines`` output: the ``ops.margin_softmax`` kernel and its Keras classes."""

from rankloss_tf.losses.base import SERIALIZABLE, ClassLoss
from rankloss_tf.ops.checks import check_count, check_positive
from rankloss_tf.ops.margin_softmax import check_margin, margin_softmax_from_cosines

__all__ = ["ArcFaceLoss", "CosFaceLoss"]


class _MarginSoftmaxLoss(ClassLoss):
    margin_type = None

    def __init__(self, margin, scale, sub_centers, name, **kwargs):
        super().__init__(name=name, **kwargs)
        _, self.margin = check_margin(self.margin_type, margin)
        self.scale, self.sub_centers = check_positive("scale", scale), check_count("sub_centers", sub_centers)

    def call(self, y_true, y_pred):
        return margin_softmax_from_cosines(y_true, y_pred, self.margin_type, self.margin, self.scale)

    def kernel_params(self):
        return {"margin": self.margin, "scale": self.scale}

    def get_config(self):
        return {**super().get_config(), "sub_centers": self.sub_centers}


@SERIALIZABLE
class ArcFaceLoss(_MarginSoftmaxLoss):
    """ArcFace (additive angular margin, degrees) on ``ClassCosines`` output; see ``ops.margin_softmax``.

    Args:
        margin: degrees, 0 <= margin < 180 (default 28.6). scale: > 0 (default 64).
        sub_centers: class vectors per class of the head (sub-centre ArcFace: 3).
        class_lr_multiplier: the class vectors' learning rate relative to the network's (default 1; ``ClassLoss``).
        name, reduction, dtype: Keras' ``Loss`` arguments.

    Example:
    >>> round(float(ArcFaceLoss()([0], [[0.0, 1.0]])), 2)
    94.64
    """

    margin_type = "arcface"

    def __init__(self, margin=28.6, scale=64.0, sub_centers=1, name="arcface_loss", **kwargs):
        super().__init__(margin, scale, sub_centers, name, **kwargs)


@SERIALIZABLE
class CosFaceLoss(_MarginSoftmaxLoss):
    """CosFace (additive cosine margin) on ``ClassCosines`` output; see ``ops.margin_softmax``.

    Args:
        margin: >= 0 (default 0.35). scale: > 0 (default 64). sub_centers: of the head.
        class_lr_multiplier: as ``ArcFaceLoss``.
        name, reduction, dtype: Keras' ``Loss`` arguments.

    Example:
    >>> round(float(CosFaceLoss()([0], [[0.0, 1.0]])), 1)
    86.4
    """

    margin_type = "cosface"

    def __init__(self, margin=0.35, scale=64.0, sub_centers=1, name="cosface_loss", **kwargs):
        super().__init__(margin, scale, sub_centers, name, **kwargs)
