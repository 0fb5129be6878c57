"""A folder dataset's split by class name: recorded in the run, checked on resume and by ``evaluate``.

A folder's train / test classes follow from its class names, the seed and the
fraction (``datasets.folder.split_classes``), so renaming, adding or removing
one class folder can move trained classes into the held-out set. A run
therefore records its split in ``split.json``::

    {"seed": 0, "train_fraction": 0.5, "train": ["cats", ...], "test": ["dogs", ...]}

and refuses, before any work, to resume on a folder whose split is no longer
that one, naming the classes that are gone, new or moved (a run never
continues on a changed split; train afresh in a new ``--out``).
``rankloss-tf evaluate --model RUN --dataset folder:DIR`` scores the recorded
held-out classes: with the recorded seed, refusing a different ``--seed`` and a
folder whose split changed. Datasets other than folders have fixed splits and
record nothing.
"""

import json
import logging
from pathlib import Path

from rankloss_tf import datasets
from rankloss_tf.datasets.folder import split_classes
from rankloss_tf.export import MARKER as EXPORT_MARKER
from rankloss_tf.app.run_dir import MARKER, RunDirectory

__all__ = ["TRAIN_FRACTION", "check_split", "check_test_classes", "evaluation_seed", "folder_split",
           "record_split", "recorded_split", "split_changes"]

logger = logging.getLogger(__name__)

TRAIN_FRACTION = 0.5  # the share of a folder's classes that trains (``datasets.load``'s default)


def folder_split(index, seed, train_fraction=TRAIN_FRACTION):
    """The split of a scanned folder by class name: ``{"seed", "train_fraction", "train", "test"}``.

    Example:
    >>> from rankloss_tf.datasets.folder import FolderIndex
    >>> folder_split(FolderIndex("photos", ["a", "b", "c", "d"], {}, []), seed=0)["test"]
    ['b', 'd']
    """
    names = {part: [index.classes[label] for label in split_classes(index, part, train_fraction, seed)]
             for part in ("train", "test")}
    return {"seed": seed, "train_fraction": train_fraction, **names}


def _changes(recorded, current):
    """What differs between two splits, in words (empty when they are the same)."""
    before = {name: part for part in ("train", "test") for name in recorded.get(part, ())}
    after = {name: part for part in ("train", "test") for name in current[part]}
    gone, new = sorted(set(before) - set(after)), sorted(set(after) - set(before))
    moved = sorted(f"{name} ({before[name]} -> {after[name]})" for name in set(before) & set(after)
                   if before[name] != after[name])
    return [f"{what}: {', '.join(names[:8])}{' ...' if len(names) > 8 else ''}"
            for what, names in (("classes gone", gone), ("new classes", new), ("moved", moved)) if names]


def record_split(run, index, seed):
    """Records a new run's split, or checks the folder still gives the recorded one; returns the split.

    Raises:
        ValueError: the folder's split changed since the run recorded it (naming
            what changed), or the run's ``split.json`` is damaged.

    Example:
    >>> from rankloss_tf.datasets import scan_folder
    >>> with RunDirectory("runs/mine").locked() as run:  # doctest: +SKIP
    ...     record_split(run, scan_folder("photos"), seed=0)["test"]
    ['dogs', 'owls']
    """
    recorded = check_split(run, index, seed)
    if recorded is None:  # nothing trained yet: the folder's split as it is now
        recorded = folder_split(index, seed)
        run.write_json(run.SPLIT, recorded)
    return recorded


def check_split(run, index, seed):
    """The split a started run recorded, checked against the folder's now; None before the run has started.

    Read only: ``train`` asks it before loading the data too, so that a class
    folder removed from a run's folder is named as such, before another check
    (too few classes for --classes-per-batch) would name a consequence.

    Raises:
        ValueError: the folder's split changed since the run recorded it (naming
            what changed), or the run's ``split.json`` is damaged.

    Example:
    >>> from rankloss_tf.datasets import scan_folder
    >>> check_split(RunDirectory("runs/mine"), scan_folder("photos"), seed=0)["test"]  # doctest: +SKIP
    ['dogs', 'owls']
    """
    recorded = run.read_json(run.SPLIT)
    if run.phase is None:
        return None
    if recorded is None:
        raise run.damaged(f"{run.SPLIT} is missing")
    if not isinstance(recorded, dict):
        raise run.damaged(f"{run.SPLIT} holds a {type(recorded).__name__}, not a split")
    changes = _changes(recorded, folder_split(index, seed))
    if changes:
        raise ValueError(
            f"The classes of {index.root} changed since this run recorded its split ({'; '.join(changes)}): "
            "resuming would train or score other classes. Restore the folder, or train afresh in another --out. "
            f"Received: out_dir={run.path}")
    return recorded


