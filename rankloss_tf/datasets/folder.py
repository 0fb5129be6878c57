"""A folder with one sub-folder of images per class, split into disjoint train / test classes.

``scan_folder(path)`` lists the class sub-folders and their images and decodes
every image once, so that a file that cannot be read is named and left out
before training starts, never met mid-epoch. It is the ONE scanner: training,
evaluation and ``rankloss-tf index --gallery folder:`` all read a folder
through it. Hidden entries (``.git/``, ``.ipynb_checkpoints/``) are not data;
broken links, directories named like images and formats TensorFlow does not
decode (``.tiff``, ...) are left out and listed; file names that are not UTF-8
are read like any other. Linked folders are followed at any depth (a class
folder, or a folder inside one); a link to a folder above it, which would loop,
is left out and listed. The scan is cached per folder (keyed by its
fingerprint: the folder's real path, every file's path inside it and
``rankloss_tf.references.file_stamp``, and the real path of a file reached
through a link inside it; the same for the folder reached through a symbolic
link or a relative path) under ``$RANKLOSS_TF_CACHE/folders`` (default
``~/.cache/rankloss_tf/folders``).

Split: the class folders, sorted by name, are shuffled with ``seed``; the
first ``round(train_fraction x C)`` are "train", the rest "test" (held-out
classes, the zero-shot protocol). The same folder, fraction and seed always give
the same split. Images are decoded to RGB (grey images are repeated over the
three channels, an alpha channel is dropped, a GIF gives its first frame) and,
with ``image_size``, resized (antialiased bilinear, aspect ratio not kept).
"""

import concurrent.futures
import contextlib
import contextvars
import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from rankloss_tf.cache import default_cache_dir
from rankloss_tf.io.atomic import write_file
from rankloss_tf.io.text import printable, reason
from rankloss_tf.references import file_stamp, real_path

logger = logging.getLogger(__name__)

__all__ = [
    "FOLDER_PREFIX", "FolderIndex", "IMAGE_SUFFIXES", "folder_path", "one_scan", "printable", "scan_folder",
    "split_classes",
]

FOLDER_PREFIX = "folder:"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")  # what TensorFlow's decode_image reads
# Image files TensorFlow does not decode: listed as left out, never silently ignored.
UNREAD_SUFFIXES = (".tif", ".tiff", ".heic", ".heif", ".avif", ".jp2", ".ppm", ".pgm", ".psd", ".raw")
# The innermost ``one_scan`` scope (a ``_Scope``), or None outside one. A context variable: each thread (and
# asyncio task) has its own scopes.
_SCANS = contextvars.ContextVar("rankloss_tf_folder_scans", default=None)


def folder_path(name):
    """The PATH of a ``"folder:PATH"`` dataset name, or None for any other name (the ONE parser of "folder:").

    Raises:
        ValueError: "folder:" without a path (it would read the current directory).

    Example:
    >>> folder_path("folder:~/photos"), folder_path("omniglot")
    ('~/photos', None)
    """
    if not (isinstance(name, str) and name.startswith(FOLDER_PREFIX)):
        return None
    path = name[len(FOLDER_PREFIX):]
    if not path.strip():
        raise ValueError("folder: needs the path of a folder with one sub-folder of images per class, e.g. "
                         f"folder:data/photos (use folder:. for the current directory). Received: {name!r}")
    return path


@dataclasses.dataclass
class FolderIndex:
    """The readable images of a class folder.

    Attributes:
        root: the folder.
        classes: class (sub-folder) names, sorted; a label is an index here.
        files: ``{class name: [image paths]}``, readable images only, sorted.
        unreadable: ``[(path, reason)]`` of the files left out (paths as
            ``os.listdir`` gives them: ``printable`` them for messages).
        fingerprint: the scan's key: a hash of the folder's real path and every
            file's path inside it and ``file_stamp`` (and real path, for a file reached
            through a link inside the folder; "" when not scanned); any change to a
            file, or to where a link inside points, changes it, so what is computed
            from the files can be cached by it (``References.key``); how the folder is
            reached (a link, a relative path) does not.

    Example:
    >>> FolderIndex("photos", ["cats"], {"cats": ["photos/cats/a.jpg"]}, []).classes
    ['cats']
    """

    root: str
    classes: list
    files: dict
    unreadable: list
    fingerprint: str = ""


def _listing_key(root, listing):
    """The scan's key of a folder: a hash of its real path and every file's path inside it and stamp (and real
    path, for a file reached through a link)."""
    return hashlib.sha256(json.dumps([real_path(root), listing]).encode()).hexdigest()[:16]


def _cache_path(root, listing):
    return default_cache_dir("folders") / f"{_listing_key(root, listing)}.json"


