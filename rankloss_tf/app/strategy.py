"""Which ``tf.distribute`` strategy a run trains under, and what its workers share.

``TrainConfig.strategy`` names one of ``STRATEGY_NAMES`` (spelled in
``app.config``, which imports no TensorFlow):

- ``auto``: ``MirroredStrategy`` over the GPUs when more than one is visible,
  else TensorFlow's default one-device strategy.
- ``default``: the one-device strategy.
- ``mirrored``: ``MirroredStrategy`` over every visible GPU (over the logical
  CPU devices when there is no GPU: how the tests split a CPU in two).
- ``multi_worker``: ``MultiWorkerMirroredStrategy``; the cluster and this
  process's task come from the ``TF_CONFIG`` environment variable.
- ``tpu``: ``TPUStrategy`` on ``TrainConfig.tpu`` (a TPU name or
  ``grpc://`` address; empty: the TPU of a Colab runtime or a Cloud TPU VM),
  resolved only when asked for.

With R > 1 replicas the global batch stays P x K, each replica gets R-th of its
rows (the dataset is split by ``tf.distribute``), the losses mine across
replicas (``cross_replica=True``) and batch normalisation takes its statistics
over the global batch (``synchronized_batch_norm``), so a step equals one
device's step on the global batch. Under ``multi_worker`` every worker runs the same command; worker
0 (the chief) owns the run directory, and ``from_chief`` gives the other
workers what it read there (phase, epoch, restored weights).
"""

import contextlib
import json
import logging
import os

import numpy as np
import tensorflow as tf

from rankloss_tf.app.config import STRATEGY_NAMES

__all__ = ["build_strategy", "from_chief", "is_chief", "is_multi_worker", "synchronized_batch_norm", "symbolic_build_from_spec",
           "worker_name"]

logger = logging.getLogger(__name__)


def _tf_config():
    """The parsed ``TF_CONFIG`` with a worker cluster, or a ``ValueError`` naming what is wrong."""
    text = os.environ.get("TF_CONFIG")
    if not text:
        raise ValueError("--strategy multi_worker reads the cluster from the TF_CONFIG environment variable, which "
                         "is not set (see docs/distribute.md). Received: TF_CONFIG unset")
    try:
        config = json.loads(text)
        workers = config["cluster"]["worker"]
        task = config["task"]
        if not workers or task["type"] not in ("chief", "worker") or not isinstance(task["index"], int):
            raise KeyError("task")
    except (ValueError, KeyError, TypeError):
        raise ValueError('TF_CONFIG must be JSON like {"cluster": {"worker": ["host:port", ...]}, "task": {"type": '
                         f'"worker", "index": 0}}}}. Received: TF_CONFIG={text!r}') from None
    return config


def _tpu(address):
    """``TPUStrategy`` on ``address`` (empty: Colab's or the Cloud TPU VM's own), or a clear ``ValueError``."""
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=address or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(f"No TPU found for --strategy tpu ({reason}). Pass --tpu NAME_OR_GRPC_ADDRESS, or run on a "
                         f"TPU runtime (Colab, a Cloud TPU VM). Received: tpu={address!r}") from None


class _MultiWorkerStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """``MultiWorkerMirroredStrategy`` whose ``reduce`` takes Keras 3's per-step logs.

    Keras 3's ``fit`` averages each step's scalar logs with ``reduce("MEAN", v,
    axis=0)`` under several workers, which TensorFlow refuses for a scalar
    (keras-team/keras#20585); a scalar is averaged over the replicas instead.
    """

    def reduce(self, reduce_op, value, axis):
        local = self.experimental_local_results(value)
        if axis is not None and local and getattr(local[0], "shape", None) is not None and local[0].shape.rank == 0:
            axis = None
        return super().reduce(reduce_op, value, axis)


def _mirrored():
    """``MirroredStrategy`` over the GPUs, else over the logical CPU devices."""
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy([device.name for device in devices])


def build_strategy(name, tpu=None):
    """The ``tf.distribute.Strategy`` called ``name`` (one of ``STRATEGY_NAMES``).

    Args:
        name: "auto", "default", "mirrored", "multi_worker" or "tpu".
        tpu: with "tpu", the TPU name or ``grpc://`` address (None: Colab's /
            the Cloud TPU VM's own).

    Returns:
        A strategy; ``strategy.num_replicas_in_sync`` replicas share each batch.

    Raises:
        ValueError: an unknown name, a missing or malformed ``TF_CONFIG`` for
            "multi_worker", no TPU reachable for "tpu".

    Example:
    >>> build_strategy("default").num_replicas_in_sync
    1
    >>> build_strategy("ring")
    Traceback (most recent call last):
    ...
    ValueError: Unknown strategy; known: auto, default, mirrored, multi_worker, tpu. Received: strategy='ring'
    """
    if name not in STRATEGY_NAMES:
        raise ValueError(f"Unknown strategy; known: {', '.join(STRATEGY_NAMES)}. Received: strategy={name!r}")
    if name == "multi_worker":
        _tf_config()
        return _MultiWorkerStrategy()
    if name == "tpu":
        return _tpu(tpu)
    if name == "mirrored" or (name == "auto" and len(tf.config.list_physical_devices("GPU")) > 1):
        return _mirrored()
    return tf.distribute.get_strategy()


