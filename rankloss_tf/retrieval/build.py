"""Embedding a gallery into an index, batch by batch, with progress reports."""

import math

import numpy as np
import tensorflow as tf

from rankloss_tf.images import conform as conform_images

from rankloss_tf.retrieval.index import Index

__all__ = ["build_index"]


def build_index(model, gallery, metric="cosine", batch_size=256, on_batch=None, backend="exact", **backend_options):
    """Embeds every image of a ``Gallery`` into a new ``Index``.

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
    if int(batch_size) < 1:
        raise ValueError(f"`batch_size` must be a positive integer. Received: batch_size={batch_size}")
    if not len(gallery):
        raise ValueError("The gallery is empty. Received: a gallery of 0 images")
    index = Index(model, metric=metric, backend=backend, **backend_options)
    dataset = gallery.dataset
    if not dataset.element_spec[0].shape.is_fully_defined() and index.embedder is not None:
        # Images of several sizes (a folder): conformed one by one to the model's input, then batched.
        shape = index.embedder.image_shape
        dataset = dataset.map(lambda image, label: (conform_images(image[tf.newaxis], shape)[0], label))
    total = math.ceil(len(gallery) / int(batch_size))
    start = 0
    for step, (images, labels) in enumerate(dataset.batch(int(batch_size)), start=1):
        n = len(labels)
        index.add(images, np.asarray(labels), gallery.ids[start : start + n], gallery.paths[start : start + n])
        start += n
        if on_batch is not None:
            on_batch(step, total)
    return index
