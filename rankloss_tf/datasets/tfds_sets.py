"""TensorFlow Datasets sources with the standard zero-shot (class-disjoint) protocol."""

import importlib

import tensorflow as tf

from rankloss_tf.datasets.images import resize_uint8

VARIABLE_SIZE_DEFAULT = 224

# name: (label feature, TFDS split read, rule selecting the train classes).
PROTOCOLS = {
    # CUB-200-2011: first 100 classes train, last 100 test; official splits merged.
    "caltech_birds2011": ("label", {"train": "train+test", "test": "train+test"}, 100),
    # Cars196: first 98 classes train, last 98 test; official splits merged.
    "cars196": ("label", {"train": "train+test", "test": "train+test"}, 98),
    # Stanford Online Products: the official split is already class-disjoint.
    "stanford_online_products": ("class_id", {"train": "train", "test": "test"}, None),
}


def require_tfds():
    """Imports tensorflow_datasets, or explains how to install it."""
    try:
        return importlib.import_module("tensorflow_datasets")
    except ImportError as error:
        raise ImportError(
            "This dataset is read through TensorFlow Datasets, an optional dependency: "
            "pip install rankloss-tf[datasets]"
        ) from error


def load_tfds(name, split, data_dir=None, image_size=None):
    """Loads a TFDS image dataset's zero-shot half as (uint8 image [H, W, 3], int64 label).

    Labels are the TFDS labels (0-based class ids); images are resized to
    ``image_size`` (224 when None, as their sizes vary). TFDS downloads and
    prepares the data into ``data_dir`` on first use.
    """
    tfds = require_tfds()
    label_key, tfds_split, train_classes = PROTOCOLS[name]
    dataset = tfds.load(name, split=tfds_split[split], data_dir=data_dir)
    if train_classes is not None:
        if split == "train":
            dataset = dataset.filter(lambda example: example[label_key] < train_classes)
        else:
            dataset = dataset.filter(lambda example: example[label_key] >= train_classes)
    size = VARIABLE_SIZE_DEFAULT if image_size is None else image_size
    return dataset.map(
        lambda example: (resize_uint8(example["image"], size), tf.cast(example[label_key], tf.int64)),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
