"""Backbones: one registry from names to networks, weights, and cached frozen features."""

from rankloss_tf.backbones.efficientnet_lite import efficientnet_lite0
from rankloss_tf.backbones.feature_parts import FeatureRows
from rankloss_tf.backbones.features import content_key, extract_features, extract_view_features, feature_cache_path
from rankloss_tf.backbones.pooling import GeneralizedMeanPooling2D, generalized_mean_pool
from rankloss_tf.backbones.preprocessing import ImagePreprocessing
from rankloss_tf.backbones.registry import backbone_names, build_backbone, is_pretrained, resolve
from rankloss_tf.backbones.small_cnn import small_cnn
from rankloss_tf.backbones.image_views import ImageView, View, views
from rankloss_tf.backbones.weights import convert, imagenet_weights_path

__all__ = [
    "FeatureRows",
    "GeneralizedMeanPooling2D",
    "ImagePreprocessing",
    "ImageView",
    "View",
    "backbone_names",
    "build_backbone",
    "content_key",
    "convert",
    "efficientnet_lite0",
    "extract_features",
    "extract_view_features",
    "feature_cache_path",
    "generalized_mean_pool",
    "imagenet_weights_path",
    "is_pretrained",
    "resolve",
    "small_cnn",
    "views",
]
