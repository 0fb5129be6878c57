"""Deploy targets of an embedding model: a SavedModel directory, one LiteRT ``.tflite`` file, one ``.onnx`` file.

``export(model, path, format=...)`` is the one entry point (the ``rankloss-tf export --format``
command calls it). The LiteRT and ONNX files take the model's fixed input size::

    images: uint8 [N, H, W, C]  ->  embeddings: float32 [N, D]      (N free)

and hold only the model's own preprocessing (cast, an area resize traced as two matrix
products (``backbones.preprocessing.portable_resize``), pixel scaling, channel tiling): no
antialiased resize, no gray / RGBA conversion, no ``EnsureShape``, so every op is a LiteRT
built-in (no Flex delegate) and a plain ONNX operator. Bring images to ``(H, W, C)`` before
(``rankloss_tf.images.conform``, or any resize of your runtime). The files are made by the
ecosystem's converters (``tf.lite.TFLiteConverter`` built-ins only; ``tf2onnx``), from the
same function the SavedModel serves, and run with ``ai_edge_litert`` / ``onnxruntime`` alone.

``int8=True`` (LiteRT) quantises weights and activations with representative images
(``representative_images``, e.g. a few hundred training images); inputs stay uint8 and
outputs float32. A file is written to a temporary sibling and renamed into place, so it is
complete or absent; an existing file is replaced only with ``overwrite=True`` and only
when it is a model of the same format.
"""

import logging
import os
import tempfile
import uuid
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from rankloss_tf.backbones.preprocessing import portable_resize
from rankloss_tf.export import check_separate, export_saved_model
from rankloss_tf.images import check_images, conform, model_image_shape

__all__ = ["FORMATS", "export", "export_litert", "export_onnx", "representative_images"]

logger = logging.getLogger(__name__)

FORMATS = {"saved_model": None, "litert": ".tflite", "onnx": ".onnx"}
OUTPUT = "embeddings"
# Calibration batches of the int8 converter: enough for stable ranges, quick on a CPU.
REPRESENTATIVE_BATCH = 8


def _fixed_size_function(model):
    """The model as a ``tf.function`` over uint8 ``[None, H, W, C]`` returning ``{"embeddings": float32}``."""
    height, width, channels = model_image_shape(model)

    @tf.function(input_signature=[tf.TensorSpec([None, height, width, channels], tf.uint8, name="images")])
    def embed(images):
        return {OUTPUT: tf.cast(model(images, training=False), tf.float32)}

    with portable_resize():  # traced now, with the area resize as matrix products
        embed.get_concrete_function()
    return embed


def _is_model_file(path, suffix):
    """True when ``path`` holds a LiteRT flatbuffer (``TFL3``) or an ONNX model, as ``suffix`` says."""
    head = path.read_bytes()[:8] if path.stat().st_size >= 8 else b""
    if suffix == ".tflite":
        return head[4:8] == b"TFL3"
    import onnx

    try:
        onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - any parse failure means "not an ONNX model"
        return False
    return True


def _check_file_path(path, suffix, overwrite, protected):
    """Checks, before any work, that a model file may be written at ``path``."""
    path = Path(path)
    if path.suffix != suffix:
        raise ValueError(f"The output file must end with {suffix}. Received: path={path}")
    check_separate(path, "The output path", protected)
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise ValueError(f"The output path exists and is not a file; it is never replaced. Received: path={path}")
    if path.exists():
        if not overwrite:
            raise ValueError(f"The output file already exists (pass overwrite=True / --overwrite to replace it). "
                             f"Received: path={path}")
        if not _is_model_file(path, suffix):
            raise ValueError(f"The output file is not a {suffix} model; it is never replaced. Received: path={path}")
    ancestor = next((p for p in path.expanduser().resolve().parents if p.exists()), None)
    if ancestor is not None and not ancestor.is_dir():
        raise ValueError(f"The output path lies under a file ({ancestor}). Received: path={path}")
    return path


