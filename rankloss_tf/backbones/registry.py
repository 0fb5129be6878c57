"""Backbones by name: EfficientNet-Lite0 and every `keras.applications` model."""

import sys

import keras

from rankloss_tf.backbones.efficientnet_lite import efficientnet_lite0

LITE0 = "efficientnet_lite0"


def _applications():
    """`keras.applications` model builders by lower-case name without underscores."""
    return {
        name.lower(): builder
        for name, builder in vars(keras.applications).items()
        if callable(builder) and name[:1].isupper()
    }


def backbone_names():
    """Names `build_backbone` accepts: "efficientnet_lite0" and keras.applications models.

    Example:
        >>> names = backbone_names()
        >>> names[0], "resnet50" in names
        ('efficientnet_lite0', True)
    """
    return [LITE0, *sorted(_applications())]


def build_backbone(name=LITE0, image_size=224, weights="imagenet", trainable=True):
    """A pretrained image model mapping uint8 RGB images to pooled features.

    "efficientnet_lite0" is this package's port (see `efficientnet_lite0`); any other
    name is a `keras.applications` model, matched case-insensitively and ignoring
    underscores ("resnet50", "EfficientNetB0", "efficientnet_b0"), built with
    `include_top=False, pooling="avg"` behind its own `preprocess_input`
    (`weights="imagenet"` downloads Keras' weights, so needs the internet once).

    Args:
        name: backbone name (see `backbone_names()`).
        image_size: input side in pixels (int).
        weights: "imagenet", None, or a weights file the builder accepts.
        trainable: whether the backbone's weights train (False for frozen features).

    Returns:
        `keras.Model` taking uint8 (or float 0..255) RGB images [N, S, S, 3] and
        returning float32 features [N, F].

    Raises:
        ValueError: on an unknown name or an invalid image size.

    Example:
        >>> model = build_backbone("MobileNetV3Small", image_size=64, weights=None)
        >>> model(np.zeros((1, 64, 64, 3), np.uint8)).shape
        TensorShape([1, 576])
    """
    if not isinstance(image_size, int) or image_size < 32:
        raise ValueError(f"`image_size` must be an int >= 32. Received: image_size={image_size!r}")
    if name == LITE0:
        model = efficientnet_lite0(include_top=False, weights=weights, image_size=image_size)
    else:
        builder = _applications().get(str(name).lower().replace("_", ""))
        if builder is None:
            raise ValueError(
                f"Unknown backbone; use one of {backbone_names()}. Received: name={name!r}"
            )
        base = builder(
            include_top=False, weights=weights, input_shape=(image_size, image_size, 3), pooling="avg"
        )
        preprocess = sys.modules[builder.__module__].preprocess_input
        inputs = keras.Input((image_size, image_size, 3), dtype="uint8", name="images")
        floats = keras.layers.Lambda(
            lambda images: preprocess(keras.ops.cast(images, "float32")), name="preprocess"
        )(inputs)
        model = keras.Model(inputs, base(floats), name=f"{base.name}_backbone")
    model.trainable = trainable
    return model
