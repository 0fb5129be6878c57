"""TFRecord files of encoded images and labels: ``load("tfrecord:PATTERN", ...)``, streamed by record position.

Schema: every record is a ``tf.train.Example`` with

| feature | type | |
| --- | --- | --- |
| ``image/encoded`` | bytes | the encoded image (JPEG, PNG, BMP, GIF), as stored in its file |
| ``image/class/label`` | int64 | the class id |
| ``image/class/text`` | bytes | the class name (optional) |

Files are uncompressed TFRecords (``tf.io.TFRecordWriter`` without
compression); ``PATTERN`` is a glob (``tf.io.gfile.glob``: local paths, or
``gs://`` and other file systems TensorFlow reads), its files read in sorted
order. ``write_folder(folder, prefix)`` writes such files from a class folder
(also ``python -m rankloss_tf.datasets.tfrecord_writer FOLDER PREFIX``).

Loading reads every record once to index it (its file, byte offset, length,
label), cached per file under ``$RANKLOSS_TF_CACHE/tfrecords`` (keyed by the
file's path, size and modification time, so that a second load reads no
record and a rewritten file is indexed afresh), then keeps only that index in
memory: the P x K sampler reads, decodes
and resizes each batch's records by position, in parallel
(``rankloss_tf.references``). Split: the distinct labels, sorted, are split as
a folder's classes are (``rankloss_tf.datasets.folder.split_classes``:
shuffled by ``seed``, the first ``round(train_fraction x C)`` "train").
"""

import hashlib
import json
import logging
import os
import struct
import zipfile

import numpy as np
import tensorflow as tf

from rankloss_tf.cache import default_cache_dir
from rankloss_tf.datasets.folder import FolderIndex, scan_folder, split_classes
from rankloss_tf.datasets.images import resize_uint8
from rankloss_tf.io.atomic import write_file
from rankloss_tf.references import References, streamed

__all__ = ["FEATURES", "TFRECORD_PREFIX", "index_checked", "index_records", "load_tfrecord", "looks_like_an_image",
           "read_record", "record_reader", "tfrecord_files", "write_folder"]

TFRECORD_PREFIX = "tfrecord:"
IMAGE, LABEL, CLASS_NAME = "image/encoded", "image/class/label", "image/class/text"
FEATURES = {
    IMAGE: tf.io.FixedLenFeature([], tf.string),
    LABEL: tf.io.FixedLenFeature([], tf.int64),
    CLASS_NAME: tf.io.FixedLenFeature([], tf.string, default_value=""),
}
_FRAME = 12  # a record's length (8 bytes) and its CRC (4 bytes) before its data; a CRC (4 bytes) after it

logger = logging.getLogger(__name__)


