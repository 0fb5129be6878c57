"""The frozen-backbone protocol: cached backbone features -> trained embedding head.

A pretrained backbone stays frozen: every image goes through it once
(``rankloss_tf.backbones.extract_features``, cached on disk), an embedding head
(``models.projection_head``: dense -> L2 normalisation) trains on P x K batches
of the cached features, and backbone + head are joined into one model that maps
``uint8`` images to embeddings, ready for ``export_saved_model``. On a CPU this
takes minutes where fine-tuning the whole network takes days.
"""

import keras

from rankloss_tf.backbones import extract_features
from rankloss_tf.data import pk_batches
from rankloss_tf.models import ImagePreprocessing, projection_head

__all__ = ["backbone_features", "join", "train_head"]

_PREPROCESS_BATCH = 64


def backbone_features(dataset, backbone, image_size, weights, dataset_id=None, cache_dir=None):
    """Frozen-backbone features of every image of a dataset, through the feature cache.

    Images that are not ``image_size`` x ``image_size`` RGB are first brought
    there by ``models.ImagePreprocessing`` (area resize, channel tiling), the
    layer ``models.build_feature_extractor`` puts in front of the backbone, so
    that the features equal those of the joined model.

    Args:
        dataset: ``tf.data.Dataset`` of ``(uint8 image [H, W, C], label)``.
        backbone: ``"efficientnet_lite0"`` or a ``keras.applications`` name.
        image_size: side (int) the backbone sees.
        weights: ``"imagenet"`` or a weights file.
        dataset_id: a string naming the images and their order (the cache
            key); None disables the cache.
        cache_dir: cache directory (None: ``~/.cache/rankloss_tf/features``).

    Returns:
        ``(features float32 [N, F], labels [N])``.

    Example:
    >>> import numpy as np, tensorflow as tf
    >>> ds = tf.data.Dataset.from_tensor_slices((np.zeros((3, 8, 8, 1), np.uint8), [0, 1, 2]))
    >>> backbone_features(ds, "MobileNetV3Small", 32, None)[0].shape  # doctest: +SKIP
    (3, 576)
    """
    if tuple(dataset.element_spec[0].shape) != (image_size, image_size, 3):
        preprocess = ImagePreprocessing(image_size=(image_size, image_size), channels=3, rescale=False)
        dataset = dataset.batch(_PREPROCESS_BATCH).map(lambda images, labels: (preprocess(images), labels))
    return extract_features(dataset, backbone=backbone, image_size=image_size, weights=weights,
                            dataset_id=dataset_id, cache_dir=cache_dir)


def train_head(
    features,
    labels,
    loss,
    embedding_dim,
    classes_per_batch,
    samples_per_class,
    steps_per_epoch,
    epochs=1,
    learning_rate=1e-3,
    normalize=True,
    seed=0,
    callbacks=(),
    verbose=0,
):
    """Trains an embedding head on precomputed features with P x K batches.

    Args:
        features: float ``[N, F]`` backbone features.
        labels: integer ``[N]`` class labels.
        loss: a Keras loss (e.g. ``rankloss_tf.losses.NPairAngularLoss()``).
        embedding_dim: size ``D`` of the embeddings.
        classes_per_batch: P of the batches.
        samples_per_class: K of the batches.
        steps_per_epoch: batches per epoch.
        epochs: training epochs.
        learning_rate: Adam learning rate (a float or a schedule).
        normalize: L2-normalise the head's output.
        seed: seed of the head's initialisation and of the sampler.
        callbacks: Keras callbacks for ``fit``.
        verbose: ``fit`` verbosity.

    Returns:
        ``(head, history)``: the trained ``projection_head`` and ``fit``'s history.

    Example:
    >>> import numpy as np
    >>> from rankloss_tf.losses import NPairAngularLoss
    >>> rng = np.random.default_rng(0)
    >>> head, _ = train_head(rng.normal(size=(40, 16)).astype("float32"), np.repeat(np.arange(4), 10),
    ...                      NPairAngularLoss(), 8, classes_per_batch=4, samples_per_class=2, steps_per_epoch=2)
    >>> head.output_shape
    (None, 8)
    """
    keras.utils.set_random_seed(seed)
    head = projection_head(features.shape[1], embedding_dim, normalize=normalize)
    head.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss)
    batches = pk_batches(features, labels, classes_per_batch=classes_per_batch,
                         samples_per_class=samples_per_class, seed=seed)
    history = head.fit(batches, epochs=epochs, steps_per_epoch=steps_per_epoch, shuffle=False,
                       callbacks=list(callbacks), verbose=verbose)
    return head, history


def join(feature_extractor, head, name="embedding_model"):
    """One model ``uint8 images -> unit-norm embeddings``: a feature extractor, a head, L2 normalisation.

    The normalisation makes a head trained on raw outputs (N-pair and angular
    losses) serve the cosine retrieval it was evaluated with; it leaves the
    output of a normalised head unchanged.

    Args:
        feature_extractor: ``models.build_feature_extractor``'s model.
        head: a model taking its features (e.g. from ``train_head``).
        name: model name.

    Returns:
        A ``keras.Model`` mapping ``uint8 [N, H, W, C]`` to float32 ``[N, D]``.

    Example:
    >>> from rankloss_tf.models import build_feature_extractor
    >>> join(build_feature_extractor((8, 8, 1)), projection_head(64, 16)).output_shape
    (None, 16)
    """
    inputs = keras.Input(feature_extractor.input_shape[1:], dtype="uint8", name="images")
    outputs = keras.layers.UnitNormalization(axis=-1, name="l2_normalize")(head(feature_extractor(inputs)))
    return keras.Model(inputs, outputs, name=name)
