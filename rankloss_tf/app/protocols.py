"""The two ways a model trains: end to end on images, or a head on frozen backbone features.

Both protocols offer the same three steps, so ``train`` tells one story:

- ``build()``: the compiled Keras model that ``fit`` trains (``trained``) and
  the model that maps ``uint8`` images to embeddings (``model``; saved and
  exported). End to end they are the same model; with frozen features the
  trained one is the projection head.
- ``batches(images, skip)``: the P x K training batches (the first ``skip``
  left out, so a resumed run sees the batches an uninterrupted one would;
  end to end, the recipe's rotated classes and batch augmentation, seeded by
  the batch's index in the whole stream).
- ``embed(model, images)``: test embeddings and labels.

Frozen features (a pretrained backbone without ``fine_tune``): every image goes
through the backbone once per view (``config.view_sizes``, each mirrored too
with ``config.mirror_views``; ``rankloss_tf.backbones.extract_view_features``,
cached on disk), the head trains on P x K batches of every view's features
(each view a sample of the image's class) in seconds, an image's embedding is
the head of the mean of its views' features, and the backbone and head are
joined into one image model that computes the same (``models.embedding_model``).
When the cached training features exceed ``STREAM_FEATURES_BYTES`` the head
trains from the feature files on disk (``rankloss_tf.backbones.FeatureRows``):
the P x K sampler holds the labels and row positions only and reads each
batch's rows, the same batches for a seed as from memory.
"""

import os

import keras
import numpy as np
import tensorflow as tf

from rankloss_tf import datasets
from rankloss_tf.backbones import FeatureRows, build_backbone, extract_view_features, views
from rankloss_tf.data import pk_batches
from rankloss_tf.data.augment import augment_batches, batch_augmentation, rotated_classes
from rankloss_tf.evaluation import embed_dataset
from rankloss_tf.losses import with_class_head
from rankloss_tf.models import build_embedding_model, embedding_model, projection_head
from rankloss_tf.app.config import RANDOM_WEIGHTS
from rankloss_tf.app.limits import evaluation_batch
from rankloss_tf.fine_tune import BackboneRateAdam, freeze_batch_norm
from rankloss_tf.references import real_path, streamed

__all__ = ["EndToEnd", "FrozenFeatures", "protocol"]

HEAD = "projection_head"
STREAM_FEATURES_BYTES = 1 << 30  # training features above this size stream from disk (the head's P x K batches)


def _weights(config):
    """The builders' weights argument: None for "random"."""
    return None if config.weights == RANDOM_WEIGHTS else config.weights


def _pooling(config):
    """The backbone builders' pooling arguments of a frozen-features configuration (the cache keys on them);
    a configuration recorded before pooling was a choice pools by average."""
    if config.pooling == "gem":
        return {"pooling": "gem", "gem_power": config.gem_power}
    return {"pooling": "avg"}


def _compile(model, config, steps, class_labels=None):
    """Compiles ``model`` (or, for a loss on class cosines, ``model`` + a ``ClassCosines`` head) with the loss.

    ``class_labels``: a function giving the training labels (or None), called only for such a loss. Under a
    strategy of several replicas (in scope) a pair-based loss mines across them; a class loss is computed on
    each replica's own rows (its class vectors are replicated variables).
    """
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    loss = config.build_loss()
    if getattr(loss, "class_head", False):  # issue 31: proxies / class weights live in the trained model's head
        model = with_class_head(model, _class_count(class_labels(), config), **loss.head_options())
    elif replicas > 1:
        loss = config.build_loss(cross_replica=True)
    schedule = keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=config.epochs * steps)
    if config.fine_tune:
        optimizer = BackboneRateAdam(config.backbone_lr_scale, learning_rate=schedule)
    else:
        optimizer = keras.optimizers.Adam(schedule)
    model.compile(optimizer=optimizer, loss=loss)
    return model


