"""A Keras callback that evaluates retrieval on a held-out split every few epochs."""

import logging

import keras

from rankloss_tf.evaluation.embedding import embed_dataset
from rankloss_tf.evaluation.metrics import evaluate
from rankloss_tf.evaluation.retrieval import check_ks

__all__ = ["RetrievalEvaluation"]

logger = logging.getLogger(__name__)


class RetrievalEvaluation(keras.callbacks.Callback):
    """Embeds a held-out split at the end of epochs and logs ``evaluate`` metrics.

    The metrics are added to the epoch logs as ``prefix + name`` (e.g.
    ``val_recall@1``), so they show in the progress bar, in the ``History``
    returned by ``fit`` and to callbacks placed after this one (e.g.
    ``ModelCheckpoint(monitor="val_recall@1", mode="max")``).

    Args:
        dataset: ``tf.data.Dataset`` of ``(uint8 image, label)`` (or batches
            of them) from classes disjoint from the training classes.
        ks: the K of Recall@K.
        clustering: also compute NMI and F1 (k-means each time: slower).
        metric: ``"cosine"`` or ``"l2"``.
        frequency: evaluate every ``frequency`` epochs (and never between).
        prefix: prefix of the logged names.
        batch_size: embedding batch size for an unbatched ``dataset``.
        embedder: the model that embeds ``dataset`` (default: the model being fit; a training
            model with a class head gives its embedding part, ``losses.embedding_part``).

    Example:
    >>> callback = RetrievalEvaluation(test_dataset, ks=(1, 2))  # doctest: +SKIP
    >>> model.fit(train_batches, epochs=5, callbacks=[callback])  # doctest: +SKIP
    """

    def __init__(self, dataset, ks=(1, 2, 4, 8), clustering=False, metric="cosine", frequency=1,
                 prefix="val_", batch_size=256, embedder=None):
        super().__init__()
        if int(frequency) < 1:
            raise ValueError(f"`frequency` must be a positive integer. Received: frequency={frequency}")
        self.dataset = dataset
        self.ks = check_ks(ks)
        self.clustering = bool(clustering)
        self.metric = metric
        self.frequency = int(frequency)
        self.prefix = prefix
        self.batch_size = int(batch_size)
        self.embedder = embedder

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.frequency:
            return
        embedder = self.model if self.embedder is None else self.embedder
        embeddings, labels = embed_dataset(embedder, self.dataset, self.batch_size)
        metrics = evaluate(embeddings, labels, ks=self.ks, clustering=self.clustering, metric=self.metric)
        logger.info("epoch %d: %s", epoch + 1, ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
        if logs is not None:
            logs.update({self.prefix + name: value for name, value in metrics.items()})

