"""``small_cnn``: the CPU-sized convolutional backbone for characters and digits.

Blocks of conv 3x3 (64) -> batch norm -> ReLU -> max-pool 2x2, as in the
Omniglot networks of Vinyals et al. 2016 ("Matching Networks for One Shot
Learning") and Snell et al. 2017 ("Prototypical Networks"), then global
average pooling. Randomly initialised; it trains whole.
"""

import keras

from rankloss_tf.backbones.preprocessing import ImagePreprocessing

__all__ = ["check_input_shape", "small_cnn"]


def check_input_shape(input_shape):
    """``(height, width, channels)`` as ints, or a ValueError naming what was received.

    Example:
    >>> check_input_shape([32, 32, 3])
    (32, 32, 3)
    """
    if input_shape is None or len(input_shape) != 3 or any(s is None for s in input_shape):
        raise ValueError(
            "`input_shape` must be (height, width, channels) with known sizes (images of varying size "
            f"need a fixed image_size when loaded). Received: input_shape={input_shape}"
        )
    input_shape = tuple(int(s) for s in input_shape)
    if min(input_shape) < 1:
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
    input_shape = check_input_shape(input_shape)
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
