"""SavedModel export of an embedding model, atomic and marked as ours; image conformation.

The exported SavedModel is self-contained (preprocessing inside) and serves one
signature::

    serving_default(images: uint8 [N, H, W, C]) -> {"embeddings": float32 [N, D]}

with any ``N``. The images may have any size and 1 (gray), 3 (RGB) or 4
(RGBA) channels: the signature conforms them to the model's input
(``conform_images``: alpha dropped, gray <-> RGB, antialiased bilinear resize);
any other rank or channel count is a clear ``InvalidArgumentError``. It loads
with ``tf.saved_model.load`` (TF Serving, plain TensorFlow) and
``keras.layers.TFSMLayer``, with no Python of ours.

Every export of this tool (this embedding export and the index export of
``rankloss_tf.retrieval``) goes through ``write_export``: it is written to a
temporary sibling directory, marked with ``rankloss_tf_export.json`` (format,
kind, version, image shape, embedding size), and renamed into place
(``rankloss_tf.io.atomic.write_directory``), so the
target is either complete or absent. ``overwrite=True`` replaces only a
directory holding that marker; a file or any other directory at the path is
never replaced (``check_export_path``).
"""

import json
import logging
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from rankloss_tf.io.atomic import remove_stale_temporaries, write_directory

__all__ = [
    "MARKER",
    "SIGNATURE",
    "SavedModelEmbedder",
    "check_export_path",
    "check_images",
    "check_separate",
    "conform_images",
    "export_saved_model",
    "read_export_info",
    "write_export",
]

logger = logging.getLogger(__name__)

SIGNATURE = "serving_default"
MARKER = "rankloss_tf_export.json"
FORMAT = "rankloss_tf"
VERSION = 1
CHANNELS = (1, 3, 4)


def model_image_shape(model):
    """``(H, W, C)`` of a Keras model's single image input; C must be 1 or 3.

    Raises:
        ValueError: the model has no single image input ``[N, H, W, C]``.
    """
    shape = tuple(model.inputs[0].shape[1:]) if getattr(model, "inputs", None) else None
    if shape is None or len(shape) != 3 or None in shape or shape[-1] not in (1, 3):
        raise ValueError(
            "`model` must be a built Keras model with one image input [N, H, W, C], C = 1 or 3. "
            f"Received: input shape {None if shape is None else (None, *shape)}"
        )
    return tuple(int(s) for s in shape)


def read_export_info(path):
    """The marker of an export of this tool (a dict), or None when ``path`` is not one.

    Example:
    >>> read_export_info("/nonexistent") is None
    True
    """
    marker = Path(path) / MARKER
    if not marker.is_file():
        return None
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and info.get("format") == FORMAT else None


def _related(path, other):
    return path == other or other in path.parents or path in other.parents


def check_separate(path, role, protected):
    """Refuses ``path`` when it is equal to, inside or above a protected path.

    Args:
        path: a directory a command will write.
        role: how to name ``path`` in the message (e.g. "--export").
        protected: ``{description: path}``, or an iterable of paths (each
            named by itself); None entries are skipped.

    Raises:
        ValueError: naming both paths.

    Example:
    >>> check_separate("runs/a/saved_model", "--export", {"the run directory --out": "runs/b"})
    >>> check_separate("runs", "--export", {"the run directory --out": "runs/b"})
    Traceback (most recent call last):
    ...
    ValueError: --export must not be equal to, inside or above the run directory --out: writing there would replace it. Received: --export=runs, the run directory --out=runs/b
    """
    items = protected.items() if isinstance(protected, dict) else ((str(p), p) for p in protected)
    resolved = Path(path).expanduser().resolve()
    for description, other in items:
        if other is not None and _related(resolved, Path(other).expanduser().resolve()):
            raise ValueError(
                f"{role} must not be equal to, inside or above {description}: writing there would replace it. "
                f"Received: {role}={path}, {description}={other}"
            )


def check_export_path(path, overwrite=False, protected=(), role="The export path"):
    """Checks, before any work, that an export may be written at ``path``.

    Rules: nothing is ever written equal to, inside or above a ``protected``
    path (a run directory, the model being exported); an existing file, or an
    existing directory that is not an export of this tool (no
    ``rankloss_tf_export.json`` marker), is never replaced; a previous export
    is replaced only with ``overwrite=True``.

    Args:
        path: the export directory to be written.
        overwrite: allow replacing a previous export of this tool at ``path``.
        protected: paths (directories or files) that must survive the export,
            or ``{description: path}`` (see ``check_separate``).
        role: how to name ``path`` in messages (e.g. "--export").

    Returns:
        ``path`` as a ``Path``.

    Raises:
        ValueError: any rule above is broken.

    Example:
    >>> check_export_path("/tmp/runs/a/saved_model", protected=["/tmp/runs/a"])
    Traceback (most recent call last):
    ...
    ValueError: The export path must not be equal to, inside or above /tmp/runs/a: writing there would replace it. Received: The export path=/tmp/runs/a/saved_model, /tmp/runs/a=/tmp/runs/a
    """
    path = Path(path)
    resolved = path.expanduser().resolve()
    check_separate(path, role, protected)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise ValueError(f"The export path exists and is not a directory; it is never replaced. Received: path={path}")
    if path.exists():
        if read_export_info(path) is None:
            raise ValueError(
                f"The export path is a directory that is not an export of rankloss_tf (no {MARKER}); "
                f"it is never replaced: choose another path. Received: path={path}"
            )
        if not overwrite:
            raise ValueError(
                f"Export directory already exists (pass overwrite=True / --overwrite to replace it). Received: path={path}"
            )
    ancestor = next((p for p in resolved.parents if p.exists()), None)
    if ancestor is not None and not ancestor.is_dir():
        raise ValueError(f"The export path lies under a file ({ancestor}). Received: path={path}")
    return path