def _problem(path):
    """Why ``path`` cannot be decoded as an image, or None when it can."""
    try:  # as bytes: a file name that is not UTF-8 is read like any other
        image = tf.io.decode_image(tf.io.read_file(os.fsencode(path)), channels=3, expand_animations=False)
    except (tf.errors.OpError, ValueError) as error:
        return reason(error)  # "Unknown image file format. ...", without TensorFlow's graph and op names
    if min(image.shape[:2]) < 1:
        return "empty image"
    return None


CYCLE = "a link to a folder that holds it (a cycle): not followed"


def _holds(real, chain):
    """Whether the folder of real path ``real`` is one of the folders ``chain`` (real paths) or holds one."""
    inside = real if real.endswith(os.sep) else real + os.sep
    return any(folder == real or folder.startswith(inside) for folder in chain)


def _walk(class_dir, chain, problems):
    """``[(entry, real path or None)]`` under ``class_dir`` at any depth, sorted; the real path of an entry reached
    through a symbolic link (itself or a folder above it), else None.

    Hidden entries are not data, not even looked into. Linked folders are followed, as a class folder is; a link
    to a folder of ``chain`` (the real paths of the folders above, the root first) or to one holding it would
    loop: it is left out, with a reason in ``problems``, as is a folder that cannot be listed.
    """
    found, todo = [], [(class_dir, chain, class_dir.is_symlink())]
    while todo:
        folder, chain, linked = todo.pop()
        try:
            with os.scandir(folder) as listing:
                children = list(listing)
        except OSError as error:
            problems[str(folder)] = f"the folder cannot be listed ({error.strerror or error})"
            continue
        for child in children:
            if child.name.startswith("."):  # .git/, .ipynb_checkpoints/, .DS_Store
                continue
            entry, link = folder / child.name, child.is_symlink()
            real = real_path(entry) if link else os.path.join(chain[-1], child.name)
            if entry.is_dir() if link else child.is_dir(follow_symlinks=False):
                if link and _holds(real, chain):
                    problems[str(entry)] = CYCLE
                    continue
                todo.append((entry, chain + (real,), linked or link))
            found.append((entry, real if linked or link else None))
    return sorted(found, key=lambda pair: pair[0])


def _list_candidates(root):
    """``({class: [image files]}, {path: reason}, {image file: real path})``: the images to decode, what is left
    out by its name, and the real paths of the images reached through a symbolic link.

    Hidden entries (``.git/``, ``.ipynb_checkpoints/``, ``.DS_Store``) at any
    depth are not data. Linked folders are followed, at any depth; a link to a
    folder above it (a cycle) is left out with a reason. An image name that is
    not a readable file (a broken link, a directory named ``x.png``) and image
    formats TensorFlow does not decode (``UNREAD_SUFFIXES``) are left out with a
    reason.
    """
    candidates, problems, reals, chain = {}, {}, {}, (real_path(root),)
    for class_dir in sorted(entry for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith(".")):
        if _holds(real_path(class_dir), chain):  # a link to the root, or to a folder holding it
            problems[str(class_dir)] = CYCLE
            continue
        images = []
        for entry, real in _walk(class_dir, chain + (real_path(class_dir),), problems):
            suffix = entry.suffix.lower()
            if suffix not in IMAGE_SUFFIXES + UNREAD_SUFFIXES:
                continue
            if suffix in UNREAD_SUFFIXES:
                problems[str(entry)] = f"{suffix} images are not read (JPEG, PNG, BMP, GIF, WebP are): convert it"
            elif not entry.is_file():
                problems[str(entry)] = "not a readable file (a directory, a broken link or a special file)"
            else:
                images.append(str(entry))
                if real is not None:
                    reals[str(entry)] = real
        if images:
            candidates[class_dir.name] = images
    return candidates, problems, reals


def _decode_problems(root, listing):
    """``{path inside root: reason}`` of the files that do not decode; cached by the folder's fingerprint."""
    cache = _cache_path(root, listing)
    if cache.is_file():
        try:
            return dict(json.loads(cache.read_text()))
        except (OSError, ValueError, TypeError) as error:
            logger.warning("Recomputing the damaged folder-scan cache %s (%s)", cache, error)
    names = [name for name, *_ in listing]
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        reasons = pool.map(_problem, [str(root / name) for name in names])
        problems = {name: why for name, why in zip(names, reasons) if why}
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_file(cache, json.dumps(sorted(problems.items())))  # ASCII JSON: any file name fits
    except OSError as error:  # a cache that cannot be written only costs the next scan its time
        logger.warning("Cannot write the folder-scan cache %s (%s); set RANKLOSS_TF_CACHE to a writable folder",
                       cache, error)
    return problems


@dataclasses.dataclass(eq=False)
class _Scope:
    """One ``one_scan`` scope: ``scans`` ({real path of a folder: its FolderIndex}, shared with the scopes it
    nests in), the scope it nests in, and whether it is still open."""

    scans: dict
    outer: "_Scope" = None
    open: bool = True


