"""scikit-learn's bundled 8x8 digits: train on digits 0-4, test on 5-9."""

import numpy as np
import sklearn.datasets
import tensorflow as tf

from rankloss_tf.datasets.images import resize_uint8


def load_digits(split, image_size=None):
    """The 1,797 8x8 digits as uint8 images [8, 8, 1] (0..16 scaled to 0..255).

    Zero-shot split: "train" holds classes 0-4 (901 images), "test" 5-9 (896).
    Labels are the digits themselves (int64).
    """
    digits = sklearn.datasets.load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., np.newaxis]
    labels = digits.target.astype(np.int64)
    keep = labels < 5 if split == "train" else labels >= 5
    dataset = tf.data.Dataset.from_tensor_slices((images[keep], labels[keep]))
    if image_size is not None:
        dataset = dataset.map(lambda image, label: (resize_uint8(image, image_size), label))
    return dataset
