"""Files of the backbones: the cache location, content hashes, atomic ``.npz`` writes."""

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np

from rankloss_tf.cache import CACHE_ENV_VAR, default_cache_dir  # noqa: F401 (this module's names)


def file_sha256(path):
    """Hex SHA-256 digest of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_savez(path, **arrays):
    """``np.savez(path, **arrays)`` so that ``path`` is either absent or complete.

    Writes a temporary file in the same directory, syncs it, then renames it over
    ``path``; on any error the temporary file is removed and ``path`` is untouched.

    Args:
        path: destination ``.npz`` path; its directory is created if needed.
        **arrays: named arrays to store.

    Returns:
        ``pathlib.Path`` of the written file.

    Example:
    >>> atomic_savez("/tmp/example.npz", x=np.arange(3)).name
    'example.npz'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.stem, suffix=".tmp", delete=False) as tmp:
        try:
            np.savez(tmp, **arrays)
            tmp.flush()
            os.fsync(tmp.fileno())
        except BaseException:
            os.unlink(tmp.name)
            raise
    os.chmod(tmp.name, 0o644)
    os.replace(tmp.name, path)
    return path
