"""SavedModel export of an embedding model, with a ``serving_default`` signature.

The exported SavedModel is self-contained (preprocessing inside) and serves one
signature::

    serving_default(images: uint8 [N, H, W, C]) -> {"embeddings": float32 [N, D]}

with any ``N``. It loads with ``tf.saved_model.load`` (TF Serving, TFLite
converters, plain TensorFlow) and ``keras.layers.TFSMLayer``. An export is
written to a temporary sibling directory and renamed into place, so the
target directory is either complete or absent, never half written.
"""

import logging
import os
import shutil
import uuid
from pathlib import Path

import keras
import tensorflow as tf

__all__ = ["SIGNATURE", "SavedModelEmbedder", "export_saved_model"]

logger = logging.getLogger(__name__)

SIGNATURE = "serving_default"


def _image_shape(model):
    shape = tuple(model.inputs[0].shape[1:]) if getattr(model, "inputs", None) else None
    if shape is None or len(shape) != 3:
        raise ValueError(
            "`model` must be a built Keras model with one image input [N, H, W, C]. "
            f"Received: input shape {None if shape is None else (None, *shape)}"
        )
    return shape


def export_saved_model(model, path, overwrite=False):
    """Exports an embedding model as a SavedModel with a uint8 serving signature.

    Args:
        model: a Keras model mapping ``uint8 [N, H, W, C]`` images to
            ``[N, D]`` embeddings (e.g. from ``models.build_embedding_model``).
        path: target directory.
        overwrite: replace an existing ``path``; otherwise an existing path is
            an error.

    Returns:
        ``Path`` of the export.

    Raises:
        ValueError: ``path`` exists and ``overwrite`` is False, or the model
            has no single image input.

    Example:
    >>> from rankloss_tf.models import build_embedding_model
    >>> path = export_saved_model(build_embedding_model((8, 8, 1)), "/tmp/embedder")  # doctest: +SKIP
    >>> loaded = tf.saved_model.load(str(path))  # doctest: +SKIP
    >>> loaded.signatures["serving_default"](images=tf.zeros([2, 8, 8, 1], tf.uint8))["embeddings"].shape  # doctest: +SKIP
    TensorShape([2, 64])
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise ValueError(f"Export directory already exists (pass overwrite=True to replace it). Received: path={path}")
    image_shape = _image_shape(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex}")

    def serve(images):
        return {"embeddings": tf.cast(model(images, training=False), tf.float32)}

    try:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(
            name=SIGNATURE,
            fn=serve,
            input_signature=[tf.TensorSpec([None, *image_shape], tf.uint8, name="images")],
        )
        archive.write_out(str(temporary), verbose=False)
        if path.exists():
            previous = path.with_name(f".{path.name}.old-{uuid.uuid4().hex}")
            os.replace(path, previous)
            os.replace(temporary, path)
            shutil.rmtree(previous)
        else:
            os.replace(temporary, path)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    logger.info("Exported the embedding model to %s", path)
    return path


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_temporaries(path):
    """Deletes the temporary siblings of ``path`` that exports killed mid-write left behind."""
    for temporary in path.parent.glob(f".{path.name}.tmp-*"):
        pid = temporary.name.rsplit(".tmp-", 1)[1].split("-")[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(temporary, ignore_errors=True)


class SavedModelEmbedder:
    """An exported embedding model, loaded: a callable from images to embeddings.

    Args:
        path: directory written by ``export_saved_model``.

    Attributes:
        signature: the ``serving_default`` concrete function
            (``signature(images=...)["embeddings"]``).
        image_shape: ``(H, W, C)`` the signature expects.

    Raises:
        ValueError: ``path`` is not a SavedModel with that signature.

    Example:
    >>> embedder = SavedModelEmbedder("/tmp/embedder")  # doctest: +SKIP
    >>> embedder(tf.zeros([2, 8, 8, 1], tf.uint8)).shape  # doctest: +SKIP
    TensorShape([2, 64])
    """

    def __init__(self, path):
        path = Path(path)
        if not (path / "saved_model.pb").is_file():
            raise ValueError(f"Not a SavedModel directory (no saved_model.pb). Received: path={path}")
        self._loaded = tf.saved_model.load(str(path))
        if SIGNATURE not in self._loaded.signatures:
            raise ValueError(
                f"The SavedModel has no {SIGNATURE!r} signature. "
                f"Received: signatures={list(self._loaded.signatures)}"
            )
        self.signature = self._loaded.signatures[SIGNATURE]
        self.image_shape = tuple(self.signature.structured_input_signature[1]["images"].shape[1:])

    def __call__(self, images):
        """Embeds ``uint8 [N, H, W, C]`` images; returns float32 ``[N, D]``."""
        return self.signature(images=tf.convert_to_tensor(images, tf.uint8))["embeddings"]
