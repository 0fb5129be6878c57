"""Galleries to index: a dataset name, a ``folder:`` path (every image, labelled by class folder) or arrays."""

from pathlib import Path

import numpy as np
import tensorflow as tf

from rankloss_tf import datasets

__all__ = ["Gallery", "load_gallery"]

FOLDER_PREFIX = "folder:"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


class Gallery:
    """Images to index, batch by batch, with their labels, ids and paths.

    Attributes:
        dataset: ``tf.data.Dataset`` of ``(uint8 image [H, W, C], label)``.
        ids: ``[N]`` unique strings.
        paths: ``[N]`` source paths ("" where unknown).

    Example:
    >>> dataset = tf.data.Dataset.from_tensor_slices((np.zeros((2, 8, 8, 1), np.uint8), [0, 1]))
    >>> len(Gallery(dataset, ["a", "b"], ["", ""]))
    2
    """

    def __init__(self, dataset, ids, paths):
        self.dataset, self.ids, self.paths = dataset, np.asarray(ids, object), np.asarray(paths, object)

    def __len__(self):
        return len(self.ids)


def _folder_gallery(root, image_size):
    """Every image under ``root/<class>/``; label = rank of the class folder, id = relative path."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"The gallery folder does not exist. Received: {root}")
    classes = sorted(entry for entry in root.iterdir() if entry.is_dir())
    files, labels = [], []
    for label, class_dir in enumerate(classes):
        found = sorted(str(f) for f in class_dir.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        files += found
        labels += [label] * len(found)
    if not files:
        raise ValueError(f"The gallery folder holds no class sub-folder with images. Received: {root}")
    decode = datasets.image_decoder(image_size, channels=3)
    dataset = tf.data.Dataset.from_tensor_slices((files, np.asarray(labels, np.int64)))
    ids = [str(Path(f).relative_to(root)) for f in files]
    return Gallery(dataset.map(lambda f, y: (decode(f), y), num_parallel_calls=tf.data.AUTOTUNE), ids, files)


def load_gallery(source, split="test", data_dir=None, image_size=None, labels=None):
    """A ``Gallery`` from a dataset name, a ``folder:PATH`` or an array of images.

    Args:
        source: a ``datasets.load`` name (its ``split``; ids
            ``"<name>/<split>/<position>"``), ``"folder:PATH"`` (every image
            of the class sub-folders; ids = paths relative to PATH, labels =
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
    if isinstance(source, str) and source.startswith(FOLDER_PREFIX):
        return _folder_gallery(source[len(FOLDER_PREFIX):], image_size)
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
