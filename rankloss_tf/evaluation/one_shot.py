"""Omniglot 20-way one-shot classification: the 20 official runs of Lake et al.

Lake, Salakhutdinov and Tenenbaum (2015), "Human-level concept learning
through probabilistic program induction", Science 350(6266), published 20
one-shot runs drawn from the evaluation alphabets (``all_runs.zip``). Each
run ``runNN/`` holds 20 training images (one per class,
``training/classXX.png``), 20 test images (``test/itemXX.png``) and
``class_labels.txt``, one line per test image: ``runNN/test/itemXX.png
runNN/training/classYY.png`` (the training image of its class; the run
folder prefix is optional).

A test image is classified as the class of its nearest training image in
embedding space; the score of a run is the share of its test images
classified right, and the reported accuracy is the mean over runs (every run
has the same number of test images, so this is also the share over all 400).
Koch et al. (2015) report 0.92 for Siamese networks trained on the 30
background alphabets.
"""

import zipfile
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from rankloss_tf.evaluation.neighbours import nearest_neighbours
from rankloss_tf.images import conform, model_image_shape

__all__ = ["OneShotRun", "load_one_shot_runs", "one_shot_accuracy", "shifted_views"]

LABELS_FILE = "class_labels.txt"


@dataclass(frozen=True)
class OneShotRun:
    """One N-way one-shot run.

    Attributes:
        name: the run's folder name (e.g. ``"run01"``).
        support: ``uint8 [N, H, W, C]``, one training image per class.
        queries: ``uint8 [M, H, W, C]``, the test images.
        targets: ``int [M]``, the index into ``support`` of each query's class.

    Example:
    >>> run = OneShotRun("run01", np.zeros((20, 8, 8, 1), np.uint8), np.zeros((20, 8, 8, 1), np.uint8),
    ...                  np.arange(20))
    >>> run.support.shape[0]
    20
    """

    name: str
    support: np.ndarray
    queries: np.ndarray
    targets: np.ndarray


def _decode(archive, member):
    try:
        data = archive.read(member)
    except KeyError:
        raise ValueError(f"The one-shot archive lists a missing image. Received: {member!r}") from None
    return tf.io.decode_png(data, channels=1).numpy()


def _read_run(archive, name):
    """Reads ``name/class_labels.txt`` (``name``: the run's folder in ``archive``) and the images it names."""
    lines = archive.read(f"{name}/{LABELS_FILE}").decode("utf-8").split()
    if not lines or len(lines) % 2:
        raise ValueError(
            f"{name}/{LABELS_FILE} must hold pairs 'test/item.png training/class.png'. "
            f"Received: {len(lines)} fields"
        )
    # Entries are "runNN/test/itemXX.png" in the official file; keep the part below the run.
    lines = ["/".join(line.split("/")[-2:]) for line in lines]
    queries, classes = lines[0::2], lines[1::2]
    support_names = sorted(
        member[len(name) + 1:] for member in archive.namelist()
        if member.startswith(f"{name}/training/") and member.endswith(".png")
    )
    unknown = sorted(set(classes) - set(support_names))
    if unknown:
        raise ValueError(f"{name}/{LABELS_FILE} names training images that are absent. Received: {unknown}")
    return OneShotRun(
        name=name.rsplit("/", 1)[-1],
        support=np.stack([_decode(archive, f"{name}/{member}") for member in support_names]),
        queries=np.stack([_decode(archive, f"{name}/{member}") for member in queries]),
        targets=np.array([support_names.index(member) for member in classes]),
    )


def load_one_shot_runs(path):
    """Reads the one-shot runs of an ``all_runs.zip`` archive (or a folder with its content).

    Args:
        path: the zip of the 20 official runs, or a directory holding the
            ``runNN/`` folders.

    Returns:
        A list of ``OneShotRun``, sorted by run name; images are
        ``uint8 [H, W, 1]`` as stored (105 x 105 for the official runs).

    Raises:
        ValueError: a missing path, no ``runNN/class_labels.txt``, or a labels
            file naming absent images.

    Example:
    >>> runs = load_one_shot_runs("all_runs.zip")  # doctest: +SKIP
    >>> len(runs), runs[0].support.shape, runs[0].queries.shape  # doctest: +SKIP
    (20, (20, 105, 105, 1), (20, 105, 105, 1))
    """
    path = Path(path)
    if path.is_dir():
        return _load_folder(path)
    if not zipfile.is_zipfile(path):
        raise ValueError(f"`path` must be a zip of one-shot runs or a folder of them. Received: path={path}")
    with zipfile.ZipFile(path) as archive:
        prefixes = sorted(
            member[: -len(LABELS_FILE) - 1] for member in archive.namelist() if member.endswith(f"/{LABELS_FILE}")
        )
        if not prefixes:
            raise ValueError(f"No run folder with a {LABELS_FILE} in the archive. Received: path={path}")
        return [_read_run(archive, prefix) for prefix in prefixes]


def _load_folder(path):
    """The runs of an extracted archive: every ``*/class_labels.txt`` below ``path``."""
    folders = sorted(labels.parent for labels in path.rglob(LABELS_FILE))
    if not folders:
        raise ValueError(f"No run folder with a {LABELS_FILE} below the directory. Received: path={path}")
    runs = []
    for folder in folders:
        with _FolderArchive(folder.parent) as archive:
            runs.append(_read_run(archive, folder.name))
    return runs


