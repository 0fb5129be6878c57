"""Deprecated: the frozen-backbone protocol moved (this module goes in 0.3).

- ``backbone_features`` -> ``rankloss_tf.backbones.extract_features`` (it now
  resizes and tiles images itself);
- ``join`` -> ``rankloss_tf.models.embedding_model``;
- ``train_head`` -> ``rankloss_tf.app.train`` with a pretrained backbone
  (``FrozenFeatures`` in ``rankloss_tf.app.protocols``), or
  ``models.projection_head`` + ``data.pk_batches`` + ``fit`` by hand.
"""

import warnings

import keras

from rankloss_tf.backbones import extract_features
from rankloss_tf.data import pk_batches
from rankloss_tf.models import embedding_model, projection_head

__all__ = ["backbone_features", "join", "train_head"]


def _deprecated(old, new):
    warnings.warn(f"rankloss_tf.frozen_backbone.{old} is deprecated; use {new}.", DeprecationWarning, stacklevel=3)


def backbone_features(dataset, backbone, image_size, weights, dataset_id=None, cache_dir=None):
    """Deprecated alias of ``backbones.extract_features`` (same arguments).

    Example:
    >>> backbone_features(ds, "MobileNetV3Small", 32, None)  # doctest: +SKIP
    """
    _deprecated("backbone_features", "rankloss_tf.backbones.extract_features")
    return extract_features(dataset, backbone=backbone, image_size=image_size, weights=weights,
                            dataset_id=dataset_id, cache_dir=cache_dir)


def train_head(features, labels, loss, embedding_dim, classes_per_batch, samples_per_class, steps_per_epoch,
               epochs=1, learning_rate=1e-3, normalize=True, seed=0, callbacks=(), verbose=0):
    """Deprecated: trains a ``projection_head`` on features with P x K batches; ``(head, history)``.

    Example:
    >>> head, history = train_head(features, labels, loss, 8, 4, 2, steps_per_epoch=2)  # doctest: +SKIP
    """
    _deprecated("train_head", "rankloss_tf.app.train with a pretrained backbone")
    keras.utils.set_random_seed(seed)
    head = projection_head(features.shape[1], embedding_dim, normalize=normalize)
    head.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss)
    batches = pk_batches(features, labels, classes_per_batch=classes_per_batch,
                         samples_per_class=samples_per_class, seed=seed)
    history = head.fit(batches, epochs=epochs, steps_per_epoch=steps_per_epoch, shuffle=False,
                       callbacks=list(callbacks), verbose=verbose)
    return head, history


def join(feature_extractor, head, name="embedding_model"):
    """Deprecated alias of ``models.embedding_model``.

    Example:
    >>> join(extractor, head)  # doctest: +SKIP
    """
    _deprecated("join", "rankloss_tf.models.embedding_model")
    return embedding_model(feature_extractor, head, name=name)
