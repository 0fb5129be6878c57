"""Frozen features written part by part, so that an extraction holds one part in memory and resumes after a kill.

While the features of a cache file ``<name>.npz`` are extracted, every
``part_size`` images (whole batches) go to ``<name>.parts/part-NNNNN.npz``
(features, labels, the number of batches, the cache metadata), each written
atomically. A run killed mid-way leaves complete parts only; the next run
checks them, keeps the leading run of good ones and embeds from the first
batch they do not cover. When every batch is embedded the parts are joined
into ``<name>.npz`` and their directory is removed. A damaged part (truncated,
foreign, of other inputs) is named in a warning and recomputed, never fatal.
"""

import json
import logging
import shutil
import zipfile
from pathlib import Path

import numpy as np

from rankloss_tf.backbones.files import atomic_savez

__all__ = ["PART_SIZE", "join_parts", "parts_dir", "read_features", "done_parts", "write_parts"]

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
