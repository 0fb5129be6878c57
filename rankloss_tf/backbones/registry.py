"""Backbones by name: the one place that turns a backbone name into a network.

Names: ``"small_cnn"`` (this package's CPU-sized network, random weights),
``"efficientnet_lite0"`` (this package's port, ImageNet weights converted once)
and every ``keras.applications`` model, matched case-insensitively and ignoring
underscores (``"ResNet50"``, ``"resnet50"``, ``"efficientnet_b0"``). Every
backbone is built as ``uint8 images -> ImagePreprocessing -> network ->
pooled features`` (a pretrained network's last map pooled by average or
generalised mean, ``rankloss_tf.backbones.pooling``), so cached frozen
features, the trained model and its export all compute the same thing.
"""

import keras

from rankloss_tf.backbones.efficientnet_lite import efficientnet_lite0
from rankloss_tf.backbones.pooling import GeneralizedMeanPooling2D, check_pooling
from rankloss_tf.backbones.preprocessing import ImagePreprocessing
from rankloss_tf.backbones.small_cnn import check_input_shape, small_cnn

__all__ = ["LITE0", "SMALL_CNN", "backbone_names", "build_backbone", "is_pretrained", "resolve"]

LITE0 = "efficientnet_lite0"
SMALL_CNN = "small_cnn"
# Below this side the pretrained networks' stride-32 feature maps vanish.
MIN_PRETRAINED_SIZE = 32


def _key(name):
    return str(name).lower().replace("_", "")


def _applications():
    """``keras.applications`` constructor names by lower-case name without underscores."""
    return {
        _key(name): name
        for name, builder in vars(keras.applications).items()
        if callable(builder) and name[:1].isupper()
    }


def backbone_names():
    """Names ``build_backbone`` accepts: EfficientNet-Lite0, keras.applications models, small_cnn.

    Example:
    >>> names = backbone_names()
    >>> names[0], "resnet50" in names, names[-1]
    ('efficientnet_lite0', True, 'small_cnn')
    """
    return [LITE0, *sorted(_applications()), SMALL_CNN]


def resolve(name):
    """The canonical spelling of a backbone name.

    Args:
        name: any spelling ``build_backbone`` accepts.

    Returns:
        ``"small_cnn"``, ``"efficientnet_lite0"`` or the exact
        ``keras.applications`` constructor name (``"resnet50"`` -> ``"ResNet50"``).

    Raises:
        ValueError: an unknown name.

    Example:
    >>> resolve("resnet_50"), resolve("EfficientNet_Lite0")
    ('ResNet50', 'efficientnet_lite0')
    """
    key = _key(name)
    if key in (_key(SMALL_CNN), _key(LITE0)):
        return SMALL_CNN if key == _key(SMALL_CNN) else LITE0
    canonical = _applications().get(key)
    if canonical is None:
        raise ValueError(
            "Unknown backbone: use small_cnn, efficientnet_lite0 or a keras.applications name "
            f"(e.g. ResNet50; see backbone_names()). Received: backbone={name!r}"
        )
    return canonical


def is_pretrained(name):
    """True for the backbones that come with ImageNet weights (all but small_cnn and unknown names).

    Example:
    >>> is_pretrained("efficientnet_lite0"), is_pretrained("resnet50"), is_pretrained("small_cnn")
    (True, True, False)
    """
    try:
        return resolve(name) != SMALL_CNN
    except ValueError:
        return False


def _image_size(image_size, input_shape):
    """``(height, width)`` the network sees: ``image_size`` (int or pair), else the input's."""
    if image_size is None:
        return tuple(input_shape[:2])
    if isinstance(image_size, bool) or not isinstance(image_size, (int, tuple, list)):
        raise ValueError(f"`image_size` must be an int or (height, width). Received: image_size={image_size!r}")
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"`image_size` must be positive. Received: image_size={image_size!r}")
    return size


def _pretrained_network(name, size, weights, pooling="avg", gem_power=None):
    """The float ``[N, S, S, 3]`` (0..255 or preprocessed) -> pooled features network."""
    if size[0] != size[1] or size[0] < MIN_PRETRAINED_SIZE:
        raise ValueError(
            f"Backbone {name!r} needs square images of side >= {MIN_PRETRAINED_SIZE}. Received: image size {size}"
        )
    network = _feature_network(name, size, weights, "avg" if pooling == "avg" else None)
    if pooling == "avg":
        return network
    pooled = GeneralizedMeanPooling2D(gem_power, name="gem_pooling")(network.output)
    return keras.Model(network.inputs, pooled, name=network.name)


