"""The work of a large index build on disk: embeddings in block files, resumable, and shard outputs.

A build embeds its items ``[start, stop)`` (the whole gallery, or one shard)
in blocks of ``block_size`` items. Each finished block is written atomically
(``io.atomic.write_file``) to the work directory beside the output::

    INDEX.rankloss_tf-build/
      build.json                         what the blocks are of: model, gallery, range, block size
      block-0000000000-0000008192.npz    embeddings float32 [n, D] and labels int64 [n] of items [0, 8192)
      block-0000008192-0000016384.npz    ...

so that a killed build run again with the same command embeds only the
missing blocks, and memory holds one block at a time. ``build.json`` keys the
blocks by the model's content (``model_key``), the gallery's content
(``Gallery.content_key``: a folder's scan fingerprint), the image size
and the range; a build whose key differs is refused and says what changed
(model, gallery; each option with its recorded and new value), never mixed.
When the build is done the work directory's files are removed by their exact
names (a file someone else put there is kept, and so is the directory then). The build's key (the plan,
plus the index's metric and backend settings) is recorded in the marker of
what it writes (``"build"``), so that a build killed after writing its output
but before removing its work files is recognised when run again
(``changes``) and only has its work files to remove.

A shard (``--shard i/N``) writes its items' embeddings, ids, labels and paths
to a shard directory (``write_shard``, an export of kind ``index-shard``,
written whole or not at all); ``read_shards`` checks that a list of shards is
one gallery cut once (same model, dimension, shard count and item list; every
shard once; ids unique) and joins them.
"""

import collections
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from rankloss_tf.export import read_export_info, write_export
from rankloss_tf.io.atomic import remove_stale_temporaries, write_file
from rankloss_tf.loading import model_form

__all__ = ["BuildWork", "SHARD_KIND", "changes", "model_key", "read_shards", "shard_range", "work_path", "write_shard"]

WORK_SUFFIX = ".rankloss_tf-build"
MANIFEST = "build.json"
MANIFEST_KIND = "index-build"
SHARD_KIND = "index-shard"
# The fields of a build's key (build.json holds the first five), and how a message names a change of each
# whose values say nothing (digests) or were not recorded; the options' changes give their values (``changes``).
_CHANGES = {
    "model": "the model changed (its files differ)",
    "gallery": "the gallery changed (a file was added, removed, renamed or rewritten)",
    "image_size": "--image-size changed",
    "range": "the items to embed changed (gallery size or --shard)",
    "block_size": "--block-size changed",
    "metric": "--metric changed",
    "index": "--backend, --lists, --probes or --codes changed",
}
_OPTIONS = {"image_size": "--image-size", "block_size": "--block-size", "metric": "--metric"}
_INDEX_OPTIONS = {"backend": "--backend", "lists": "--lists", "probes": "--probes", "codes": "--codes"}


def changes(found, key):
    """What differs between a recorded build key ``found`` and this build's ``key``, as messages name it.

    A command-line option that changed is named with its recorded and new
    value (``"--lists: 6 -> 9"``; ``default``: not given); a field the
    recorded key lacks (written by an older version) keeps the ``_CHANGES``
    sentence.

    Example:
    >>> changes({"model": "a1", "block_size": 8}, {"model": "a1", "block_size": 4})
    ['--block-size: 8 -> 4']
    >>> changes({"index": {"backend": "ivf", "lists": 6}}, {"index": {"backend": "ivf", "lists": 9}})
    ['--lists: 6 -> 9']
    """
    said = []
    for field, text in _CHANGES.items():
        old, new = found.get(field), key.get(field)
        if old == new:
            continue
        if field not in found:
            said.append(text)
        elif field == "gallery" and found.get("image_size") != key.get("image_size") and "image_size" in found:
            said.append("the gallery changed (its key holds --image-size; or a file was added, removed, renamed or "
                        "rewritten)")
        elif field in _OPTIONS:
            said.append(f"{_OPTIONS[field]}: {_shown(old)} -> {_shown(new)}")
        elif field == "range" and _is_range(old) and _is_range(new):
            said.append(f"{text}: items {old[0]}-{old[1]} -> {new[0]}-{new[1]}")
        elif field == "index" and isinstance(old, dict) and isinstance(new, dict):
            said.extend(_index_changes(old, new) or [text])
        else:
            said.append(text)
    return said


