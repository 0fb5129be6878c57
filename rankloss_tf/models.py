"""Embedding model builders: backbone + projection + L2 normalisation.

Every model built here takes raw ``uint8`` images ``[N, H, W, C]`` and returns
L2-normalised ``float32`` embeddings ``[N, D]``: the input preprocessing
(resizing, channel tiling, the backbone's own pixel scaling) is a layer of the
model, so a trained or exported model needs no preprocessing code beside it.

Backbones:

- ``"small_cnn"``: a CPU-friendly convolutional network (blocks of
  conv 3x3 (64) -> batch norm -> ReLU -> max-pool 2x2, as in the Omniglot
  networks of Vinyals et al. 2016 and Snell et al. 2017), suited to Omniglot
  and digits.
- any ``keras.applications`` constructor name (``"ResNet50"``,
  ``"MobileNetV2"``, ``"EfficientNetB0"``, ...), with that application's own
  ``preprocess_input`` inside the model.
- ``"efficientnet_lite0"`` from ``rankloss_tf.backbones`` (imported only
  when asked for; it normalises its own 0..255 RGB input).
"""

import importlib

import keras

__all__ = [
    "ImagePreprocessing",
    "build_embedding_model",
    "build_feature_extractor",
    "is_pretrained_backbone",
    "projection_head",
    "small_cnn",
]


_EXTERNAL_BACKBONES = ("efficientnet_lite0",)


def _application(name):
    """Returns the ``keras.applications`` constructor called ``name``, or None."""
    constructor = getattr(keras.applications, name, None)
    if constructor is None or not callable(constructor) or not name[:1].isupper():
        return None
    return constructor


def _preprocess_function(backbone):
    """The ``preprocess_input`` of the ``keras.applications`` module of ``backbone``."""
    module_name = _application(backbone).__module__
    public_name = module_name.replace("keras.src.applications", "keras.applications")
    try:
        module = importlib.import_module(public_name)
    except ImportError:
        module = importlib.import_module(module_name)
    return module.preprocess_input


@keras.saving.register_keras_serializable(package="rankloss_tf")
class ImagePreprocessing(keras.layers.Layer):
    """Turns raw ``uint8`` images into the float input a backbone expects.

    Steps: cast to float32; resize to ``image_size`` (area interpolation, so
    downsampling averages pixels); tile a single channel to ``channels``; scale
    pixels, either to [0, 1] (``backbone=None``) or with the
    ``keras.applications`` ``preprocess_input`` of ``backbone``.

    Args:
        image_size: ``(height, width)`` to resize to, or None to keep the
            input size.
        channels: number of output channels, or None to keep the input
            channels. A one-channel input is tiled; other mismatches are
            errors.
        backbone: a ``keras.applications`` constructor name whose
            ``preprocess_input`` scales the pixels, or None.
        rescale: without ``backbone``: divide by 255 (True) or keep 0..255
            (False, for backbones that normalise their own input).

    Input shape: ``[N, H, W, C]``, any dtype (``uint8`` normally), values in
    [0, 255]. Output shape: ``[N, height, width, channels]``, float32.

    Example:
    >>> import numpy as np
    >>> layer = ImagePreprocessing(image_size=(4, 4), channels=3)
    >>> layer(np.full((2, 8, 8, 1), 255, np.uint8)).shape
    TensorShape([2, 4, 4, 3])
    """

    def __init__(self, image_size=None, channels=None, backbone=None, rescale=True, **kwargs):
        super().__init__(**kwargs)
        if image_size is not None:
            image_size = tuple(int(s) for s in image_size)
            if len(image_size) != 2 or min(image_size) < 1:
                raise ValueError(
                    "`image_size` must be (height, width) with positive sizes. "
                    f"Received: image_size={image_size}"
                )
        if channels is not None and int(channels) < 1:
            raise ValueError(f"`channels` must be positive. Received: channels={channels}")
        if backbone is not None and _application(backbone) is None:
            raise ValueError(
                "`backbone` must name a keras.applications model or be None. "
                f"Received: backbone={backbone!r}"
            )
        self.image_size = image_size
        self.channels = None if channels is None else int(channels)
        self.backbone = backbone
        self.rescale = bool(rescale)
        self._preprocess = None if backbone is None else _preprocess_function(backbone)

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                f"Expected images of shape [N, H, W, C]. Received: input_shape={input_shape}"
            )
        in_channels = input_shape[-1]
        if self.channels is not None and in_channels not in (1, self.channels):
            raise ValueError(
                f"Cannot map {in_channels} input channels to {self.channels}. "
                f"Received: input_shape={input_shape}"
            )

    def call(self, images):
        x = keras.ops.cast(images, "float32")
        if self.image_size is not None:
            x = keras.ops.image.resize(x, self.image_size, interpolation="area")
        if self.channels is not None and x.shape[-1] != self.channels:
            x = keras.ops.tile(x, [1, 1, 1, self.channels])
        if self._preprocess is not None:
            return self._preprocess(x)
        return x / 255.0 if self.rescale else x

    def compute_output_shape(self, input_shape):
        height, width = self.image_size or input_shape[1:3]
        return (input_shape[0], height, width, self.channels or input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            image_size=self.image_size, channels=self.channels, backbone=self.backbone, rescale=self.rescale
        )
        return config