def _feature_network(name, size, weights, pooling):
    """The pretrained network pooled by average (``pooling="avg"``) or its last feature map (None)."""
    if name == LITE0:
        return efficientnet_lite0(include_top=False, weights=weights, image_size=size[0], pooling=pooling)
    try:
        return getattr(keras.applications, name)(
            include_top=False, weights=weights, input_shape=(*size, 3), pooling=pooling
        )
    except Exception as error:  # Keras raises a bare Exception for a failed weights download.
        raise ValueError(
            f"Could not build keras.applications.{name} with weights={weights!r} ({error}). Without internet, "
            "pass a local weights file or random weights (weights=None; on the command line "
            "--weights FILE or --weights random). "
            f"Received: backbone={name!r}, weights={weights!r}"
        ) from error


def build_backbone(name=LITE0, image_size=224, weights="imagenet", trainable=True, input_shape=None, pooling="avg",
                   gem_power=None):
    """A backbone mapping raw uint8 images to pooled features, preprocessing inside.

    Layout: ``uint8 [N, H, W, C]`` -> ``ImagePreprocessing`` (resize to
    ``image_size``; pretrained backbones: channels tiled to RGB and the pixel
    scaling the weights were trained with) -> network -> pooled features.

    Args:
        name: backbone name (see ``backbone_names()`` and ``resolve``).
        image_size: side (int) or ``(height, width)`` the network sees; None
            keeps the input size. Pretrained backbones need a square side >= 32.
        weights: pretrained backbones: "imagenet", None (random) or a weights
            file. ``small_cnn`` is always randomly initialised (its argument must
            be None or "random").
        trainable: whether the backbone's weights train (False for frozen features).
        input_shape: ``(H, W, C)`` of the raw images (default: ``image_size``
            square RGB).
        pooling: how a pretrained network's last feature map is pooled: "avg"
            (global average) or "gem" (generalised mean,
            ``rankloss_tf.backbones.pooling``); small_cnn takes "avg" only (it
            pools in its own way).
        gem_power: the exponent ``p`` of "gem", in [0.1, 1000] (None: 3; 1 is
            the average of the map clamped at 1e-6, which is the plain average
            for non-negative maps, e.g. ReLU / ReLU6 backbones). Refused with
            "avg", which would ignore it (``pooling.check_pooling``).

    Returns:
        ``keras.Model`` from uint8 ``[N, H, W, C]`` to float32 ``[N, F]``.

    Raises:
        ValueError: an unknown name, invalid sizes, weights or pooling (a
            ``gem_power`` with "avg" among them), or
            weights that could not be loaded.

    Example:
    >>> model = build_backbone("MobileNetV3Small", image_size=64, weights=None)
    >>> model(np.zeros((1, 64, 64, 3), np.uint8)).shape
    TensorShape([1, 576])
    """
    canonical = resolve(name)
    pooling, gem_power = check_pooling(pooling, gem_power)
    if input_shape is None:
        square = _image_size(image_size, None)
        input_shape = (*square, 3)
    input_shape = check_input_shape(input_shape)
    size = _image_size(image_size, input_shape)
    resize = None if size == input_shape[:2] else size
    if canonical == SMALL_CNN:
        if weights not in (None, "random"):
            raise ValueError(f"small_cnn has no pretrained weights. Received: weights={weights!r}")
        if pooling != "avg":
            raise ValueError(f"small_cnn pools in its own way: pooling must be 'avg'. Received: pooling={pooling!r}")
        model = small_cnn(input_shape, image_size=resize)
    else:
        network = _pretrained_network(canonical, size, weights, pooling, gem_power)
        inputs = keras.Input(input_shape, dtype="uint8", name="images")
        x = ImagePreprocessing(
            image_size=resize, channels=3, backbone=None if canonical == LITE0 else canonical,
            rescale=False, name="preprocessing",
        )(inputs)
        model = keras.Model(inputs, network(x), name=canonical if canonical == LITE0 else f"{network.name}_backbone")
    model.trainable = trainable
    return model
