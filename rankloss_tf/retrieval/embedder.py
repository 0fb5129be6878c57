"""What embeds the images of an index: a Keras model or an exported SavedModel, behind one interface."""

from pathlib import Path

import keras
import tensorflow as tf

from rankloss_tf.export import SavedModelEmbedder
from rankloss_tf.images import conform as conform_images, model_image_shape
from rankloss_tf.loading import load_model

__all__ = ["Embedder", "as_embedder"]


class Embedder:
    """Images (uint8, any size, gray / RGB / RGBA) -> float32 embeddings, in Python and in a graph.

    Args:
        embed_graph: graph function ``uint8 [N, h, w, c] -> float32 [N, D]``
            that conforms the images itself.
        trackable: the object holding the variables (a Keras model or a
            loaded SavedModel), tracked when the index is exported.
        image_shape: ``(H, W, C)`` of the model's input.

    Example:
    >>> embedder = Embedder(lambda images: tf.ones([tf.shape(images)[0], 2]), None, (8, 8, 1))
    >>> embedder(np.zeros((3, 8, 8, 1), np.uint8)).shape
    TensorShape([3, 2])
    """

    def __init__(self, embed_graph, trackable, image_shape):
        self.embed_graph = embed_graph
        self.trackable = trackable
        self.image_shape = tuple(image_shape)
        self._function = tf.function(embed_graph, reduce_retracing=True, autograph=False)

    def __call__(self, images):
        return self._function(tf.convert_to_tensor(images, tf.uint8))


def _keras_embedder(model):
    image_shape = model_image_shape(model)

    def embed(images):
        return tf.cast(model(conform_images(images, image_shape), training=False), tf.float32)

    return Embedder(embed, model, image_shape)


def _saved_model_embedder(embedder):
    signature = embedder.signature

    def embed(images):
        return signature(images=images)["embeddings"]  # the export's signature conforms the images

    return Embedder(embed, embedder._loaded, embedder.image_shape)


def as_embedder(model):
    """An ``Embedder`` from a Keras model, a ``SavedModelEmbedder``, or a path.

    Args:
        model: ``keras.Model``, ``SavedModelEmbedder``, ``Embedder``, or a
            path that ``rankloss_tf.loading.load_model`` reads: a SavedModel
            directory (an embedding export), a ``.keras`` file or a training
            run directory holding ``model.keras``.

    Raises:
        ValueError: anything else.

    Example:
    >>> from rankloss_tf.models import build_embedding_model
    >>> embedder = as_embedder(build_embedding_model((8, 8, 1), embedding_dim=4))
    >>> embedder(np.zeros((2, 16, 16, 3), np.uint8)).shape
    TensorShape([2, 4])
    """
    if isinstance(model, Embedder):
        return model
    if isinstance(model, keras.Model):
        return _keras_embedder(model)
    if isinstance(model, SavedModelEmbedder):
        return _saved_model_embedder(model)
    if isinstance(model, (str, Path)):
        return as_embedder(load_model(model))
    raise ValueError(
        "`model` must be a keras.Model, a SavedModelEmbedder, an Embedder or a path that "
        f"rankloss_tf.loading.load_model reads. Received: {model!r}"
    )
