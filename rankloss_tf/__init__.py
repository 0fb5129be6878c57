"""rankloss_tf: deep metric learning (retrieval) for TensorFlow 2 / Keras 3.

Sub-packages and the loss classes are imported when first used (PEP 562), so
that ``import rankloss_tf`` and the command line's ``--help`` do not pay for
TensorFlow until something needs it.
"""

import importlib

__version__ = "0.1.0"

_MODULES = ("backbones", "data", "datasets", "evaluation", "export", "models", "ops")
_LOSSES = (
    "AngularLoss",
    "ContrastiveLoss",
    "NPairAngularLoss",
    "NPairLoss",
    "TripletHardLoss",
    "TripletSemiHardLoss",
)

__all__ = [*_MODULES, *_LOSSES]


def __getattr__(name):
    if name in _MODULES:
        return importlib.import_module(f"rankloss_tf.{name}")
    if name in _LOSSES:
        return getattr(importlib.import_module("rankloss_tf.losses"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
