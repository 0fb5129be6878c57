"""Views of an image for frozen features: a size and, optionally, its mirror image.

A frozen backbone sees each image through one or more views; the embedding
head trains on every view's features (as separate samples of the image's class)
and embeds an image as ``head(mean over views of backbone(view(image)))``,
test-time augmentation that costs one backbone pass per view. A view is
computed the same way where features are cached
(``rankloss_tf.backbones.extract_features`` of the viewed images) and inside
the joined image model (``rankloss_tf.models.embedding_model``), by
``ImageView``: mirror left-right, resize (area interpolation) and round down
to the input's integer type, so cached features and the saved model agree.
"""

import dataclasses
import numbers

import keras

from rankloss_tf.backbones.preprocessing import area_resize

__all__ = ["ImageView", "View", "views"]


@dataclasses.dataclass(frozen=True)
class View:
    """One view of an image: the side it is resized to, mirrored left-right or not.

    Attributes:
        size: side in pixels the image is resized to.
        mirror: whether the image is mirrored left-right first.

    Example:
    >>> View(288, mirror=True).name(base_size=224), View(224).name(base_size=224)
    ('flip288', 'plain')
    """

    size: int
    mirror: bool = False

    def name(self, base_size):
        """Its name in a feature-cache id: "plain"/"flip", then the size unless it is ``base_size``."""
        return f"{'flip' if self.mirror else 'plain'}{'' if self.size == base_size else self.size}"


def views(sizes, mirror=False):
    """The views of ``sizes`` (in order), each followed by its mirror image when ``mirror``.

    Args:
        sizes: sides in pixels, e.g. ``(224, 288)``.
        mirror: also the mirrored image at each size.

    Returns:
        A tuple of ``View``: ``len(sizes) * (2 if mirror else 1)`` views.

    Raises:
        ValueError: no size, a repeated size, or a size that is not a positive integer.

    Example:
    >>> [(v.size, v.mirror) for v in views((224, 288), mirror=True)]
    [(224, False), (224, True), (288, False), (288, True)]
    """
    sizes = tuple(sizes)
    if not sizes or len(set(sizes)) != len(sizes) or any(
            isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1 for s in sizes):
        raise ValueError(f"`view_sizes` must be distinct positive integers. Received: view_sizes={sizes!r}")
    return tuple(View(int(size), flip) for size in sizes for flip in ((False, True) if mirror else (False,)))


@keras.saving.register_keras_serializable(package="rankloss_tf")
class ImageView(keras.layers.Layer):
    """Mirrors and resizes images, keeping their integer type: one ``View`` of a batch.

    ``view(x) = floor(area_resize(mirror(x), size))`` cast back to ``x``'s
    dtype (the resize is skipped at the input's own size): the images a
    backbone built for ``size`` takes.

    Args:
        image_size: side the images are resized to (None: kept).
        mirror: mirror left-right (reverse the width axis).

    Input shape: ``[N, H, W, C]`` (``uint8`` normally). Output shape:
    ``[N, image_size, image_size, C]``, the input's dtype.

    Example:
    >>> import numpy as np
    >>> view = ImageView(image_size=4, mirror=True)
    >>> images = np.arange(8, dtype=np.uint8).reshape(1, 1, 8, 1).repeat(8, axis=1)
    >>> view(images)[0, 0, :, 0].numpy().tolist()
    [6, 4, 2, 0]
    """

    def __init__(self, image_size=None, mirror=False, **kwargs):
        super().__init__(**kwargs)
        if image_size is not None and (isinstance(image_size, bool) or int(image_size) < 1):
            raise ValueError(f"`image_size` must be a positive integer or None. Received: image_size={image_size!r}")
        self.image_size = None if image_size is None else int(image_size)
        self.mirror = bool(mirror)

    def call(self, images):
        x = keras.ops.flip(images, axis=2) if self.mirror else images
        if self.image_size is None or tuple(x.shape[1:3]) == (self.image_size, self.image_size):
            return x
        resized = area_resize(keras.ops.cast(x, "float32"), (self.image_size, self.image_size))
        return keras.ops.cast(resized, images.dtype)

    def compute_output_shape(self, input_shape):
        size = (self.image_size, self.image_size) if self.image_size else tuple(input_shape[1:3])
        return (input_shape[0], *size, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "image_size": self.image_size, "mirror": self.mirror}