class _FolderArchive:
    """The two ``ZipFile`` methods ``_read_run`` uses, over a directory."""

    def __init__(self, root):
        self.root = Path(root)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False

    def namelist(self):
        return [p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file()]

    def read(self, member):
        try:
            return (self.root / member).read_bytes()
        except FileNotFoundError:
            raise KeyError(member) from None


def _fit_to(images, shape):
    """uint8 images as numpy, conformed to the model's ``shape = (H, W, C)`` (``images.conform``); None keeps them."""
    return images if shape is None else conform(images, shape).numpy()


def shifted_views(images, shift):
    """``images`` and their 8 translates by ``shift`` pixels (the 3 x 3 grid of offsets -shift, 0, +shift).

    An offset (dy, dx) moves the content dy px down and dx px right; the
    uncovered border repeats the image's edge pixels (the background of a
    character), so no stroke wraps around. Small translations keep an image's
    class, unlike rotations or mirrors of characters.

    Args:
        images: ``[N, H, W, C]`` array.
        shift: offset in pixels, 0 <= shift < min(H, W); 0 gives ``[images]``.

    Returns:
        A list of ``[N, H, W, C]`` arrays, ``images`` first.

    Raises:
        ValueError: a negative, non-integer or too large ``shift``.

    Example:
    >>> views = shifted_views(np.arange(9, dtype=np.uint8).reshape(1, 3, 3, 1), 1)
    >>> len(views), views[-1][0, :, :, 0].tolist()  # moved 1 px down and right
    (9, [[0, 0, 1], [0, 0, 1], [3, 3, 4]])
    """
    images = np.asarray(images)
    if isinstance(shift, bool) or int(shift) != shift or not 0 <= shift < min(images.shape[1:3]):
        raise ValueError(f"`shift` must be an integer number of pixels in [0, {min(images.shape[1:3])}) for "
                         f"images of shape {images.shape}. Received: shift={shift!r}")
    shift = int(shift)
    if shift == 0:
        return [images]
    height, width = images.shape[1:3]
    padded = np.pad(images, ((0, 0), (shift, shift), (shift, shift), (0, 0)), mode="edge")
    offsets = [(0, 0)] + [(dy, dx) for dy in (-shift, 0, shift) for dx in (-shift, 0, shift) if dy or dx]
    return [padded[:, shift - dy: shift - dy + height, shift - dx: shift - dx + width] for dy, dx in offsets]


def _embed_views(embed, images, shift, shape):
    """The mean embedding of each image over its ``shifted_views`` (each fitted to the model's ``shape``), rows
    L2-normalised when there are several."""
    views = shifted_views(images, shift)
    embeddings = np.mean([np.asarray(embed(_fit_to(view, shape)), np.float32) for view in views], axis=0)
    if shift:
        embeddings /= np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    return embeddings


def one_shot_accuracy(model, runs, metric="cosine", shift=0):
    """N-way one-shot accuracy by nearest neighbour, over the official Omniglot runs.

    For every run, the support and query images are embedded together; each
    query is assigned the class of its nearest support embedding
    (``metric``); accuracy = mean over runs of (right queries / queries).

    Args:
        model: a ``keras.Model`` or any callable mapping ``uint8 [N, H, W, C]``
            images to ``[N, D]`` embeddings (e.g. ``export.SavedModelEmbedder``).
            Images are resized (antialiased) to the model's input size when it
            declares one (``input_shape`` of a Keras model, ``image_shape`` of
            an export), and a grey image is tiled to 3 channels if asked.
        runs: a path to ``all_runs.zip`` (or its extracted folder), or a list
            of ``OneShotRun``.
        metric: ``"cosine"`` or ``"l2"``.
        shift: test-time augmentation: 0 (off) embeds each image as it is;
            ``s`` pixels (of the runs' images, before any resize) embeds an
            image as the mean, L2-normalised, of the embeddings of
            ``one_shot.shifted_views(image, s)`` (itself and its 8 translates by ``s``
            px), for support and queries alike (9 times the embedding work).

    Returns:
        ``{"accuracy": float, "runs": {run name: accuracy}, "ways": N,
        "queries": total number of queries}``.

    Raises:
        ValueError: bad paths or archive contents, unknown ``metric``, images
            that cannot be fitted to the model's input.

    Example:
    >>> import numpy as np
    >>> eye = np.eye(3, dtype=np.uint8)[:, :, None, None] * 255
    >>> run = OneShotRun("run01", support=eye, queries=eye[::-1], targets=np.array([2, 1, 0]))
    >>> one_shot_accuracy(lambda x: np.reshape(x, (len(x), -1)).astype("float32"), [run])
    {'accuracy': 1.0, 'runs': {'run01': 1.0}, 'ways': 3, 'queries': 3}
    """
    if not isinstance(runs, (list, tuple)):
        runs = load_one_shot_runs(runs)
    if not runs:
        raise ValueError("`runs` is empty. Received: runs=[]")
    shape = model_image_shape(model, required=False)
    embed = model.predict_on_batch if isinstance(model, keras.Model) else model
    scores = {}
    for run in runs:
        embeddings = _embed_views(embed, np.concatenate([run.support, run.queries]), shift, shape)
        support, queries = embeddings[: len(run.support)], embeddings[len(run.support):]
        nearest, _ = nearest_neighbours(queries, support, k=1, metric=metric)
        scores[run.name] = float(np.mean(nearest[:, 0] == run.targets))
    return {
        "accuracy": float(np.mean(list(scores.values()))),
        "runs": scores,
        "ways": int(len(runs[0].support)),
        "queries": int(sum(len(run.queries) for run in runs)),
    }