def _class_count(labels, config):
    """C for a class head: the training labels must be class ids 0 .. C - 1 (C = the largest + 1)."""
    labels = np.asarray(labels if labels is not None else [])
    if labels.size == 0 or not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise ValueError(f"Loss {config.loss!r} trains one vector per class and needs integer training labels >= 0. "
                         f"Received: {labels.size} labels{f' from {labels.min()}' if labels.size else ''}")
    return int(labels.max()) + 1


class EndToEnd:
    """Backbone and head train together on the images.

    The training images may first be multiplied into rotated classes
    (``config.class_rotations``), and each batch is augmented
    (``config.augment``). A fine-tuned pretrained backbone (``fine_tune``)
    keeps its batch-norm statistics and trains at ``backbone_lr_scale`` times
    the head's learning rate (``rankloss_tf.fine_tune``).

    Args:
        config: a resolved ``TrainConfig``.
        input_shape: ``(H, W, C)`` of the training images.

    Example:
    >>> from rankloss_tf.app import TrainConfig
    >>> trained, model = EndToEnd(TrainConfig(dataset="digits").resolved(), (8, 8, 1)).build(steps=10)
    >>> trained is model, model.output_shape
    (True, (None, 64))
    """

    name = "end to end"

    def __init__(self, config, input_shape):
        self.config, self.input_shape = config, tuple(input_shape)

    def build(self, steps, images=None):
        """``(trained, model)``: here one compiled embedding model (with a class head for a loss that
        needs one, ``images`` giving the class count)."""
        config = self.config
        model = build_embedding_model(self.input_shape, embedding_dim=config.embedding_dim, backbone=config.backbone,
                                      image_size=config.image_size, weights=_weights(config),
                                      normalize=config.normalize)
        if config.fine_tune:
            freeze_batch_norm(model)
        return _compile(model, config, steps, lambda: self.train_labels(images)), model

    def train_labels(self, images):
        """The labels [N] of the (rotated) training images (none without images)."""
        if images is None:
            return None
        turns = self.config.class_rotations or 1
        labels = np.fromiter(images.map(lambda image, label: label).as_numpy_iterator(), dtype=np.int64)
        return (labels[:, None] * turns + np.arange(turns)).ravel()

    def batches(self, images, skip):
        """P x K batches of the (rotated) images, the first ``skip`` left out, augmented."""
        config = self.config
        batches = self._sampled(rotated_classes(images, config.class_rotations), None, skip)
        augment = batch_augmentation(config.augment)
        return batches if augment is None else augment_batches(batches, augment, seed=config.seed, start=skip)

    def _sampled(self, examples, labels, skip):
        config = self.config
        batches = pk_batches(examples, labels, classes_per_batch=config.classes_per_batch,
                             samples_per_class=config.samples_per_class, seed=config.seed)
        return batches.skip(skip) if skip else batches

    def evaluation_data(self, images):
        """What ``RetrievalEvaluation`` embeds during ``fit``: the test images, in ``evaluation_batch`` batches."""
        return images.batch(evaluation_batch(self.input_shape))

    def embed(self, model, images):
        """``(embeddings [N, D], labels [N])`` of the test ``images`` (batches bounded by ``evaluation_batch``)."""
        return embed_dataset(model, images, batch_size=evaluation_batch(self.input_shape))


