"""A class folder's zero-shot half, streamed from its files (``load("folder:PATH", ...)``)."""

import os

import numpy as np

from rankloss_tf.datasets.folder import scan_folder, split_classes
from rankloss_tf.datasets.images import image_decoder
from rankloss_tf.references import References, streamed

__all__ = ["folder_references", "load_folder_stream"]


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
    files = [index.files[index.classes[label]] for label in chosen]
    paths = np.array([os.fsencode(f) for class_files in files for f in class_files])  # bytes: any file name
    labels = np.repeat(chosen.astype(np.int64), [len(class_files) for class_files in files])
    decode = image_decoder(image_size, channels=3)
    return References(paths, labels, read=decode, tag=f"folder:{split}:{train_fraction}:{seed}:{image_size}")


def load_folder_stream(path, split, image_size=None, train_fraction=0.5, seed=0):
    """Images under ``path/<class>/...`` as (uint8 image [H, W, 3], int64 label), read lazily from disk.

    The ``rankloss_tf.references.streamed`` dataset of ``folder_references``
    (which says the split, labels and errors): the P x K sampler keeps only
    the paths and labels in memory, and the feature cache is keyed by the
    files' names and stamps (``rankloss_tf.references.file_stamp``). Give ``image_size`` when the
    images' sizes differ.

    Example:
    >>> train = load_folder_stream("photos", "train", image_size=64)  # doctest: +SKIP
    >>> train.element_spec[0].shape  # doctest: +SKIP
    TensorShape([64, 64, 3])
    """
    return streamed(folder_references(path, split, image_size, train_fraction, seed))
