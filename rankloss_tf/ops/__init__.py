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

# --- issue 31: the losses the field uses now (engineer "losses") ---
from rankloss_tf.ops.class_cosines import class_cosines
from rankloss_tf.ops.margin_softmax import arcface_loss, cosface_loss
from rankloss_tf.ops.multi_similarity import multi_similarity_loss
from rankloss_tf.ops.proxy import proxy_anchor_loss, proxy_nca_loss
from rankloss_tf.ops.supcon import ntxent_loss, supcon_loss

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
    # issue 31
    "arcface_loss",
    "class_cosines",
    "cosface_loss",
    "multi_similarity_loss",
    "ntxent_loss",
    "proxy_anchor_loss",
    "proxy_nca_loss",
    "supcon_loss",
]
