"""A folder with one sub-folder of images per class, split into disjoint train / test classes.

``scan_folder(path)`` lists the class sub-folders and their images and decodes
every image once, so that a file that cannot be read is named and left out
before training starts, never met mid-epoch. The scan is cached per folder
(keyed by every file's path, size and modification time) under
``$RANKLOSS_TF_CACHE/folders`` (default ``~/.cache/rankloss_tf/folders``).

Split: the class folders, sorted by name, are shuffled with ``seed``; the
first ``round(train_fraction x C)`` are "train", the rest "test" (held-out
classes, the zero-shot protocol). The same folder, fraction and seed always give
the same split. Images are decoded to RGB (grey images are repeated over the
three channels, an alpha channel is dropped, a GIF gives its first frame) and,
with ``image_size``, resized (antialiased bilinear, aspect ratio not kept).
"""

import concurrent.futures
import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from rankloss_tf.cache import default_cache_dir
from rankloss_tf.datasets.images import image_decoder
from rankloss_tf.io.atomic import write_file

__all__ = ["FolderIndex", "IMAGE_SUFFIXES", "load_folder", "scan_folder", "split_classes"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


@dataclasses.dataclass
class FolderIndex:
    """The readable images of a class folder.

    Attributes:
        root: the folder.
        classes: class (sub-folder) names, sorted; a label is an index here.
        files: ``{class name: [image paths]}``, readable images only, sorted.
        unreadable: ``[(path, reason)]`` of the files left out.

    Example:
    >>> FolderIndex("photos", ["cats"], {"cats": ["photos/cats/a.jpg"]}, []).classes
    ['cats']
    """

    root: str
    classes: list
    files: dict
    unreadable: list


def _cache_path(root, listing):
    key = hashlib.sha256(json.dumps([str(root), listing]).encode()).hexdigest()[:16]
    return default_cache_dir("folders") / f"{key}.json"


def _problem(path):
    """Why ``path`` cannot be decoded as an image, or None when it can."""
    try:
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    except (tf.errors.OpError, ValueError) as error:
        message = getattr(error, "message", str(error)) or type(error).__name__
        return message.strip().splitlines()[0][:200]
    if min(image.shape[:2]) < 1:
        return "empty image"
    return None


def scan_folder(path):
    """Lists and checks the images of a class folder.

    Args:
        path: a folder with one sub-folder per class (images may sit deeper).

    Returns:
        A ``FolderIndex``.

    Raises:
        ValueError: a missing folder, or no class sub-folder with a readable image.

    Example:
    >>> index = scan_folder("photos")  # doctest: +SKIP
    >>> index.classes, index.unreadable  # doctest: +SKIP
    (['cats', 'dogs'], [('photos/dogs/broken.jpg', 'Unknown image file format...')])
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise ValueError(f"The folder does not exist. Received: {path!r}")
    candidates = {}
    for class_dir in sorted(entry for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith(".")):
        images = sorted(str(f) for f in class_dir.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if images:
            candidates[class_dir.name] = images
    listing = [(f, os.stat(f).st_size, os.stat(f).st_mtime_ns) for images in candidates.values() for f in images]
    cache = _cache_path(root.resolve(), listing)
    if cache.is_file():
        problems = dict(json.loads(cache.read_text()))
    else:
        paths = [f for f, _, _ in listing]
        with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            problems = {f: reason for f, reason in zip(paths, pool.map(_problem, paths)) if reason}
        write_file(cache, json.dumps(sorted(problems.items())))
    files = {name: [f for f in images if f not in problems] for name, images in candidates.items()}
    files = {name: images for name, images in files.items() if images}
    if not files:
        raise ValueError(
            f"The folder holds no class sub-folder with readable images ({', '.join(IMAGE_SUFFIXES)}). "
            f"Received: {path!r}"
        )
    return FolderIndex(root=str(root), classes=list(files), files=files, unreadable=sorted(problems.items()))


def split_classes(index, split, train_fraction=0.5, seed=0):
    """The labels (class indices of ``index``) of one split, sorted; see the module docstring.

    Raises:
        ValueError: a fraction outside (0, 1), or a split with fewer than 2 classes.

    Example:
    >>> index = FolderIndex("photos", ["a", "b", "c", "d"], {}, [])
    >>> split_classes(index, "train", seed=0).tolist(), split_classes(index, "test", seed=0).tolist()
    ([0, 2], [1, 3])
    """
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"`train_fraction` must lie in (0, 1). Received: train_fraction={train_fraction!r}")
    order = np.random.default_rng(seed).permutation(len(index.classes))
    num_train = int(round(train_fraction * len(index.classes)))
    chosen = np.sort(order[:num_train] if split == "train" else order[num_train:])
    if chosen.size < 2:
        raise ValueError(
            f"The {split!r} split needs at least 2 classes. Received: {chosen.size} of {len(index.classes)} "
            f"classes with train_fraction={train_fraction} in {index.root!r}"
        )
    return chosen


def load_folder(path, split, image_size=None, train_fraction=0.5, seed=0):
    """Images under ``path/<class>/...`` as (uint8 image [H, W, 3], int64 label).

    Labels are the ranks of the (readable) class folder names in sorted order,
    over all classes. See the module docstring for the split, the decoding and
    the files left out (``scan_folder``). Images are read lazily from disk;
    give ``image_size`` when their sizes differ.

    Raises:
        ValueError: missing folder, no class folder with readable images, a
            fraction outside (0, 1), or a split with fewer than 2 classes.

    Example:
    >>> train = load_folder("photos", "train", image_size=64)  # doctest: +SKIP
    >>> train.element_spec[0].shape  # doctest: +SKIP
    TensorShape([64, 64, 3])
    """
    index = scan_folder(path)
    chosen = split_classes(index, split, train_fraction, seed)
    names = index.classes
    paths = [f for label in chosen for f in index.files[names[label]]]
    labels = np.concatenate([np.full(len(index.files[names[label]]), label, np.int64) for label in chosen])
    decode = image_decoder(image_size, channels=3)
    return tf.data.Dataset.from_tensor_slices((paths, labels)).map(
        lambda file, label: (decode(file), label), num_parallel_calls=tf.data.AUTOTUNE
    )
