"""Batch augmentation in the input pipeline: seeded, pure TensorFlow ops, XLA-compilable.

Two recipes, both on whole ``uint8 [B, H, W, C]`` batches (applied after the
P x K sampler, so a class's K samples get K different distortions):

- ``random_affine``: small random affine maps for characters, as Koch, Zemel
  and Salakhutdinov (2015), "Siamese Neural Networks for One-shot Image
  Recognition", Sec. 4.4: rotation, shear, scale and translation, each drawn
  uniformly per image.
- ``random_resized_crop_flip``: the photo recipe (Szegedy et al. 2015,
  "Going Deeper with Convolutions"): a random crop of random area and aspect
  ratio, resized back, flipped left-right with probability 1/2.

``rotated_classes`` multiplies the classes instead: each class rotated by 90,
180 and 270 degrees becomes a class of its own (for characters, as Santoro et
al. 2016 and Vinyals et al. 2016 do on Omniglot).

``augment_batches`` maps a batch augmentation over a dataset of batches with a
different stateless seed per batch: the same seed gives the same stream
(TensorFlow's stateless random numbers differ between XLA and its other
kernels, so a stream is fixed per backend; the transforms themselves agree).
"""

import functools
import math

import numpy as np

import tensorflow as tf

from rankloss_tf.references import References, references_of, streamed

__all__ = [
    "AUGMENTATIONS", "CHARACTER_AFFINE", "affine_matrices", "affine_transform", "augment_batches",
    "batch_augmentation", "random_affine", "random_resized_crop_flip", "rotated_classes",
]

# The "affine" recipe's ranges for 105 x 105 Omniglot characters, chosen on validation
# alphabets by benchmarks/omniglot_recipe.py: Koch et al.'s, with rotations within 15
# degrees and shifts within 6 pixels.
CHARACTER_AFFINE = dict(rotation=15.0, shear=0.3, scale=(0.8, 1.2), translation=6.0)


def _check_range(name, value, low, high):
    value = tuple(float(v) for v in value)
    if len(value) != 2 or not low <= value[0] <= value[1] <= high:
        raise ValueError(f"`{name}` must be (min, max) with {low} <= min <= max <= {high}. Received: {name}={value}")
    return value


def _uniform(shape, seed, low, high):
    """Stateless uniform numbers (Philox). TensorFlow's XLA kernels draw other numbers than
    its eager / graph kernels for the same seed: a seed fixes the stream per backend."""
    seed = tf.convert_to_tensor([seed, 0] if isinstance(seed, int) else seed)
    return tf.random.stateless_uniform(shape, seed, low, high, alg="philox")


def _check_images(images):
    images = tf.convert_to_tensor(images)
    if images.shape.rank != 4 or None in images.shape[1:]:
        raise ValueError(f"`images` must be a batch [B, H, W, C] of static H, W, C. Received: shape={images.shape}")
    return images


def affine_matrices(batch_size, seed, rotation=10.0, shear=0.3, scale=(0.8, 1.2), translation=2.0):
    """Draws ``batch_size`` random affine maps ``[B, 2, 3]`` (rows: x' and y' of (x, y, 1)).

    Per image, with every parameter uniform in its range: ``A = R(theta) @
    [[1, shear_x], [shear_y, 1]] @ diag(s_x, s_y)`` acting about the image
    centre, then a shift ``(t_x, t_y)``: ``p' = A p + t``, coordinates in pixels
    relative to the centre.

    Args:
        batch_size: ``B``.
        seed: stateless seed, an int or ``[2]`` integer tensor.
        rotation: maximum rotation in degrees, ``theta`` in [-rotation, rotation].
        shear: maximum shear, each of ``shear_x, shear_y`` in [-shear, shear].
        scale: ``(min, max)`` of each of ``s_x, s_y``.
        translation: maximum shift in pixels, each of ``t_x, t_y``.

    Returns:
        float32 ``[B, 2, 3]``: ``[A | t]``.

    Example:
    >>> affine_matrices(2, seed=0, rotation=0, shear=0, scale=(1, 1), translation=0).numpy()[0].tolist()
    [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    """
    if not 0 <= float(rotation) < 180 or float(shear) < 0 or float(translation) < 0:
        raise ValueError(
            "`rotation` must be in [0, 180) degrees, `shear` and `translation` non-negative. "
            f"Received: rotation={rotation}, shear={shear}, translation={translation}"
        )
    low, high = _check_range("scale", scale, 1e-3, 1e3)
    u = _uniform([batch_size, 7], seed, -1.0, 1.0)
    theta = u[:, 0] * (float(rotation) * math.pi / 180.0)
    cos, sin = tf.cos(theta), tf.sin(theta)
    shear_x, shear_y = u[:, 1] * float(shear), u[:, 2] * float(shear)
    scale_x = low + (high - low) * (u[:, 3] + 1.0) / 2.0
    scale_y = low + (high - low) * (u[:, 4] + 1.0) / 2.0
    # R @ S @ diag(s): S = [[1, shear_x], [shear_y, 1]].
    a00 = (cos - sin * shear_y) * scale_x
    a01 = (cos * shear_x - sin) * scale_y
    a10 = (sin + cos * shear_y) * scale_x
    a11 = (sin * shear_x + cos) * scale_y
    t_x, t_y = u[:, 5] * float(translation), u[:, 6] * float(translation)
    return tf.reshape(tf.stack([a00, a01, t_x, a10, a11, t_y], axis=1), [-1, 2, 3])


