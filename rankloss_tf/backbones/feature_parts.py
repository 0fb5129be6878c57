"""Frozen features written part by part, so that an extraction holds one part in memory and resumes after a kill.

While the features of a cache file ``<name>.npz`` are extracted, every
``part_size`` images (whole batches) go to ``<name>.parts/part-NNNNN.npz``
(features, labels, the number of batches, the cache metadata), each written
atomically. A run killed mid-way leaves complete parts only; the next run
checks them, keeps the leading run of good ones and embeds from the first
batch they do not cover. When every batch is embedded the parts are joined
into ``<name>.npz`` and their directory is removed, or, for a head that trains
from disk, kept and marked complete (``mark_complete``): ``FeatureRows`` then
reads single rows of the parts (or of a joined ``<name>.npz``) straight from
the files, holding only the labels in memory. A damaged part (truncated,
foreign, of other inputs) is named in a warning and recomputed, never fatal.
"""

import json
import logging
import os
import shutil
import struct
import zipfile
from pathlib import Path

import numpy as np
import tensorflow as tf

from rankloss_tf.backbones.files import atomic_savez
from rankloss_tf.io.atomic import write_file
from rankloss_tf.references import References

__all__ = ["PART_SIZE", "FeatureRows", "complete_parts", "done_parts", "join_parts", "mark_complete", "parts_dir",
           "read_features", "write_parts"]

PART_SIZE = 8192

logger = logging.getLogger(__name__)

_UNREADABLE = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)


def parts_dir(path):
    """The parts directory of cache file ``path``: ``<name>.parts`` beside it.

    Example:
    >>> parts_dir("/cache/cars196_test-efficientnet_lite0-224-0123.npz").name
    'cars196_test-efficientnet_lite0-224-0123.parts'
    """
    path = Path(path)
    return path.with_name(f"{path.stem}.parts")


