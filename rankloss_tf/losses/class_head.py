"""The class head of the proxy and margin-softmax losses: ``ClassCosines``, ``with_class_head``, ``embedding_part``.

Losses with trainable class parameters (``ProxyAnchorLoss``, ``ProxyNCALoss``,
``ArcFaceLoss``, ``CosFaceLoss``) do not own variables: a Keras ``Loss`` is not tracked
by the model, so its variables would be neither trained by ``fit`` through the model's
optimizer bookkeeping nor saved in ``.keras`` files. The [C, D] proxies / class weights
live in a layer, ``ClassCosines``, that the *training* model owns, on top of the
embedding model (``with_class_head``); the loss takes the layer's output, the cosines
[B, C] of each embedding with each class (Keras' own pattern: a ``Dense`` softmax head
with ``SparseCategoricalCrossentropy``). ``fit`` trains the head with the network,
``.keras`` save / load / continue keeps it, and the embedding model (the training
model's first part) is exported alone. Labels must be 0 .. C - 1: a class count that
does not match is a ``ValueError`` (eager) or an ``InvalidArgumentError`` (graph).

The class vectors' own learning rate (``lr_multiplier``; Proxy-Anchor trains its proxies
at 100 times the network's rate) needs no second optimizer: the cosines do not depend on
a vector's length, so a vector stored as ``v / m`` gives the same cosines as ``v``, and
Adam's step (invariant to the gradient's scale) moves the stored ``v / m`` as far as it
would move ``v``: ``m`` times as far relative to its length. Initialising the vectors
``m`` times shorter is exactly training them at ``m`` times the learning rate under
Adam, AdamW (its decay relative to the weight), RMSprop, Adagrad or Lion, with one
optimizer, one set of variables and nothing new in ``.keras`` files. Under plain SGD
(steps proportional to the gradient) the factor is ``m`` squared.
"""

import keras
import tensorflow as tf

from rankloss_tf.losses.base import SERIALIZABLE
from rankloss_tf.ops.checks import check_count, check_positive
from rankloss_tf.ops.class_cosines import class_cosines

__all__ = ["ClassCosines", "with_class_head", "embedding_part"]


@SERIALIZABLE
class ClassCosines(keras.layers.Layer):
    """The [C, D] class vectors (proxies, ArcFace / CosFace weights) and the cosines [B, C] with them.

    Owned by the training model (``with_class_head``) so that ``fit`` trains the vectors
    and ``.keras`` files keep them; the embedding model stays free of them. Computes in
    float32 whatever the mixed-precision policy (scales of 32-64 on cosines).

    Args:
        num_classes: C >= 1, the training labels being 0 .. C - 1.
        sub_centers: K >= 1 vectors per class (sub-centre ArcFace: the closest counts).
        initializer: of the class vectors (default normal: random directions).
        lr_multiplier: > 0 (default 1): the class vectors train at this multiple of the
            optimizer's learning rate (Adam-like optimizers; see the module's docstring):
            they start ``lr_multiplier`` times shorter than ``initializer`` draws them.
        **kwargs: Keras ``Layer`` arguments.

    Example:
    >>> layer = ClassCosines(3)
    >>> layer(tf.ones([2, 4])).shape, layer.weights[0].shape
    (TensorShape([2, 3]), TensorShape([3, 4]))
    """

    def __init__(self, num_classes, sub_centers=1, initializer="random_normal", lr_multiplier=1.0, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.num_classes = check_count("num_classes", num_classes)
        self.sub_centers = check_count("sub_centers", sub_centers)
        self.initializer = keras.initializers.get(initializer)
        self.lr_multiplier = check_positive("lr_multiplier", lr_multiplier)

    def build(self, input_shape):
        shape = (self.num_classes, input_shape[-1]) if self.sub_centers == 1 else (
            self.num_classes, self.sub_centers, input_shape[-1])
        scale = 1.0 / self.lr_multiplier
        self.class_vectors = self.add_weight(
            name="class_vectors", shape=shape,
            initializer=lambda shape, dtype=None: self.initializer(shape, dtype) * scale)

    def call(self, inputs):
        return class_cosines(tf.cast(inputs, self.compute_dtype), self.class_vectors)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "sub_centers": self.sub_centers,
                "initializer": keras.initializers.serialize(self.initializer), "lr_multiplier": self.lr_multiplier}


def with_class_head(embedding_model, num_classes, sub_centers=1, name="class_head", lr_multiplier=1.0):
    """The training model: ``embedding_model`` (one layer) then ``ClassCosines``; outputs cosines [B, C].

    Train it with a ``ClassLoss``; save, export and index ``embedding_model`` (shared: training
    this model trains it; ``embedding_part`` finds it again, e.g. in a loaded ``.keras`` file).

    Args:
        embedding_model: a Keras model with one input and one embeddings output [B, D].
        num_classes: C, the training labels being 0 .. C - 1.
        sub_centers: class vectors per class (``ClassCosines``).
        name: the ``ClassCosines`` layer's name.
        lr_multiplier: the class vectors' learning rate relative to the network's
            (``ClassCosines``); a ``ClassLoss`` gives both options: ``**loss.head_options()``.

    Returns:
        A functional ``keras.Model`` of two layers.

    Example:
    >>> embedder = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> trained = with_class_head(embedder, num_classes=4, sub_centers=3)
    >>> trained.output_shape, tuple(trained.get_layer("class_head").class_vectors.shape)
    ((None, 4), (4, 3, 2))
    """
    inputs = keras.Input(embedding_model.inputs[0].shape[1:], dtype=embedding_model.inputs[0].dtype)
    head = ClassCosines(num_classes, sub_centers=sub_centers, lr_multiplier=lr_multiplier, name=name)
    return keras.Model(inputs, head(embedding_model(inputs)), name=f"{embedding_model.name}_with_{name}")


def embedding_part(model):
    """The embedding model inside a ``with_class_head`` model; any other model itself.

    Example:
    >>> embedder = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> embedding_part(with_class_head(embedder, 4)) is embedder, embedding_part(embedder) is embedder
    (True, True)
    """
    if isinstance(model.layers[-1], ClassCosines) and len(model.layers) == 3:
        return model.layers[1]
    return model
