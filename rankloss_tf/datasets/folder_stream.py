"""A class folder's zero-shot half, streamed from its files (``load("folder:PATH", ...)``)."""

import os

import numpy as np

from rankloss_tf.datasets.folder import scan_folder, split_classes
from rankloss_tf.datasets.images import image_decoder
from rankloss_tf.references import References, streamed

__all__ = ["class_references", "folder_references", "load_folder_stream"]


def folder_references(path, split, image_size=None, train_fraction=0.5, seed=0):
    """The ``References`` of one split of a class folder: its readable image paths and labels.

    Scan, split and labels are those of ``rankloss_tf.datasets.folder``
    (``scan_folder``, ``split_classes``: labels are the ranks of the readable
    class folders' names). Reading one reference decodes it to RGB and resizes
    it to ``image_size``.

    Raises:
        ValueError: missing folder, no class folder with readable images, a
            fraction outside (0, 1), or a split with fewer than 2 classes.

    Example:
    >>> refs = folder_references("photos", "train", image_size=64)  # doctest: +SKIP
    >>> refs.items[:1], refs.labels[:1]  # doctest: +SKIP
    (array([b'photos/cats/a.jpg'], dtype='|S17'), array([0]))
    """
    index = scan_folder(path)
    chosen = split_classes(index, split, train_fraction, seed)
    return class_references(index, chosen, image_size, tag=f"folder:{split}:{train_fraction}:{seed}:{image_size}")


def class_references(index, labels, image_size=None, tag=""):
    """The ``References`` of some classes of a scanned folder: their readable images, class after class.

    The one place a folder's images become references, for training and
    for an index's gallery: their content key (``References.content_key``)
    is the scan's fingerprint (``FolderIndex.fingerprint``, the files stamped
    once, by the scan) with ``tag`` (what else defines the examples: split,
    image size), so the files are not stamped a second time.

    Args:
        index: a ``FolderIndex`` (``scan_folder``).
        labels: the classes (indices into ``index.classes``), in order; they are the labels.
        image_size: side (or (height, width)) each image is resized to as it is read; None keeps it.
        tag: what defines the examples besides the files.

    Example:
    >>> refs = class_references(scan_folder("photos"), [0, 1], 64, tag="all:64")  # doctest: +SKIP
    >>> refs.content_key()  # doctest: +SKIP
    '3f0c...'
    """
    files = [index.files[index.classes[label]] for label in labels]
    paths = np.array([os.fsencode(f) for class_files in files for f in class_files])  # bytes: any file name
    labels = np.repeat(np.asarray(labels, np.int64), [len(class_files) for class_files in files])
    return References(paths, labels, read=image_decoder(image_size, channels=3), tag=tag, key=index.fingerprint)


def load_folder_stream(path, split, image_size=None, train_fraction=0.5, seed=0):
    """Images under ``path/<class>/...`` as (uint8 image [H, W, 3], int64 label), read lazily from disk.

    The ``rankloss_tf.references.streamed`` dataset of ``folder_references``
    (which says the split, labels and errors): the P x K sampler keeps only
    the paths and labels in memory, and the feature cache is keyed by the
    scan's fingerprint (the files' paths and ``rankloss_tf.references.file_stamp``). Give ``image_size`` when the
    images' sizes differ.

    Example:
    >>> train = load_folder_stream("photos", "train", image_size=64)  # doctest: +SKIP
    >>> train.element_spec[0].shape  # doctest: +SKIP
    TensorShape([64, 64, 3])
    """
    return streamed(folder_references(path, split, image_size, train_fraction, seed))
