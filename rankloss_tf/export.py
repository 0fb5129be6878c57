"""SavedModel export of an embedding model, atomic and marked as ours; image conformation.

The exported SavedModel is self-contained (preprocessing inside) and serves one
function under two signature names, ``serving_default`` (TF Serving, ``saved_model_cli``)
and ``serve`` (the default endpoint of ``keras.layers.TFSMLayer``), and as the loaded
object's ``__call__`` (``hub.KerasLayer``, ``loaded(images)``)::

    serving_default(images: uint8 [N, H, W, C]) -> {"embeddings": float32 [N, D]}

with any ``N``. The input is declared rank 4 ``[-1, -1, -1, -1]``; the images may
have any size and 1 (gray), 3 (RGB) or 4 (RGBA) channels: the signature conforms
them to the model's input (``images.conform``: alpha dropped, gray <-> RGB,
antialiased bilinear resize); another channel count is a clear
``InvalidArgumentError``, another rank is refused by the signature. It loads with
``tf.saved_model.load`` (TF Serving, plain TensorFlow), ``keras.layers.TFSMLayer``
and ``tensorflow_hub.KerasLayer``, with no Python of ours. LiteRT and ONNX files
at the model's fixed input size: ``rankloss_tf.deploy``.

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
import os
from pathlib import Path

import tensorflow as tf

from rankloss_tf.io.atomic import remove_stale_temporaries, write_directory
from rankloss_tf.images import check_images, model_image_shape
from rankloss_tf.images import conform as conform_images

__all__ = [
    "EMBEDDING_KIND",
    "IMAGES_SPEC",
    "MARKER",
    "SERVE",
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


def check_export_path(path, overwrite=False, protected=(), role="The export path", kind=None):
    """Checks, before any work, that an export may be written at ``path``.

    Rules: nothing is ever written equal to, inside or above a ``protected``
    path (a run directory, the model being exported); an existing file, or an
    existing directory that is not an export of this tool (no
    ``rankloss_tf_export.json`` marker), is never replaced; a previous export
    is replaced only with ``overwrite=True``, and only by one of its ``kind``
    (a model export never replaces an index).

    Args:
        path: the export directory to be written.
        overwrite: allow replacing a previous export of this tool at ``path``.
        protected: paths (directories or files) that must survive the export,
            or ``{description: path}`` (see ``check_separate``).
        role: how to name ``path`` in messages (e.g. "--export").
        kind: the kind of export to be written ("embedding", "index"); an
            existing export of another kind is refused (None: not checked).

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
    if path.is_symlink():
        target = os.readlink(path)
        raise ValueError(f"{role} is a symbolic link (to {target}{'' if path.exists() else ', which does not exist'}); "
                         f"an export is never written through one: pass the path itself. Received: path={path}")
    if path.exists() and not path.is_dir():
        raise ValueError(f"The export path exists and is not a directory; it is never replaced. Received: path={path}")
    if path.exists():
        if read_export_info(path) is None:
            raise ValueError(
                f"The export path is a directory that is not an export of rankloss_tf (no {MARKER}); "
                f"it is never replaced: choose another path. Received: path={path}"
            )
        found = read_export_info(path).get("kind")
        if kind is not None and found != kind:
            raise ValueError(f"{role} holds a rankloss_tf export of another kind ({found!r}); it is never replaced by "
                             f"a {kind!r} export: choose another path. Received: path={path}")
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
    path = check_export_path(path, overwrite, protected, kind=info.get("kind"))
    remove_stale_temporaries(path.parent, target=path.name)
    marker = json.dumps({"format": FORMAT, "version": VERSION, **info}, indent=2) + "\n"
    return write_directory(path, write, marker=(MARKER, marker), replace=True)


EMBEDDING_KIND = "embedding"  # the marker's kind of a model export (an index's is "index")
SERVE = "serve"
# Rank declared for tools that read the layout (saved_model_cli, tf2onnx, TF Serving's metadata); the sides
# and the channels stay free because the signature conforms gray / RGB / RGBA images of any size.
IMAGES_SPEC = tf.TensorSpec([None, None, None, None], tf.uint8, name="images")


class _Embedding(tf.Module):
    """What an embedding export holds: the model, and ``serve`` = ``__call__`` from images to embeddings."""

    def __init__(self, model):
        super().__init__(name="embedding")
        self.model = model
        self.image_shape = model_image_shape(model)
        self.embedding_dim = int(model.outputs[0].shape[-1])

    @tf.function(input_signature=[IMAGES_SPEC])
    def serve(self, images):
        embeddings = tf.cast(self.model(conform_images(images, self.image_shape), training=False), tf.float32)
        return {"embeddings": tf.ensure_shape(embeddings, [None, self.embedding_dim])}

    @tf.function(input_signature=[IMAGES_SPEC])
    def __call__(self, images):
        return self.serve(images)["embeddings"]


def export_saved_model(model, path, overwrite=False, protected=(), split=None):
    """Exports an embedding model as a SavedModel with a uint8 serving signature.

    ``serving_default(images uint8 [N, h, w, c]) -> {"embeddings": float32
    [N, D]}`` (also named ``serve``, and the loaded object's ``__call__``
    returns the embeddings); the images are conformed to the model's input
    first (``images.conform``: any size, gray / RGB / RGBA).

    Args:
        model: a Keras model mapping ``uint8 [N, H, W, C]`` images (C = 1 or
            3) to ``[N, D]`` embeddings (e.g. ``models.build_embedding_model``).
        path: target directory.
        overwrite: replace a previous export of this tool at ``path``.
        protected: paths the export must not be equal to, inside or above
            (see ``check_export_path``).
        split: the held-out split the model was trained with (a folder's
            ``{"seed", "train_fraction", "train", "test"}`` by class name), kept
            in the export's marker (``read_export_info(path)["split"]``) so
            that evaluating the export scores the classes it did not train on.

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
    module = _Embedding(model)
    check_export_path(path, overwrite, protected, kind=EMBEDDING_KIND)

    def write(directory):
        serve = module.serve.get_concrete_function()
        tf.saved_model.save(module, directory, signatures={SIGNATURE: serve, SERVE: serve})

    described = "images uint8 [N, H, W, C] -> embeddings float32 [N, D]"
    info = {"kind": EMBEDDING_KIND, "image_shape": list(module.image_shape), "embedding_dim": module.embedding_dim,
            "signatures": {SIGNATURE: described, SERVE: described}}
    if split is not None:
        info["split"] = split
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
