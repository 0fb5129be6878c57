"""Dataset loaders with the zero-shot protocol (train and test classes disjoint).

``load(name, split)`` returns a ``tf.data.Dataset`` of (uint8 image [H, W, C],
int64 label); feed it, or its arrays / file paths, to
``rankloss_tf.data.pk_batches``.
"""

import functools

from rankloss_tf.datasets.cars196 import load_cars196
from rankloss_tf.datasets.digits import load_digits
from rankloss_tf.datasets.folder import FOLDER_PREFIX, folder_path, one_scan, scan_folder
from rankloss_tf.datasets.folder_stream import class_references, load_folder_stream
from rankloss_tf.datasets.images import image_decoder
from rankloss_tf.datasets.omniglot import load_omniglot
from rankloss_tf.datasets.tfds_sets import load_tfds
from rankloss_tf.datasets.tfrecord import TFRECORD_PREFIX, load_tfrecord, write_folder

SPLITS = ("train", "test")

_LOADERS = {
    "digits": lambda split, data_dir, image_size: load_digits(split, image_size),
    "omniglot": load_omniglot,
    "cars196": load_cars196,
    "caltech_birds2011": functools.partial(load_tfds, "caltech_birds2011"),
    "stanford_online_products": functools.partial(load_tfds, "stanford_online_products"),
}

NAMES = tuple(sorted(_LOADERS)) + (FOLDER_PREFIX + "PATH", TFRECORD_PREFIX + "PATTERN")


def sizes_vary(name):
    """True for the sources whose images may differ in size ("folder:", "tfrecord:"): give an ``image_size``.

    Example:
    >>> sizes_vary("tfrecord:/data/photos-*.tfrecord"), sizes_vary("omniglot")
    (True, False)
    """
    return isinstance(name, str) and name.startswith((FOLDER_PREFIX, TFRECORD_PREFIX))


def load(name, split, data_dir=None, image_size=None, *, train_fraction=0.5, seed=0):
    """Loads one zero-shot half of a dataset as a ``tf.data.Dataset`` of (image, label).

    | name | source | train / test classes | image (native) |
    | --- | --- | --- | --- |
    | "digits" | scikit-learn's bundled digits | 0-4 / 5-9 | 8x8x1 |
    | "omniglot" | ``data_dir`` with the small1/small2 zips, else TFDS | 5 / 3 alphabets (136 / 106) | 105x105x1 |
    | "cars196" | ``data_dir`` with labels.csv + crops, else TFDS | 1-98 / 99-196 | 224x224x3 crops |
    | "caltech_birds2011" | TFDS | first 100 / last 100 | varies (224 default) |
    | "stanford_online_products" | TFDS | official (11,318 / 11,316) | varies (224 default) |
    | "folder:PATH" | one sub-folder per class | shuffled by ``seed``, ``train_fraction`` | as stored |
    | "tfrecord:PATTERN" | TFRecord files (``datasets.tfrecord``) | as "folder:", by label | as stored |

    Images are uint8 (models do their own preprocessing). Labels are int64
    class ids, global to the dataset (test labels are not renumbered); each
    loader's docstring gives them. TFDS sources need the optional extra
    ``pip install rankloss-tf[datasets]`` and download data on first use.
    "folder:", "tfrecord:" and a local Cars196 stream: the P x K sampler keeps
    only their file paths / record positions and labels in memory
    (``rankloss_tf.references``).

    Args:
        name: one of ``NAMES``: "folder:" followed by a directory, "tfrecord:"
            followed by a glob of TFRecord files.
        split: "train" or "test".
        data_dir: a local copy of the data (omniglot, cars196), else the TFDS
            data directory; None uses TFDS's default.
        image_size: int or (height, width) to resize to; None keeps the
            native size (224 for the variable-size TFDS images).
        train_fraction: share of classes in "train" ("folder:", "tfrecord:").
        seed: seed of the class split ("folder:", "tfrecord:").

    Returns:
        A ``tf.data.Dataset`` of (uint8 image [H, W, C], int64 label).

    Raises:
        ValueError: unknown name or split, empty folder, a split with fewer
            than 2 classes.
        ImportError: a TFDS source without tensorflow-datasets installed.

    Example:
    >>> train = load("digits", "train")
    >>> images, labels = next(iter(train.batch(4)))
    >>> images.shape, labels.dtype
    (TensorShape([4, 8, 8, 1]), tf.int64)
    """
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}. Received: split={split!r}")
    if folder_path(name) is not None:
        return load_folder_stream(folder_path(name), split, image_size, train_fraction, seed)
    if isinstance(name, str) and name.startswith(TFRECORD_PREFIX):
        return load_tfrecord(name[len(TFRECORD_PREFIX):], split, image_size, train_fraction, seed)
    if name not in _LOADERS:
        raise ValueError(f"Unknown dataset name; known: {', '.join(NAMES)}. Received: name={name!r}")
    return _LOADERS[name](split, data_dir, image_size)


__all__ = ["FOLDER_PREFIX", "NAMES", "TFRECORD_PREFIX", "class_references", "folder_path", "image_decoder", "load",
           "one_scan", "scan_folder", "sizes_vary", "write_folder"]