def _check_input_shape(input_shape):
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ValueError(
            f"`input_shape` must be (height, width, channels). Received: input_shape={input_shape}"
        )
    return input_shape


def small_cnn(input_shape, image_size=None, filters=64, blocks=None, name="small_cnn"):
    """A small convolutional feature extractor for raw ``uint8`` images.

    ``blocks`` times: conv 3x3 (``filters``) -> batch norm -> ReLU -> max-pool
    2x2, then global average pooling. By default the number of blocks is the
    largest (at most 4) that leaves a feature map of at least 2x2.

    Args:
        input_shape: ``(height, width, channels)`` of the raw images.
        image_size: ``(height, width)`` the images are resized to inside the
            model (e.g. ``(28, 28)`` for 105x105 Omniglot), or None.
        filters: convolution width.
        blocks: number of conv blocks, or None for the default rule.
        name: model name.

    Returns:
        A ``keras.Model`` mapping ``uint8 [N, H, W, C]`` to ``float32 [N, filters]``.

    Example:
    >>> small_cnn((8, 8, 1)).output_shape
    (None, 64)
    """
    input_shape = _check_input_shape(input_shape)
    size = image_size or input_shape[:2]
    if blocks is None:
        blocks = 1
        while blocks < 4 and min(size) // 2 ** (blocks + 1) >= 2:
            blocks += 1
    if blocks < 1 or min(size) // 2**blocks < 1:
        raise ValueError(
            f"`blocks` must be >= 1 and leave a non-empty feature map for image size {size}. "
            f"Received: blocks={blocks}"
        )
    inputs = keras.Input(input_shape, dtype="uint8", name="images")
    x = ImagePreprocessing(image_size=image_size, name="preprocessing")(inputs)
    for i in range(blocks):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{i}")(x)
    outputs = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, outputs, name=name)


def _applications_backbone(backbone, input_shape, image_size, weights):
    """A ``keras.applications`` feature extractor with its preprocessing inside."""
    size = tuple(image_size or input_shape[:2])
    inputs = keras.Input(input_shape, dtype="uint8", name="images")
    x = ImagePreprocessing(
        image_size=image_size, channels=3, backbone=backbone, name="preprocessing"
    )(inputs)
    try:
        network = _application(backbone)(
            include_top=False, weights=weights, input_shape=size + (3,), pooling="avg"
        )
    except (ValueError, OSError) as error:
        raise ValueError(
            f"Could not build keras.applications.{backbone} with weights={weights!r} on "
            f"{size + (3,)} inputs: {error}. Received: backbone={backbone!r}"
        ) from error
    return keras.Model(inputs, network(x), name=backbone)


