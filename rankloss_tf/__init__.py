"""rankloss_tf: deep metric learning (retrieval) for TensorFlow 2 / Keras 3.

The public API is ``__all__``, here and in each sub-package it names (``docs/api.md``
documents exactly that): the losses (``losses``, and the first release's classes
here), their kernels (``ops``), P x K sampling (``data``), datasets, backbones and
models, fine-tuning, evaluation, retrieval (``Index``), export and deployment, the
TensorFlow Addons / ``tf.contrib`` migration shims (``compat``) and the model loader;
``app`` is the application built on them (``TrainConfig``, ``train``: what
``rankloss-tf`` runs), which the library never imports.

Names are imported when first used (``rankloss_tf.lazy``), so ``import rankloss_tf``
is light and changes no global state (``rankloss-tf --help`` does not wait for
TensorFlow). Keras objects are registered by the modules that define them when those
are imported, and by ``load_model`` before it reads a ``.keras`` file; call
``register_keras_objects()`` before ``keras.models.load_model`` yourself.

Example:
>>> import rankloss_tf
>>> rankloss_tf.TripletSemiHardLoss is rankloss_tf.losses.TripletSemiHardLoss
True
"""

from rankloss_tf.lazy import lazy_attributes

__version__ = "0.1.0"

_MODULES = ("app", "backbones", "compat", "data", "datasets", "deploy", "evaluation", "export", "fine_tune",
            "images", "losses", "models", "ops", "retrieval")
_LOSSES = ("AngularLoss", "ContrastiveLoss", "NPairAngularLoss", "NPairLoss", "TripletHardLoss", "TripletSemiHardLoss")
# name -> module that defines it (a sub-module: itself)
_HOMES = {
    **{name: f"rankloss_tf.{name}" for name in _MODULES},
    **{name: "rankloss_tf.losses" for name in _LOSSES},
    "load_model": "rankloss_tf.loading",
    "register_keras_objects": "rankloss_tf.loading",
}

__all__ = [*_MODULES, *_LOSSES, "load_model", "register_keras_objects"]

__getattr__, __dir__ = lazy_attributes(__name__, _HOMES)