def _example(encoded, label, class_name):
    feature = {
        IMAGE: tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded])),
        LABEL: tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
        CLASS_NAME: tf.train.Feature(bytes_list=tf.train.BytesList(value=[class_name.encode("utf-8",
                                                                                          "surrogateescape")])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_folder(folder, prefix, records_per_file=10_000, overwrite=False):
    """Writes the readable images of a class folder as TFRecord files of the schema above.

    Labels are the ranks of the class folders' names, as ``load("folder:...")``
    gives them; every readable image is written (both splits) with its file's
    bytes as they are (no re-encoding), class after class.

    Args:
        folder: a folder with one sub-folder per class (``scan_folder``).
        prefix: output path prefix; files are ``<prefix>-00000-of-00003.tfrecord``, ...
        records_per_file: records per file.
        overwrite: replace files of those names; without it an existing one is an error.

    Returns:
        The list of written file paths (load them with ``"tfrecord:<prefix>-*.tfrecord"``).

    Raises:
        ValueError: a bad folder, ``records_per_file < 1``, or an output file that
            exists without ``overwrite``.

    Example:
    >>> write_folder("photos", "/data/photos")  # doctest: +SKIP
    ['/data/photos-00000-of-00001.tfrecord']
    """
    if not isinstance(records_per_file, int) or records_per_file < 1:
        raise ValueError(f"`records_per_file` must be an integer >= 1. Received: {records_per_file!r}")
    index, prefix = scan_folder(folder), os.fspath(prefix)
    records = [(path, label, name) for label, name in enumerate(index.classes) for path in index.files[name]]
    count = -(-len(records) // records_per_file)
    paths = [f"{prefix}-{i:05d}-of-{count:05d}.tfrecord" for i in range(count)]
    existing = [path for path in paths if tf.io.gfile.exists(path)]
    if existing and not overwrite:
        raise ValueError(f"TFRecord file exists (pass overwrite=True, or --overwrite, to replace it). Received: {existing[0]!r}")
    tf.io.gfile.makedirs(os.path.dirname(os.path.abspath(paths[0])) if "://" not in paths[0] else os.path.dirname(paths[0]))
    for number, path in enumerate(paths):
        temporary = f"{path}.tmp-writing"
        with tf.io.TFRecordWriter(temporary) as writer:
            for image_path, label, name in records[number * records_per_file:(number + 1) * records_per_file]:
                with open(image_path, "rb") as file:
                    writer.write(_example(file.read(), label, name))
        tf.io.gfile.rename(temporary, path, overwrite=True)
        logger.info("Wrote %s", path)
    return paths


def _parse_label(record):
    """(label, class name) of one record of the schema above."""
    example = tf.io.parse_single_example(record, FEATURES)
    return example[LABEL], example[CLASS_NAME]


def looks_like_an_image(encoded):
    """Whether encoded bytes (a scalar string tensor) start as an image ``tf.io.decode_image`` reads.

    The signatures of JPEG, PNG, GIF, BMP and WebP files: a cheap check of every record while it is indexed
    (a record that passes may still be damaged further on: the reader names it then).

    Example:
    >>> bool(looks_like_an_image(tf.constant(b"\\x89PNG\\r\\n")))
    True
    >>> bool(looks_like_an_image(tf.constant(b"plain text"))), bool(looks_like_an_image(tf.constant(b"")))
    (False, False)
    """
    head = tf.strings.join([tf.strings.substr(encoded, 0, 12), b"\0" * 12])  # padded: any record, however short

    def starts(prefix, at=0):
        return tf.equal(tf.strings.substr(head, at, len(prefix)), prefix)

    return tf.reduce_any(tf.stack([starts(b"\xff\xd8\xff"), starts(b"\x89PNG"), starts(b"GIF8"), starts(b"BM"),
                                   tf.logical_and(starts(b"RIFF"), starts(b"WEBP", 8))]))


def _parse_checked(record):
    """(label, class name, whether the image bytes look like an image) of one record of the schema above."""
    example = tf.io.parse_single_example(record, FEATURES)
    return example[LABEL], example[CLASS_NAME], looks_like_an_image(example[IMAGE])


def _index_file(path, label_of):
    """``(offsets [n], lengths [n], labels [n], class names [n], ...)`` of one TFRecord file's records (the columns
    after the length are ``label_of``'s)."""
    with tf.io.gfile.GFile(path, "rb") as file:
        head = file.read(8)
    records = tf.data.TFRecordDataset(path).map(
        lambda record: (tf.cast(tf.strings.length(record), tf.int64), *label_of(record)),
        num_parallel_calls=tf.data.AUTOTUNE)
    parts = list(records.batch(4096).as_numpy_iterator())
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, object)
    lengths, labels, *rest = (np.concatenate([part[k] for part in parts]) for k in range(len(parts[0])))
    if len(head) < 8 or struct.unpack("<Q", head)[0] != lengths[0]:
        raise ValueError(f"Only uncompressed TFRecord files can be read by position. Received: {path!r}")
    offsets = np.concatenate([[0], np.cumsum(lengths[:-1] + _FRAME + 4)]) + _FRAME
    return (offsets, lengths, labels.astype(np.int64), *rest)


def _index_cache_path(path, schema):
    """The index cache file of TFRecord file ``path``: keyed by its path, size, modification time and ``schema``."""
    stat = tf.io.gfile.stat(path)
    listing = [os.path.abspath(path) if "://" not in path else path, stat.length, stat.mtime_nsec, schema]
    key = hashlib.sha256(json.dumps(listing).encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return default_cache_dir("tfrecords") / f"{key}.npz"


def _cached_index_file(path, label_of, schema):
    """``_index_file`` through the index cache (``schema`` None: not cached); a damaged cache file is recomputed."""
    if schema is None:
        return _index_file(path, label_of)
    cache = _index_cache_path(path, schema)
    if cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as stored:
                columns = [stored[f"column{k}"] for k in range(len(stored.files))]
            columns[3] = columns[3].astype(object)  # the class names, stored as bytes
            return tuple(columns)
        except (OSError, ValueError, KeyError, EOFError, IndexError, zipfile.BadZipFile) as error:
            logger.warning("Recomputing the damaged TFRecord index cache %s (%s: %s)", cache,
                           type(error).__name__, error)
    columns = _index_file(path, label_of)

    def save(temporary):
        stored = [np.asarray(column.tolist(), dtype=bytes) if k == 3 else column for k, column in enumerate(columns)]
        with open(temporary, "wb") as handle:
            np.savez(handle, **{f"column{k}": column for k, column in enumerate(stored)})

    try:
        write_file(cache, save)
    except OSError as error:  # a cache that cannot be written only costs the next load its time
        logger.warning("Cannot write the TFRecord index cache %s (%s); set RANKLOSS_TF_CACHE to a writable folder",
                       cache, error)
    return columns


def index_records(files, label_of=_parse_label, schema="rankloss_tf"):
    """Where every record of ``files`` lies, and its label: reads each record once.

    Args:
        files: uncompressed TFRecord file paths, in their order.
        label_of: function of one serialized record (a scalar string tensor)
            returning (int label, class name string, ...) tensors.
        schema: names what ``label_of`` reads, part of the key of each file's cached
            index (``$RANKLOSS_TF_CACHE/tfrecords``, with the file's path, size and
            modification time); None reads every record without the cache.

    Returns:
        ``(file number [N], byte offset [N], length [N], labels [N], class names [N], ...)``:
        one column more for each further tensor ``label_of`` returns.

    Raises:
        ValueError: records ``label_of`` cannot parse, a compressed file, or no record at all.

    Example:
    >>> index_records(["/data/photos-00000-of-00001.tfrecord"])[3][:3]  # doctest: +SKIP
    array([0, 0, 0])
    """
    try:
        parts = [_cached_index_file(path, label_of, schema) for path in files]
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
        message = getattr(error, "message", str(error)).strip().splitlines()[0]
        raise ValueError(f"The TFRecord files do not hold records of the expected schema ({message}). "
                         f"Received: {files[0]!r} ...") from error
    if not any(len(part[0]) for part in parts):  # an empty file has none of the further columns to unpack
        found = files[0] if len(files) == 1 else f"{len(files)} files: {files[0]!r} ..."
        raise ValueError(f"The TFRecord files hold no records: write images into them first "
                         f"(rankloss_tf.datasets.write_folder). Received: 0 records in {found}")
    numbers = np.concatenate([np.full(len(part[0]), i, np.int64) for i, part in enumerate(parts)])
    columns = max(len(part) for part in parts)
    if any(len(part) < columns for part in parts):  # a file without records has no further columns
        parts = [part if len(part) == columns else (*part, *([np.zeros(0, bool)] * (columns - len(part))))
                 for part in parts]
    return (numbers, *(np.concatenate([part[k] for part in parts]) for k in range(columns)))


def record_reader(files, numbers, offsets, lengths, image_of, image_size):
    """The function reading the record at a position (a scalar int64 tensor) as a uint8 image [H, W, 3].

    ``image_of`` maps the serialized record to its encoded image bytes; the
    image is decoded to RGB and resized to ``image_size``.

    Example:
    >>> files = ["/data/photos-00000-of-00001.tfrecord"]  # doctest: +SKIP
    >>> numbers, offsets, lengths, labels, _ = index_records(files)  # doctest: +SKIP
    >>> read = record_reader(files, numbers, offsets, lengths, lambda r: tf.io.parse_single_example(
    ...     r, FEATURES)[IMAGE], image_size=64)  # doctest: +SKIP
    >>> read(tf.constant(0, tf.int64)).shape  # doctest: +SKIP
    TensorShape([64, 64, 3])
    """
    def read_bytes(position):
        return read_record(files, numbers, offsets, lengths, int(position))

    def read(position):
        record = tf.ensure_shape(tf.py_function(read_bytes, [position], tf.string), [])
        image = tf.io.decode_image(image_of(record), channels=3, expand_animations=False)
        return resize_uint8(image, image_size)

    return read


def read_record(files, numbers, offsets, lengths, position):
    """The serialized record at ``position`` (an index into ``index_records``' columns), read by its offset.

    Example:
    >>> files = ["/data/photos-00000-of-00001.tfrecord"]  # doctest: +SKIP
    >>> numbers, offsets, lengths, *_ = index_records(files)  # doctest: +SKIP
    >>> tf.train.Example.FromString(read_record(files, numbers, offsets, lengths, 0))  # doctest: +SKIP
    """
    with tf.io.gfile.GFile(files[numbers[position]], "rb") as file:
        file.seek(int(offsets[position]))
        return file.read(int(lengths[position]))


def index_checked(files):
    """``index_records`` of ``files`` with the image check ``load_tfrecord`` makes (its cache shared):
    ``(file number, offset, length, labels, class names, holds an image)``, one entry a record."""
    return index_records(files, _parse_checked, schema="rankloss_tf+image_check")


def _warn_not_images(files, numbers, bad):
    """Names, in a warning, the records whose image bytes are no image (left out, as a folder's unreadable files)."""
    if not bad.any():
        return
    where = [f"{files[numbers[i]]}#{i - np.flatnonzero(numbers == numbers[i])[0]}" for i in np.flatnonzero(bad)[:3]]
    logger.warning("%d records of %s hold no image (JPEG, PNG, GIF, BMP, WebP) and are left out: %s%s",
                   int(bad.sum()), files[0] if len(files) == 1 else f"{len(files)} TFRecord files", ", ".join(where),
                   " ..." if bad.sum() > 3 else "")


def tfrecord_files(pattern):
    """The sorted TFRecord files ``pattern`` matches: the one check of a ``tfrecord:`` pattern.

    Raises:
        ValueError: an empty pattern, no file matching, or a directory matching.

    Example:
    >>> tfrecord_files("/data/photos-*.tfrecord")  # doctest: +SKIP
    ['/data/photos-00000-of-00002.tfrecord', '/data/photos-00001-of-00002.tfrecord']
    """
    if not pattern:
        raise ValueError("tfrecord: needs a pattern of TFRecord files, e.g. tfrecord:data/photos-*.tfrecord. "
                         "Received: an empty pattern")
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise ValueError(f"No TFRecord file matches the pattern. Received: {pattern!r}")
    for path in files:
        if tf.io.gfile.isdir(path):
            raise ValueError(f"The TFRecord pattern matches a directory, not a file: narrow the pattern. "
                             f"Received: {path!r}")
    return files


def load_tfrecord(pattern, split, image_size=None, train_fraction=0.5, seed=0):
    """One zero-shot half of TFRecord files (schema above) as (uint8 image [H, W, 3], int64 label).

    A ``rankloss_tf.references.streamed`` dataset of record positions (see the
    module docstring); labels are the records' own. Give ``image_size`` when
    the images' sizes differ.

    Records whose image bytes are no image are left out with a warning
    naming them (file#record).

    Raises:
        ValueError: an empty pattern, no file matches, a directory matches, no
            record with an image, records of another schema, compressed files,
            a fraction outside (0, 1), or a split with fewer than 2 classes.

    Example:
    >>> train = load_tfrecord("/data/photos-*.tfrecord", "train", image_size=64)  # doctest: +SKIP
    >>> train.element_spec[0].shape  # doctest: +SKIP
    TensorShape([64, 64, 3])
    """
    files = tfrecord_files(pattern)
    numbers, offsets, lengths, labels, _, images = index_checked(files)
    _warn_not_images(files, numbers, ~images.astype(bool))
    labels = np.where(images.astype(bool), labels, -1)  # -1: left out, in no split
    if not (labels >= 0).any():
        raise ValueError(f"The TFRecord files hold no record with an image. Received: {pattern!r}")
    classes = np.unique(labels[labels >= 0])
    chosen = classes[split_classes(FolderIndex(pattern, classes.tolist(), {}, []), split, train_fraction, seed)]
    positions = np.flatnonzero(np.isin(labels, chosen))
    positions = positions[np.argsort(labels[positions], kind="stable")]
    read = record_reader(files, numbers, offsets, lengths, lambda record: tf.io.parse_single_example(
        record, FEATURES)[IMAGE], image_size)
    references = References(positions, labels[positions], read=read, files=tuple(files),
                            tag=f"tfrecord:{split}:{train_fraction}:{seed}:{image_size}")
    return streamed(references)
