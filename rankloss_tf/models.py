"""Embedding models: backbone (preprocessing inside) -> dense projection -> L2 normalisation.

Every model built here takes raw ``uint8`` images ``[N, H, W, C]`` and returns
``float32`` embeddings ``[N, D]``, unit-norm unless built with
``normalize=False``: the input preprocessing (resizing, channel tiling, the
backbone's own pixel scaling) is the first layer of the backbone, so a trained
or exported model needs no preprocessing code beside it. Backbones come from
the one registry, ``rankloss_tf.backbones.build_backbone``: ``"small_cnn"``,
``"efficientnet_lite0"`` and every ``keras.applications`` model.
"""

import keras

from rankloss_tf.backbones import ImagePreprocessing, build_backbone, small_cnn
from rankloss_tf.backbones.small_cnn import check_input_shape
from rankloss_tf.backbones.image_views import ImageView, views

__all__ = [
    "ImagePreprocessing",
    "ImageView",
    "build_embedding_model",
    "embedding_model",
    "projection_head",
    "small_cnn",
    "views",
]


def _check_embedding_dim(embedding_dim):
    if isinstance(embedding_dim, bool) or int(embedding_dim) < 1:
        raise ValueError(
            f"`embedding_dim` must be a positive integer. Received: embedding_dim={embedding_dim}"
        )
    return int(embedding_dim)


def _unit_norm(x):
    """The one L2 normalisation of this package's models: rows scaled to unit norm."""
    return keras.layers.UnitNormalization(axis=-1, name="l2_normalize")(x)


def _project(x, embedding_dim, normalize):
    """Dense projection to ``embedding_dim`` -> optional L2 normalisation -> float32 embeddings."""
    x = keras.layers.Dense(embedding_dim, name="projection")(x)
    if normalize:
        x = _unit_norm(x)
    return keras.layers.Activation("linear", dtype="float32", name="embeddings")(x)


def projection_head(feature_dim, embedding_dim=64, normalize=True, name="projection_head"):
    """The embedding head alone: features ``[N, F]`` -> dense -> L2 normalisation -> ``[N, D]``.

    The head of ``build_embedding_model``, for training on precomputed
    (frozen-backbone) features: ``embeddings = normalize(features @ W + b)``.

    Args:
        feature_dim: size ``F`` of the input features.
        embedding_dim: size ``D`` of the embeddings.
        normalize: whether to L2-normalise the embeddings (unit norm rows).
        name: model name.

    Returns:
        A ``keras.Model`` mapping ``float32 [N, F]`` to ``float32 [N, D]``.

    Example:
    >>> import numpy as np
    >>> head = projection_head(1280, embedding_dim=512)
    >>> np.linalg.norm(head(np.ones((2, 1280), np.float32)), axis=1).round(4).tolist()
    [1.0, 1.0]
    """
    if isinstance(feature_dim, bool) or int(feature_dim) < 1:
        raise ValueError(f"`feature_dim` must be a positive integer. Received: feature_dim={feature_dim}")
    inputs = keras.Input((int(feature_dim),), name="features")
    return keras.Model(inputs, _project(inputs, _check_embedding_dim(embedding_dim), normalize), name=name)


