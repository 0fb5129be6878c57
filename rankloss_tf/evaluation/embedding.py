"""Embedding a dataset of ``(uint8 image, label)`` with a model, batch by batch."""

import keras
import numpy as np
import tensorflow as tf

__all__ = ["embed_dataset", "thumbnails"]


def embed_dataset(model, dataset, batch_size=256, thumbnail_size=None):
    """Embeds every image of a dataset.

    Args:
        model: a ``keras.Model`` (run with ``predict_on_batch``) or any
            callable mapping a ``uint8 [b, H, W, C]`` batch to ``[b, D]``
            embeddings (e.g. ``export.SavedModelEmbedder``).
        dataset: ``tf.data.Dataset`` of ``(image [H, W, C], label)`` pairs,
            or of batches ``(images [b, H, W, C], labels [b])``.
        batch_size: batch size used when ``dataset`` is not batched.
        thumbnail_size: if set, also return the images resized to fit in
            ``thumbnail_size`` x ``thumbnail_size`` (for plots).

    Returns:
        ``(embeddings float32 [N, D], labels [N])``, plus ``thumbnails uint8
        [N, h, w, C]`` when ``thumbnail_size`` is set.

    Example:
    >>> import numpy as np, tensorflow as tf
    >>> ds = tf.data.Dataset.from_tensor_slices((np.zeros((3, 8, 8, 1), np.uint8), [0, 1, 1]))
    >>> embeddings, labels = embed_dataset(lambda x: tf.ones([tf.shape(x)[0], 4]), ds)
    >>> embeddings.shape, labels.tolist()
    ((3, 4), [0, 1, 1])
    """
    if not isinstance(dataset, tf.data.Dataset):
        raise ValueError(f"`dataset` must be a tf.data.Dataset. Received: {type(dataset).__name__}")
    if len(dataset.element_spec[0].shape) == 3:
        dataset = dataset.batch(int(batch_size))
    predict = model.predict_on_batch if isinstance(model, keras.Model) else None
    embeddings, labels, thumbnails = [], [], []
    for images, batch_labels in dataset.prefetch(tf.data.AUTOTUNE):
        output = predict(images) if predict is not None else model(images)
        embeddings.append(np.asarray(output, np.float32))
        labels.append(np.asarray(batch_labels))
        if thumbnail_size:
            thumbnails.append(_shrink(images, thumbnail_size))
    if not embeddings:
        raise ValueError("`dataset` is empty. Received: a dataset with no elements")
    result = (np.concatenate(embeddings), np.concatenate(labels))
    return result + (np.concatenate(thumbnails),) if thumbnail_size else result



def _shrink(images, size):
    """A batch of images resized (antialiased) to fit in ``size`` x ``size``, as uint8."""
    height, width = images.shape[1:3]
    scale = min(1.0, size / max(height, width))
    target = (max(1, round(height * scale)), max(1, round(width * scale)))
    return tf.cast(tf.image.resize(images, target, antialias=True), tf.uint8).numpy()


def thumbnails(dataset, size=64, batch_size=256, indices=None):
    """The images of a dataset (or those at ``indices``) shrunk to fit in ``size`` x ``size`` (for the gallery plot).

    With ``indices`` only those images are kept, so the memory is that of the
    thumbnails asked for, whatever the size of the dataset (one pass over it).

    Args:
        dataset: ``tf.data.Dataset`` of ``(image [H, W, C], label)`` pairs.
        size: the largest side of a thumbnail.
        batch_size: images per resize call.
        indices: None (every image) or positions in the dataset, in the order
            wanted (repeats allowed).

    Returns:
        uint8 ``[N, h, w, C]`` (N = ``len(indices)`` when given).

    Raises:
        ValueError: an index is not a position of the dataset.

    Example:
    >>> import numpy as np, tensorflow as tf
    >>> ds = tf.data.Dataset.from_tensor_slices((np.zeros((3, 128, 96, 1), np.uint8), [0, 1, 1]))
    >>> thumbnails(ds, size=64).shape, thumbnails(ds, size=64, indices=[2, 0, 2]).shape
    ((3, 64, 48, 1), (3, 64, 48, 1))
    """
    if indices is None:
        return np.concatenate([_shrink(images, size) for images, _ in dataset.batch(batch_size)])
    wanted = [int(index) for index in np.asarray(indices).reshape(-1)]
    found, start = {}, 0
    for images, _ in dataset.batch(batch_size):
        chosen = sorted({index for index in wanted if start <= index < start + len(images)})
        if chosen:
            shrunk = _shrink(tf.gather(images, [index - start for index in chosen]), size)
            found.update(zip(chosen, shrunk))
        start += len(images)
        if len(found) == len(set(wanted)):
            break
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise ValueError(f"`indices` must be positions of the dataset's {start} images. Received: {missing[:5]}")
    return np.stack([found[index] for index in wanted]) if wanted else np.zeros((0, 0, 0, 0), np.uint8)
