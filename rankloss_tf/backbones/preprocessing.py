"""The input layer of every backbone: raw ``uint8`` images to the floats a network expects.

``ImagePreprocessing`` is the first layer of every model this package builds, so
that a trained or exported model takes raw images and needs no preprocessing code
beside it: resize, channel tiling, and the pixel scaling of the backbone
(``[0, 1]``, ``0..255`` for networks that normalise their own input, or a
``keras.applications`` model's ``preprocess_input``).
"""

import contextlib
import importlib

import keras
import numpy as np

__all__ = ["ImagePreprocessing", "application", "area_resize", "area_weights", "portable_resize"]

_PORTABLE = {"on": False}


@contextlib.contextmanager
def portable_resize():
    """While active, ``area_resize`` (``ImagePreprocessing``, ``ImageView``) is traced as two matrix products.

    The deploy exporters (LiteRT, ONNX) trace the model inside it: ``ResizeArea``
    is neither a LiteRT built-in nor a Flex op, a matrix product is both and an
    ONNX operator. The two agree to float rounding (``area_weights``);
    training and the SavedModel keep ``ResizeArea``.

    Example:
    >>> with portable_resize():
    ...     ImagePreprocessing(image_size=(2, 2))(np.ones((1, 4, 4, 1), np.uint8)).shape
    TensorShape([1, 2, 2, 1])
    """
    previous, _PORTABLE["on"] = _PORTABLE["on"], True
    try:
        yield
    finally:
        _PORTABLE["on"] = previous


def area_weights(size_in, size_out):
    """``[size_out, size_in]`` weights of an area resize along one axis (TensorFlow's ``ResizeArea``).

    Output pixel i averages the input interval ``[i s, (i + 1) s)``, s = size_in / size_out,
    each input pixel weighted by the length of its overlap with it. The bounds are computed in
    float32 like TensorFlow's kernel, whose rounding moves them by up to ~1e-5 pixel: exact
    weights differ from ``ResizeArea`` by ~0.005 grey levels at 256 -> 224, these by ~5e-5.

    Example:
    >>> (area_weights(3, 2) * 3).round(3).tolist()
    [[2.0, 1.0, 0.0], [0.0, 1.0, 2.0]]
    """
    scale = np.float32(size_in) / np.float32(size_out)
    weights = np.zeros((size_out, size_in), np.float32)
    for i in range(size_out):
        start, end = np.float32(i) * scale, np.float32(i + 1) * scale
        for j in range(int(np.floor(start)), min(int(np.ceil(end)), size_in)):
            weights[i, j] = min(np.float32(j + 1), end) - max(np.float32(j), start)
    return weights * (np.float32(1) / scale)


def application(name):
    """The ``keras.applications`` constructor called exactly ``name``, or None.

    Example:
    >>> application("ResNet50").__name__, application("resnet50")
    ('ResNet50', None)
    """
    constructor = getattr(keras.applications, name, None)
    if constructor is None or not callable(constructor) or not name[:1].isupper():
        return None
    return constructor


def _preprocess_function(backbone):
    """The ``preprocess_input`` of the ``keras.applications`` module of ``backbone``."""
    module_name = application(backbone).__module__
    public_name = module_name.replace("keras.src.applications", "keras.applications")
    try:
        module = importlib.import_module(public_name)
    except ImportError:
        module = importlib.import_module(module_name)
    return module.preprocess_input


def area_resize(images, size):
    """Area resize of float ``[N, H, W, C]`` images to ``size = (height, width)``, as ``ResizeArea``.

    Inside ``portable_resize`` (and with a static H, W) it is traced as two
    matrix products with ``area_weights``; elsewhere it is
    ``keras.ops.image.resize(..., interpolation="area")``.

    Example:
    >>> area_resize(np.ones((1, 4, 4, 1), np.float32), (2, 2)).shape
    TensorShape([1, 2, 2, 1])
    """
    if not _PORTABLE["on"] or None in tuple(images.shape[1:3]):
        return keras.ops.image.resize(images, size, interpolation="area")
    rows, columns = (area_weights(size_in, size_out) for size_in, size_out in zip(images.shape[1:3], size))
    x = keras.ops.matmul(keras.ops.transpose(images, (0, 2, 3, 1)), rows.T)  # [N, W, C, H']
    x = keras.ops.matmul(keras.ops.transpose(x, (0, 3, 2, 1)), columns.T)  # [N, H', C, W']
    return keras.ops.transpose(x, (0, 1, 3, 2))


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
        if backbone is not None and application(backbone) is None:
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
            x = area_resize(x, self.image_size)
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
