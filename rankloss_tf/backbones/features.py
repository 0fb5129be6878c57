"""Frozen-backbone features, computed once per image and cached on disk.

For the frozen-backbone protocol every image goes through the pretrained backbone
once; the embedding head then trains on the cached [N, F] features in seconds.
A cache file is keyed by the backbone name, a hash of its weights file, a
fingerprint of what the backbone computes (its features of two fixed probe images:
this catches a change of preprocessing or architecture too), the pooling of the
last feature map when it is not the average (``rankloss_tf.backbones.pooling``),
the image size, the dataset's identity and, for a dataset read from files (``rankloss_tf.references``:
a folder, TFRecords, local Cars196), the files' content (``References.content_key``:
every file's real path and ``rankloss_tf.references.file_stamp``: size, modification
and change times, inode and a hash of bytes sampled at its start, middle and end;
for a folder, its scan's fingerprint, which holds the same and was computed by the
scan, with the split and image size), so that any change of these computes afresh:
a folder cut from 48 to 25 images never reuses the 48 images' features, nor an
image rewritten to the same size with its modification time restored its old
features, while the same folder reached through a symbolic link or a relative
path reuses them. The extraction
streams: it holds one part of ``PART_SIZE`` images in memory, writes it to disk
(``rankloss_tf.backbones.feature_parts``) and, after a kill, resumes from the
last complete part; the parts are joined into the cache file at the end, or,
with ``rows=True`` (a head that trains from disk), kept as the cache and read
row by row (``FeatureRows``): no step holds all the features in memory. Files
are written to a temporary name and renamed, so an interrupted run never leaves
a truncated file behind; an unreadable, truncated or mismatching file is named
in a warning and recomputed.
"""

import functools
import hashlib
import json
import logging
import re
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from rankloss_tf.backbones.feature_parts import (PART_SIZE, FeatureRows, complete_parts, done_parts, join_parts,
                                                 mark_complete, read_features, write_parts)
from rankloss_tf.backbones.files import default_cache_dir, file_sha256
from rankloss_tf.backbones.pooling import pooling_key
from rankloss_tf.backbones.preprocessing import ImagePreprocessing
from rankloss_tf.backbones.registry import LITE0, build_backbone
from rankloss_tf.backbones.image_views import ImageView
from rankloss_tf.backbones.weights import imagenet_weights_path
from rankloss_tf.references import file_stamp, real_path, references_of

_CACHE_FORMAT = 2

# The attribute of ``extract_features``' INFO log records that says what the cache gave: (READ or COMPUTED, path);
# a program counts them to report whether a run read its features from the cache.
CACHE_EVENT = "feature_cache"
READ, COMPUTED = "read", "computed"

logger = logging.getLogger(__name__)


def weights_id(backbone, weights):
    """A string that changes whenever the backbone's weights do.

    Args:
        backbone: backbone name (see ``build_backbone``).
        weights: "imagenet" or a weights file path.

    Returns:
        "sha256:<hex>" of the weights file for EfficientNet-Lite0 and for paths;
        "keras-<version>:imagenet" for ``keras.applications`` ImageNet weights.

    Raises:
        ValueError: for ``weights=None`` (random weights give features worth no cache).
    """
    if weights is None:
        raise ValueError("Random weights give features that are not worth caching. Received: weights=None")
    if weights != "imagenet":
        return f"sha256:{file_sha256(weights)}"
    if backbone == LITE0:
        return f"sha256:{file_sha256(imagenet_weights_path())}"
    return f"keras-{keras.__version__}:imagenet"


def backbone_fingerprint(model, image_size):
    """Hex digest of what the backbone computes: its features of two fixed probe images.

    Catches every change that alters features (weights, preprocessing,
    architecture), which a weights hash alone would miss; features are rounded to
    4 decimals before hashing.
    """
    probe = np.random.default_rng(0).integers(0, 256, (2, image_size, image_size, 3), dtype=np.uint8)
    features = np.round(np.asarray(model(probe, training=False), np.float64), 4) + 0.0
    return hashlib.sha256(features.tobytes()).hexdigest()[:16]


def _weights_file(backbone, weights):
    """The weights file behind ``weights`` (None for ``keras.applications``' own ImageNet weights)."""
    if weights != "imagenet":
        return weights
    return imagenet_weights_path() if backbone == LITE0 else None


