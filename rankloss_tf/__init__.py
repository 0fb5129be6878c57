"""rankloss_tf: deep metric learning (retrieval) for TensorFlow 2 / Keras 3.

Sub-packages and the loss classes are imported when first used (PEP 562), so
``import rankloss_tf`` is light and changes no global state (``rankloss-tf
--help`` does not wait for TensorFlow). Keras objects are registered by the
modules that define them when those are imported, and by
``rankloss_tf.loading.load_model`` before it reads a ``.keras`` file; call
``register_keras_objects()`` before ``keras.models.load_model`` yourself.
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

__all__ = [*_MODULES, *_LOSSES, "load_model", "register_keras_objects"]


def __getattr__(name):
    if name in ("load_model", "register_keras_objects"):  # their home is the model loader
        return getattr(importlib.import_module("rankloss_tf.loading"), name)
    if name in _MODULES:
        return importlib.import_module(f"rankloss_tf.{name}")
    if name in _LOSSES:
        return getattr(importlib.import_module("rankloss_tf.losses"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
