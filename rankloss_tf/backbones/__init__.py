"""Pretrained image backbones, their weight conversion and cached frozen features."""

from rankloss_tf.backbones.weights import convert, imagenet_weights_path
from rankloss_tf.backbones.efficientnet_lite import efficientnet_lite0
from rankloss_tf.backbones.features import extract_features, feature_cache_path
from rankloss_tf.backbones.registry import backbone_names, build_backbone

__all__ = [
    "backbone_names",
    "build_backbone",
    "convert",
    "efficientnet_lite0",
    "extract_features",
    "feature_cache_path",
    "imagenet_weights_path",
]