def _backbone_key(backbone, weights, image_size, pooling="avg", gem_power=None):
    """``(weights_id, backbone_fingerprint)`` of a frozen backbone: built once per process for each backbone,
    weights file (its real path and ``file_stamp``: a file rewritten in place is built and hashed anew), size
    and pooling, not once per split and view whose cache is looked up."""
    path = _weights_file(backbone, weights)
    stamp = None if path is None else (real_path(path), tuple(file_stamp(path)))
    return _backbone_key_of(backbone, weights, image_size, stamp, pooling, gem_power)


@functools.lru_cache(maxsize=64)
def _backbone_key_of(backbone, weights, image_size, stamp, pooling, gem_power):
    """``_backbone_key``; ``stamp`` keys the memo by the weights file's identity."""
    model = _frozen(backbone, image_size, weights, pooling, gem_power)
    return weights_id(backbone, weights), backbone_fingerprint(model, image_size)


def _cache_metadata(backbone, weights, image_size, dataset_id, content, pooling="avg", gem_power=None):
    """The cache key's fields; "pooling" only when not the average, so that older caches keep their keys."""
    identity, fingerprint = _backbone_key(backbone, weights, image_size, pooling, gem_power)
    key = pooling_key(pooling, gem_power)
    return {
        **({} if key is None else {"pooling": key}),
        "content": content,
        "format": _CACHE_FORMAT,
        "backbone": backbone,
        "weights": identity,
        "fingerprint": fingerprint,
        "image_size": image_size,
        "dataset": dataset_id,
    }


def _cache_path(metadata, cache_dir):
    key = hashlib.sha256(json.dumps(metadata, sort_keys=True).encode()).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9.]+", "_", metadata["dataset"]).strip("_")[-60:]
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir("features")
    return directory / f"{slug}-{metadata['backbone']}-{metadata['image_size']}-{key}.npz"


def feature_cache_path(dataset_id, backbone=LITE0, weights="imagenet", image_size=224, cache_dir=None,
                       content=None, pooling="avg", gem_power=None):
    """The cache file of one dataset split's features (builds the backbone to key it, once per process).

    Args:
        dataset_id: a string naming the images and their order, e.g.
            "cars196:/data/cars196:test".
        backbone, weights, image_size: as for ``extract_features``.
        cache_dir: cache directory; default ``default_cache_dir("features")``.
        content: the images' content key (``content_key``), None for in-memory data.
        pooling, gem_power: as for ``extract_features``.

    Returns:
        ``pathlib.Path`` "<dataset>-<backbone>-<size>-<key>.npz", key = the first 16
        hex digits of the SHA-256 of the metadata: backbone name, weights file hash,
        ``backbone_fingerprint``, pooling (unless "avg"), image size, dataset id and content key.

    Example:
    >>> feature_cache_path("digits:test", "resnet50", cache_dir="/tmp").name  # doctest: +SKIP
    'digits_test-resnet50-224-5c1f0a8e2b7d9c11.npz'
    """
    return _cache_path(_cache_metadata(backbone, weights, image_size, dataset_id, content, pooling, gem_power),
                       cache_dir)


def content_key(dataset):
    """The key of the files a dataset is read from (``References.content_key``: a folder's scan
    fingerprint, else the files' real paths and stamps), or None for other datasets.

    Example:
    >>> content_key(tf.data.Dataset.range(2)) is None
    True
    """
    references = references_of(dataset)
    return None if references is None else references.content_key()


def _batched_images(dataset, image_size, batch_size):
    """Batches ``(image, label)`` elements and brings images to float ``[S, S, 3]`` (0..255).

    Images of another size or one channel go through the ``ImagePreprocessing``
    layer every backbone starts with (area resize, channel tiling), so the
    features equal those of a model built on the raw images.
    """
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) != 2 or spec[0].shape.rank not in (3, 4):
        raise ValueError(
            "`dataset` must yield (image [H, W, C], label) pairs, batched or not. "
            f"Received: element_spec={spec!r}"
        )
    if spec[0].shape.rank == 3:
        dataset = dataset.batch(batch_size)
    if tuple(dataset.element_spec[0].shape[1:]) != (image_size, image_size, 3):
        preprocess = ImagePreprocessing(image_size=(image_size, image_size), channels=3, rescale=False)
        dataset = dataset.map(lambda images, labels: (preprocess(images), labels))
    return dataset.prefetch(2)


