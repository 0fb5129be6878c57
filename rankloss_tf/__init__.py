"""rankloss_tf: deep metric learning (retrieval) for TensorFlow 2 / Keras 3."""

from rankloss_tf import backbones, data, datasets, evaluation, export, models, ops
from rankloss_tf.losses import (
    AngularLoss,
    ContrastiveLoss,
    NPairAngularLoss,
    NPairLoss,
    TripletHardLoss,
    TripletSemiHardLoss,
)

__version__ = "0.1.0"

__all__ = [
    "backbones",
    "data",
    "datasets",
    "evaluation",
    "export",
    "models",
    "ops",
    "AngularLoss",
    "ContrastiveLoss",
    "NPairAngularLoss",
    "NPairLoss",
    "TripletHardLoss",
    "TripletSemiHardLoss",
]
