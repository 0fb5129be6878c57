"""Keras classes of the losses the field uses now (issue 31): pair-based, proxy and margin softmax.

Pair-based losses (``MultiSimilarityLoss``, ``SupConLoss``, ``NTXentLoss``) take labels and
embeddings [B, D] like every ``RankingLoss`` (``cross_replica`` included: each replica's
anchors against the gathered batch). ``XBM`` gives them a memory of past batches.

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

Example:
>>> import keras
>>> embedder = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
>>> trained = with_class_head(embedder, num_classes=3)
>>> trained.compile(optimizer="adam", loss=ProxyAnchorLoss())
>>> trained.output_shape
(None, 3)
"""

import numbers

import keras
import tensorflow as tf

from rankloss_tf.losses import RankingLoss, _reduce
from rankloss_tf.ops.checks import check_finite, check_non_negative, check_positive, standardize_inputs
from rankloss_tf.ops.class_cosines import class_cosines
from rankloss_tf.ops.margin_softmax import check_margin, margin_softmax_from_cosines
from rankloss_tf.ops.multi_similarity import multi_similarity_loss
from rankloss_tf.ops.proxy import proxy_anchor_from_cosines, proxy_nca_from_cosines
from rankloss_tf.ops.supcon import ntxent_loss, supcon_loss

__all__ = [
    "MultiSimilarityLoss",
    "SupConLoss",
    "NTXentLoss",
    "XBM",
    "ClassCosines",
    "ClassLoss",
    "ProxyAnchorLoss",
    "ProxyNCALoss",
    "ArcFaceLoss",
    "CosFaceLoss",
    "with_class_head",
    "embedding_part",
    "MODERN_LOSSES",
]

_SERIALIZABLE = keras.saving.register_keras_serializable(package="rankloss_tf")


