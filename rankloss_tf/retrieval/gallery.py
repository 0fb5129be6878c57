"""Galleries to index: a dataset name, a ``folder:`` path (every image, labelled by class folder) or arrays.

A gallery is read in ranges (``Gallery.dataset_range``): a folder's range
decodes only its own files, so a build of a million images streams block by
block and a resumed build starts at its first missing block. ``content_key``
says what the gallery's items are made of (a folder: its scan's fingerprint,
every file's path and ``references.file_stamp``, see
``datasets.class_references``), so that work saved from one gallery is never
mixed into another.
"""

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from rankloss_tf import datasets
from rankloss_tf.references import References

__all__ = ["Gallery", "load_gallery"]


class Gallery:
    """Images to index, batch by batch, with their labels, ids and paths.

    Attributes:
        dataset: ``tf.data.Dataset`` of ``(uint8 image [H, W, C], label)``.
        ids: ``[N]`` unique strings.
        paths: ``[N]`` source paths ("" where unknown).
        skipped: ``[(path, reason)]`` of the files left out (a folder's
            unreadable files, as training leaves them out).
        references: the ``References`` (files, labels, decoder) of a folder
            gallery, read range by range; None for other galleries.
        key: what defines the items when there are no ``references`` (see ``content_key``).

    Example:
    >>> dataset = tf.data.Dataset.from_tensor_slices((np.zeros((2, 8, 8, 1), np.uint8), [0, 1]))
    >>> len(Gallery(dataset, ["a", "b"], ["", ""]))
    2
    """

    def __init__(self, dataset, ids, paths, skipped=(), references=None, key=""):
        self.dataset, self.ids, self.paths = dataset, np.asarray(ids, object), np.asarray(paths, object)
        self.skipped = list(skipped)
        self.references, self.key = references, key

    def __len__(self):
        return len(self.ids)

    def dataset_range(self, start, stop):
        """The ``(image, label)`` pairs of items ``[start, stop)``: a folder reads only those files, in parallel."""
        if self.references is None:
            return self.dataset.skip(start).take(stop - start)
        part = References(self.references.items[start:stop], self.references.labels[start:stop],
                          self.references.read)
        return part.dataset()

    def items_key(self):
        """Hex digest of the item list alone (ids, and a folder's labels): equal on every machine for one gallery.

        What the shards of one gallery embedded on several machines must
        agree on (file stamps differ from machine to machine; names do not).
        """
        digest = hashlib.sha256()
        for start in range(0, len(self.ids), 65536):
            digest.update(json.dumps(self.ids[start : start + 65536].tolist()).encode("utf-8", "surrogateescape"))
        if self.references is not None:
            digest.update(self.references.labels.tobytes())
        return digest.hexdigest()[:16]

    def content_key(self):
        """Hex digest of what the items are: a folder's ``References.content_key``, else the source's description.

        A folder's key (its scan's fingerprint, ``FolderIndex.fingerprint``, and the
        image size) changes when any of its files is added, removed, renamed or
        rewritten; not when the folder is reached through a link or a relative path.
        """
        return self.references.content_key() if self.references is not None else self.key


def _described(*parts):
    """Hex digest of JSON-serialisable parts (the key of a gallery without files of its own)."""
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def _stamped_files(data_dir):
    """The content key of every file under ``data_dir`` ("" for none): a local dataset copy's key."""
    if data_dir is None:
        return ""
    files = tuple(sorted(str(f) for f in Path(data_dir).expanduser().rglob("*") if f.is_file()))
    return References(np.array(files), np.zeros(len(files)), read=None, files=files).content_key()


def _folder_gallery(root, image_size):
    """Every readable image of ``datasets.scan_folder(root)``: labels as in training, id = relative path."""
    scan = datasets.scan_folder(root)
    references = datasets.class_references(scan, np.arange(len(scan.classes)), image_size,
                                           tag=f"index-gallery:{image_size}")
    files = [os.fsdecode(f) for f in references.items]
    ids = [str(Path(f).relative_to(scan.root)) for f in files]
    return Gallery(references.dataset(), ids, files, scan.unreadable, references=references)


def load_gallery(source, split="test", data_dir=None, image_size=None, labels=None):
    """A ``Gallery`` from a dataset name, a ``folder:PATH`` or an array of images.

    Args:
        source: a ``datasets.load`` name (its ``split``; ids
            ``"<name>/<split>/<position>"``), ``"folder:PATH"`` (every image
            ``datasets.scan_folder`` finds readable, as training does: hidden
            folders are not classes, unreadable files are left out and
            listed in ``skipped``; ids = paths relative to PATH, labels =
            ranks of the sorted class folder names), or uint8 images
            ``[N, H, W, C]`` (then ``labels`` is required; ids "0", "1", ...).
        split: the split of a named dataset.
        data_dir: the dataset's local copy (see ``datasets.load``).
        image_size: resize when loading (int or (height, width)); the index's
            model also conforms images of any size itself.
        labels: ``[N]`` int labels of array images.

    Raises:
        ValueError: unknown names, missing folders, mismatched arrays.

    Example:
    >>> gallery = load_gallery("digits", split="test")
    >>> len(gallery), gallery.ids[0]
    (896, 'digits/test/000000')
    """
    if datasets.folder_path(source) is not None:
        return _folder_gallery(datasets.folder_path(source), image_size)
    if isinstance(source, str):
        dataset = datasets.load(source, split, data_dir=data_dir, image_size=image_size)
        size = int(dataset.cardinality())
        if size < 0:
            size = sum(1 for _ in dataset)
        ids = [f"{source}/{split}/{i:06d}" for i in range(size)]
        key = _described(source, split, image_size, size, _stamped_files(data_dir))
        return Gallery(dataset, ids, [""] * size, key=key)
    images = np.asarray(source)
    if labels is None or len(np.asarray(labels)) != len(images):
        raise ValueError(
            f"Array galleries need one label per image. Received: {len(images)} images, "
            f"{None if labels is None else len(np.asarray(labels))} labels"
        )
    labels = np.asarray(labels, np.int64)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    key = hashlib.sha256(images.tobytes() + labels.tobytes() + str(images.shape).encode()).hexdigest()[:16]
    return Gallery(dataset, [str(i) for i in range(len(images))], [""] * len(images), key=key)
