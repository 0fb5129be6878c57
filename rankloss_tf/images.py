"""The one way uint8 images meet a model's input: the model's ``(H, W, C)``, checks and conformation.

Every path that hands images to a model goes through here: the SavedModel
signature of ``export``, the index's embedder, the dataset loaders'
``resize_uint8`` and one-shot evaluation. ``conform`` is graph code (it runs
inside ``tf.data`` maps and exported signatures) and eager code alike.
"""

import numpy as np
import tensorflow as tf

__all__ = ["CHANNELS", "check_images", "conform", "model_image_shape"]

CHANNELS = (1, 3, 4)


def _declared_shape(model):
    shape = getattr(model, "image_shape", None)
    if shape is None and getattr(model, "inputs", None):
        shape = tuple(model.inputs[0].shape[1:])
    return None if shape is None else tuple(shape)


def model_image_shape(model, required=True):
    """The ``(H, W, C)`` a model takes: a Keras model's single image input, or an ``image_shape`` attribute.

    Args:
        model: a built ``keras.Model`` with one input ``[N, H, W, C]``, or an
            object with an ``image_shape`` attribute (``export.SavedModelEmbedder``).
        required: raise when the model declares no fully known ``(H, W, C)``
            with C in (1, 3); False returns None instead.

    Returns:
        ``(H, W, C)`` as ints, or None (``required=False`` only).

    Raises:
        ValueError: ``required`` and the model has no such input.

    Example:
    >>> import keras
    >>> model_image_shape(keras.Sequential([keras.Input((8, 6, 1)), keras.layers.Flatten()]))
    (8, 6, 1)
    >>> model_image_shape(lambda images: images, required=False) is None
    True
    """
    shape = _declared_shape(model)
    if shape is None or len(shape) != 3 or None in shape or shape[-1] not in (1, 3):
        if not required:
            return None
        raise ValueError(
            "`model` must be a built Keras model with one image input [N, H, W, C], C = 1 or 3. "
            f"Received: input shape {None if shape is None else (None, *shape)}"
        )
    return tuple(int(s) for s in shape)


def check_images(images):
    """Checks a batch of images on the Python side: uint8 ``[N, H, W, C]``, C in (1, 3, 4).

    Float images are refused rather than cast (a [0, 1] float image would
    silently become {0, 1}).

    Returns:
        The images as a uint8 ``tf.Tensor``.

    Raises:
        ValueError: another dtype, rank, channel count, or an empty side.

    Example:
    >>> check_images(np.zeros((2, 8, 8, 3), np.uint8)).shape
    TensorShape([2, 8, 8, 3])
    """
    dtype = getattr(images, "dtype", None)
    if dtype is None:
        images = np.asarray(images)
        dtype = images.dtype
    if tf.as_dtype(dtype) != tf.uint8:
        raise ValueError(
            "`images` must be uint8 pixels in [0, 255] (float images are not rescaled silently; convert "
            f"[0, 1] floats with np.round(x * 255).astype(np.uint8)). Received: dtype={tf.as_dtype(dtype).name}"
        )
    shape = tuple(images.shape)
    if len(shape) != 4 or shape[-1] not in CHANNELS or 0 in shape[1:3]:
        raise ValueError(
            f"`images` must be [N, H, W, C] with H, W >= 1 and C in {CHANNELS} (gray, RGB, RGBA). "
            f"Received: shape={shape}"
        )
    return tf.convert_to_tensor(images, tf.uint8)


def _checked(images):
    """``images`` as uint8 of rank 4; a run-time assertion on the channels and sides where they are unknown."""
    images = tf.convert_to_tensor(images, tf.uint8)
    if images.shape.rank != 4:
        raise ValueError(f"`images` must be uint8 [N, H, W, C] (rank 4). Received: shape={images.shape}")
    static = images.shape.as_list()
    if static[3] is not None and static[3] not in CHANNELS or 0 in static[1:3]:
        raise ValueError(
            f"`images` must be [N, H, W, C] with H, W >= 1 and C in {CHANNELS} (gray, RGB, RGBA). "
            f"Received: shape={tuple(static)}"
        )
    # A signature declared rank 4 still runs on a tensor of another rank, and graph optimisations fold any
    # rank op to the declared 4: the run-time shape padded with -1 tells (rank 4 <=> entry 3 >= 0 > entry 4).
    # Everything after is a data dependency on `valid`, so that no op fails before the Assert's message.
    shape = tf.concat([tf.shape(images), tf.fill([4], -1)], axis=0)
    valid = tf.reduce_any(tf.equal(shape[3], CHANNELS)) & (shape[1] > 0) & (shape[2] > 0) & (shape[4] < 0)
    check = tf.debugging.Assert(valid, [
        "`images` must be uint8 [N, H, W, C] (rank 4) with H, W >= 1 and C = 1 (gray), 3 (RGB) or 4 (RGBA); "
        "received shape", tf.shape(images),
    ])
    with tf.control_dependencies([check]):
        images = tf.cond(valid, lambda: images,
                         lambda: tf.zeros([0, 1, 1, static[3] or 1], tf.uint8))
    return tf.ensure_shape(images, [None, None, None, static[3]])


def _to_channels(images, channels):
    """Gray / RGB / RGBA images -> ``channels`` (1 or 3): alpha dropped, RGB -> gray or gray tiled."""
    if channels == 1:
        options = {1: lambda: images, 3: lambda: tf.image.rgb_to_grayscale(images[..., :3])}
    else:
        options = {1: lambda: tf.tile(images, [1, 1, 1, 3]), 3: lambda: images[..., :3]}
    static = images.shape[-1]
    if static is not None:
        return options[1 if static == 1 else 3]()
    return tf.cond(tf.shape(images)[3] == 1, options[1], options[3])


def conform(images, image_shape):
    """Brings uint8 images of any size and 1, 3 or 4 channels to a model's ``(H, W, C)``.

    Steps: a 4th (alpha) channel is dropped; RGB becomes gray
    (``tf.image.rgb_to_grayscale``) for a one-channel model, gray is tiled to
    RGB for a three-channel model; then an antialiased bilinear resize to
    ``(H, W)``, rounded back to uint8, when the size differs (images of the
    model's size pass unchanged). ``C = None`` keeps the channels.

    Args:
        images: uint8 ``[N, h, w, c]`` (rank 4), c in (1, 3, 4).
        image_shape: the model's ``(H, W, C)``, C in (1, 3) or None.

    Returns:
        uint8 ``[N, H, W, C]`` tensor.

    Raises:
        ValueError: another rank, or a known channel count outside (1, 3, 4)
            or empty side; InvalidArgumentError at run time in a graph for
            ranks, channels or sides only known then.

    Example:
    >>> conform(tf.zeros([2, 16, 12, 4], tf.uint8), (8, 8, 1)).shape
    TensorShape([2, 8, 8, 1])
    """
    height, width, channels = image_shape
    images = _checked(images)
    if channels is not None:
        images = tf.ensure_shape(_to_channels(images, int(channels)), [None, None, None, int(channels)])

    def resize():
        resized = tf.image.resize(tf.cast(images, tf.float32), (height, width), antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)

    shape = tf.shape(images)
    same_size = tf.logical_and(shape[1] == height, shape[2] == width)
    return tf.ensure_shape(tf.cond(same_size, lambda: images, resize), [None, height, width, images.shape[3]])