def write_export(path, write, info, overwrite=False, protected=()):
    """Writes an export atomically: ``write(temporary_dir)``, the marker, then a rename.

    Args:
        path: the export directory.
        write: callable writing the SavedModel into the directory it is given.
        info: JSON-serialisable dict stored in the marker, beside
            ``format``, ``version`` and ``kind`` (``info["kind"]`` required).
        overwrite: see ``check_export_path``.
        protected: see ``check_export_path``.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        ValueError: see ``check_export_path``.

    Example:
    >>> def write(directory):
    ...     tf.saved_model.save(tf.Module(), directory)
    >>> path = write_export("/tmp/empty_export", write, {"kind": "example"}, overwrite=True)  # doctest: +SKIP
    >>> read_export_info(path)["kind"]  # doctest: +SKIP
    'example'
    """
    path = check_export_path(path, overwrite, protected)
    remove_stale_temporaries(path.parent, target=path.name)
    marker = json.dumps({"format": FORMAT, "version": VERSION, **info}, indent=2) + "\n"
    return write_directory(path, write, marker=(MARKER, marker), replace=True)


def check_images(images):
    """Checks a batch of images on the Python side: uint8 ``[N, H, W, C]``, C in (1, 3, 4).

    Float images are refused rather than cast (a [0, 1] float image would
    silently become {0, 1}).

    Returns:
        The images as a uint8 ``tf.Tensor``.

    Raises:
        ValueError: another dtype, rank, channel count, or an empty side.

    Example:
    >>> check_images(np.zeros((2, 8, 8, 3), np.uint8)).shape
    TensorShape([2, 8, 8, 3])
    """
    dtype = getattr(images, "dtype", None)
    if dtype is None:
        images = np.asarray(images)
        dtype = images.dtype
    if tf.as_dtype(dtype) != tf.uint8:
        raise ValueError(
            "`images` must be uint8 pixels in [0, 255] (float images are not rescaled silently; convert "
            f"[0, 1] floats with np.round(x * 255).astype(np.uint8)). Received: dtype={tf.as_dtype(dtype).name}"
        )
    shape = tuple(images.shape)
    if len(shape) != 4 or shape[-1] not in CHANNELS or 0 in shape[1:3]:
        raise ValueError(
            f"`images` must be [N, H, W, C] with H, W >= 1 and C in {CHANNELS} (gray, RGB, RGBA). "
            f"Received: shape={shape}"
        )
    return tf.convert_to_tensor(images, tf.uint8)


def conform_images(images, image_shape):
    """Brings uint8 images of any size and 1, 3 or 4 channels to a model's ``(H, W, C)`` (graph code).

    Steps: a 4th (alpha) channel is dropped; RGB becomes gray
    (``tf.image.rgb_to_grayscale``) for a one-channel model, gray is tiled to
    RGB for a three-channel model; then an antialiased bilinear resize to
    ``(H, W)``, rounded back to uint8, when the size differs. The same steps
    as the dataset loaders' ``resize_uint8``.

    Args:
        images: uint8 tensor, expected ``[N, h, w, c]`` with c in (1, 3, 4).
        image_shape: the model's ``(H, W, C)``, C in (1, 3).

    Returns:
        uint8 ``[N, H, W, C]``.

    Raises:
        InvalidArgumentError (at run time in a graph) or ValueError (eager):
            another rank, a channel count outside (1, 3, 4), or an empty side.

    Example:
    >>> conform_images(tf.zeros([2, 16, 12, 4], tf.uint8), (8, 8, 1)).shape
    TensorShape([2, 8, 8, 1])
    """
    height, width, channels = (int(s) for s in image_shape)
    images = tf.convert_to_tensor(images, tf.uint8)
    # Every check reads a padded shape, so that no op fails before the Assert on a wrong rank.
    padded = tf.concat([tf.shape(images), tf.ones([4], tf.int32)], axis=0)
    valid = (
        (tf.rank(images) == 4)
        & tf.reduce_any(tf.equal(padded[3], CHANNELS))
        & (padded[1] > 0)
        & (padded[2] > 0)
    )
    check = tf.debugging.Assert(valid, [
        "`images` must be uint8 [N, H, W, C] (rank 4) with H, W >= 1 and C = 1 (gray), 3 (RGB) or 4 (RGBA); "
        "received shape", tf.shape(images),
    ])
    with tf.control_dependencies([check]):
        images = tf.cond(
            valid,
            lambda: tf.reshape(images, padded[:4]),
            lambda: tf.zeros([0, 1, 1, channels], tf.uint8),
        )
    images = tf.ensure_shape(images, [None, None, None, None])
    shape = tf.shape(images)
    images = _to_channels(images, shape[3], channels)
    images = tf.ensure_shape(images, [None, None, None, channels])

    def resize():
        resized = tf.image.resize(tf.cast(images, tf.float32), (height, width), antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)

    same_size = tf.logical_and(shape[1] == height, shape[2] == width)
    return tf.ensure_shape(tf.cond(same_size, lambda: images, resize), [None, height, width, channels])


