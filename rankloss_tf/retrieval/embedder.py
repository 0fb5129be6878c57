"""What embeds the images of an index: a Keras model or an exported SavedModel, behind one interface."""

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from rankloss_tf.export import SIGNATURE, SavedModelEmbedder, conform_images, model_image_shape

__all__ = ["Embedder", "as_embedder"]

MODEL_FILE = "model.keras"


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
    signature, image_shape = embedder.signature, embedder.image_shape

    def embed(images):
        # Conformed here too, for exports whose signature takes one fixed shape (written before
        # signatures conformed images themselves); on a conformed image it is the identity.
        return signature(images=conform_images(images, image_shape))["embeddings"]

    return Embedder(embed, embedder._loaded, image_shape)


def as_embedder(model):
    """An ``Embedder`` from a Keras model, a ``SavedModelEmbedder``, or a path.

    Args:
        model: ``keras.Model``, ``SavedModelEmbedder``, ``Embedder``, or a
            path: a SavedModel directory (an embedding or index export), a
            ``.keras`` file or a training run directory holding ``model.keras``.

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
        path = Path(model)
        if (path / "saved_model.pb").is_file():
            return _saved_model_embedder(SavedModelEmbedder(path))
        if path.is_dir() and (path / MODEL_FILE).is_file():
            path = path / MODEL_FILE
        if path.is_file() and path.suffix == ".keras":
            return _keras_embedder(keras.models.load_model(path))
    raise ValueError(
        "`model` must be a keras.Model, a SavedModelEmbedder, a SavedModel directory (with a "
        f"{SIGNATURE!r} signature), a .keras file or a run directory holding {MODEL_FILE}. Received: {model!r}"
    )