def is_multi_worker(strategy):
    """True when ``strategy`` spans several worker processes.

    Example:
    >>> is_multi_worker(tf.distribute.get_strategy())
    False
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return False
    return len(resolver.cluster_spec().as_dict().get("worker", [])) + len(
        resolver.cluster_spec().as_dict().get("chief", [])) > 1


def is_chief(strategy):
    """True for the process that writes the run directory: the only one, or worker 0 (or the "chief" task).

    Example:
    >>> is_chief(tf.distribute.get_strategy())
    True
    """
    if not is_multi_worker(strategy):
        return True
    resolver = strategy.cluster_resolver
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "chief" or (not has_chief and resolver.task_id == 0)


def worker_name(strategy):
    """``"worker 1"`` and the like: how messages name this process (``"chief"`` for the chief).

    Example:
    >>> worker_name(tf.distribute.get_strategy())
    'chief'
    """
    if is_chief(strategy):
        return "chief"
    return f"{strategy.cluster_resolver.task_type} {strategy.cluster_resolver.task_id}"


def from_chief(strategy, values):
    """The chief's ``values`` on every worker: each worker passes arrays of the same shapes.

    One all-reduce in which only replica 0 (on the chief) contributes: every
    worker receives the chief's values exactly (a sum with zeros). Without
    several workers the values are returned as they are.

    Args:
        strategy: the run's strategy.
        values: a list of arrays (float32 or castable to it).

    Returns:
        A list of ``numpy`` float32 arrays: the chief's values.

    Example:
    >>> from_chief(tf.distribute.get_strategy(), [np.ones(2)])[0].tolist()
    [1.0, 1.0]
    """
    values = [np.asarray(value, np.float32) for value in values]
    if not is_multi_worker(strategy) or not values:
        return values

    @tf.function
    def share(tensors):
        context = tf.distribute.get_replica_context()
        first = tf.equal(context.replica_id_in_sync_group, 0)
        return [context.all_reduce("SUM", tf.where(first, tensor, tf.zeros_like(tensor))) for tensor in tensors]

    shared = strategy.run(share, args=([tf.constant(value) for value in values],))
    return [strategy.experimental_local_results(tensor)[0].numpy() for tensor in shared]


@contextlib.contextmanager
def synchronized_batch_norm(model, strategy):
    """Within the block, ``model``'s batch normalisation layers take their statistics over the global batch.

    Under a strategy of several replicas a Keras ``BatchNormalization`` layer
    normalises each replica's rows by their own mean and variance unless it is
    ``synchronized``; this sets the flag on every such layer for the block (a
    training step then equals one device's on the global batch) and puts the
    layers back as they were after it (the saved model is the one-device one).

    Args:
        model: a Keras model.
        strategy: the run's strategy (one replica: nothing changes).

    Example:
    >>> import keras
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.BatchNormalization()])
    >>> with synchronized_batch_norm(model, tf.distribute.get_strategy()):
    ...     model.layers[0].synchronized
    False
    """
    import keras

    layers = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)
              and not layer.synchronized] if strategy.num_replicas_in_sync > 1 else []
    for layer in layers:
        layer.synchronized = True
    try:
        yield model
    finally:
        for layer in layers:
            layer.synchronized = False


def symbolic_build_from_spec(model, element_spec, strategy):
    """Lets Keras' ``fit`` build ``model`` from the dataset's ``element_spec`` under several workers.

    Keras 3's ``fit`` builds a model by averaging its first distributed batch
    across replicas with ``strategy.reduce``, which ``MultiWorkerMirroredStrategy``
    refuses for a tuple of batches (keras-team/keras#20585: "Attempt to convert a
    value (PerReplica...)"). Under several workers the model is built from the
    batches' shapes and dtypes instead, as Keras itself does without a strategy;
    other strategies are left as they are.

    Args:
        model: a compiled Keras model.
        element_spec: ``(images spec, labels spec)`` of the training batches.
        strategy: the run's strategy.

    Example:
    >>> import keras
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> symbolic_build_from_spec(model, None, tf.distribute.get_strategy()) is model
    True
    """
    if is_multi_worker(strategy):
        def build(iterator=None, data_batch=None):
            with strategy.scope():
                model._symbolic_build(data_batch=element_spec)

        model._maybe_symbolic_build = build
    return model