def _to_channels(images, image_channels, channels):
    """Gray / RGB / RGBA images -> ``channels`` (1 or 3): alpha dropped, RGB -> gray or gray tiled."""
    if channels == 1:
        options = {1: lambda: images, 3: lambda: tf.image.rgb_to_grayscale(images[..., :3])}
    else:
        options = {1: lambda: tf.tile(images, [1, 1, 1, 3]), 3: lambda: images[..., :3]}
    static = images.shape[-1]
    if static is not None:
        return options[1 if static == 1 else 3]()
    return tf.cond(image_channels == 1, options[1], options[3])


IMAGES_SPEC = tf.TensorSpec(None, tf.uint8, name="images")


def export_saved_model(model, path, overwrite=False, protected=()):
    """Exports an embedding model as a SavedModel with a uint8 serving signature.

    ``serving_default(images uint8 [N, h, w, c]) -> {"embeddings": float32
    [N, D]}``; the images are conformed to the model's input first
    (``conform_images``: any size, gray / RGB / RGBA).

    Args:
        model: a Keras model mapping ``uint8 [N, H, W, C]`` images (C = 1 or
            3) to ``[N, D]`` embeddings (e.g. ``models.build_embedding_model``).
        path: target directory.
        overwrite: replace a previous export of this tool at ``path``.
        protected: paths the export must not be equal to, inside or above
            (see ``check_export_path``).

    Returns:
        ``Path`` of the export.

    Raises:
        ValueError: ``path`` may not be written (``check_export_path``), or
            the model has no single image input.

    Example:
    >>> from rankloss_tf.models import build_embedding_model
    >>> path = export_saved_model(build_embedding_model((8, 8, 1)), "/tmp/embedder")  # doctest: +SKIP
    >>> loaded = tf.saved_model.load(str(path))  # doctest: +SKIP
    >>> loaded.signatures["serving_default"](images=tf.zeros([2, 32, 32, 3], tf.uint8))["embeddings"].shape  # doctest: +SKIP
    TensorShape([2, 64])
    """
    image_shape = model_image_shape(model)
    embedding_dim = int(model.outputs[0].shape[-1])
    check_export_path(path, overwrite, protected)

    def serve(images):
        embeddings = tf.cast(model(conform_images(images, image_shape), training=False), tf.float32)
        return {"embeddings": tf.ensure_shape(embeddings, [None, embedding_dim])}

    def write(directory):
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(name=SIGNATURE, fn=serve, input_signature=[IMAGES_SPEC])
        archive.write_out(directory, verbose=False)

    info = {"kind": "embedding", "image_shape": list(image_shape), "embedding_dim": embedding_dim,
            "signatures": {SIGNATURE: "images uint8 [N, H, W, C] -> embeddings float32 [N, D]"}}
    path = write_export(path, write, info, overwrite, protected)
    logger.info("Exported the embedding model to %s", path)
    return path


class SavedModelEmbedder:
    """An exported embedding model, loaded: a callable from images to embeddings.

    Args:
        path: directory written by ``export_saved_model`` (or any SavedModel
            with a ``serving_default`` signature ``images -> embeddings``).

    Attributes:
        signature: the ``serving_default`` concrete function
            (``signature(images=...)["embeddings"]``).
        image_shape: ``(H, W, C)`` of the model's input (images of other
            sizes and channel counts are conformed by the signature).

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
        info = read_export_info(path)
        if info is not None and "image_shape" in info:
            self.image_shape = tuple(info["image_shape"])
        else:
            self.image_shape = tuple(self.signature.structured_input_signature[1]["images"].shape[1:])

    def __call__(self, images):
        """Embeds ``uint8 [N, H, W, C]`` images; returns float32 ``[N, D]``.

        Raises:
            ValueError: images that are not uint8 ``[N, H, W, C]`` with 1, 3
                or 4 channels (``check_images``).
        """
        return self.signature(images=check_images(images))["embeddings"]
