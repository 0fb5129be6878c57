"""Omniglot (background small1 + small2): zero-shot split by alphabet, local zips or TFDS."""

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import tensorflow as tf

from rankloss_tf.datasets.images import resize_uint8
from rankloss_tf.datasets.tfds_sets import require_tfds

ZIPS = ("images_background_small1.zip", "images_background_small2.zip")
TRAIN_ALPHABETS = ("Balinese", "Early_Aramaic", "Greek", "Korean", "Latin")
TEST_ALPHABETS = ("Japanese_(katakana)", "Sanskrit", "Tagalog")


def is_local_dir(data_dir):
    """True when ``data_dir`` holds the two Omniglot image zips."""
    return data_dir is not None and all((Path(data_dir) / name).is_file() for name in ZIPS)


def load_omniglot(split, data_dir=None, image_size=None):
    """Omniglot's 242 background characters (4,840 images) as uint8 [105, 105, 1].

    Read from the image zips in ``data_dir`` when it holds them, else through
    the TFDS ``omniglot`` builder (``small1`` + ``small2``, the same zips). Greek and
    Latin appear in both zips and are kept once.

    Zero-shot split by alphabet: "train" = Balinese, Early_Aramaic, Greek,
    Korean, Latin (136 classes, 2,720 images); "test" = Japanese_(katakana),
    Sanskrit, Tagalog (106 classes, 2,120 images). A label is the rank of its
    "Alphabet/characterNN" name among all 242 sorted names (same ids in both
    splits and both sources); images are ordered by label, then by content
    hash, so both sources give identical datasets. Pixels are 0 or 255.
    """
    if data_dir is not None and not is_local_dir(data_dir) and not (Path(data_dir) / "omniglot").is_dir():
        raise ValueError(
            f"No Omniglot data in data_dir: looked for {', '.join(ZIPS)} (the local copy) and omniglot/ (a "
            "prepared TensorFlow Datasets directory); nothing is downloaded into a given data_dir. Pass "
            f"data_dir=None to download through TFDS. Received: data_dir={str(data_dir)!r}"
        )
    names, images = _read_zips(data_dir) if is_local_dir(data_dir) else _read_tfds(data_dir)
    class_names = sorted(set(names))
    labels = np.searchsorted(class_names, names).astype(np.int64)
    digests = [hashlib.sha1(image.tobytes()).hexdigest() for image in images]
    alphabets = TRAIN_ALPHABETS if split == "train" else TEST_ALPHABETS
    keep = [i for i in np.lexsort((digests, labels)) if names[i].split("/")[0] in alphabets]
    dataset = tf.data.Dataset.from_tensor_slices((np.stack([images[i] for i in keep]), labels[keep]))
    if image_size is not None:
        dataset = dataset.map(lambda image, label: (resize_uint8(image, image_size), label))
    return dataset


def _read_zips(data_dir):
    """(class names, images) from the local zips, each file once."""
    seen, names, images = set(), [], []
    for zip_name in ZIPS:
        with zipfile.ZipFile(Path(data_dir) / zip_name) as archive:
            for member in sorted(archive.namelist()):
                parts = member.split("/")
                if not member.endswith(".png") or "/".join(parts[1:]) in seen:
                    continue
                seen.add("/".join(parts[1:]))
                names.append(f"{parts[1]}/{parts[2]}")
                images.append(tf.io.decode_png(archive.read(member), channels=1).numpy())
    return names, images


def tfds_alphabet_names(info):
    """The alphabet names of the TFDS builder, indexed by its ``alphabet`` feature."""
    return info.features["alphabet"].names


def _read_tfds(data_dir):
    """(class names, images) from TFDS small1 then small2; classes already read are skipped."""
    tfds = require_tfds()
    names, images, done = [], [], set()
    for tfds_split in ("small1", "small2"):
        dataset, info = tfds.load("omniglot", split=tfds_split, data_dir=data_dir, with_info=True)
        alphabets = tfds_alphabet_names(info)
        split_names = set()
        for example in dataset.as_numpy_iterator():
            name = f"{alphabets[example['alphabet']]}/character{example['alphabet_char_id'] + 1:02d}"
            if name not in done:
                split_names.add(name)
                names.append(name)
                images.append(example["image"][..., :1])
        done |= split_names
    return names, images