def _open_scope():
    """The innermost open scope of this context, or None: a scope left behind closed (exited elsewhere) is not."""
    scope = _SCANS.get()
    while scope is not None and not scope.open:
        scope = scope.outer
    return scope


@contextlib.contextmanager
def one_scan():
    """A scope (one command, in one thread) in which each folder is scanned once.

    ``scan_folder`` of a folder scanned already in the scope returns that scan's ``FolderIndex`` (the recipe's
    sample, the train and test splits and the recorded split of one run read the same files, stamped once).
    Scopes nest: an inner one reuses the outer's scans. Each thread has its own scopes (a context variable).

    A scope belongs to the code that opens it: do not hold one across a ``yield``. While a generator is suspended
    inside a scope, its caller sees that scope (its scans are reused: a changed folder is not seen anew); once the
    generator finishes, even in another thread or context, the scope is closed and never reused.

    Example:
    >>> with one_scan():  # doctest: +SKIP
    ...     scan_folder("photos") is scan_folder("./photos/")
    True
    """
    outer = _open_scope()
    scope = _Scope(outer.scans if outer is not None else {}, outer)
    token = _SCANS.set(scope)
    try:
        yield
    finally:
        scope.open = False
        try:
            _SCANS.reset(token)
        except ValueError:  # "Token was created in a different Context": exited elsewhere than it was entered
            if _SCANS.get() is scope:  # this context holds it: back to the scope it had on entering
                _SCANS.set(outer)


def scan_folder(path, fresh=False):
    """Lists and checks the images of a class folder.

    Args:
        path: a folder with one sub-folder per class (images may sit deeper).
        fresh: scan the folder as it is now even within ``one_scan`` (whose
            scan is kept for the rest of the scope), e.g. after a file
            disappeared mid-run.

    Returns:
        A ``FolderIndex``.

    Within ``one_scan`` a folder is scanned once, its ``FolderIndex`` shared.

    Raises:
        ValueError: a missing folder, or no class sub-folder with a readable image.

    Example:
    >>> index = scan_folder("photos")  # doctest: +SKIP
    >>> index.classes, index.unreadable  # doctest: +SKIP
    (['cats', 'dogs'], [('photos/dogs/broken.jpg', 'Unknown image file format...')])
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise ValueError(f"The folder does not exist. Received: {printable(path)!r}")
    scope = _open_scope()
    if scope is None or fresh:
        return _scan(root, path)
    if real_path(root) not in scope.scans:
        scope.scans[real_path(root)] = _scan(root, path)
    return scope.scans[real_path(root)]


def _scan(root, path):
    """``scan_folder`` of the existing folder ``root`` (``path`` as the user gave it, for messages)."""
    candidates, problems, reals = _list_candidates(root)
    # Paths inside the folder: its key is the same however the folder is reached (a link, a relative path); an
    # image reached through a link inside it is keyed by its real path too (the link may point elsewhere tomorrow).
    listing = [(str(Path(f).relative_to(root)), *file_stamp(f), *([reals[f]] if f in reals else []))
               for images in candidates.values() for f in images]
    problems.update((str(root / name), why) for name, why in _decode_problems(root, listing).items())
    files = {name: [f for f in images if f not in problems] for name, images in candidates.items()}
    files = {name: images for name, images in files.items() if images}
    if not files:
        raise ValueError(
            f"The folder holds no class sub-folder with readable images ({', '.join(IMAGE_SUFFIXES)}). "
            f"Received: {printable(path)!r}"
        )
    return FolderIndex(root=str(root), classes=list(files), files=files, unreadable=sorted(problems.items()),
                       fingerprint=_listing_key(root, listing))


def split_classes(index, split, train_fraction=0.5, seed=0):
    """The labels (class indices of ``index``) of one split, sorted; see the module docstring.

    Raises:
        ValueError: a fraction outside (0, 1), or a split with fewer than 2 classes.

    Example:
    >>> index = FolderIndex("photos", ["a", "b", "c", "d"], {}, [])
    >>> split_classes(index, "train", seed=0).tolist(), split_classes(index, "test", seed=0).tolist()
    ([0, 2], [1, 3])
    """
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"`train_fraction` must lie in (0, 1). Received: train_fraction={train_fraction!r}")
    order = np.random.default_rng(seed).permutation(len(index.classes))
    num_train = int(round(train_fraction * len(index.classes)))
    chosen = np.sort(order[:num_train] if split == "train" else order[num_train:])
    if chosen.size < 2:
        raise ValueError(
            f"The {split!r} split needs at least 2 classes. Received: {chosen.size} of {len(index.classes)} "
            f"classes with train_fraction={train_fraction} in {index.root!r}"
        )
    return chosen
