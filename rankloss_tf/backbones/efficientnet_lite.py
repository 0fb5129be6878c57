"""EfficientNet-Lite0 as a Keras functional model, weight-compatible with PyTorch's.

EfficientNet-Lite (Tan & Le 2019, "EfficientNet: Rethinking Model Scaling for
Convolutional Neural Networks"; the Lite variants of the TensorFlow TPU repository)
is EfficientNet-B0 without squeeze-and-excitation, with ReLU6 instead of swish and
with the stem (32 filters) and head (1280 filters) kept fixed. The layers mirror
the PyTorch package ``efficientnet-lite-pytorch`` module for module, and are named
after its state-dict keys ("_blocks.3._expand_conv" is the layer
"blocks_3_expand_conv"), so that its ImageNet weights map one to one.

Padding follows that package's ``Conv2dStaticSamePadding``: TensorFlow-style "same"
padding computed once for the build-time image size, applied by an explicit
``ZeroPadding2D`` (pad_total // 2 before, the rest after) and a "valid" convolution.
BatchNormalization uses the original epsilon 1e-3 and momentum 0.99 (PyTorch's
momentum 0.01).
"""

import math

import keras
import numpy as np

from rankloss_tf.backbones.weights import imagenet_weights_path

# Input normalisation (x - 127) / 128 of the original EfficientNet-Lite training
# (MEAN_RGB, STDDEV_RGB of efficientnet_lite_builder.py), under which the weights
# were learnt: Cars196 frozen-feature Recall@1 60.7 with it, 55.1 with ImageNet's
# per-channel mean and std.
INPUT_MEAN = 127.0
INPUT_STD = 128.0

# One row per stage: (repeats, kernel size, stride, expand ratio, input filters,
# output filters), EfficientNet-Lite0's width and depth (both multipliers 1.0).
_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
_STEM_FILTERS = 32
_HEAD_FILTERS = 1280
_BN_EPSILON = 1e-3
_BN_MOMENTUM = 0.99


def _same_padding(size, kernel_size, stride):
    """TensorFlow "same" padding of a ``size``-pixel side: ((before, after), output size)."""
    output = math.ceil(size / stride)
    total = max((output - 1) * stride + kernel_size - size, 0)
    return (total // 2, total - total // 2), output


def _conv_bn(x, size, name, bn_name, filters, kernel_size, stride=1, depthwise=False, relu=True):
    """Padding, convolution, batch normalisation and ReLU6 (one torch module group).

    Returns:
        (output tensor, output spatial size as (height, width)).
    """
    pad_h, out_h = _same_padding(size[0], kernel_size, stride)
    pad_w, out_w = _same_padding(size[1], kernel_size, stride)
    if any(pad_h + pad_w):
        x = keras.layers.ZeroPadding2D((pad_h, pad_w), name=f"{name}_pad")(x)
    if depthwise:
        x = keras.layers.DepthwiseConv2D(
            kernel_size, strides=stride, padding="valid", use_bias=False, name=name
        )(x)
    else:
        x = keras.layers.Conv2D(
            filters, kernel_size, strides=stride, padding="valid", use_bias=False, name=name
        )(x)
    x = keras.layers.BatchNormalization(
        epsilon=_BN_EPSILON, momentum=_BN_MOMENTUM, name=bn_name
    )(x)
    if relu:
        x = keras.layers.ReLU(6.0, name=f"{bn_name}_relu6")(x)
    return x, (out_h, out_w)


def _mbconv_block(x, size, index, kernel_size, stride, expand_ratio, filters_in, filters_out, drop_rate):
    """Mobile inverted bottleneck without squeeze-excite: expand, depthwise, project."""
    prefix = f"blocks_{index}"
    inputs = x
    expanded = filters_in * expand_ratio
    if expand_ratio != 1:
        x, _ = _conv_bn(x, size, f"{prefix}_expand_conv", f"{prefix}_bn0", expanded, 1)
    x, out_size = _conv_bn(
        x, size, f"{prefix}_depthwise_conv", f"{prefix}_bn1", expanded, kernel_size, stride,
        depthwise=True,
    )
    x, _ = _conv_bn(x, out_size, f"{prefix}_project_conv", f"{prefix}_bn2", filters_out, 1, relu=False)
    if stride == 1 and filters_in == filters_out:
        if drop_rate > 0:
            # Stochastic depth: drop the whole residual branch per sample.
            x = keras.layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=f"{prefix}_drop")(x)
        x = keras.layers.Add(name=f"{prefix}_add")([x, inputs])
    return x, out_size


def _check_image_size(image_size):
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    if (
        not isinstance(image_size, (tuple, list))
        or len(image_size) != 2
        or not all(isinstance(s, int) and s >= 32 for s in image_size)
    ):
        raise ValueError(
            "`image_size` must be an int >= 32 or a (height, width) pair of them. "
            f"Received: image_size={image_size!r}"
        )
    return tuple(image_size)