def _check_count(name, value):
    """``value`` if it is an integer >= 1 (NumPy integers too)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"`{name}` must be an integer >= 1. Received: {name}={value!r}")
    return int(value)


@_SERIALIZABLE
class MultiSimilarityLoss(RankingLoss):
    """Multi-Similarity loss (Wang et al. 2019); see ``ops.multi_similarity``.

    l(a) = 1/alpha log(1 + sum_p exp(-alpha (S_ap - base))) + 1/beta log(1 + sum_n exp(beta (S_an - base))).

    Args:
        alpha: > 0 (default 2). beta: > 0 (default 50). base: (default 0.5).
        epsilon: None (every pair, the default) or the pair miner's margin (the paper: 0.1).
        cross_replica, name, reduction, dtype: see ``RankingLoss``.

    Example:
    >>> round(float(MultiSimilarityLoss()([0, 0, 1, 1], [[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]])), 4)
    0.2688
    """

    kernel = staticmethod(multi_similarity_loss)

    def __init__(self, alpha=2.0, beta=50.0, base=0.5, epsilon=None, cross_replica=False,
                 name="multi_similarity_loss", **kwargs):
        super().__init__(cross_replica=cross_replica, name=name, **kwargs)
        self.alpha, self.beta = check_positive("alpha", alpha), check_positive("beta", beta)
        self.base = check_finite("base", base)
        self.epsilon = None if epsilon is None else check_non_negative("epsilon", epsilon)

    def kernel_params(self):
        return {"alpha": self.alpha, "beta": self.beta, "base": self.base, "epsilon": self.epsilon}


class _TemperatureLoss(RankingLoss):
    def __init__(self, temperature, cross_replica, name, **kwargs):
        super().__init__(cross_replica=cross_replica, name=name, **kwargs)
        self.temperature = check_positive("temperature", temperature)

    def kernel_params(self):
        return {"temperature": self.temperature}


@_SERIALIZABLE
class SupConLoss(_TemperatureLoss):
    """Supervised contrastive loss (Khosla et al. 2020); see ``ops.supcon``.

    Args:
        temperature: > 0 (default 0.1).
        cross_replica, name, reduction, dtype: see ``RankingLoss``.

    Example:
    >>> round(float(SupConLoss()([0, 0, 1, 1], [[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]])), 4)
    0.0638
    """

    kernel = staticmethod(supcon_loss)

    def __init__(self, temperature=0.1, cross_replica=False, name="supcon_loss", **kwargs):
        super().__init__(temperature, cross_replica, name, **kwargs)


@_SERIALIZABLE
class NTXentLoss(_TemperatureLoss):
    """NT-Xent over every positive pair of a labelled batch (Chen et al. 2020); see ``ops.supcon``.

    Args:
        temperature: > 0 (default 0.07).
        cross_replica, name, reduction, dtype: see ``RankingLoss``.

    Example:
    >>> round(float(NTXentLoss()([0, 0, 1, 1], [[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]])), 4)
    0.0279
    """

    kernel = staticmethod(ntxent_loss)

    def __init__(self, temperature=0.07, cross_replica=False, name="ntxent_loss", **kwargs):
        super().__init__(temperature, cross_replica, name, **kwargs)


@_SERIALIZABLE
class XBM(keras.losses.Loss):
    """Cross-Batch Memory (Wang et al. 2020): a pair-based loss over the batch and a queue of past batches.

    The wrapped loss's anchors are the batch's samples; their positives and negatives come
    from the batch and from the last ``memory_size`` embeddings (and labels) of earlier
    steps, kept in a first-in first-out queue of non-trainable ``tf.Variable``s. The queue
    holds detached copies (no gradient reaches past batches); the batch is written into it
    after the loss is computed, so a step never pairs a sample with its own copy. An empty
    queue gives the wrapped loss exactly. (PyTorch Metric Learning's ``CrossBatchMemory``
    writes the batch first and skips those self pairs: the same pairs, except that PML's
    queue of size M then holds M - B past samples.)

    Per replica: under a ``tf.distribute`` strategy, build the loss inside ``strategy.scope()``;
    the queue is a sync-on-read variable, one per replica, fed by that replica's batches.
    Gathering the queues would move memory_size x D floats across devices every step for
    what the XBM paper gets from one device's memory; the wrapped loss must not be
    ``cross_replica``. The queue is not saved with a model (it refills in memory_size / B
    steps); ``reset()`` empties it. Every call (``evaluate`` too) enqueues its batch.

    Args:
        loss: a ``MultiSimilarityLoss``, ``SupConLoss`` or ``NTXentLoss`` (their kernels take ``memory``).
        memory_size: queue length M >= 1 (the paper: about half the training set for small sets).
        embedding_dim: D, the width of the embeddings.
        name, reduction, dtype: Keras' ``Loss`` arguments.

    Example:
    >>> xbm = XBM(MultiSimilarityLoss(), memory_size=8, embedding_dim=2)
    >>> batch = ([0, 0, 1, 1], [[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]])
    >>> round(float(xbm(*batch)), 4), int(xbm.filled())
    (0.2688, 4)
    """

    def __init__(self, loss, memory_size, embedding_dim, name="xbm", reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if isinstance(loss, dict):
            loss = keras.saving.deserialize_keras_object(loss)
        if not isinstance(loss, (MultiSimilarityLoss, SupConLoss, NTXentLoss)) or loss.cross_replica:
            raise ValueError("`loss` must be a MultiSimilarityLoss, SupConLoss or NTXentLoss without cross_replica. "
                             f"Received: loss={loss!r}")
        self.loss, self.memory_size = loss, _check_count("memory_size", memory_size)
        self.embedding_dim = _check_count("embedding_dim", embedding_dim)
        per_replica = dict(trainable=False, synchronization=tf.VariableSynchronization.ON_READ,
                           aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        self._embeddings = tf.Variable(tf.zeros([memory_size, embedding_dim]), name="xbm_embeddings", **per_replica)
        self._labels = tf.Variable(tf.zeros([memory_size], tf.int64), name="xbm_labels", **per_replica)
        self._valid = tf.Variable(tf.zeros([memory_size], tf.bool), name="xbm_valid", **per_replica)
        self._next = tf.Variable(0, dtype=tf.int64, name="xbm_next", **per_replica)

    def filled(self):
        """How many queue slots hold a past sample."""
        return tf.reduce_sum(tf.cast(self._valid, tf.int32))

    def reset(self):
        """Empties the queue."""
        self._valid.assign(tf.zeros_like(self._valid))
        self._next.assign(0)

    def __call__(self, y_true, y_pred, sample_weight=None):
        with tf.name_scope(self.name):
            labels, embeddings = standardize_inputs(y_true, y_pred)
            memory = (self._labels.read_value(), self._embeddings.read_value(), self._valid.read_value())
            losses = type(self.loss).kernel(tf.cast(labels, tf.int64), embeddings, memory=memory,
                                            **self.loss.kernel_params())
            with tf.control_dependencies([losses]):
                self._enqueue(tf.cast(labels, tf.int64), tf.stop_gradient(embeddings))
            return _reduce(tf.cast(losses, self.dtype), sample_weight, self.reduction, self.dtype, self.name)

    def _enqueue(self, labels, embeddings):
        """Writes the last min(B, M) samples of the batch after the newest entry (a ring)."""
        size = tf.shape(labels, out_type=tf.int64)[0]
        kept = tf.minimum(size, self.memory_size)
        labels, embeddings = labels[size - kept:], tf.cast(embeddings[size - kept:], self._embeddings.dtype)
        slots = ((self._next + tf.range(kept, dtype=tf.int64)) % self.memory_size)[:, None]
        self._embeddings.assign(tf.tensor_scatter_nd_update(self._embeddings, slots, embeddings))
        self._labels.assign(tf.tensor_scatter_nd_update(self._labels, slots, labels))
        self._valid.assign(tf.tensor_scatter_nd_update(self._valid, slots, tf.ones([kept], tf.bool)))
        self._next.assign((self._next + kept) % self.memory_size)

    def get_config(self):
        config = super().get_config()
        config.update(loss=keras.saving.serialize_keras_object(self.loss), memory_size=self.memory_size,
                      embedding_dim=self.embedding_dim)
        return config


@_SERIALIZABLE
class ClassCosines(keras.layers.Layer):
    """The [C, D] class vectors (proxies, ArcFace / CosFace weights) and the cosines [B, C] with them.

    Owned by the training model (``with_class_head``) so that ``fit`` trains the vectors
    and ``.keras`` files keep them; the embedding model stays free of them. Computes in
    float32 whatever the mixed-precision policy (scales of 32-64 on cosines).

    Args:
        num_classes: C >= 1, the training labels being 0 .. C - 1.
        sub_centers: K >= 1 vectors per class (sub-centre ArcFace: the closest counts).
        initializer: of the class vectors (default normal: random directions).
        **kwargs: Keras ``Layer`` arguments.

    Example:
    >>> layer = ClassCosines(3)
    >>> layer(tf.ones([2, 4])).shape, layer.weights[0].shape
    (TensorShape([2, 3]), TensorShape([3, 4]))
    """

    def __init__(self, num_classes, sub_centers=1, initializer="random_normal", **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.num_classes = _check_count("num_classes", num_classes)
        self.sub_centers = _check_count("sub_centers", sub_centers)
        self.initializer = keras.initializers.get(initializer)

    def build(self, input_shape):
        shape = (self.num_classes, input_shape[-1]) if self.sub_centers == 1 else (
            self.num_classes, self.sub_centers, input_shape[-1])
        self.class_vectors = self.add_weight(name="class_vectors", shape=shape, initializer=self.initializer)

    def call(self, inputs):
        return class_cosines(tf.cast(inputs, self.compute_dtype), self.class_vectors)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "sub_centers": self.sub_centers,
                "initializer": keras.initializers.serialize(self.initializer)}


def with_class_head(embedding_model, num_classes, sub_centers=1, name="class_head"):
    """The training model: ``embedding_model`` (one layer) then ``ClassCosines``; outputs cosines [B, C].

    Train it with a ``ClassLoss``; save, export and index ``embedding_model`` (shared: training
    this model trains it; ``embedding_part`` finds it again, e.g. in a loaded ``.keras`` file).

    Args:
        embedding_model: a Keras model with one input and one embeddings output [B, D].
        num_classes: C, the training labels being 0 .. C - 1.
        sub_centers: class vectors per class (``ClassCosines``).
        name: the ``ClassCosines`` layer's name.

    Returns:
        A functional ``keras.Model`` of two layers.

    Example:
    >>> embedder = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> trained = with_class_head(embedder, num_classes=4, sub_centers=3)
    >>> trained.output_shape, tuple(trained.get_layer("class_head").class_vectors.shape)
    ((None, 4), (4, 3, 2))
    """
    inputs = keras.Input(embedding_model.inputs[0].shape[1:], dtype=embedding_model.inputs[0].dtype)
    head = ClassCosines(num_classes, sub_centers=sub_centers, name=name)
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


class ClassLoss(RankingLoss):
    """Base of the losses on ``ClassCosines`` output: ``y_pred`` = cosines [B, C], ``y_true`` = ids 0 .. C - 1.

    ``class_head = True`` tells a training loop (``rankloss-tf train``) to train through
    ``with_class_head``; ``sub_centers`` is the head's. Per replica only (no
    ``cross_replica``): see ``ops.proxy`` and ``ops.margin_softmax``.

    Example:
    >>> loss = CosFaceLoss()
    >>> isinstance(loss, ClassLoss), loss.class_head, loss.sub_centers
    (True, True, 1)
    """

    class_head = True
    sub_centers = 1

    def __init__(self, cross_replica=False, name=None, **kwargs):
        if cross_replica:
            raise ValueError(f"{type(self).__name__} computes per replica. Received: cross_replica={cross_replica!r}")
        super().__init__(cross_replica=False, name=name, **kwargs)


@_SERIALIZABLE
class ProxyAnchorLoss(ClassLoss):
    """Proxy-Anchor loss (Kim et al. 2020) on ``ClassCosines`` output; see ``ops.proxy``.

    Args:
        margin: >= 0 (default 0.1). alpha: > 0 (default 32).
        name, reduction, dtype: Keras' ``Loss`` arguments.

    Example:
    >>> round(float(ProxyAnchorLoss()([0, 1], [[1.0, 0.0], [0.0, 1.0]])), 4)
    3.24
    """

    kernel = staticmethod(proxy_anchor_from_cosines)

    def __init__(self, margin=0.1, alpha=32.0, name="proxy_anchor_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.margin, self.alpha = check_non_negative("margin", margin), check_positive("alpha", alpha)

    def kernel_params(self):
        return {"margin": self.margin, "alpha": self.alpha}


@_SERIALIZABLE
class ProxyNCALoss(ClassLoss):
    """ProxyNCA (softmax_scale 1) and ProxyNCA++ (softmax_scale 9) on ``ClassCosines`` output; see ``ops.proxy``.

    Example:
    >>> round(float(ProxyNCALoss()([0], [[1.0, 0.0]])), 4)
    0.1269
    """

    kernel = staticmethod(proxy_nca_from_cosines)

    def __init__(self, softmax_scale=1.0, name="proxy_nca_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.softmax_scale = check_positive("softmax_scale", softmax_scale)

    def kernel_params(self):
        return {"softmax_scale": self.softmax_scale}


class _MarginSoftmaxLoss(ClassLoss):
    margin_type = None

    def __init__(self, margin, scale, sub_centers, name, **kwargs):
        super().__init__(name=name, **kwargs)
        _, self.margin = check_margin(self.margin_type, margin)
        self.scale, self.sub_centers = check_positive("scale", scale), _check_count("sub_centers", sub_centers)

    def call(self, y_true, y_pred):
        return margin_softmax_from_cosines(y_true, y_pred, self.margin_type, self.margin, self.scale)

    def kernel_params(self):
        return {"margin": self.margin, "scale": self.scale}

    def get_config(self):
        return {**super().get_config(), "sub_centers": self.sub_centers}


@_SERIALIZABLE
class ArcFaceLoss(_MarginSoftmaxLoss):
    """ArcFace (additive angular margin, degrees) on ``ClassCosines`` output; see ``ops.margin_softmax``.

    Args:
        margin: degrees, 0 <= margin < 180 (default 28.6). scale: > 0 (default 64).
        sub_centers: class vectors per class of the head (sub-centre ArcFace: 3).
        name, reduction, dtype: Keras' ``Loss`` arguments.

    Example:
    >>> round(float(ArcFaceLoss()([0], [[0.0, 1.0]])), 2)
    94.64
    """

    margin_type = "arcface"

    def __init__(self, margin=28.6, scale=64.0, sub_centers=1, name="arcface_loss", **kwargs):
        super().__init__(margin, scale, sub_centers, name, **kwargs)


@_SERIALIZABLE
class CosFaceLoss(_MarginSoftmaxLoss):
    """CosFace (additive cosine margin) on ``ClassCosines`` output; see ``ops.margin_softmax``.

    Args:
        margin: >= 0 (default 0.35). scale: > 0 (default 64). sub_centers: of the head.
        name, reduction, dtype: Keras' ``Loss`` arguments.

    Example:
    >>> round(float(CosFaceLoss()([0], [[0.0, 1.0]])), 1)
    86.4
    """

    margin_type = "cosface"

    def __init__(self, margin=0.35, scale=64.0, sub_centers=1, name="cosface_loss", **kwargs):
        super().__init__(margin, scale, sub_centers, name, **kwargs)


# Short names for ``rankloss_tf.losses.get`` and ``rankloss-tf train --loss``.
MODERN_LOSSES = {
    "multi_similarity": MultiSimilarityLoss,
    "supcon": SupConLoss,
    "ntxent": NTXentLoss,
    "proxy_anchor": ProxyAnchorLoss,
    "proxy_nca": ProxyNCALoss,
    "arcface": ArcFaceLoss,
    "cosface": CosFaceLoss,
}
