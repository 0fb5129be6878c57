"""Datasets read from references: one file path or record position per example, never the decoded examples.

A loader whose examples sit in files describes them with ``References`` (every
example's reference and label, and the function that reads one) and returns
``streamed(references)``: the ``tf.data.Dataset`` of (example, label) pairs
that reads them in order, carrying its ``References``. Given such a dataset,
the P x K sampler (``rankloss_tf.data``) keeps only the references and labels
in memory and reads, decodes and resizes each batch's examples in parallel;
the frozen-feature cache (``rankloss_tf.backbones``) keys its files by the
files' content (``References.content_key``: their names, sizes and
modification times), not by a path that may hold other files tomorrow.
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

__all__ = ["References", "references_of", "streamed"]

_ATTRIBUTE = "rankloss_tf_references"


@dataclasses.dataclass(frozen=True, eq=False)
class References:
    """The examples of a dataset as references and labels, and how to read one.

    Attributes:
        items: the references [N]: file paths (str) or record positions (int64).
        labels: int64 labels [N].
        read: function of one reference (a scalar tensor) returning the example
            (e.g. decoded and resized image [H, W, C] uint8); runs inside tf.data.
        files: the files whose names, sizes and modification times define the
            examples (None: ``items`` are those files).
        tag: what else defines the examples, e.g. "size=224" (part of ``content_key``).
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
        """Hex digest of ``tag`` and every file's name, size and modification time (ns).

        Any file added, removed, renamed, rewritten or touched changes the key.
        """
        files = self.files if self.files is not None else self.items.tolist()
        listing = []
        for name in files:
            name = os.fsdecode(name)
            stat = os.stat(name)
            listing.append((name, stat.st_size, stat.st_mtime_ns))
        text = json.dumps([self.tag, listing], ensure_ascii=True, default=str)
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
