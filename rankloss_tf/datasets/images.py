"""Image decoding and resizing shared by the loaders; uint8 in, uint8 out (``rankloss_tf.images.conform``)."""

import tensorflow as tf

from rankloss_tf.images import conform


def image_hw(image_size):
    """Returns ``image_size`` (int or (height, width), or None) as a (height, width) tuple or None.

    Raises:
        ValueError: for sizes that are not positive integers.
    """
    if image_size is None:
        return None
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or not all(isinstance(side, int) and side > 0 for side in size):
        raise ValueError(
            f"`image_size` must be a positive int or (height, width). Received: image_size={image_size!r}"
        )
    return size


def resize_uint8(image, image_size):
    """Resizes a uint8 image [H, W, C] to ``image_size`` (antialiased bilinear), keeping uint8 and C.

    None, or the image's own size, returns the image unchanged. The resize is
    ``rankloss_tf.images.conform``'s, the one every model input goes through.

    Example:
    >>> resize_uint8(tf.zeros([8, 6, 3], tf.uint8), 4).shape
    TensorShape([4, 4, 3])
    """
    size = image_hw(image_size)
    if size is None or tuple(image.shape[:2]) == size:
        return image
    return conform(image[tf.newaxis], (*size, None))[0]


def image_decoder(image_size=None, channels=3, from_files=True):
    """Returns a function decoding one image (a file path, or its encoded bytes) to uint8 [H, W, C].

    Use it as the ``decode_fn`` of ``rankloss_tf.data.pk_batches`` for file paths.

    Args:
        image_size: int or (height, width) to resize to; None keeps the size.
        channels: 1 (grayscale) or 3 (RGB).
        from_files: True when given paths, False when given encoded bytes.

    Example:
    >>> png = tf.io.encode_png(tf.zeros([8, 8, 1], tf.uint8))
    >>> decode = image_decoder(image_size=4, channels=1, from_files=False)
    >>> decode(png).shape
    TensorShape([4, 4, 1])
    """
    if channels not in (1, 3):
        raise ValueError(f"`channels` must be 1 or 3. Received: channels={channels!r}")
    image_hw(image_size)

    def decode(path_or_bytes):
        contents = tf.io.read_file(path_or_bytes) if from_files else path_or_bytes
        image = tf.io.decode_image(contents, channels=channels, expand_animations=False)
        return resize_uint8(image, image_size)

    return decode
