"""A look at a few images of a "folder:" or "tfrecord:" dataset: their size and whether colour carries information.

``sample_dataset(name)`` decodes up to ``SAMPLE_SIZE`` images spread evenly over
the dataset (a folder's readable images in class then file order, the records
of TFRecord files that hold an image, in file then record order) and describes them with an ``ImageSample``. An image
"carries colour" when its pixels' spread over the R, G, B channels (max - min,
0-255) averages above ``COLOUR_SPREAD``: a grey image saved as RGB (a JPEG's
chroma noise included) stays below it, a colour photo lies far above
(Cars196: 19.7 at the median, 95 % of images above 5.6). What follows from a
sample (which training recipe) is the application's decision
(``rankloss_tf.app.recipes``).
"""

import dataclasses
import functools
import os

import numpy as np
import tensorflow as tf

__all__ = ["COLOUR_SPREAD", "ImageSample", "SAMPLE_SIZE", "describe_images", "sample_dataset"]

SAMPLE_SIZE = 24
COLOUR_SPREAD = 4.0


@dataclasses.dataclass(frozen=True)
class ImageSample:
    """What a few images of a dataset look like.

    Attributes:
        count: images looked at.
        colour_fraction: the share of them that carry colour (see the module docstring).
        height, width: the median height and width, pixels.

    Example:
    >>> ImageSample(count=4, colour_fraction=0.0, height=105, width=105).largest_side
    105
    """

    count: int
    colour_fraction: float
    height: int
    width: int

    @property
    def largest_side(self):
        """The larger of the median height and width."""
        return max(self.height, self.width)


def _colour_spread(image):
    """Mean over pixels of max - min over the R, G, B channels (0 for one or two channels)."""
    if image.shape[-1] < 3:
        return 0.0
    rgb = image[..., :3].astype(np.int16)
    return float(np.mean(rgb.max(axis=-1) - rgb.min(axis=-1)))


def _decoded(data):
    """The image ``data`` encodes, or None when it does not decode."""
    try:
        return tf.io.decode_image(data, channels=0, expand_animations=False).numpy()
    except tf.errors.InvalidArgumentError:
        return None


def describe_images(encoded):
    """An ``ImageSample`` of encoded images (JPEG, PNG, BMP, GIF, WebP bytes); bytes that do not decode are skipped.

    The loaders name damaged files and records themselves; the sample only
    describes what it can read.

    Raises:
        ValueError: no image given, or none that decodes.

    Example:
    >>> grey = tf.io.encode_png(tf.zeros([20, 30, 1], tf.uint8)).numpy()
    >>> describe_images([grey])
    ImageSample(count=1, colour_fraction=0.0, height=20, width=30)
    """
    images = [image for image in map(_decoded, encoded) if image is not None]
    if not images:
        raise ValueError(f"An image of the dataset cannot be decoded: none of the {len(encoded)} sampled images "
                         f"decodes (damaged files, or not images). Received: {len(encoded)} encoded images")
    colour = [_colour_spread(image) > COLOUR_SPREAD for image in images]
    return ImageSample(count=len(images), colour_fraction=float(np.mean(colour)),
                       height=int(np.median([image.shape[0] for image in images])),
                       width=int(np.median([image.shape[1] for image in images])))


def _spread(items, count):
    """Up to ``count`` of ``items``, evenly spaced from the first to the last."""
    if len(items) <= count:
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, count).round().astype(int)]


@functools.lru_cache(maxsize=32)
def _sample_files(paths, fingerprint):
    """``paths``: the files to describe; ``fingerprint``: the folder scan's (part of the cache key: a changed file
    changes it, and the files are described anew)."""
    return describe_images([tf.io.read_file(os.fsencode(path)).numpy() for path in paths])


@functools.lru_cache(maxsize=32)
def _sample_records(files, count):
    """Up to ``count`` records spread evenly over all the records of ``files`` that hold an image (files are often
    written class by class: the first records would be one class's)."""
    from rankloss_tf.datasets.tfrecord import FEATURES, IMAGE, index_checked, read_record

    numbers, offsets, lengths, _, _, images = index_checked(list(files))
    chosen = _spread(np.flatnonzero(images.astype(bool)), count)
    records = [read_record(files, numbers, offsets, lengths, position) for position in chosen]
    return describe_images([tf.io.parse_single_example(record, FEATURES)[IMAGE].numpy() for record in records])


def sample_dataset(name, count=SAMPLE_SIZE):
    """An ``ImageSample`` of a "folder:PATH" or "tfrecord:PATTERN" dataset, None for any other name.

    A folder is read through ``scan_folder`` (its readable images only); the
    same files are described once per process, keyed by the scan's
    fingerprint of every file's stamp (no file is looked at again).

    Raises:
        ValueError: a missing or empty folder, a ``tfrecord:`` pattern ``tfrecord_files`` refuses.

    Example:
    >>> sample_dataset("folder:photos").colour_fraction  # doctest: +SKIP
    1.0
    >>> sample_dataset("omniglot") is None
    True
    """
    from rankloss_tf.datasets.folder import folder_path, scan_folder
    from rankloss_tf.datasets.tfrecord import TFRECORD_PREFIX, tfrecord_files

    folder = folder_path(name)
    if folder is not None:
        index = scan_folder(folder)
        files = [path for images in index.files.values() for path in images]
        return _sample_files(tuple(_spread(files, count)), index.fingerprint)
    if not (isinstance(name, str) and name.startswith(TFRECORD_PREFIX)):
        return None
    return _sample_records(tuple(tfrecord_files(name[len(TFRECORD_PREFIX):])), count)
