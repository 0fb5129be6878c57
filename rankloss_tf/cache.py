"""Where this package caches what it computes once (frozen features, folder scans, converted weights), and
how a cache entry knows the files it was computed from (``file_stamp``)."""

import hashlib
import os
from pathlib import Path

__all__ = ["CACHE_ENV_VAR", "SAMPLE_BYTES", "default_cache_dir", "file_stamp"]

# The bytes of a file read for its stamp: this many at its start, middle and end.
SAMPLE_BYTES = 4096

CACHE_ENV_VAR = "RANKLOSS_TF_CACHE"


def default_cache_dir(subdir=""):
    """The cache directory: ``$RANKLOSS_TF_CACHE``, else ``~/.cache/rankloss_tf``.

    Args:
        subdir: a sub-directory of the cache root ("" for the root itself).

    Returns:
        ``pathlib.Path`` of the directory (not created).

    Example:
    >>> default_cache_dir("features").name
    'features'
    """
    root = os.environ.get(CACHE_ENV_VAR) or Path.home() / ".cache" / "rankloss_tf"
    return Path(root) / subdir


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
        import tensorflow as tf

        stat = tf.io.gfile.stat(name)
        return [stat.length, stat.mtime_nsec, 0, 0, ""]
    digest = hashlib.sha256()
    with open(os.fsencode(name), "rb") as handle:
        stat = os.fstat(handle.fileno())
        for offset in sorted({0, max(0, stat.st_size // 2 - SAMPLE_BYTES // 2), max(0, stat.st_size - SAMPLE_BYTES)}):
            handle.seek(offset)
            digest.update(handle.read(SAMPLE_BYTES))
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, digest.hexdigest()[:16]]
