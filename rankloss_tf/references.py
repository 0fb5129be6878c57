"""Datasets read from references: one file path or record position per example, never the decoded examples.

A loader whose examples sit in files describes them with ``References`` (every
example's reference and label, and the function that reads one) and returns
``streamed(references)``: the ``tf.data.Dataset`` of (example, label) pairs
that reads them in order, carrying its ``References``. Given such a dataset,
the P x K sampler (``rankloss_tf.data``) keeps only the references and labels
in memory and reads, decodes and resizes each batch's examples in parallel;
the frozen-feature cache (``rankloss_tf.backbones``) keys its files by the
files' content (``References.content_key``: their real paths and
``file_stamp``, or the ``key`` of a scan that has just stamped them), not by a
path that may hold other files tomorrow: the same files reached through a
symbolic link or a relative path give the same key.
Any transformation of the dataset (``.map``, ``.batch``) returns a plain
dataset without the references: it is read into memory as before.
"""

import dataclasses
import hashlib
import json
import os
from typing import Callable

import numpy as np
import tensorflow as tf

__all__ = ["SAMPLE_BYTES", "References", "file_stamp", "real_path", "references_of", "streamed"]

# The bytes of a file read for its stamp: this many at its start, middle and end.
SAMPLE_BYTES = 4096

_ATTRIBUTE = "rankloss_tf_references"


def file_stamp(path):
    """What a cache entry computed from a file keys it by: ``[size, mtime_ns, ctime_ns, inode, sample hash]``.

    The size and modification time alone miss a rewrite of the same size whose
    modification time was restored (``touch -r``, ``rsync -t``, an editor that
    keeps it); the change time (ctime) cannot be set back and the inode changes
    when a file is replaced, so any write, rename or copy over the file changes
    the stamp. A hash of ``SAMPLE_BYTES`` at the start, middle and end of the
    file catches a change on file systems whose ctime or inode is not kept (some
    network or FUSE mounts). Bounded cost: one ``stat`` and three small reads per
    file, whatever its size. Paths with a scheme (``gs://``) are stamped by
    ``tf.io.gfile.stat`` (size and modification time).

    Args:
        path: a file path (``str``, ``bytes`` or ``Path``; a name that is not
            UTF-8 is read as any other).

    Raises:
        OSError: the file cannot be read.

    Example:
    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile() as handle:
    ...     len(file_stamp(handle.name))
    5
    """
    name = os.fsdecode(path)
    if "://" in name:
        stat = tf.io.gfile.stat(name)
        return [stat.length, stat.mtime_nsec, 0, 0, ""]
    digest = hashlib.sha256()
    with open(os.fsencode(name), "rb") as handle:
        stat = os.fstat(handle.fileno())
        for offset in sorted({0, max(0, stat.st_size // 2 - SAMPLE_BYTES // 2), max(0, stat.st_size - SAMPLE_BYTES)}):
            handle.seek(offset)
            digest.update(handle.read(SAMPLE_BYTES))
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, digest.hexdigest()[:16]]


@dataclasses.dataclass(frozen=True, eq=False)
class References:
    """The examples of a dataset as references and labels, and how to read one.

    Attributes:
        items: the references [N]: file paths (str) or record positions (int64).
        labels: int64 labels [N].
        read: function of one reference (a scalar tensor) returning the example
            (e.g. decoded and resized image [H, W, C] uint8); runs inside tf.data.
        files: the files whose names and stamps (``file_stamp``) define the
            examples (None: ``items`` are those files).
        tag: what else defines the examples, e.g. "size=224" (part of ``content_key``).
        key: the files' content key when a scan has just stamped every one of them
            (a folder: ``FolderIndex.fingerprint``): ``content_key`` hashes ``tag`` and
            ``key`` instead of stamping the files a second time; "" stamps them.
        read_many: optional function of a vector of references returning their examples
            stacked (e.g. feature rows [B, F]); the P x K sampler then reads a batch in one
            call instead of one ``read`` an example.

    Example:
    >>> refs = References(np.array(["a.png", "b.png"]), np.array([0, 1]), read=tf.io.read_file)
    >>> len(refs), refs.labels.dtype
    (2, dtype('int64'))
    """

    items: np.ndarray
    labels: np.ndarray
    read: Callable
    files: tuple = None
    tag: str = ""
    read_many: Callable = None
    key: str = ""

    def __post_init__(self):
        items, labels = np.asarray(self.items), np.asarray(self.labels, np.int64).reshape(-1)
        if items.ndim != 1 or items.shape[0] != labels.shape[0]:
            raise ValueError(
                "References need one label per reference. "
                f"Received: references of shape {items.shape}, labels of shape {labels.shape}"
            )
        object.__setattr__(self, "items", items)
        object.__setattr__(self, "labels", labels)

    def __len__(self):
        return int(self.labels.shape[0])

    def dataset(self, start=0):
        """The (example, label) pairs from position ``start`` on, read in parallel, in order."""
        pairs = tf.data.Dataset.from_tensor_slices((self.items[start:], self.labels[start:]))
        return pairs.map(lambda item, label: (self.read(item), label), num_parallel_calls=tf.data.AUTOTUNE,
                         deterministic=True)

    def content_key(self):
        """Hex digest of ``tag`` and what the files are: ``key``, else every file's real path
        (``os.path.realpath``) and ``file_stamp`` (size, modification and change times, inode, a hash
        of sampled bytes).

        Any file added, removed, renamed, rewritten (even to the same size with its modification time restored)
        or touched changes the key; the same files reached through a symbolic link or a relative path do not.
        """
        if self.key:
            return _digest([self.tag, self.key])
        files = self.files if self.files is not None else self.items.tolist()
        return _digest([self.tag, [(real_path(name), *file_stamp(name)) for name in files]])


def real_path(path):
    """``path`` as a ``str`` with every symbolic link and relative part resolved (``os.path.realpath``);
    a path with a scheme (``gs://``) as it is: the one form of a path that enters a cache key.

    Example:
    >>> real_path("gs://bucket/a.tfrecord")
    'gs://bucket/a.tfrecord'
    """
    name = os.fsdecode(path)
    return name if "://" in name else os.path.realpath(name)


def _digest(parts):
    """The first 16 hex digits of the SHA-256 of JSON-serialisable ``parts`` (any file name fits)."""
    text = json.dumps(parts, ensure_ascii=True, default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def streamed(references):
    """The ``tf.data.Dataset`` of (example, label) that ``references`` describes, carrying them.

    Args:
        references: a ``References``.

    Returns:
        ``references.dataset()``; ``references_of`` returns ``references`` for it.

    Example:
    >>> refs = References(np.array([3, 5]), np.array([0, 1]), read=lambda item: item * 2)
    >>> ds = streamed(refs)
    >>> [int(x) for x, _ in ds], references_of(ds) is refs
    ([6, 10], True)
    """
    dataset = references.dataset()
    setattr(dataset, _ATTRIBUTE, references)
    return dataset


def references_of(dataset):
    """The ``References`` a dataset was ``streamed`` from, or None.

    Example:
    >>> references_of(tf.data.Dataset.range(3)) is None
    True
    """
    return getattr(dataset, _ATTRIBUTE, None)
