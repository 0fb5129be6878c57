"""Galleries to index: a dataset name, a ``folder:`` path (every image, labelled by class folder) or arrays."""

import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from rankloss_tf import datasets

__all__ = ["Gallery", "load_gallery"]


class Gallery:
    """Images to index, batch by batch, with their labels, ids and paths.

    Attributes:
        dataset: ``tf.data.Dataset`` of ``(uint8 image [H, W, C], label)``.
        ids: ``[N]`` unique strings.
        paths: ``[N]`` source paths ("" where unknown).
        skipped: ``[(path, reason)]`` of the files left out (a folder's
            unreadable files, as training leaves them out).

    Example:
    >>> dataset = tf.data.Dataset.from_tensor_slices((np.zeros((2, 8, 8, 1), np.uint8), [0, 1]))
    >>> len(Gallery(dataset, ["a", "b"], ["", ""]))
    2
    """

    def __init__(self, dataset, ids, paths, skipped=()):
        self.dataset, self.ids, self.paths = dataset, np.asarray(ids, object), np.asarray(paths, object)
        self.skipped = list(skipped)

    def __len__(self):
        return len(self.ids)


def _folder_gallery(root, image_size):
    """Every readable image of ``datasets.scan_folder(root)``: labels as in training, id = relative path."""
    scan = datasets.scan_folder(root)
    files = [f for name in scan.classes for f in scan.files[name]]
    labels = np.concatenate([np.full(len(scan.files[name]), label, np.int64) for label, name in enumerate(scan.classes)])
    decode = datasets.image_decoder(image_size, channels=3)
    dataset = tf.data.Dataset.from_tensor_slices(([os.fsencode(f) for f in files], labels))
    ids = [str(Path(f).relative_to(scan.root)) for f in files]
    dataset = dataset.map(lambda f, y: (decode(f), y), num_parallel_calls=tf.data.AUTOTUNE)
    return Gallery(dataset, ids, files, scan.unreadable)


def load_gallery(source, split="test", data_dir=None, image_size=None, labels=None):
    """A ``Gallery`` from a dataset name, a ``folder:PATH`` or an array of images.

    Args:
        source: a ``datasets.load`` name (its ``split``; ids
            ``"<name>/<split>/<position>"``), ``"folder:PATH"`` (every image
            ``datasets.scan_folder`` finds readable, as training does: hidden
            folders are not classes, unreadable files are left out and
            listed in ``skipped``; ids = paths relative to PATH, labels =
            ranks of the sorted class folder names), or uint8 images
            ``[N, H, W, C]`` (then ``labels`` is required; ids "0", "1", ...).
        split: the split of a named dataset.
        data_dir: the dataset's local copy (see ``datasets.load``).
        image_size: resize when loading (int or (height, width)); the index's
            model also conforms images of any size itself.
        labels: ``[N]`` int labels of array images.

    Raises:
        ValueError: unknown names, missing folders, mismatched arrays.

    Example:
    >>> gallery = load_gallery("digits", split="test")
    >>> len(gallery), gallery.ids[0]
    (896, 'digits/test/000000')
    """
    if datasets.folder_path(source) is not None:
        return _folder_gallery(datasets.folder_path(source), image_size)
    if isinstance(source, str):
        dataset = datasets.load(source, split, data_dir=data_dir, image_size=image_size)
        size = int(dataset.cardinality())
        if size < 0:
            size = sum(1 for _ in dataset)
        ids = [f"{source}/{split}/{i:06d}" for i in range(size)]
        return Gallery(dataset, ids, [""] * size)
    images = np.asarray(source)
    if labels is None or len(np.asarray(labels)) != len(images):
        raise ValueError(
            f"Array galleries need one label per image. Received: {len(images)} images, "
            f"{None if labels is None else len(np.asarray(labels))} labels"
        )
    dataset = tf.data.Dataset.from_tensor_slices((images, np.asarray(labels, np.int64)))
    return Gallery(dataset, [str(i) for i in range(len(images))], [""] * len(images))
