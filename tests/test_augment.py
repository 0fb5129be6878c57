"""Batch augmentation: a bilinear-sampling loop oracle, ranges, seeds, XLA, the pipeline hook."""

import functools

import numpy as np
import pytest
import tensorflow as tf

from rankloss_tf.data import pk_batches
from rankloss_tf.data.augment import (
    affine_matrices,
    affine_transform,
    augment_batches,
    random_affine,
    random_resized_crop_flip,
)


def _oracle(images, matrices):
    """Per output pixel: source = A^-1 (q - t) about the centre, edge-clamped bilinear sample."""
    batch, height, width, channels = images.shape
    out = np.zeros(images.shape, np.float64)
    centre = np.array([(width - 1) / 2, (height - 1) / 2])
    for b in range(batch):
        inverse = np.linalg.inv(matrices[b, :, :2].astype(np.float64))
        for row in range(height):
            for col in range(width):
                x, y = inverse @ (np.array([col, row]) - centre - matrices[b, :, 2]) + centre
                x, y = min(max(x, 0), width - 1), min(max(y, 0), height - 1)
                x0, y0 = int(np.floor(x)), int(np.floor(y))
                x1, y1 = min(x0 + 1, width - 1), min(y0 + 1, height - 1)
                wx, wy = x - x0, y - y0
                out[b, row, col] = ((1 - wy) * ((1 - wx) * images[b, y0, x0] + wx * images[b, y0, x1])
                                    + wy * ((1 - wx) * images[b, y1, x0] + wx * images[b, y1, x1]))
    return out


def test_affine_transform_matches_loop_oracle():
    rng = np.random.default_rng(0)
    images = rng.random((3, 9, 7, 2)).astype(np.float32)
    matrices = affine_matrices(3, seed=5, rotation=30, shear=0.3, scale=(0.7, 1.3), translation=2).numpy()
    np.testing.assert_allclose(affine_transform(images, matrices), _oracle(images, matrices), atol=1e-4)


def test_identity_and_integer_shift():
    images = np.random.default_rng(1).integers(0, 256, (2, 6, 6, 1)).astype(np.uint8)
    identity = np.tile(np.array([[[1, 0, 0], [0, 1, 0]]], np.float32), (2, 1, 1))
    np.testing.assert_array_equal(affine_transform(images, identity), images)
    down = identity.copy()
    down[:, 1, 2] = 2.0  # two rows down; the top rows repeat the first row
    shifted = affine_transform(images, down).numpy()
    np.testing.assert_array_equal(shifted[:, 2:], images[:, :-2])
    np.testing.assert_array_equal(shifted[:, 0], images[:, 0])


def test_affine_transform_eager_graph_xla_parity():
    images = np.random.default_rng(2).random((4, 12, 10, 1)).astype(np.float32) * 255
    matrices = affine_matrices(4, seed=3).numpy()
    eager = affine_transform(images, matrices)
    graph = tf.function(affine_transform)(images, matrices)
    xla = tf.function(affine_transform, jit_compile=True)(images, matrices)
    np.testing.assert_allclose(graph, eager, atol=1e-3)
    np.testing.assert_allclose(xla, eager, atol=1e-3)


def test_random_ops_compile_under_xla():
    images = np.zeros((4, 16, 16, 3), np.uint8)
    for augment in (random_affine, random_resized_crop_flip):
        out = tf.function(augment, jit_compile=True)(images, tf.constant([1, 2]))
        assert out.shape == images.shape and out.dtype == tf.uint8


def test_affine_matrices_stay_in_their_ranges():
    rotation_only = affine_matrices(500, seed=0, rotation=10, shear=0, scale=(1, 1), translation=0).numpy()
    angles = np.degrees(np.arctan2(rotation_only[:, 1, 0], rotation_only[:, 0, 0]))
    assert np.abs(angles).max() <= 10 and np.abs(angles).max() > 9  # the range is used, not exceeded
    np.testing.assert_allclose(np.linalg.det(rotation_only[:, :, :2]), 1, atol=1e-5)
    scale_only = affine_matrices(500, seed=0, rotation=0, shear=0, scale=(0.8, 1.2), translation=3).numpy()
    diagonal = np.stack([scale_only[:, 0, 0], scale_only[:, 1, 1]])
    assert diagonal.min() >= 0.8 and diagonal.max() <= 1.2
    assert np.abs(scale_only[:, :, 2]).max() <= 3
    np.testing.assert_array_equal(scale_only[:, 0, 1], 0)


def test_seeds():
    a, b = affine_matrices(8, seed=1), affine_matrices(8, seed=1)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, affine_matrices(8, seed=2))


def test_resized_crop_full_area_is_identity_and_flip_mirrors():
    images = np.random.default_rng(3).integers(0, 256, (16, 8, 8, 3)).astype(np.uint8)
    whole = random_resized_crop_flip(images, 0, area=(1, 1), aspect=(1, 1), flip=False)
    np.testing.assert_array_equal(whole, images)
    flipped = random_resized_crop_flip(images, 0, area=(1, 1), aspect=(1, 1), flip=True).numpy()
    mirrored = [np.array_equal(f, i[:, ::-1]) for f, i in zip(flipped, images)]
    kept = [np.array_equal(f, i) for f, i in zip(flipped, images)]
    assert all(m or k for m, k in zip(mirrored, kept)) and any(mirrored) and any(kept)


def test_resized_crop_magnifies():
    # A quarter-area square crop of a horizontal ramp: values span about half the range.
    ramp = np.tile(np.linspace(0, 255, 32, dtype=np.float32)[None, None, :, None], (6, 32, 1, 1))
    crops = random_resized_crop_flip(ramp, 1, area=(0.25, 0.25), aspect=(1, 1), flip=False).numpy()
    spans = crops[:, 0, -1, 0] - crops[:, 0, 0, 0]
    np.testing.assert_allclose(spans, 255 * 15.5 / 31, rtol=1e-3)


def test_augment_batches_is_seeded_per_batch():
    images = np.random.default_rng(4).integers(0, 256, (40, 10, 10, 1)).astype(np.uint8)
    labels = np.repeat(np.arange(10), 4)
    batches = pk_batches(images, labels, classes_per_batch=4, samples_per_class=2, epochs=1, seed=0)
    augment = functools.partial(random_affine, rotation=20)
    first = list(augment_batches(batches, augment, seed=7))
    second = list(augment_batches(batches, augment, seed=7))
    other = list(augment_batches(batches, augment, seed=8))
    plain = list(batches)
    for (x1, y1), (x2, y2), (x3, _), (x0, y0) in zip(first, second, other, plain):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y0)
        assert not np.array_equal(x1, x3) and not np.array_equal(x1, x0)


def test_errors():
    with pytest.raises(ValueError, match="scale"):
        affine_matrices(2, 0, scale=(1.2, 0.8))
    with pytest.raises(ValueError, match="rotation"):
        affine_matrices(2, 0, rotation=-1)
    with pytest.raises(ValueError, match="images"):
        random_affine(np.zeros((8, 8, 1), np.uint8), 0)
    with pytest.raises(ValueError, match="area"):
        random_resized_crop_flip(np.zeros((1, 8, 8, 3), np.uint8), 0, area=(0, 1.5))
    with pytest.raises(ValueError, match="augment"):
        augment_batches(tf.data.Dataset.range(1), "affine")
