"""Pure TensorFlow kernels: tensors in, tensors out (no Keras, no state)."""

from rankloss_tf.ops.distances import DISTANCES, pairwise_distances
from rankloss_tf.ops.facility_location import cluster_loss
from rankloss_tf.ops.lifted import lifted_struct_loss
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
    "cluster_loss",
    "contrastive_loss",
    "lifted_struct_loss",
    "npair_angular_loss",
    "npair_loss",
    "triplet_hard_loss",
    "triplet_semihard_loss",
]