def _index_changes(old, new):
    """``--backend: exact -> ivf``, ``--lists: 6 -> 9``, ...: the index options that differ (``{}``: exact)."""
    old, new = ({"backend": "exact", **options} for options in (old, new))
    return [f"{name}: {_shown(old.get(field))} -> {_shown(new.get(field))}" for field, name in _INDEX_OPTIONS.items()
            if old.get(field) != new.get(field)]


def _shown(value):
    return "default" if value is None else str(value)


def _is_range(value):
    return isinstance(value, (list, tuple)) and len(value) == 2


def work_path(out):
    """The work directory of a build writing ``out``: its sibling ``<name>.rankloss_tf-build``.

    Example:
    >>> str(work_path("indexes/photos"))
    'indexes/photos.rankloss_tf-build'
    """
    out = Path(out)
    return out.with_name(out.name + WORK_SUFFIX)


def model_key(path):
    """Hex digest of a model's files (names and content): equal for copies of one model on any machine.

    Args:
        path: what ``loading.model_form`` reads (SavedModel directory, ``.keras`` file, run directory).

    Example:
    >>> model_key("/nonexistent")  # doctest: +SKIP
    Traceback (most recent call last):
    ...
    ValueError: `model` must be a SavedModel directory, ...
    """
    _, found = model_form(path)
    files = sorted(f for f in found.rglob("*") if f.is_file()) if found.is_dir() else [found]
    digest = hashlib.sha256()
    for name in files:
        digest.update(os.fsencode(name.relative_to(found) if found.is_dir() else name.name) + b"\0")
        with open(name, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def shard_range(size, shard=None):
    """Items ``(start, stop)`` of ``shard = (i, N)`` of ``size`` sorted items (contiguous; all when None).

    Raises:
        ValueError: a shard that holds no item.

    Example:
    >>> shard_range(10, (1, 3)), shard_range(10)
    ((3, 6), (0, 10))
    """
    if shard is None:
        return 0, size
    index, count = shard
    start, stop = index * size // count, (index + 1) * size // count
    if start == stop:
        raise ValueError(f"Shard {index}/{count} holds no item of a gallery of {size} items: use fewer shards. "
                         f"Received: --shard {index}/{count}")
    return start, stop


class BuildWork:
    """The block files of one build in its work directory (see the module docstring).

    Args:
        directory: the work directory (``work_path(out)``).
        plan: ``{"model", "gallery", "image_size", "range": [start, stop], "block_size"}``.

    Example:
    >>> work = BuildWork("/tmp/x.rankloss_tf-build", {"range": [0, 10], "block_size": 4})
    >>> work.blocks()
    [(0, 4), (4, 8), (8, 10)]
    """

    def __init__(self, directory, plan):
        self.directory, self.plan = Path(directory), dict(plan)

    def blocks(self):
        """The ``(start, stop)`` item ranges of the blocks, in order."""
        start, stop = self.plan["range"]
        size = int(self.plan["block_size"])
        return [(first, min(first + size, stop)) for first in range(start, stop, size)]

    def block_path(self, start, stop):
        return self.directory / f"block-{start:010d}-{stop:010d}.npz"

    def done(self, start, stop):
        """True when the block's file holds its ``stop - start`` rows."""
        try:
            with np.load(self.block_path(start, stop)) as block:
                return block["embeddings"].shape[0] == block["labels"].shape[0] == stop - start
        except (OSError, ValueError, KeyError):
            return False

    def missing(self):
        """The blocks still to embed."""
        return [block for block in self.blocks() if not self.done(*block)]

    def open(self, restart=False):
        """Starts the work directory, or checks that the one found is of this build; returns ``self``.

        Args:
            restart: discard the blocks of another build found there (their
                files only) instead of refusing.

        Raises:
            ValueError: the directory exists but is no build work of ours, or
                holds the blocks of another build (the message says what
                changed) and ``restart`` is False.
        """
        manifest = self.directory / MANIFEST
        if self.directory.exists() and not manifest.is_file():
            raise ValueError(f"{self.directory} exists and is not the work directory of an index build (no "
                             f"{MANIFEST}); it is never touched: move it away. Received: {self.directory}")
        if manifest.is_file():
            found = _read_manifest(manifest)
            changed = changes(found, self.plan)
            if changed and not restart:
                raise ValueError(
                    f"An interrupted build in {self.directory} embedded other items: {'; '.join(changed)}. Its "
                    f"blocks are never mixed into this index: run the command that started it to finish it, or "
                    f"pass --restart to discard its blocks. Received: {self.directory}")
            if changed:
                BuildWork(self.directory, found).remove()
        self.directory.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.directory)
        if not manifest.is_file():
            write_file(manifest, json.dumps({"kind": MANIFEST_KIND, **self.plan}, indent=1) + "\n")
        return self

    def changes(self):
        """What the build whose ``build.json`` is in the directory differs in from this one (``[]``: none there)."""
        manifest = self.directory / MANIFEST
        return changes(_read_manifest(manifest), self.plan) if manifest.is_file() else []

    def write(self, start, stop, embeddings, labels):
        """Writes one finished block atomically."""
        write_file(self.block_path(start, stop),
                   lambda temporary: np.savez(temporary, embeddings=np.asarray(embeddings, np.float32),
                                              labels=np.asarray(labels, np.int64)))

    def read(self):
        """``(embeddings [n, D], labels [n])`` of every block, in order: one array each, filled block by block."""
        embeddings = labels = None
        offset = self.plan["range"][0]
        for start, stop in self.blocks():
            with np.load(self.block_path(start, stop)) as block:
                if embeddings is None:
                    total = self.plan["range"][1] - offset
                    embeddings = np.empty((total, block["embeddings"].shape[1]), np.float32)
                    labels = np.empty(total, np.int64)
                embeddings[start - offset : stop - offset] = block["embeddings"]
                labels[start - offset : stop - offset] = block["labels"]
        return embeddings, labels

    def remove(self):
        """Removes the files this build wrote, by their exact names; the directory too once empty.

        Returns:
            True when the directory is gone; False when it holds files of
            someone else (they are kept).
        """
        for start, stop in self.blocks():
            self.block_path(start, stop).unlink(missing_ok=True)
        (self.directory / MANIFEST).unlink(missing_ok=True)
        remove_stale_temporaries(self.directory)
        try:
            self.directory.rmdir()
        except FileNotFoundError:
            return True
        except OSError:
            return False
        return True