def _write_file(path, write):
    """``write(temporary_path)`` then an atomic rename onto ``path``: the file is complete or absent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex}{path.suffix}")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def representative_images(dataset, image_shape, data_dir=None, count=256, seed=0):
    """``count`` training images of a dataset at a model's ``(H, W, C)``, spread evenly over the training split.

    The calibration images of an int8 LiteRT export (``export_litert(..., int8=True)``):
    the training classes, never the held-out ones.

    Args:
        dataset: a ``rankloss_tf.datasets.load`` name (``"omniglot"``, ``"folder:PATH"``, ...).
        image_shape: the model's ``(H, W, C)`` (``images.model_image_shape``).
        data_dir: the dataset's local copy.
        count: how many images (at most the split's size).
        seed: the folder split's seed (as given to ``train``).

    Returns:
        uint8 ``[count, H, W, C]``.

    Example:
    >>> representative_images("digits", (8, 8, 3), count=4).shape
    (4, 8, 8, 3)
    """
    from rankloss_tf import datasets

    loaded = datasets.load(dataset, "train", data_dir=data_dir, image_size=tuple(image_shape[:2]), seed=seed)
    images = np.stack([image for image, _ in loaded.as_numpy_iterator()])
    spread = np.linspace(0, len(images) - 1, min(count, len(images))).astype(int)
    return conform(images[spread], image_shape).numpy()


def _representative(images, image_shape):
    """The int8 converter's calibration data: batches of uint8 images of the model's shape."""
    images = check_images(images).numpy()
    if tuple(images.shape[1:]) != tuple(image_shape):
        raise ValueError(f"`representative_images` must be of the model's shape {tuple(image_shape)} "
                         f"(see rankloss_tf.images.conform). Received: shape={images.shape}")

    def batches():
        for start in range(0, len(images), REPRESENTATIVE_BATCH):
            yield [images[start:start + REPRESENTATIVE_BATCH]]

    return batches


def _converter(model, directory):
    """A LiteRT converter of the model's fixed-size function, through a Keras ``ExportArchive`` SavedModel."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", _fixed_size_function(model))
    archive.write_out(directory, verbose=False)
    return tf.lite.TFLiteConverter.from_saved_model(directory)


def _tflite_bytes(model, int8, representative_images):
    with tempfile.TemporaryDirectory() as directory:
        return _convert(_converter(model, directory), model, int8, representative_images)


def _convert(converter, model, int8, representative_images):
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if int8:
        if representative_images is None or len(representative_images) == 0:
            raise ValueError("int8 quantisation needs `representative_images` (uint8, the model's shape, e.g. a "
                             "few hundred training images). Received: representative_images=None")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = _representative(representative_images, model_image_shape(model))
    try:
        return converter.convert()
    except Exception as error:  # the converter's own error types vary by version
        raise ValueError(f"The model has ops LiteRT's built-ins cannot run (no Flex delegate is used): "
                         f"{str(error).splitlines()[0]}") from error


def export_litert(model, path, int8=False, representative_images=None, overwrite=False, protected=()):
    """Writes the model as one LiteRT ``.tflite`` file: uint8 ``[N, H, W, C]`` -> float32 ``[N, D]``.

    Args:
        model: a Keras embedding model with one image input ``[N, H, W, C]``.
        path: the ``.tflite`` file to write.
        int8: quantise weights and activations to int8 (needs
            ``representative_images``).
        representative_images: uint8 ``[M, H, W, C]`` calibration images.
        overwrite: replace an existing ``.tflite`` model at ``path``.
        protected: paths the file must not be equal to, inside or above.

    Returns:
        ``Path`` of the file. Its one signature is ``serving_default``:
        input ``images``, output ``embeddings``.

    Raises:
        ValueError: a bad path (see the module's rules), a model without one
            fixed image input, ops outside LiteRT's built-ins, int8 without
            representative images.

    Example:
    >>> from rankloss_tf.models import build_embedding_model
    >>> path = export_litert(build_embedding_model((8, 8, 1)), "/tmp/embedder.tflite")  # doctest: +SKIP
    >>> from ai_edge_litert.interpreter import Interpreter  # doctest: +SKIP
    >>> runner = Interpreter(model_path=str(path)).get_signature_runner()  # doctest: +SKIP
    >>> runner(images=np.zeros((2, 8, 8, 1), np.uint8))["embeddings"].shape  # doctest: +SKIP
    (2, 64)
    """
    path = _check_file_path(path, ".tflite", overwrite, protected)
    data = _tflite_bytes(model, int8, representative_images)
    path = _write_file(path, lambda temporary: temporary.write_bytes(data))
    logger.info("Wrote the LiteRT model (%s, %d bytes) to %s", "int8" if int8 else "float32", len(data), path)
    return path


def export_onnx(model, path, opset=None, overwrite=False, protected=()):
    """Writes the model as one ``.onnx`` file with tf2onnx: uint8 ``[N, H, W, C]`` -> float32 ``[N, D]``.

    Args:
        model: a Keras embedding model with one image input ``[N, H, W, C]``.
        path: the ``.onnx`` file to write.
        opset: the ONNX opset (None: tf2onnx's default).
        overwrite: replace an existing ONNX model at ``path``.
        protected: paths the file must not be equal to, inside or above.

    Returns:
        ``Path`` of the file: input ``images``, output ``embeddings``.

    Raises:
        ValueError: a bad path, a model without one fixed image input.
        ImportError: tf2onnx is not installed (``pip install rankloss-tf[deploy]``).

    Example:
    >>> from rankloss_tf.models import build_embedding_model
    >>> path = export_onnx(build_embedding_model((8, 8, 1)), "/tmp/embedder.onnx")  # doctest: +SKIP
    >>> import onnxruntime  # doctest: +SKIP
    >>> session = onnxruntime.InferenceSession(str(path))  # doctest: +SKIP
    >>> session.run(["embeddings"], {"images": np.zeros((2, 8, 8, 1), np.uint8)})[0].shape  # doctest: +SKIP
    (2, 64)
    """
    path = _check_file_path(path, ".onnx", overwrite, protected)
    try:
        import tf2onnx
    except ImportError as error:
        raise ImportError("The ONNX export needs tf2onnx: pip install 'rankloss-tf[deploy]'") from error
    function = _fixed_size_function(model)

    def write(temporary):
        tf2onnx.convert.from_function(function, input_signature=function.input_signature, opset=opset,
                                      output_path=str(temporary))

    path = _write_file(path, write)
    logger.info("Wrote the ONNX model to %s", path)
    return path


def export(model, path, format="saved_model", overwrite=False, protected=(), **options):
    """Exports an embedding model to one deploy target.

    Args:
        model: a Keras embedding model with one image input ``[N, H, W, C]``.
        path: a directory (``saved_model``), a ``.tflite`` file (``litert``)
            or a ``.onnx`` file (``onnx``).
        format: ``"saved_model"`` (any size, gray / RGB / RGBA, TF Serving,
            TF Hub, ``TFSMLayer``), ``"litert"`` or ``"onnx"`` (fixed size).
        overwrite: replace a previous export at ``path``.
        protected: paths the export must not be equal to, inside or above.
        **options: ``int8`` and ``representative_images`` (litert), ``opset`` (onnx),
            ``split`` (saved_model: the held-out split kept in the export).

    Returns:
        ``Path`` of the export.

    Raises:
        ValueError: an unknown format or option, or what the format's writer refuses.

    Example:
    >>> export(None, "/tmp/x", format="tfjs")
    Traceback (most recent call last):
    ...
    ValueError: `format` must be one of ['saved_model', 'litert', 'onnx']. Received: format='tfjs'
    """
    writers = {"saved_model": export_saved_model, "litert": export_litert, "onnx": export_onnx}
    if format not in writers:
        raise ValueError(f"`format` must be one of {list(writers)}. Received: format={format!r}")
    return writers[format](model, path, overwrite=overwrite, protected=protected, **options)
