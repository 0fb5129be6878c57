"""Cars196: classes 1-98 train, 99-196 test, from a local crop directory or TFDS."""

import csv
from pathlib import Path

import numpy as np
import tensorflow as tf

from rankloss_tf.datasets.images import image_decoder, image_hw
from rankloss_tf.datasets.tfds_sets import load_tfds
from rankloss_tf.references import References, streamed

TRAIN_CLASSES = 98
LOCAL_SIZE = 224


def is_local_dir(data_dir):
    """True when ``data_dir`` has the local layout: labels.csv, cropped_train/, cropped_test/."""
    if data_dir is None:
        return False
    root = Path(data_dir)
    return (root / "labels.csv").is_file() and (root / "cropped_train").is_dir() and (root / "cropped_test").is_dir()


def read_local_index(data_dir, split):
    """(image paths, int64 labels) of one zero-shot half of a local Cars196 directory.

    ``labels.csv`` rows are ``split,file,class_id,...``; the official split only
    says which folder holds a file. Labels are class_id - 1 (the TFDS labels).
    """
    root = Path(data_dir)
    paths, labels = [], []
    with open(root / "labels.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            label = int(row["class_id"]) - 1
            if (label < TRAIN_CLASSES) == (split == "train"):
                paths.append(str(root / f"cropped_{row['split']}" / row["file"]))
                labels.append(label)
    return paths, np.asarray(labels, np.int64)


def load_cars196(split, data_dir=None, image_size=None):
    """Cars196 (Krause et al. 2013) with the metric-learning protocol as (uint8 [H, W, 3], int64 label).

    "train" = classes 1-98 (8,054 images), "test" = classes 99-196 (8,131),
    all images of each half whatever their official split; labels are
    class_id - 1 (0..97 train, 98..195 test).

    With ``data_dir`` in the local layout (labels.csv, cropped_train/,
    cropped_test/: 224x224 bounding-box crops) images are read lazily from it
    (a ``rankloss_tf.references.streamed`` dataset: the sampler keeps only paths);
    otherwise through the TFDS ``cars196`` builder (uncropped images, resized
    to ``image_size``, 224 by default), with the same class split.
    """
    if data_dir is not None and not is_local_dir(data_dir) and not (Path(data_dir) / "cars196").is_dir():
        raise ValueError(
            "No Cars196 data in data_dir: looked for labels.csv, cropped_train/ and cropped_test/ (the local "
            "copy) and cars196/ (a prepared TensorFlow Datasets directory); nothing is downloaded into a given "
            f"data_dir. Pass data_dir=None to download through TFDS. Received: data_dir={str(data_dir)!r}"
        )
    if not is_local_dir(data_dir):
        return load_tfds("cars196", split, data_dir, image_size)
    paths, labels = read_local_index(data_dir, split)
    decode = image_decoder(image_size, channels=3)
    shape = [*(image_hw(image_size) or (LOCAL_SIZE, LOCAL_SIZE)), 3]
    references = References(np.asarray(paths), labels, read=lambda path: tf.ensure_shape(decode(path), shape),
                            files=(*paths, str(Path(data_dir) / "labels.csv")), tag=f"cars196:{split}:{image_size}")
    return streamed(references)