def _read_manifest(path):
    try:
        found = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"The build work file {path} is damaged ({error}); remove its directory to start again. "
                         f"Received: {path}") from None
    if not isinstance(found, dict) or found.get("kind") != MANIFEST_KIND:
        raise ValueError(f"{path} is not the work file of an index build; the directory is never touched: move "
                         f"it away. Received: {path}")
    found["range"] = list(found.get("range", []))
    return found


def write_shard(path, embeddings, labels, ids, paths, info, overwrite=False, protected=()):
    """Writes one shard's items to the directory ``path``, whole or not at all.

    Args:
        path: the shard directory (new, or a shard of this tool with ``overwrite``).
        embeddings: float32 ``[n, D]`` (raw, as the model gives them).
        labels, ids, paths: ``[n]`` each.
        info: ``{"shard": i, "shards": N, "range": [start, stop], "items": size of the gallery,
            "items_key": Gallery.items_key(), "model": model_key(...)}``.
        overwrite, protected: see ``export.check_export_path``.

    Returns:
        ``path`` as a ``Path``.
    """
    def write(directory):
        np.save(Path(directory) / "embeddings.npy", np.asarray(embeddings, np.float32))
        np.save(Path(directory) / "labels.npy", np.asarray(labels, np.int64))
        text = json.dumps({"ids": [str(i) for i in ids], "paths": [str(p) for p in paths]})  # ASCII: any name fits
        Path(directory, "items.json").write_text(text, encoding="ascii")

    info = {**info, "kind": SHARD_KIND, "embedding_dim": int(np.shape(embeddings)[1])}
    return write_export(path, write, info, overwrite, protected)


