"""Embedding a gallery into an index: at once (``build_index``) or block by block on disk (``embed_blocks``).

``embed_blocks`` streams a gallery of any size: each block of items is read,
decoded (in parallel, by tf.data) and embedded batch by batch, then written
to its block file (``retrieval.block_files``), so memory holds one block; a
build run again skips the blocks already written. ``index_from_embeddings``
makes the ``Index`` of the finished embeddings in one ``add_embeddings``,
the same numbers whether they came from one build, a resumed one, or shards.
"""

import math

import numpy as np
import tensorflow as tf

from rankloss_tf.images import conform as conform_images

from rankloss_tf.retrieval.embedder import as_embedder
from rankloss_tf.retrieval.index import Index

__all__ = ["build_index", "embed_blocks", "index_from_embeddings"]


def _check_build(gallery, batch_size):
    if isinstance(batch_size, bool) or int(batch_size) < 1:
        raise ValueError(f"`batch_size` must be a positive integer. Received: batch_size={batch_size}")
    if not len(gallery):
        raise ValueError("The gallery is empty. Received: a gallery of 0 images")


def _batches(dataset, embedder, batch_size):
    """``(embeddings [b, D] float32, labels [b])`` of ``dataset``'s batches; images of several sizes conformed."""
    if not dataset.element_spec[0].shape.is_fully_defined():
        # Images of several sizes (a folder): conformed one by one to the model's input, then batched.
        shape = embedder.image_shape
        dataset = dataset.map(lambda image, label: (conform_images(image[tf.newaxis], shape)[0], label),
                              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    for images, labels in dataset.batch(int(batch_size)).prefetch(tf.data.AUTOTUNE):
        yield np.asarray(embedder(images), np.float32), np.asarray(labels, np.int64)


def index_from_embeddings(model, embeddings, labels, ids, paths, metric="cosine", backend="exact",
                          **backend_options):
    """The ``Index`` of finished embeddings, added at once (see ``Index``'s arguments)."""
    index = Index(model, metric=metric, backend=backend, **backend_options)
    index.add_embeddings(embeddings, labels, ids, paths)
    return index


def build_index(model, gallery, metric="cosine", batch_size=256, on_batch=None, backend="exact", **backend_options):
    """Embeds every image of a ``Gallery`` into a new ``Index``, in memory.

    For galleries too large for memory, or builds that must survive a kill,
    use ``retrieval.build.embed_blocks`` (what ``rankloss-tf index`` runs).

    Args:
        model: anything ``Index`` accepts as its model.
        gallery: a ``Gallery`` (``load_gallery``); images of several sizes
            are conformed to the model's input one by one before batching.
        metric: "cosine" or "l2".
        batch_size: images per forward pass.
        on_batch: optional callable ``on_batch(done_batches, total_batches)``
            called after each batch (e.g. to advance a progress bar).
        backend: see ``Index``.
        **backend_options: ``lists`` / ``probes`` of ``backend="ivf"`` (see ``Index``).

    Returns:
        The ``Index``, items in gallery order.

    Raises:
        ValueError: a bad batch size or an empty gallery.

    Example:
    >>> from rankloss_tf.models import build_embedding_model
    >>> from rankloss_tf.retrieval.gallery import load_gallery
    >>> index = build_index(build_embedding_model((8, 8, 1), embedding_dim=4), load_gallery("digits"))
    >>> len(index)
    896
    """
    _check_build(gallery, batch_size)
    embedder = as_embedder(model)
    total = math.ceil(len(gallery) / int(batch_size))
    embeddings, labels = [], []
    for step, (batch, batch_labels) in enumerate(_batches(gallery.dataset, embedder, batch_size), start=1):
        embeddings.append(batch)
        labels.append(batch_labels)
        if on_batch is not None:
            on_batch(step, total)
    return index_from_embeddings(embedder, np.concatenate(embeddings), np.concatenate(labels), gallery.ids,
                                 gallery.paths, metric, backend, **backend_options)


def embed_blocks(model, gallery, work, batch_size=256, on_progress=None):
    """Embeds the missing blocks of ``work`` (a ``block_files.BuildWork``), each written when finished.

    Args:
        model: anything ``as_embedder`` takes.
        gallery: the ``Gallery`` whose items ``work.plan["range"]`` names.
        work: the opened ``BuildWork``; its finished blocks are skipped.
        batch_size: images per forward pass.
        on_progress: optional ``on_progress(done, total, resumed)``: items of
            the range embedded so far, the range's size, and how many of them
            were found already embedded; called after each batch.

    Returns:
        The number of blocks embedded by this call.

    Raises:
        ValueError: a bad batch size, an empty gallery, or a block whose
            images do not all read (the gallery changed meanwhile).

    Example:
    >>> work = BuildWork(work_path("indexes/photos"), plan).open()  # doctest: +SKIP
    >>> embed_blocks(model, gallery, work)  # doctest: +SKIP
    123
    """
    _check_build(gallery, batch_size)
    embedder = as_embedder(model)
    start, stop = work.plan["range"]
    missing = work.missing()
    done = resumed = (stop - start) - sum(b - a for a, b in missing)
    for first, last in missing:
        embeddings, labels = [], []
        for batch, batch_labels in _batches(gallery.dataset_range(first, last), embedder, batch_size):
            embeddings.append(batch)
            labels.append(batch_labels)
            done += len(batch)
            if on_progress is not None:
                on_progress(done, stop - start, resumed)
        embeddings, labels = np.concatenate(embeddings), np.concatenate(labels)
        if len(embeddings) != last - first:
            raise ValueError(f"Items {first}-{last} of the gallery gave {len(embeddings)} images: the gallery "
                             f"changed while it was embedded; run the command again. Received: {len(embeddings)}")
        work.write(first, last, embeddings, labels)
    return len(missing)
