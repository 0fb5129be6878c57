"""Where this package caches what it computes once (frozen features, folder scans, converted weights)."""

import os
from pathlib import Path

__all__ = ["CACHE_ENV_VAR", "default_cache_dir"]

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