def _load_weights(model, path, skip=()):
    """Assigns the named arrays of a converted ``.npz`` to the model's layers, strictly."""
    with np.load(path, allow_pickle=False) as arrays:
        arrays = dict(arrays)
    used = set()
    for layer in model.layers:
        if not layer.weights or layer.name in skip:
            continue
        keys = [f"{layer.name}/{weight.name}" for weight in layer.weights]
        missing = [key for key in keys if key not in arrays]
        if missing:
            raise ValueError(f"The weights file lacks {missing}. Received: weights={path!r}")
        layer.set_weights([arrays[key] for key in keys])
        used.update(keys)
    unused = sorted(key for key in set(arrays) - used if key.split("/")[0] not in skip)
    if unused:
        raise ValueError(f"The weights file has arrays no layer takes: {unused[:5]}. Received: weights={path!r}")


def efficientnet_lite0(
    include_top=True,
    weights="imagenet",
    image_size=224,
    pooling="avg",
    classes=1000,
    dropout_rate=0.2,
    drop_connect_rate=0.2,
    name="efficientnet_lite0",
):
    """Builds EfficientNet-Lite0, taking uint8 RGB images and normalising them inside.

    Layout: normalisation (x - 127) / 128; stem (3x3 conv, stride 2, 32 filters);
    16 mobile inverted bottleneck blocks (expand 1x1, depthwise kxk, project 1x1,
    residual when the shape is kept, stochastic depth rising linearly to
    ``drop_connect_rate``); head (1x1 conv, 1280 filters); global average pooling;
    dropout and a 1000-way classifier. 4,652,008 trainable parameters,
    4,694,024 with the batch-norm statistics.

    Args:
        include_top: whether to end with the ImageNet classifier (logits, no softmax).
        weights: "imagenet" (the PyTorch package's ImageNet weights, converted once;
            see ``rankloss_tf.backbones.convert``), None (random initialisation) or the
            path of a converted ``.npz`` weights file.
        image_size: input side in pixels, an int or (height, width); the padding of
            stride-2 layers is fixed for this size, as in the original model.
        pooling: without the top, "avg" for pooled features [N, 1280] or None for
            the feature map [N, ceil(H/32), ceil(W/32), 1280].
        classes: classifier width when ``include_top``; 1000 with ImageNet weights.
        dropout_rate: dropout before the classifier (training only).
        drop_connect_rate: stochastic-depth rate of the last block (training only).
        name: model name.

    Returns:
        A ``keras.Model`` taking uint8 (or float 0..255) RGB images [N, H, W, 3].

    Raises:
        ValueError: on an invalid ``image_size``, ``pooling``, ``classes`` or weights file.

    Example:
    >>> model = efficientnet_lite0(include_top=False, weights=None, image_size=64)
    >>> model(np.zeros((2, 64, 64, 3), np.uint8)).shape
    TensorShape([2, 1280])
    """
    size = _check_image_size(image_size)
    if pooling not in ("avg", None):
        raise ValueError(f"`pooling` must be 'avg' or None. Received: pooling={pooling!r}")
    if include_top and weights is not None and classes != 1000:
        raise ValueError(
            f"ImageNet weights need `classes=1000` with the top. Received: classes={classes!r}"
        )
    inputs = keras.Input((*size, 3), dtype="uint8", name="images")
    x = keras.layers.Rescaling(1.0 / INPUT_STD, offset=-INPUT_MEAN / INPUT_STD, name="normalize")(inputs)
    x, size = _conv_bn(x, size, "conv_stem", "bn0", _STEM_FILTERS, 3, 2)
    num_blocks = sum(stage[0] for stage in _STAGES)
    index = 0
    for repeats, kernel_size, stride, expand_ratio, filters_in, filters_out in _STAGES:
        for repeat in range(repeats):
            x, size = _mbconv_block(
                x, size, index, kernel_size,
                stride if repeat == 0 else 1,
                expand_ratio,
                filters_in if repeat == 0 else filters_out,
                filters_out,
                drop_connect_rate * index / num_blocks,
            )
            index += 1
    feature_map, _ = _conv_bn(x, size, "conv_head", "bn1", _HEAD_FILTERS, 1)
    pooled = keras.layers.GlobalAveragePooling2D(name="avg_pooling")(feature_map)
    x = keras.layers.Dropout(dropout_rate, name="dropout")(pooled)
    logits = keras.layers.Dense(classes, name="fc")(x)
    model = keras.Model(inputs, logits, name=name)
    if weights is not None:
        path = imagenet_weights_path() if weights == "imagenet" else weights
        _load_weights(model, path, skip=() if include_top else ("fc",))
    if include_top:
        return model
    return keras.Model(inputs, pooled if pooling == "avg" else feature_map, name=name)