def extract_features(
    dataset,
    backbone=LITE0,
    image_size=224,
    weights="imagenet",
    dataset_id=None,
    cache_dir=None,
    batch_size=64,
    verbose="auto",
    part_size=PART_SIZE,
    content=None,
    rows=False,
    pooling="avg",
    gem_power=None,
):
    """Embeds every image once with a frozen pretrained backbone, cached on disk.

    Args:
        dataset: ``tf.data.Dataset`` of ``(image, label)`` pairs, image uint8 RGB
            [H, W, C] (or float 0..255), batched or not; images of another size or
            with one channel are resized (area) and tiled to ``image_size`` RGB as
            every backbone's ``ImagePreprocessing`` layer does. Iterated once, in order.
        backbone: backbone name (see ``build_backbone``), default "efficientnet_lite0".
        image_size: input side in pixels.
        weights: "imagenet" or a weights file path (None: random, never cached).
        dataset_id: a string naming the images and their order ("cars196:<root>:test");
            None disables the cache.
        content: the key of the images' content, part of the cache key; None:
            ``content_key(dataset)`` (for a dataset read from files: a folder's scan
            fingerprint, else the files' real paths and ``rankloss_tf.references.file_stamp``;
            None for other datasets).
        cache_dir: cache directory; default ``$RANKLOSS_TF_CACHE/features`` or
            ``~/.cache/rankloss_tf/features``.
        batch_size: images per forward pass when ``dataset`` is not batched.
        verbose: Keras progress-bar verbosity ("auto", 0, 1 or 2).
        part_size: images (whole batches) per part written to disk while a cached
            extraction runs; it resumes after a kill from the last complete part.
        rows: return the cached features as ``FeatureRows`` on disk (the parts are
            kept, not joined; a joined cache file is read as it is) instead of arrays;
            without a cache (no ``dataset_id``, or random weights) the arrays are returned.
        pooling: how the backbone's last feature map is pooled, "avg" or "gem" (generalised mean,
            ``rankloss_tf.backbones.pooling``; often the better frozen features for retrieval).
        gem_power: the exponent ``p`` of "gem" (None: 3); refused with "avg".

    Returns:
        (features, labels): float32 [N, F] pooled backbone features (F = 1280 for
        EfficientNet-Lite0) and the labels [N] in the dataset's order; or, with
        ``rows`` and a cache, ``FeatureRows`` holding them. With a cache, one INFO log
        record says whether the features were read from it or computed (its
        ``CACHE_EVENT`` attribute: ``(READ or COMPUTED, cache path)``).

    Raises:
        ValueError: on an empty dataset or one that does not yield (image, label) pairs, or an invalid pooling.

    Example:
    >>> images = np.zeros((4, 32, 32, 3), np.uint8)
    >>> ds = tf.data.Dataset.from_tensor_slices((images, np.arange(4)))
    >>> features, labels = extract_features(ds, "MobileNetV3Small", 32, weights=None)
    >>> features.shape, labels.tolist()
    ((4, 576), [0, 1, 2, 3])
    """
    content = content_key(dataset) if content is None else content
    batches = _batched_images(dataset, image_size, batch_size)
    count = int(dataset.cardinality()) if dataset.element_spec[0].shape.rank == 3 else -1
    count = count if count >= 0 else None
    if dataset_id is None or weights is None:
        return _joined(_embed(_frozen(backbone, image_size, weights, pooling, gem_power), batches, count, verbose))
    metadata = _cache_metadata(backbone, weights, image_size, dataset_id, content, pooling, gem_power)
    path = _cache_path(metadata, cache_dir)
    cached = _readable_rows([path], metadata, remove=True) if rows else read_features(path, metadata)
    if cached is not None:
        _cache_event(READ, path)
        return cached if rows else cached[:2]
    files = complete_parts(path, metadata)
    found = _readable_rows(files, metadata) if rows and files else None
    if found is not None:
        _cache_event(READ, path)
        return found
    computed = files is None or rows  # none yet, or a complete part damaged since: the good leading parts are kept
    if computed:  # the only case that needs the backbone itself: features cached build none
        model = _frozen(backbone, image_size, weights, pooling, gem_power)
        files = _extract_parts(model, batches, count, verbose, path, metadata, part_size)
    _cache_event(COMPUTED if computed else READ, path)
    return FeatureRows(files, metadata) if rows else join_parts(path, metadata, len(files))


def _frozen(backbone, image_size, weights, pooling="avg", gem_power=None):
    """The frozen backbone that computes features."""
    return build_backbone(backbone, image_size=image_size, weights=weights, trainable=False, pooling=pooling,
                          gem_power=gem_power)