def affine_transform(images, matrices):
    """Applies affine maps to a batch: bilinear sampling, edges repeated outward.

    Output pixel ``q`` (relative to the centre) takes the input at
    ``A^-1 (q - t)``; sampling is bilinear, and points outside the image take
    the value of the nearest edge pixel (a white page stays white).

    Args:
        images: ``[B, H, W, C]``, any real dtype (uint8 normally).
        matrices: float ``[B, 2, 3]`` from ``affine_matrices``.

    Returns:
        The transformed batch, same shape and dtype (integers rounded).

    Example:
    >>> import numpy as np
    >>> x = np.arange(9, dtype=np.uint8).reshape(1, 3, 3, 1)
    >>> shift = np.array([[[1, 0, 1], [0, 1, 0]]], np.float32)  # one pixel right
    >>> affine_transform(x, shift)[0, :, :, 0].numpy().tolist()
    [[0, 0, 1], [3, 3, 4], [6, 6, 7]]
    """
    images = _check_images(images)
    matrices = tf.convert_to_tensor(matrices, tf.float32)
    height, width, channels = images.shape[1:]
    linear, shift = matrices[:, :, :2], matrices[:, :, 2]
    inverse = tf.linalg.inv(linear)  # [B, 2, 2]
    ys, xs = tf.meshgrid(tf.range(height, dtype=tf.float32), tf.range(width, dtype=tf.float32), indexing="ij")
    centre = tf.constant([(width - 1) / 2.0, (height - 1) / 2.0])
    grid = tf.reshape(tf.stack([xs, ys], axis=-1), [1, -1, 2]) - centre - shift[:, None, :]  # [B, HW, 2]
    source = tf.einsum("bij,bnj->bni", inverse, grid) + centre
    x = tf.clip_by_value(source[..., 0], 0.0, width - 1.0)
    y = tf.clip_by_value(source[..., 1], 0.0, height - 1.0)
    x0, y0 = tf.floor(x), tf.floor(y)
    wx, wy = (x - x0)[..., None], (y - y0)[..., None]
    x0, y0 = tf.cast(x0, tf.int32), tf.cast(y0, tf.int32)
    x1, y1 = tf.minimum(x0 + 1, width - 1), tf.minimum(y0 + 1, height - 1)
    flat = tf.reshape(tf.cast(images, tf.float32), [-1, height * width, channels])

    def at(row, col):
        return tf.gather(flat, row * width + col, batch_dims=1)

    top = at(y0, x0) * (1.0 - wx) + at(y0, x1) * wx
    bottom = at(y1, x0) * (1.0 - wx) + at(y1, x1) * wx
    out = tf.reshape(top * (1.0 - wy) + bottom * wy, tf.shape(images))
    if images.dtype.is_integer:
        out = tf.clip_by_value(tf.round(out), images.dtype.min, images.dtype.max)
    return tf.cast(out, images.dtype)