def _external_backbone(backbone, input_shape, image_size, weights):
    """A ``rankloss_tf.backbones`` model (e.g. ``"efficientnet_lite0"``) on square RGB 0..255 input."""
    size = tuple(image_size or input_shape[:2])
    if size[0] != size[1]:
        raise ValueError(f"Backbone {backbone!r} needs square images; pass image_size. Received: image size {size}")
    backbones = importlib.import_module("rankloss_tf.backbones")
    network = backbones.build_backbone(backbone, image_size=size[0], weights=weights)
    inputs = keras.Input(input_shape, dtype="uint8", name="images")
    x = ImagePreprocessing(image_size=image_size, channels=3, rescale=False, name="preprocessing")(inputs)
    return keras.Model(inputs, network(x), name=backbone)


def is_pretrained_backbone(backbone):
    """True for the backbones that come with pretrained weights.

    These are ``"efficientnet_lite0"`` and the ``keras.applications`` names;
    ``"small_cnn"`` and unknown names are False.

    Example:
    >>> is_pretrained_backbone("efficientnet_lite0"), is_pretrained_backbone("small_cnn")
    (True, False)
    """
    return backbone in _EXTERNAL_BACKBONES or (isinstance(backbone, str) and _application(backbone) is not None)


def build_feature_extractor(input_shape, backbone="small_cnn", image_size=None, weights=None):
    """Builds a backbone with its preprocessing inside: ``uint8`` images to pooled features.

    Args:
        input_shape: ``(height, width, channels)`` of the raw ``uint8`` images.
        backbone: ``"small_cnn"``, a ``keras.applications`` constructor name
            (e.g. ``"ResNet50"``), or a name from ``rankloss_tf.backbones``
            (``"efficientnet_lite0"``).
        image_size: ``(height, width)`` the images are resized to inside the
            model, or None to keep their size.
        weights: backbone weights: None (random), ``"imagenet"`` or a path to
            a weights file. Ignored by ``"small_cnn"``.

    Returns:
        A ``keras.Model`` mapping ``uint8 [N, H, W, C]`` to ``float32 [N, F]``.

    Raises:
        ValueError: unknown backbone, bad shapes or sizes.

    Example:
    >>> build_feature_extractor((8, 8, 1)).output_shape
    (None, 64)
    """
    input_shape = _check_input_shape(input_shape)
    if backbone == "small_cnn":
        return small_cnn(input_shape, image_size=image_size)
    if backbone in _EXTERNAL_BACKBONES:
        return _external_backbone(backbone, input_shape, image_size, weights)
    if is_pretrained_backbone(backbone):
        return _applications_backbone(backbone, input_shape, image_size, weights)
    raise ValueError(
        "`backbone` must be 'small_cnn', a keras.applications model name (e.g. "
        f"'ResNet50') or one of {list(_EXTERNAL_BACKBONES)}. Received: backbone={backbone!r}"
    )


def _check_embedding_dim(embedding_dim):
    if isinstance(embedding_dim, bool) or int(embedding_dim) < 1:
        raise ValueError(
            f"`embedding_dim` must be a positive integer. Received: embedding_dim={embedding_dim}"
        )
    return int(embedding_dim)


def _project(x, embedding_dim, normalize):
    """Dense projection to ``embedding_dim`` -> optional L2 normalisation -> float32 embeddings."""
    x = keras.layers.Dense(embedding_dim, name="projection")(x)
    if normalize:
        x = keras.layers.UnitNormalization(axis=-1, name="l2_normalize")(x)
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
        backbone: ``"small_cnn"``, a ``keras.applications`` constructor name
            (e.g. ``"ResNet50"``), or a name from ``rankloss_tf.backbones``
            (``"efficientnet_lite0"``).
        image_size: ``(height, width)`` the images are resized to inside the
            model, or None to keep their size.
        weights: backbone weights: None (random), ``"imagenet"`` (downloaded
            or cached by Keras) or a path to a weights file. Ignored by
            ``"small_cnn"``.
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
    input_shape = _check_input_shape(input_shape)
    embedding_dim = _check_embedding_dim(embedding_dim)
    features = build_feature_extractor(input_shape, backbone, image_size, weights)
    inputs = keras.Input(input_shape, dtype="uint8", name="images")
    return keras.Model(inputs, _project(features(inputs), embedding_dim, normalize), name=name)
