"""rankloss_tf: deep metric learning (retrieval) for TensorFlow 2 / Keras 3.

Sub-packages and the loss classes are imported when first used (PEP 562).
``import rankloss_tf`` registers the package's Keras objects (losses, the
preprocessing layer), so ``keras.models.load_model`` reads its ``.keras``
files; the ``rankloss-tf`` command skips that until a command needs it, so
that ``rankloss-tf --help`` does not wait for TensorFlow.
"""

import importlib
import os
import sys

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

__all__ = [*_MODULES, *_LOSSES, "register_keras_objects"]


# The modules that register Keras serialisable objects.
KERAS_OBJECT_MODULES = ("rankloss_tf.losses", "rankloss_tf.losses_modern", "rankloss_tf.backbones.preprocessing", "rankloss_tf.training.fine_tune")


def register_keras_objects():
    """Imports the modules whose Keras objects ``.keras`` files of this package name.

    Example:
    >>> register_keras_objects()
    >>> "rankloss_tf>ImagePreprocessing" in keras.saving.get_custom_objects()
    True
    """
    for module in KERAS_OBJECT_MODULES:
        importlib.import_module(module)


# "-m" while `python -m rankloss_tf.cli` imports this package; "rankloss-tf": the console script.
if os.path.basename(sys.argv[0] if sys.argv else "") not in ("rankloss-tf", "-m"):
    register_keras_objects()


def __getattr__(name):
    if name in _MODULES:
        return importlib.import_module(f"rankloss_tf.{name}")
    if name in _LOSSES:
        return getattr(importlib.import_module("rankloss_tf.losses"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