def _shard_info(path):
    info = read_export_info(path)
    if info is None or info.get("kind") != SHARD_KIND:
        what = "does not exist" if not Path(path).exists() else "is not a shard written by `rankloss-tf index --shard`"
        raise ValueError(f"The shard {path} {what}. Received: {path}")
    return info


def _check_shards(infos):
    """Refuses shards that are not every shard of one gallery and model, each once."""
    for field, what in (("shards", "shard counts N"), ("model", "models"), ("embedding_dim", "embedding dimensions"),
                        ("items_key", "galleries (item lists)")):
        values = {str(info.get(field)) for info in infos.values()}
        if len(values) > 1:
            listed = ", ".join(f"{path}: {info.get(field)}" for path, info in infos.items())
            raise ValueError(f"The shards are of different {what}; merge the shards of one build. Received: {listed}")
    count = int(next(iter(infos.values()))["shards"])
    given = sorted(int(info["shard"]) for info in infos.values())
    repeated = sorted({i for i in given if given.count(i) > 1})
    if repeated:
        raise ValueError(f"Shard(s) {repeated} of {count} given more than once. Received: {', '.join(map(str, infos))}")
    missing = sorted(set(range(count)) - set(given))
    if missing:
        raise ValueError(f"Shard(s) {', '.join(f'{i}/{count}' for i in missing)} missing: merge all {count} shards "
                         f"of the build. Received: {', '.join(map(str, infos))}")


def read_shards(shards):
    """Joins shard directories into the items of the whole gallery, in gallery order.

    Returns:
        ``(embeddings [N, D], labels [N], ids [N], paths [N], info)``: ``info``
        is the first shard's marker (``model``, ``items``, ``embedding_dim``).

    Raises:
        ValueError: a path that is no shard; shards of different models,
            dimensions, shard counts or galleries; a shard missing or given
            twice; duplicate ids.
    """
    infos = {Path(p): _shard_info(p) for p in shards}
    if len(infos) < len(shards):
        raise ValueError(f"A shard is given more than once. Received: {', '.join(map(str, shards))}")
    _check_shards(infos)
    order = sorted(infos, key=lambda p: int(infos[p]["shard"]))
    parts = [_read_shard(path) for path in order]
    ids = np.array([i for part in parts for i in part[2]], object)
    repeated = sorted(i for i, count in collections.Counter(ids.tolist()).items() if count > 1)
    if repeated:
        raise ValueError(f"Item ids must be unique across the shards. Received: duplicate ids {repeated[:5]}")
    paths = np.array([p for part in parts for p in part[3]], object)
    return (np.concatenate([part[0] for part in parts]), np.concatenate([part[1] for part in parts]), ids, paths,
            infos[order[0]])


def _read_shard(path):
    try:
        items = json.loads(Path(path, "items.json").read_text(encoding="ascii"))
        embeddings, labels = np.load(Path(path) / "embeddings.npy"), np.load(Path(path) / "labels.npy")
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"The shard {path} is damaged or incomplete ({error}); write it again. "
                         f"Received: {path}") from None
    if not len(embeddings) == len(labels) == len(items["ids"]) == len(items["paths"]):
        raise ValueError(f"The shard {path} is damaged (its columns differ in length). Received: {path}")
    return embeddings, labels, items["ids"], items["paths"]
