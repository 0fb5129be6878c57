"""TensorFlow Datasets sources with the standard zero-shot (class-disjoint) protocol.

A dataset prepared as TFRecord files (TFDS's default format) streams: its
records are indexed once (file, offset, length, label) and each batch's images
are read by position (``rankloss_tf.datasets.tfrecord``, ``rankloss_tf.references``),
so the P x K sampler never holds decoded images. Other formats (and
``tfds.testing.mock_data``) are read through ``tfds.load`` as before.
"""

import importlib
import logging

import numpy as np
import tensorflow as tf

from rankloss_tf.datasets.images import resize_uint8
from rankloss_tf.datasets.tfrecord import index_records, record_reader
from rankloss_tf.references import References, streamed

logger = logging.getLogger(__name__)

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
    size = VARIABLE_SIZE_DEFAULT if image_size is None else image_size

    def in_split(labels):
        return labels < train_classes if split == "train" else labels >= train_classes

    keep = None if train_classes is None else in_split
    prepared = stream_prepared(tfds.builder(name, data_dir=data_dir), tfds_split[split], label_key, size, keep)
    if prepared is not None:
        return prepared
    dataset = tfds.load(name, split=tfds_split[split], data_dir=data_dir)
    if keep is not None:
        dataset = dataset.filter(lambda example: keep(example[label_key]))
    return dataset.map(
        lambda example: (resize_uint8(example["image"], size), tf.cast(example[label_key], tf.int64)),
        num_parallel_calls=tf.data.AUTOTUNE,
    )


def _prepared_files(builder, split):
    """The TFRecord files of a prepared builder's ``split``, or None (not prepared, another format, mocked)."""
    try:
        if str(getattr(builder.info.file_format, "value", builder.info.file_format)) != "tfrecord":
            return None
        files = [str(path) for path in builder.info.splits[split].filepaths]
    except (KeyError, ValueError, AttributeError, TypeError):
        return None
    return files if files and all(tf.io.gfile.exists(path) for path in files) else None


def stream_prepared(builder, split, label_key="label", image_size=VARIABLE_SIZE_DEFAULT, keep=None):
    """A prepared TFDS builder's images as a streamed dataset of (uint8 image [S, S, 3], int64 label), or None.

    Args:
        builder: a ``tfds.core.DatasetBuilder`` whose data is prepared.
        split: a TFDS split string ("train", "train+test").
        label_key: the label feature.
        image_size: the side images are resized to.
        keep: optional function of the labels array [N] returning the boolean
            mask of the examples to keep (the zero-shot half).

    Returns:
        A ``rankloss_tf.references.streamed`` dataset in the files' order, or
        None when the split is not stored as TFRecord files here (then read it
        with ``tfds.load``).

    Example:
    >>> builder = tfds.builder("cars196")  # doctest: +SKIP
    >>> stream_prepared(builder, "train+test", keep=lambda labels: labels < 98)  # doctest: +SKIP
    <_ParallelMapDataset element_spec=(TensorSpec(shape=(224, 224, 3), dtype=tf.uint8, ...), ...)>
    """
    files = _prepared_files(builder, split)
    if files is None:
        return None
    tfds = require_tfds()
    features = builder.info.features
    skip = {"image": tfds.decode.SkipDecoding()}

    def label_of(record):
        return tf.cast(features.deserialize_example(record, decoders=skip)[label_key], tf.int64), tf.constant("")

    def image_of(record):
        return features.deserialize_example(record, decoders=skip)["image"]

    numbers, offsets, lengths, labels, _ = index_records(files, label_of, schema=f"tfds:{builder.name}:{label_key}")
    positions = np.flatnonzero(keep(labels)) if keep is not None else np.arange(labels.size)
    logger.info("Streaming %d of the %d records of %s (%s) from %d files", positions.size, labels.size,
                builder.name, split, len(files))
    read = record_reader(files, numbers, offsets, lengths, image_of, image_size)
    return streamed(References(positions, labels[positions], read=read, files=tuple(files),
                               tag=f"tfds:{builder.name}:{split}:{image_size}"))