def embedding_model(feature_extractor, head, views=None, input_shape=None, name="embedding_model"):
    """One model ``uint8 images -> unit-norm embeddings`` from feature extractors and a head.

    Without views: ``L2normalise(head(feature_extractor(images)))``. With
    views (``rankloss_tf.backbones.image_views``): the features of each view of the
    image are averaged before the head,
    ``L2normalise(head(mean over views v of extractor_of_size(v.size)(ImageView(v)(images))))``,
    as the frozen-feature protocol embeds an image from its cached view features.
    The normalisation makes a head trained on raw outputs (N-pair and angular
    losses) serve the cosine retrieval it is evaluated with; a normalised
    head's output is unchanged.

    Args:
        feature_extractor: ``backbones.build_backbone``'s model; with ``views``,
            a dict from each view size ``s`` to an extractor of ``(s, s, C)`` images.
        head: a model taking the features (e.g. ``projection_head``).
        views: a sequence of ``View`` (None: the images go to the extractor as they are).
        input_shape: ``(H, W, C)`` of the raw images; needed with ``views``.
        name: model name.

    Returns:
        A ``keras.Model`` mapping ``uint8 [N, H, W, C]`` to float32 ``[N, D]``.

    Raises:
        ValueError: views without an input shape or without an extractor of their size.

    Example:
    >>> from rankloss_tf.backbones import build_backbone
    >>> features = build_backbone("small_cnn", None, None, input_shape=(8, 8, 1))
    >>> embedding_model(features, projection_head(64, 16)).output_shape
    (None, 16)
    >>> extractors = {size: build_backbone("small_cnn", None, None, input_shape=(size, size, 1)) for size in (8, 12)}
    >>> model = embedding_model(extractors, projection_head(64, 16), views((8, 12), mirror=True), (8, 8, 1))
    >>> model.output_shape
    (None, 16)
    """
    if views is None:
        inputs = keras.Input(feature_extractor.input_shape[1:], dtype="uint8", name="images")
        return keras.Model(inputs, _unit_norm(head(feature_extractor(inputs))), name=name)
    views = tuple(views)
    missing = sorted({view.size for view in views} - set(feature_extractor))
    if input_shape is None or not views or missing:
        raise ValueError("`views` need the images' `input_shape` and an extractor of each view size. "
                         f"Received: views={views}, input_shape={input_shape}, extractor sizes "
                         f"{sorted(feature_extractor)}")
    inputs = keras.Input(tuple(input_shape), dtype="uint8", name="images")
    extractors = {size: keras.Model(extractor.input, extractor.output, name=f"features_{size}")
                  for size, extractor in feature_extractor.items()}
    features = [extractors[view.size](ImageView(view.size, view.mirror, name=f"view_{view.name(None)}")(inputs))
                for view in views]
    if len(features) > 1:
        features = keras.layers.Average(name="mean_over_views")(features)
    else:
        features = features[0]
    return keras.Model(inputs, _unit_norm(head(features)), name=name)


def build_embedding_model(
    input_shape,
    embedding_dim=64,
    backbone="small_cnn",
    image_size=None,
    weights=None,
    normalize=True,
    name="embedding_model",
):
    """Builds an embedding model: backbone -> dense projection -> L2 normalisation.

    Args:
        input_shape: ``(height, width, channels)`` of the raw ``uint8`` images.
        embedding_dim: size ``D`` of the embeddings.
        backbone: a ``rankloss_tf.backbones`` name (``"small_cnn"``,
            ``"efficientnet_lite0"``, ``"ResNet50"``, ...).
        image_size: side or ``(height, width)`` the images are resized to inside
            the model, or None to keep their size.
        weights: pretrained backbones: None (random), ``"imagenet"`` or a path to
            a weights file.
        normalize: whether to L2-normalise the embeddings (unit norm rows).
        name: model name.

    Returns:
        A ``keras.Model`` mapping ``uint8 [N, H, W, C]`` to ``float32 [N, D]``.

    Raises:
        ValueError: unknown backbone, bad shapes or sizes.

    Example:
    >>> import numpy as np
    >>> model = build_embedding_model((8, 8, 1), embedding_dim=16)
    >>> model(np.zeros((2, 8, 8, 1), np.uint8)).shape
    TensorShape([2, 16])
    """
    input_shape = check_input_shape(input_shape)
    embedding_dim = _check_embedding_dim(embedding_dim)
    features = build_backbone(backbone, image_size=image_size, weights=weights, input_shape=input_shape)
    inputs = keras.Input(input_shape, dtype="uint8", name="images")
    return keras.Model(inputs, _project(features(inputs), embedding_dim, normalize), name=name)
