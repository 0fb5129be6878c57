"""Pure TensorFlow kernels: tensors in, tensors out (no Keras, no state)."""

from rankloss_tf.ops.distances import DISTANCES, pairwise_distances
from rankloss_tf.ops.losses import (
    angular_loss,
    contrastive_loss,
    npair_angular_loss,
    npair_loss,
    triplet_hard_loss,
    triplet_semihard_loss,
)

__all__ = [
    "DISTANCES",
    "pairwise_distances",
    "angular_loss",
    "contrastive_loss",
    "npair_angular_loss",
    "npair_loss",
    "triplet_hard_loss",
    "triplet_semihard_loss",
]