def read_features(path, metadata, what="Feature cache"):
    """``(features [N, F], labels [N], batches)`` of an ``.npz`` written for ``metadata``, or None.

    A missing file gives None; an unreadable one, or one written for other
    inputs, gives None and a warning naming the file (it is then recomputed).

    Example:
    >>> read_features("/tmp/no-such-cache.npz", {"dataset": "toy"}) is None
    True
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            if json.loads(str(stored["metadata"])) != metadata:
                logger.warning("%s %s is for other inputs; recomputing.", what, path)
                return None
            features, labels = stored["features"], stored["labels"]
            batches = int(stored["batches"]) if "batches" in stored.files else -1
    except _UNREADABLE as error:
        logger.warning("%s %s is unreadable (%s: %s); recomputing.", what, path, type(error).__name__, error)
        return None
    if features.ndim != 2 or labels.shape != features.shape[:1]:
        logger.warning("%s %s is damaged (features %s, labels %s); recomputing.", what, path, features.shape,
                       labels.shape)
        return None
    return features, labels, batches


def done_parts(path, metadata):
    """``(number of good leading parts, batches they cover, images they hold)`` of cache file ``path``.

    Example:
    >>> done_parts("/tmp/no-such-cache.npz", {"dataset": "toy"})
    (0, 0, 0)
    """
    count = batches = images = 0
    directory = parts_dir(path)
    while (part := read_features(directory / f"part-{count:05d}.npz", metadata, "Feature part")) is not None:
        count, batches, images = count + 1, batches + part[2], images + len(part[1])
    return count, batches, images


def write_parts(path, metadata, embedded, part_size=PART_SIZE, start=0):
    """Writes the ``(features, labels)`` batches of ``embedded`` as parts ``start``, ``start + 1``, ...

    Each part holds whole batches, at least ``part_size`` images (the last one fewer).

    Returns:
        The number of parts there are now.

    Example:
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "toy.npz"
    >>> batches = [(np.ones((2, 3), np.float32), np.array([0, 1]))] * 3
    >>> write_parts(path, {"dataset": "toy"}, batches, part_size=4)
    2
    >>> done_parts(path, {"dataset": "toy"})
    (2, 3, 6)
    >>> join_parts(path, {"dataset": "toy"}, 2)[0].shape, parts_dir(path).exists()
    ((6, 3), False)
    """
    directory = parts_dir(path)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("part-*.tmp"):
        stale.unlink()  # left by a killed write: only this module writes these names
    text, count, pending = json.dumps(metadata, sort_keys=True), start, []

    def flush():
        features = np.concatenate([f for f, _ in pending])
        labels = np.concatenate([y for _, y in pending])
        atomic_savez(directory / f"part-{count:05d}.npz", features=features, labels=labels,
                     batches=np.int64(len(pending)), metadata=text)
        logger.info("Features: part %d written (%d images) in %s", count, len(labels), directory)
        pending.clear()
        return count + 1

    for batch in embedded:
        pending.append(batch)
        if sum(len(y) for _, y in pending) >= part_size:
            count = flush()
    return flush() if pending else count


def join_parts(path, metadata, count):
    """Joins parts ``0 .. count - 1`` into the cache file ``path`` and removes them: ``(features, labels)``.

    Holds the whole result (N x F float32) in memory once, as it is returned.
    See ``write_parts`` for an example.

    Example:
    >>> join_parts("/tmp/no-such-cache.npz", {"dataset": "toy"}, 0)  # doctest: +SKIP
    """
    directory = parts_dir(path)
    parts = [read_features(directory / f"part-{index:05d}.npz", metadata, "Feature part") for index in range(count)]
    if any(part is None for part in parts):
        raise ValueError(f"A feature part in {directory} changed while it was being joined; run again.")
    features = np.concatenate([part[0] for part in parts])
    labels = np.concatenate([part[1] for part in parts])
    del parts
    atomic_savez(path, features=features, labels=labels, metadata=json.dumps(metadata, sort_keys=True))
    shutil.rmtree(directory, ignore_errors=True)
    return features, labels


_COMPLETE = "complete.json"
_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def mark_complete(path, metadata, count):
    """Marks parts ``0 .. count - 1`` of cache file ``path`` as every part of the extraction (kept, not joined).

    Example:
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "toy.npz"
    >>> mark_complete(path, {"dataset": "toy"}, 0)
    >>> complete_parts(path, {"dataset": "toy"}), complete_parts(path, {"dataset": "other"})
    ([], None)
    """
    text = json.dumps({"parts": count, "metadata": json.dumps(metadata, sort_keys=True)})
    write_file(parts_dir(path) / _COMPLETE, text)


def complete_parts(path, metadata):
    """The part files of a finished extraction into cache file ``path`` (``mark_complete``), or None.

    Example:
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "toy.npz"
    >>> batches = [(np.ones((2, 3), np.float32), np.array([0, 1]))] * 3
    >>> mark_complete(path, {"dataset": "toy"}, write_parts(path, {"dataset": "toy"}, batches, part_size=4))
    >>> [part.name for part in complete_parts(path, {"dataset": "toy"})]
    ['part-00000.npz', 'part-00001.npz']
    """
    marker = parts_dir(path) / _COMPLETE
    try:
        stored = json.loads(marker.read_text())
        if stored["metadata"] != json.dumps(metadata, sort_keys=True):
            return None
        files = [parts_dir(path) / f"part-{index:05d}.npz" for index in range(int(stored["parts"]))]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return files if all(file.is_file() for file in files) else None


def _row_layout(file, metadata):
    """``(byte offset of the features' first row, rows, F, dtype, labels)`` of an uncompressed ``.npz``.

    Raises ValueError (naming the file) for a compressed, foreign or damaged file.
    """
    with np.load(file, allow_pickle=False) as stored:
        if json.loads(str(stored["metadata"])) != metadata:
            raise ValueError("it is for other inputs")
        labels = stored["labels"]
    with zipfile.ZipFile(file) as archive:
        info = archive.getinfo("features.npy")
    if info.compress_type != zipfile.ZIP_STORED:
        raise ValueError("its features are compressed")
    with open(file, "rb") as handle:
        handle.seek(info.header_offset + 26)  # the local header: name and extra-field lengths at bytes 26..29
        name_length, extra_length = struct.unpack("<HH", handle.read(4))
        handle.seek(info.header_offset + 30 + name_length + extra_length)
        read_header = _HEADERS.get(np.lib.format.read_magic(handle))
        if read_header is None:
            raise ValueError("its features use an unknown .npy version")
        shape, fortran, dtype = read_header(handle)
        offset = handle.tell()
    if len(shape) != 2 or fortran or shape[0] != labels.shape[0]:
        raise ValueError(f"its features are damaged (features {shape}, labels {labels.shape})")
    return offset, shape[0], shape[1], dtype, labels


class FeatureRows:
    """Feature rows [N, F] kept on disk in ``.npz`` files (parts or a joined cache), read row by row.

    Only the labels are held in memory; ``read(rows)`` reads the requested rows
    with ``os.pread`` (no mapping, so the process's RSS does not grow with N),
    and ``references()`` gives them to the streaming P x K sampler (a row's
    reference is its position in the concatenated files).

    Args:
        files: the ``.npz`` files, in order (rows are numbered across them).
        metadata: the cache metadata every file must carry.

    Raises:
        ValueError: a file that is not an uncompressed features file for ``metadata``, or files of
            different feature sizes, named.

    Example:
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "toy.npz"
    >>> batches = [(np.arange(6, dtype=np.float32).reshape(2, 3), np.array([0, 1]))] * 3
    >>> rows = FeatureRows(sorted(parts_dir(path).glob("*")), {}) if write_parts(path, {}, batches, 4) else None
    >>> len(rows), rows.read([1, 4]).tolist()
    (6, [[3.0, 4.0, 5.0], [0.0, 1.0, 2.0]])
    """

    def __init__(self, files, metadata):
        self.files = tuple(Path(file) for file in files)
        layouts = []
        for file in self.files:
            try:
                layouts.append(_row_layout(file, metadata))
            except (*_UNREADABLE, struct.error) as error:
                raise ValueError(f"Feature file {file} cannot be read by row: {error}") from error
        if not layouts or len({(dim, str(dtype)) for _, _, dim, dtype, _ in layouts}) != 1:
            raise ValueError(f"Feature files must hold rows of one size. Received: {len(layouts)} files "
                             f"with sizes {sorted({(dim, str(dtype)) for _, _, dim, dtype, _ in layouts})}")
        self._offsets = np.array([layout[0] for layout in layouts], np.int64)
        self._ends = np.cumsum([layout[1] for layout in layouts])
        self.dim, self.dtype = layouts[0][2], np.dtype(layouts[0][3])
        self.labels = np.concatenate([layout[4] for layout in layouts]).astype(np.int64)

    @classmethod
    def concatenate(cls, parts):
        """The rows of several ``FeatureRows`` (e.g. one per view) one after the other."""
        if len({(part.dim, part.dtype) for part in parts}) != 1:
            raise ValueError(f"Feature rows must be of one size. Received: {[(p.dim, str(p.dtype)) for p in parts]}")
        joined = cls.__new__(cls)
        joined.files = tuple(file for part in parts for file in part.files)
        joined._offsets = np.concatenate([part._offsets for part in parts])
        joined._ends = np.cumsum(np.concatenate([np.diff(part._ends, prepend=0) for part in parts]))
        joined.dim, joined.dtype = parts[0].dim, parts[0].dtype
        joined.labels = np.concatenate([part.labels for part in parts])
        return joined

    def __len__(self):
        return int(self._ends[-1])

    @property
    def nbytes(self):
        """Bytes of all the features (what reading them into memory would take)."""
        return len(self) * self.dim * self.dtype.itemsize

    def read(self, rows):
        """The features ``[len(rows), F]`` of rows ``rows`` (positions across the files), read from disk."""
        rows = np.asarray(rows, np.int64).reshape(-1)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"Feature rows must lie in [0, {len(self)}). Received: {rows.min()} .. {rows.max()}")
        which = np.searchsorted(self._ends, rows, side="right")
        starts = np.concatenate([[0], self._ends])[which]
        size = self.dim * self.dtype.itemsize
        out = np.empty((rows.size, self.dim), self.dtype)
        for file in np.unique(which):
            with open(self.files[file], "rb", buffering=0) as handle:
                for i in np.flatnonzero(which == file):
                    offset = int(self._offsets[file] + (rows[i] - starts[i]) * size)
                    out[i] = np.frombuffer(os.pread(handle.fileno(), size, offset), self.dtype)
        return out

    def references(self):
        """``References`` of the rows (positions) and labels; reading one gives its features ``[F]``, reading
        many (``read_many``, a batch in one call) their rows ``[B, F]``."""
        def read(row):
            features = tf.numpy_function(lambda r: self.read([r])[0], [row], tf.as_dtype(self.dtype), stateful=False)
            features.set_shape([self.dim])
            return features

        def read_many(rows):
            features = tf.numpy_function(self.read, [rows], tf.as_dtype(self.dtype), stateful=False)
            features.set_shape([None, self.dim])
            return features

        return References(np.arange(len(self), dtype=np.int64), self.labels, read=read, files=self.files,
                          tag="feature rows", read_many=read_many)