class FrozenFeatures(EndToEnd):
    """A projection head trains on cached features of a frozen pretrained backbone.

    Example:
    >>> from rankloss_tf.app import TrainConfig
    >>> FrozenFeatures.name, protocol(TrainConfig(dataset="digits").resolved(), (8, 8, 1)).name
    ('frozen features', 'end to end')
    """

    name = "frozen features"

    def build(self, steps, images=None):
        """``(head, model)``: the compiled head (with a class head for a loss that needs one, ``images``
        giving the class count) and the joined image model (views averaged)."""
        config = self.config
        channels = self.input_shape[-1]
        extractors = {view.size: build_backbone(config.backbone, image_size=view.size, weights=_weights(config),
                                                input_shape=(view.size, view.size, channels), **_pooling(config))
                      for view in self.views}
        for extractor in extractors.values():
            extractor.trainable = False
        feature_dim = next(iter(extractors.values())).output_shape[-1]
        head = projection_head(feature_dim, config.embedding_dim, normalize=config.normalize, name=HEAD)
        trained = _compile(head, config, steps, lambda: self.train_labels(images))
        return trained, embedding_model(extractors, head, self.views, self.input_shape)

    def train_labels(self, images):
        """The labels of the training features (every view; none without images)."""
        if images is None:
            return None
        return self.train_features(images)[1]

    @property
    def views(self):
        """The ``View``s of every image: ``config.view_sizes``, each mirrored too with ``config.mirror_views``."""
        return views(self.config.view_sizes, self.config.mirror_views)

    def view_features(self, images, split, rows=False):
        """``[(features [N, F], labels [N]) for each view]`` of a split's images, through the feature cache.

        With ``rows``, a cached view's features are ``FeatureRows`` on disk instead (see ``extract_features``).
        """
        config = self.config
        return [extract_view_features(images, view, config.image_size, backbone=config.backbone,
                                      weights=_weights(config), dataset_id=self._dataset_id(split),
                                      cache_dir=config.cache_dir, verbose=0 if config.verbose == 0 else "auto",
                                      rows=rows, **_pooling(config))
                for view in self.views]

    def train_features(self, images):
        """Every view's training features, one after the other: ``(features, labels [N])`` in memory, or
        ``(FeatureRows, labels)`` on disk when they are cached and exceed ``STREAM_FEATURES_BYTES``."""
        per_view = self.view_features(images, "train", rows=True)
        if all(isinstance(view, FeatureRows) for view in per_view):
            rows = FeatureRows.concatenate(per_view)
            if rows.nbytes > STREAM_FEATURES_BYTES:
                return rows, rows.labels
            per_view = self.view_features(images, "train")  # the parts joined into the cache file, in memory
        return (np.concatenate([features for features, _ in per_view]),
                np.concatenate([labels for _, labels in per_view]))

    def batches(self, images, skip):
        """P x K batches of every view's training features (a view is one more sample of its class)."""
        features, labels = self.train_features(images)
        if isinstance(features, FeatureRows):
            return self._sampled(streamed(features.references()), None, skip)
        return self._sampled(features, labels, skip)

    def test_features(self, images):
        """``(features [N, F], labels [N])`` of the test images: each image's features averaged over its views."""
        per_view = self.view_features(images, "test")
        return np.mean([features for features, _ in per_view], axis=0, dtype=np.float32), per_view[0][1]

    def evaluation_data(self, images):
        return tf.data.Dataset.from_tensor_slices(self.test_features(images)).batch(1024)

    def embed(self, model, images):
        features, labels = self.test_features(images)
        return model.get_layer(HEAD).predict(features, batch_size=1024, verbose=0), labels

    def _dataset_id(self, split):
        """The feature-cache name of a split: dataset (a folder or TFRecord pattern: its real path), real data
        location, split; the same data reached through a symbolic link or a relative path has one name."""
        config = self.config
        name = config.dataset
        for prefix in (datasets.FOLDER_PREFIX, datasets.TFRECORD_PREFIX):
            if name.startswith(prefix):
                name = prefix + real_path(os.path.expanduser(name[len(prefix):]))
        source = "default" if config.data_dir is None else real_path(os.path.expanduser(config.data_dir))
        return f"{name}:{source}:{split}"


def protocol(config, input_shape):
    """The protocol ``config`` asks for: ``FrozenFeatures`` or ``EndToEnd``.

    Example:
    >>> from rankloss_tf.app import TrainConfig
    >>> type(protocol(TrainConfig(dataset="digits").resolved(), (8, 8, 1))).__name__
    'EndToEnd'
    """
    return (FrozenFeatures if config.frozen else EndToEnd)(config, input_shape)