def check_test_classes(index, split):
    """Refuses, before training, held-out classes that retrieval cannot score (one image each).

    Raises:
        ValueError: every test class has a single image, naming them.

    Example:
    >>> from rankloss_tf.datasets.folder import FolderIndex
    >>> index = FolderIndex("photos", ["a", "b", "c"], {"a": ["a/1.png", "a/2.png"], "b": ["b/1.png"]}, [])
    >>> check_test_classes(index, {"test": ["b"]})
    Traceback (most recent call last):
    ...
    ValueError: Every held-out (test) class of photos has one image: ... Add images to these classes: b. ...
    """
    counts = {name: len(index.files[name]) for name in split["test"]}
    alone = sorted(name for name, count in counts.items() if count < 2)
    if len(alone) == len(counts):
        raise ValueError(
            f"Every held-out (test) class of {index.root} has one image: retrieval needs classes of at least two "
            f"images to score. Add images to these classes: {', '.join(alone[:10])}"
            f"{' ...' if len(alone) > 10 else ''}. Received: {len(counts)} test classes")
    if alone:
        logger.warning("%d held-out classes of %s have one image and are left out of the retrieval metrics: %s",
                       len(alone), index.root, ", ".join(alone[:10]))


def recorded_split(model_path):
    """The split a trained model recorded: a run's ``split.json``, an export's marker; None when it has none.

    Returns:
        ``(where, split)``: the file it was read from and the split (a dict
        whose keys ``check`` has not yet verified), or ``(None, None)``.

    Example:
    >>> recorded_split("exported/model")  # doctest: +SKIP
    (PosixPath('exported/model/rankloss_tf_export.json'), {'seed': 3, 'train_fraction': 0.5, ...})
    """
    path = Path(model_path)
    record, export = path / RunDirectory.SPLIT, path / EXPORT_MARKER
    if (path / MARKER).is_file() and record.is_file():
        return record, _read_json(record)
    info = _read_json(export) if export.is_file() else None
    if isinstance(info, dict) and "split" in info:
        return export, info["split"]
    return (export, None) if export.is_file() and not isinstance(info, dict) else (None, None)


def split_changes(model_path, folder):
    """What changed in ``folder``'s split since the run or export ``model_path`` recorded it, in words.

    What a resume of the run (``record_split``) or ``evaluate`` would refuse,
    asked when a file of the folder disappears mid-run, to say whether
    running the same command again can resume.

    Returns:
        The changes (classes gone, new or moved); ``[]`` when the split is
        the recorded one, or when nothing (or nothing readable) is recorded.

    Raises:
        ValueError: the folder cannot be scanned (``datasets.scan_folder``).

    Example:
    >>> split_changes("runs/mine", "photos")  # doctest: +SKIP
    ['classes gone: owls']
    """
    _, recorded = recorded_split(model_path)
    if not isinstance(recorded, dict) or not {"seed", "train_fraction", "train", "test"} <= recorded.keys():
        return []
    return _changes_now(recorded, folder, fresh=True)  # not the scan this command started with


def _changes_now(recorded, folder, fresh=False):
    """``_changes`` between a recorded split and the one ``folder`` gives now with its seed and fraction."""
    index = datasets.scan_folder(folder, fresh=fresh)
    return _changes(recorded, folder_split(index, recorded["seed"], recorded["train_fraction"]))


def _read_json(path):
    """The JSON value of ``path``, None when it cannot be read."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError):
        return None


def evaluation_seed(model_path, dataset, seed=None):
    """The folder-split seed ``evaluate`` uses: the one a run or an export recorded for a folder dataset, else ``seed`` (or 0).

    Raises:
        ValueError: ``seed`` differs from the recorded seed, the folder's split
            changed since it was recorded, or the record is damaged.

    Example:
    >>> evaluation_seed("exported/model", "digits"), evaluation_seed("runs/mine", "folder:photos", 3)  # doctest: +SKIP
    (0, 3)
    >>> evaluation_seed("exported/model", "digits", seed=2)
    2
    """
    folder = datasets.folder_path(dataset)
    where, recorded = recorded_split(model_path) if folder is not None else (None, None)
    if where is None:
        return 0 if seed is None else seed
    if not isinstance(recorded, dict) or not {"seed", "train_fraction", "train", "test"} <= recorded.keys():
        raise ValueError(f"{where} is damaged: the model's split cannot be read. Received: --model={model_path}")
    if seed is not None and seed != recorded["seed"]:
        raise ValueError(
            f"The model {model_path} was trained with --seed {recorded['seed']}: its held-out classes are those of "
            f"that seed, and seed {seed} would score classes it trained on. Leave --seed out. Received: --seed={seed}")
    changes = _changes_now(recorded, folder)
    if changes:
        raise ValueError(
            f"The classes of {folder} changed since the model {model_path} recorded its split "
            f"({'; '.join(changes)}): its held-out classes cannot be scored on it. Received: --dataset={dataset}")
    return recorded["seed"]
