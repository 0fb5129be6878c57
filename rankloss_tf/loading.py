"""The ONE loader of trained models: a run directory, a ``.keras`` file or a SavedModel export.

Every command that takes ``--model`` (``evaluate``, ``export``, ``index``) and
``retrieval.Index(path)`` load through ``load_model``. It registers the
package's Keras objects (``register_keras_objects``) itself before reading a
``.keras`` file, so loading never depends on what was imported before.
Importing ``rankloss_tf`` registers nothing (no global state at import); the
modules that define the objects register them when they are imported.

A SavedModel is a program: loading one (an export or an index) runs the graph
it holds. Load only SavedModels you trust.
"""

import zipfile
from pathlib import Path

__all__ = ["MODEL_FILE", "damage_errors", "error_reason", "load_model", "model_form", "register_keras_objects"]

MODEL_FILE = "model.keras"  # the trained model inside a run directory of ``train``


def register_keras_objects():
    """Imports the modules whose Keras objects ``.keras`` files of this package name.

    ``load_model`` calls it; call it yourself before ``keras.models.load_model``
    on a ``.keras`` file of this package.

    Example:
    >>> import keras
    >>> register_keras_objects()
    >>> "rankloss_tf>ImagePreprocessing" in keras.saving.get_custom_objects()
    True
    """
    # Here, not at the top: this module is read by the command line without TensorFlow.
    import rankloss_tf.backbones.preprocessing  # noqa: F401 (each registers its classes when imported)
    import rankloss_tf.fine_tune  # noqa: F401
    import rankloss_tf.losses  # noqa: F401


def model_form(path):
    """Which form of trained model ``path`` is, without loading it (no TensorFlow import).

    Args:
        path: a SavedModel directory, a ``.keras`` file or a run directory of
            ``train`` holding ``model.keras``.

    Returns:
        ``("saved_model", directory)`` or ``("keras", the .keras file)``.

    Raises:
        ValueError: ``path`` is none of these (the message names it).

    Example:
    >>> model_form("/nonexistent/model")
    Traceback (most recent call last):
    ...
    ValueError: `model` must be a SavedModel directory, a .keras file or a training run directory holding model.keras (a run that has finished fitting). Received: /nonexistent/model
    """
    path = Path(path).expanduser()
    if (path / "saved_model.pb").is_file():
        return "saved_model", path
    if path.is_dir() and (path / MODEL_FILE).is_file():
        return "keras", path / MODEL_FILE
    if path.is_file() and path.suffix == ".keras":
        return "keras", path
    raise ValueError(
        "`model` must be a SavedModel directory, a .keras file or a training run directory "
        f"holding {MODEL_FILE} (a run that has finished fitting). Received: {path}"
    )


def load_model(path):
    """Loads a trained embedding model, in any of its three forms.

    Args:
        path: a SavedModel directory from ``export_saved_model``, a ``.keras``
            file, or a run directory of ``train`` (its ``model.keras``).

    Returns:
        A ``keras.Model`` or an ``export.SavedModelEmbedder``; both map
        ``uint8 [N, H, W, C]`` images to ``[N, D]`` embeddings.

    Raises:
        ValueError: ``path`` is none of these, or a file of that form that
            cannot be read (the message names it).

    Example:
    >>> model = load_model("runs/demo")  # doctest: +SKIP
    >>> model(images).shape  # doctest: +SKIP
    TensorShape([16, 128])
    """
    form, found = model_form(path)
    if form == "saved_model":
        from rankloss_tf.export import SavedModelEmbedder

        return _read(SavedModelEmbedder, found)
    import keras

    if not zipfile.is_zipfile(found):
        raise ValueError(f"Cannot read the model (not a .keras zip archive: empty or damaged). Received: {found}")
    register_keras_objects()
    return _read(keras.models.load_model, found)


def damage_errors():
    """The exceptions that reading a damaged or vanished file raises (OS, TensorFlow, protobuf, zip).

    Example:
    >>> issubclass(FileNotFoundError, damage_errors())
    True
    """
    import tensorflow as tf
    from google.protobuf.message import DecodeError

    return (OSError, tf.errors.OpError, KeyError, IndexError, zipfile.BadZipFile, DecodeError)


def error_reason(error):
    """The first line of an error's message (at most 200 characters), for a one-line message.

    Example:
    >>> error_reason(OSError("disk full\\nmore detail"))
    'disk full'
    """
    text = getattr(error, "message", None) or str(error) or type(error).__name__
    return text.strip().splitlines()[0][:200] if text.strip() else type(error).__name__


def _read(load, path):
    try:
        return load(path)
    except damage_errors() as error:
        raise ValueError(f"Cannot read the model (damaged or not a model of this tool: {error_reason(error)}). "
                         f"Received: {path}") from None