def random_affine(images, seed, rotation=10.0, shear=0.3, scale=(0.8, 1.2), translation=2.0):
    """Random small affine distortions of a batch (Koch et al. 2015): ``affine_matrices`` then ``affine_transform``.

    Defaults are Koch et al.'s ranges for 105 x 105 characters: rotation
    within 10 degrees, shears within 0.3, scales in [0.8, 1.2], shifts within
    2 pixels.

    Args:
        images: ``[B, H, W, C]`` (uint8 normally).
        seed: stateless seed, an int or ``[2]`` integer tensor.
        rotation, shear, scale, translation: see ``affine_matrices``.

    Returns:
        The distorted batch, same shape and dtype.

    Example:
    >>> import numpy as np
    >>> random_affine(np.zeros((4, 28, 28, 1), np.uint8), seed=1).shape
    TensorShape([4, 28, 28, 1])
    """
    images = _check_images(images)
    matrices = affine_matrices(tf.shape(images)[0], seed, rotation, shear, scale, translation)
    return affine_transform(images, matrices)


def random_resized_crop_flip(images, seed, area=(0.25, 1.0), aspect=(3 / 4, 4 / 3), flip=True):
    """Random resized crops of a batch, flipped left-right half of the time.

    Per image: a crop of ``area`` share of the image (uniform) and aspect
    ratio ``aspect`` (log-uniform), clipped to the image, placed uniformly,
    resized back to ``H x W`` (bilinear, by ``affine_transform``: a crop,
    resize and mirror is one affine map); mirrored with probability 1/2 when
    ``flip``.

    Args:
        images: ``[B, H, W, C]``.
        seed: stateless seed, an int or ``[2]`` integer tensor.
        area: ``(min, max)`` share of the image area, in (0, 1].
        aspect: ``(min, max)`` width / height ratio.
        flip: mirror left-right with probability 1/2.

    Returns:
        The augmented batch, same shape and dtype.

    Example:
    >>> import numpy as np
    >>> random_resized_crop_flip(np.zeros((2, 32, 32, 3), np.uint8), seed=0).shape
    TensorShape([2, 32, 32, 3])
    """
    images = _check_images(images)
    area = _check_range("area", area, 1e-6, 1.0)
    aspect = _check_range("aspect", aspect, 1e-3, 1e3)
    height, width = images.shape[1:3]
    batch = tf.shape(images)[0]
    u = _uniform([batch, 5], seed, 0.0, 1.0)
    share = area[0] + (area[1] - area[0]) * u[:, 0]
    ratio = tf.exp(math.log(aspect[0]) + (math.log(aspect[1]) - math.log(aspect[0])) * u[:, 1])
    crop_w = tf.minimum(tf.sqrt(share * ratio * height / width), 1.0)  # as a share of the width
    crop_h = tf.minimum(tf.sqrt(share / ratio * width / height), 1.0)
    # Crop centre relative to the image centre, in pixels.
    centre_x = ((1.0 - crop_w) * u[:, 2] + crop_w / 2.0 - 0.5) * width
    centre_y = ((1.0 - crop_h) * u[:, 3] + crop_h / 2.0 - 0.5) * height
    sign = tf.where(u[:, 4] < 0.5, -1.0, 1.0) if flip else tf.ones([batch])
    # The map taking the crop onto the whole image: q = L (p - c), L = diag(sign / crop_w, 1 / crop_h).
    zero = tf.zeros([batch])
    matrices = tf.stack(
        [sign / crop_w, zero, -sign * centre_x / crop_w, zero, 1.0 / crop_h, -centre_y / crop_h], axis=1
    )
    return affine_transform(images, tf.reshape(matrices, [-1, 2, 3]))


def augment_batches(dataset, augment, seed=0, start=0):
    """Maps ``augment(images, seed)`` over a dataset of ``(images, labels)`` batches.

    Batch ``i`` gets the stateless seed ``fold_in([seed, 0], start + i)``, so
    the stream is reproducible and every batch is distorted differently. A
    stream resumed after ``n`` batches (``batches.skip(n)``, ``start=n``)
    continues exactly as the whole stream would.

    Args:
        dataset: ``tf.data.Dataset`` of ``(images [B, H, W, C], labels [B])``,
            e.g. from ``pk_batches``.
        augment: a function ``(images, seed) -> images``, e.g.
            ``functools.partial(random_affine, rotation=15)``.
        seed: integer seed.
        start: index of the dataset's first batch in the whole stream.

    Returns:
        The dataset with augmented images; labels untouched.

    Example:
    >>> import numpy as np
    >>> ds = tf.data.Dataset.from_tensors((np.zeros((4, 8, 8, 1), np.uint8), np.arange(4)))
    >>> images, labels = next(iter(augment_batches(ds, random_affine, seed=3)))
    >>> images.shape, labels.numpy().tolist()
    (TensorShape([4, 8, 8, 1]), [0, 1, 2, 3])
    """
    if not callable(augment):
        raise ValueError(f"`augment` must be a function (images, seed) -> images. Received: {augment!r}")
    base = tf.constant([int(seed), 0], tf.int64)
    return dataset.enumerate(start=int(start)).map(
        lambda step, batch: (augment(batch[0], tf.random.experimental.stateless_fold_in(base, step)), batch[1]),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )


def rotated_classes(dataset, turns=4):
    """Each class, rotated by ``k`` quarter turns (``k < turns``), becomes a class of its own.

    Example ``i`` of class ``y`` yields ``turns`` examples: the image rotated
    counter-clockwise by ``k * 90`` degrees, labelled ``y * turns + k``. The
    rotated characters of Omniglot are new, plausible characters: Santoro et
    al. 2016, "Meta-Learning with Memory-Augmented Neural Networks", and
    Vinyals et al. 2016, "Matching Networks for One Shot Learning", train on
    the 4x classes so obtained.

    Args:
        dataset: finite ``tf.data.Dataset`` of ``(image [H, W, C], label)``
            pairs, square images (H = W).
        turns: 1 (unchanged), 2 (0 and 180 degrees) or 4 (0, 90, 180, 270).

    Returns:
        A ``tf.data.Dataset`` of ``turns`` times as many pairs, each example's
        rotations in a row; a streamed dataset (``rankloss_tf.references``)
        stays streamed.

    Raises:
        ValueError: another ``turns``, or images that are not square with ``turns=4``.

    Example:
    >>> import numpy as np
    >>> ds = tf.data.Dataset.from_tensor_slices((np.arange(4, dtype=np.uint8).reshape(1, 2, 2, 1), [3]))
    >>> [(x[..., 0].tolist(), int(y)) for x, y in rotated_classes(ds).as_numpy_iterator()][:2]
    [([[0, 1], [2, 3]], 12), ([[1, 3], [0, 2]], 13)]
    """
    if turns not in (1, 2, 4):
        raise ValueError(f"`turns` must be 1, 2 or 4. Received: turns={turns!r}")
    if turns == 1:
        return dataset
    shape = dataset.element_spec[0].shape
    if turns == 4 and (shape.rank != 3 or shape[0] is None or shape[0] != shape[1]):
        raise ValueError(f"Quarter turns need square images [H, H, C]. Received: image shape {shape}")
    step = 4 // turns
    references = references_of(dataset)
    if references is not None:
        return streamed(_rotated_references(references, turns, step))

    def rotations(image, label):
        images = tf.stack([tf.image.rot90(image, k * step) for k in range(turns)])
        labels = tf.cast(label, tf.int64) * turns + tf.range(turns, dtype=tf.int64)
        return tf.data.Dataset.from_tensor_slices((images, labels))

    return dataset.flat_map(rotations)


def _rotated_references(references, turns, step):
    """``rotated_classes`` of a streamed dataset, still streamed: position ``i * turns + k`` is example i turned k times."""
    items = tf.constant(references.items)

    def read(position):
        image = references.read(tf.gather(items, position // turns))
        return tf.image.rot90(image, tf.cast(position % turns, tf.int32) * step)

    count = len(references)
    labels = np.repeat(references.labels, turns) * turns + np.tile(np.arange(turns), count)
    files = references.files if references.files is not None else tuple(references.items.tolist())
    return References(np.arange(count * turns, dtype=np.int64), labels, read, files=files,
                      tag=f"{references.tag}:turns={turns}")


AUGMENTATIONS = {
    "none": None,
    "affine": functools.partial(random_affine, **CHARACTER_AFFINE),
    "crop_flip": random_resized_crop_flip,
}


def batch_augmentation(name):
    """The batch augmentation ``(images, seed) -> images`` of a recipe name (None for "none").

    Names: "none"; "affine", ``random_affine`` with ``CHARACTER_AFFINE``
    (characters); "crop_flip", ``random_resized_crop_flip`` (photos).

    Raises:
        ValueError: an unknown name.

    Example:
    >>> batch_augmentation("crop_flip").__name__, batch_augmentation("none")
    ('random_resized_crop_flip', None)
    """
    if name not in AUGMENTATIONS:
        raise ValueError(f"Unknown augmentation; known: {', '.join(AUGMENTATIONS)}. Received: {name!r}")
    return AUGMENTATIONS[name]
