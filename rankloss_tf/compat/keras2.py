"""Loading Keras 2 ``.h5`` models (such as those of tensorflow-addons users) in Keras 3.

``rankloss_tf.compat.tfa`` re-exports ``load_model``; importing that module also registers
tfa's loss names, which such models refer to.
"""

import inspect
import json

import h5py
import keras

__all__ = ["load_model"]


def _keras2_training_config(filepath):
    """The training config of a Keras 2 ``.h5`` model file, or None for any other file."""
    if not str(filepath).endswith((".h5", ".hdf5")):
        return None
    with h5py.File(filepath, "r") as file:
        version = file.attrs.get("keras_version", "")
        config = file.attrs.get("training_config")
    version = version.decode() if isinstance(version, bytes) else str(version)
    if not version.startswith("2.") or config is None:
        return None
    return json.loads(config.decode() if isinstance(config, bytes) else config)


def _fresh_optimizer(optimizer, saved):
    """A new optimizer of the loaded one's class with the saved Keras 2 settings it understands.

    Keras 3 reads a Keras 2 optimizer config such as ``Custom>Adam`` as the default ``Adam``;
    the settings both versions share (learning rate, betas, clipping, ...) are restored here.
    """
    config = optimizer.get_config()
    if str(saved.get("class_name", "")).split(">")[-1] == type(optimizer).__name__:
        config.update({key: value for key, value in saved.get("config", {}).items() if key in config})
    return type(optimizer).from_config(config)


def load_model(filepath, custom_objects=None, compile=True, **kwargs):
    """``keras.models.load_model``, plus the repairs a Keras 2 ``.h5`` model of a tfa user needs.

    Once ``rankloss_tf.compat.tfa`` has registered tfa's names, Keras 3 loads such a file with
    its tfa loss, but builds the optimizer without the model's variables (``fit`` fails with
    "Unknown variable") and with Keras 3's default settings, and keeps a loss saved as a
    class name as a class. For a Keras 2 ``.h5`` file compiled with an optimizer, this
    recompiles the model with a fresh optimizer of the saved class and settings (Keras 3
    cannot restore its saved state), an instance of the restored loss, and the saved
    metrics and loss weights. Any other file is loaded by Keras unchanged.

    Args:
        filepath: path of the saved model.
        custom_objects: as ``keras.models.load_model``.
        compile: as ``keras.models.load_model``.
        **kwargs: passed to ``keras.models.load_model``.

    Returns:
        The model, compiled when ``compile`` and the file has a training config.

    Example:
    >>> from rankloss_tf.compat.tfa import TripletSemiHardLoss
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> model.compile(optimizer="adam", loss=TripletSemiHardLoss(margin=0.5))
    >>> model.save("model.h5")  # doctest: +ELLIPSIS
    >>> load_model("model.h5").loss.get_config()["margin"]
    0.5
    """
    model = keras.models.load_model(filepath, custom_objects=custom_objects, compile=compile, **kwargs)
    training_config = _keras2_training_config(filepath) if compile else None
    if training_config is None or getattr(model, "optimizer", None) is None:
        return model
    loss = model.loss() if inspect.isclass(model.loss) else model.loss
    with keras.saving.custom_object_scope(custom_objects or {}):
        metrics, weighted_metrics = (
            keras.utils.deserialize_keras_object(training_config.get(key))
            for key in ("metrics", "weighted_metrics")
        )
    model.compile(
        optimizer=_fresh_optimizer(model.optimizer, training_config.get("optimizer_config") or {}),
        loss=loss,
        metrics=metrics,
        weighted_metrics=weighted_metrics,
        loss_weights=training_config.get("loss_weights"),
    )
    return model
