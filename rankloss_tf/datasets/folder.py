"""A folder with one sub-folder of images per class, split into disjoint train / test classes."""

from pathlib import Path

import numpy as np
import tensorflow as tf

from rankloss_tf.datasets.images import image_decoder

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def load_folder(path, split, image_size=None, train_fraction=0.5, seed=0):
    """Images under `path/<class>/...` as (uint8 image [H, W, 3], int64 label).

    Labels are the ranks of the class folder names in sorted order (over all
    classes). The classes are shuffled with `seed`; the first
    round(train_fraction x C) form "train", the rest "test". Images are read
    lazily from disk; give `image_size` when their sizes differ.

    Raises:
        ValueError: missing folder, no class folder with images, a fraction
            outside (0, 1), or a split with fewer than 2 classes.
    """
    root = Path(path)
    if not root.is_dir():
        raise ValueError(f"The folder does not exist. Received: {path!r}")
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"`train_fraction` must lie in (0, 1). Received: train_fraction={train_fraction!r}")
    files = {}
    for class_dir in sorted(entry for entry in root.iterdir() if entry.is_dir()):
        images = sorted(str(f) for f in class_dir.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        if images:
            files[class_dir.name] = images
    if not files:
        raise ValueError(
            f"The folder holds no class sub-folder with images ({', '.join(IMAGE_SUFFIXES)}). Received: {path!r}"
        )
    order = np.random.default_rng(seed).permutation(len(files))
    num_train = int(round(train_fraction * len(files)))
    chosen = np.sort(order[:num_train] if split == "train" else order[num_train:])
    if chosen.size < 2:
        raise ValueError(
            f"The {split!r} split needs at least 2 classes. Received: {chosen.size} of {len(files)} classes "
            f"with train_fraction={train_fraction} in {path!r}"
        )
    names = list(files)
    paths = [f for label in chosen for f in files[names[label]]]
    labels = np.concatenate([np.full(len(files[names[label]]), label, np.int64) for label in chosen])
    decode = image_decoder(image_size, channels=3)
    return tf.data.Dataset.from_tensor_slices((paths, labels)).map(
        lambda file, label: (decode(file), label), num_parallel_calls=tf.data.AUTOTUNE
    )
