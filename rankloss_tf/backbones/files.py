"""Files of the backbones: the cache location, content hashes, atomic ``.npz`` writes."""

import hashlib

import numpy as np

from rankloss_tf.cache import CACHE_ENV_VAR, default_cache_dir  # noqa: F401 (this module's names)
from rankloss_tf.io.atomic import write_file


def file_sha256(path):
    """Hex SHA-256 digest of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_savez(path, **arrays):
    """``np.savez(path, **arrays)`` so that ``path`` is either absent or complete.

    Written through ``rankloss_tf.io.atomic.write_file``: on any error no
    temporary file is left and ``path`` is untouched.

    Args:
        path: destination ``.npz`` path; its directory is created if needed.
        **arrays: named arrays to store.

    Returns:
        ``pathlib.Path`` of the written file.

    Example:
    >>> atomic_savez("/tmp/example.npz", x=np.arange(3)).name
    'example.npz'
    """
    def savez(temporary):
        with open(temporary, "wb") as handle:
            np.savez(handle, **arrays)

    return write_file(path, savez)