def _cache_event(event, path):
    """Logs (INFO) what the cache gave: ``READ`` or ``COMPUTED``, in the record's ``CACHE_EVENT`` attribute."""
    message = "Features from cache %s" if event == READ else "Features computed and cached in %s"
    logger.info(message, path, extra={CACHE_EVENT: (event, str(path))})


def _readable_rows(files, metadata, remove=False):
    """``FeatureRows`` of ``files``, or None: a file missing, or damaged (named in a warning; removed with
    ``remove``, else left for ``done_parts`` to find)."""
    if not all(Path(file).is_file() for file in files):
        return None
    try:
        return FeatureRows(files, metadata)
    except ValueError as error:
        logger.warning("%s; recomputing.", error)
        if remove:
            for file in files:
                Path(file).unlink(missing_ok=True)
        return None


def _extract_parts(model, batches, count, verbose, path, metadata, part_size):
    """Embeds the batches the parts of ``path`` do not hold yet, marks the parts complete; their files."""
    parts, done, images = done_parts(path, metadata)
    if parts:
        logger.warning("Resuming the feature extraction into %s after %d images (%d parts).", path, images, parts)
    embedded = _embed(model, batches.skip(done), count, verbose, initial=images)
    parts = write_parts(path, metadata, embedded, part_size, start=parts)
    if not parts:
        raise ValueError("`dataset` has no images. Received: an empty dataset")
    mark_complete(path, metadata, parts)
    return complete_parts(path, metadata)


def extract_view_features(dataset, view, base_size, backbone=LITE0, weights="imagenet", dataset_id=None,
                          cache_dir=None, batch_size=64, verbose="auto", rows=False, pooling="avg",
                          gem_power=None):
    """``extract_features`` of one ``View`` of the images, cached under the view's name.

    The images go through ``ImageView(view.size, view.mirror)`` (mirror,
    area resize, integer type kept), as in the joined image model
    (``rankloss_tf.models.embedding_model``), then through the backbone
    built for ``view.size``.

    Args:
        dataset: ``tf.data.Dataset`` of unbatched ``(image, label)`` pairs.
        view: a ``rankloss_tf.backbones.image_views.View``.
        base_size: the size whose views keep a short name ("plain", "flip").
        backbone, weights, cache_dir, batch_size, verbose, rows, pooling, gem_power: as for
            ``extract_features``.
        dataset_id: the images' id; the cache id is ``dataset_id + ":" + view.name(base_size)``
            (None disables the cache), with ``content_key(dataset)``.

    Returns:
        (features [N, F], labels [N]) of the viewed images (``FeatureRows`` with ``rows`` and a cache).

    Example:
    >>> from rankloss_tf.backbones.image_views import View
    >>> ds = tf.data.Dataset.from_tensor_slices((np.zeros((2, 8, 8, 3), np.uint8), np.arange(2)))
    >>> extract_view_features(ds, View(32, mirror=True), 8, "MobileNetV3Small", weights=None)[0].shape
    (2, 576)
    """
    content = content_key(dataset)
    layer = ImageView(view.size, view.mirror)
    viewed = dataset.batch(batch_size).map(lambda images, labels: (layer(images), labels))
    return extract_features(
        viewed, backbone=backbone, image_size=view.size, weights=weights, cache_dir=cache_dir, verbose=verbose,
        content=content, dataset_id=None if dataset_id is None else f"{dataset_id}:{view.name(base_size)}", rows=rows,
        pooling=pooling, gem_power=gem_power)


def _embed(model, batches, count, verbose, initial=0):
    """Runs the backbone over the batches with a progress bar: yields (features [b, F], labels [b]) per batch."""
    # One function per model (traced once each: every backbone is a new model); a partial, not a lambda, so
    # that TensorFlow does not take the views' and splits' models for one function retraced again and again.
    forward = tf.function(functools.partial(model, training=False), reduce_retracing=True)
    progress = keras.utils.Progbar(count, verbose=verbose, unit_name="image")
    progress.update(initial)
    for images, labels in batches:
        features = forward(images).numpy().astype(np.float32)
        progress.add(len(features))
        yield features, labels.numpy()


def _joined(embedded):
    """All embedded batches as one (features [N, F], labels [N])."""
    pairs = list(embedded)
    if not pairs:
        raise ValueError("`dataset` has no images. Received: an empty dataset")
    return np.concatenate([features for features, _ in pairs]), np.concatenate([labels for _, labels in pairs])
