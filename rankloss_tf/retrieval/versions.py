"""An index directory: numbered versions, each a complete SavedModel, and a pointer replaced atomically.

Layout::

    INDEX/                      what load_index, `rankloss-tf search --index` and TF Serving
                                (--model_base_path=INDEX, which serves the highest version) take
      rankloss_tf_export.json   the pointer: {"format": "rankloss_tf", "kind": "index", "current": "2", ...}
      1/                        the previous version, kept until the next save (readers may still load it)
      2/                        the current version: one SavedModel (tf.saved_model.load("INDEX/2"))
                                with its own rankloss_tf_export.json (metric, size, image shape)

Why readers never see a mix: a version directory is written under a temporary
name inside INDEX and renamed to its number once complete, and is never
changed afterwards; the pointer is written to a temporary file and renamed
over the old one (``os.replace``, atomic on POSIX). A reader reads the pointer
once, then everything from that one version. A save deletes only versions
older than the previous one, and only directories with a number for a name
and this tool's version marker; a reader slow enough to lose its version
mid-load sees the pointer moved and reads again (``read_current``). Version
numbers only grow, so TF Serving's "latest" is the pointer's version.

A new INDEX is written whole under a temporary sibling and renamed into place
(``export.write_export``): it is complete or absent.
"""

import json
import os
import shutil
from pathlib import Path

from rankloss_tf.export import FORMAT, MARKER, VERSION, check_export_path, read_export_info, write_export
from rankloss_tf.io.atomic import remove_stale_temporaries, temporary_path, write_file
from rankloss_tf.loading import damage_errors, error_reason

__all__ = ["KIND", "check_index_path", "current_version", "publish", "read_current"]

KIND = "index"
READ_ATTEMPTS = 5  # a reader whose version vanished mid-load re-reads the pointer at most this often


def _marker_text(info):
    return json.dumps({"format": FORMAT, "version": VERSION, "kind": KIND, **info}, indent=2) + "\n"


def _write_version(directory, write, info):
    write(str(directory))
    (Path(directory) / MARKER).write_text(_marker_text(info))


def _is_version(directory):
    info = read_export_info(directory)
    return directory.name.isdigit() and info is not None and info.get("kind") == KIND and "current" not in info


def _versions(path):
    return sorted((d for d in Path(path).iterdir() if d.is_dir() and _is_version(d)), key=lambda d: int(d.name))


def _pointer(path):
    """The pointer of the index directory ``path`` (a dict), or None when it is none."""
    info = read_export_info(path)
    if info is None or info.get("kind") != KIND:
        return None
    return info


def current_version(path):
    """The SavedModel directory an index path stands for: ``INDEX/<current>``, or ``path`` itself.

    ``path`` itself when it is one version (``INDEX/<n>``), or an index
    written as a single SavedModel.

    Raises:
        ValueError: ``path`` is not an index of this tool, or its pointer
            names no version.

    Example:
    >>> current_version("/nonexistent")
    Traceback (most recent call last):
    ...
    ValueError: Not an index of rankloss_tf (no rankloss_tf_export.json of kind 'index'). Received: path=/nonexistent
    """
    info = _pointer(path)
    if info is None:
        raise ValueError(f"Not an index of rankloss_tf (no {MARKER} of kind {KIND!r}). Received: path={path}")
    if "current" not in info:
        return Path(path)
    current = str(info["current"])
    if not current.isdigit():
        raise ValueError(f"The index pointer names no version (damaged {MARKER}). Received: path={path}")
    return Path(path) / current


def read_current(path, read):
    """``read(version directory)`` of the current version, read again when a save replaced it meanwhile.

    Args:
        path: an index directory (or one version).
        read: callable reading one version directory; on a damaged or
            vanished version it raises ``ValueError`` or one of
            ``loading.damage_errors()``.

    Returns:
        What ``read`` returns.

    Raises:
        ValueError: not an index, or a damaged current version (one line
            naming the path and the first line of the reason).

    Example:
    >>> read_current("indexes/photos", lambda version: version.name)  # doctest: +SKIP
    '4'
    """
    for _ in range(READ_ATTEMPTS):
        seen = _pointer(path)
        version = current_version(path)
        try:
            return read(version)
        except (ValueError, *damage_errors()) as error:
            if _pointer(path) == seen:  # not replaced meanwhile: the files are damaged
                raise ValueError(f"The index is damaged or incomplete ({error_reason(error)}); rebuild it with "
                                 f"`rankloss-tf index`. Received: path={path}") from None
    raise ValueError(f"The index was replaced {READ_ATTEMPTS} times while it was being read. Received: path={path}")


def _write_pointer(path, info):
    write_file(Path(path) / MARKER, _marker_text(info))  # a temporary sibling renamed over the old pointer


def _add_version(path, write, info, previous):
    """Writes a new version into the existing index ``path``, points at it, prunes; returns its directory."""
    remove_stale_temporaries(path)
    temporary = temporary_path(Path(path) / "version")
    try:
        _write_version(temporary, write, info)
        # Past every numbered entry, ours or not: TF Serving serves the highest number.
        number = max([int(previous)] + [int(d.name) for d in Path(path).iterdir() if d.name.isdigit()]) + 1
        while True:
            try:
                os.rename(temporary, Path(path) / str(number))  # fails if the number is taken
                break
            except OSError:
                if not (Path(path) / str(number)).exists():
                    raise
                number += 1
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    _write_pointer(path, {**info, "current": str(number)})
    for old in _versions(path):
        if old.name not in (str(number), str(previous)):
            shutil.rmtree(old, ignore_errors=True)
    return Path(path) / str(number)


def check_index_path(path, overwrite=False, protected=(), role="The index path"):
    """Checks that an index may be written at ``path``: ``(path, its pointer or None)``.

    Raises:
        ValueError: see ``export.check_export_path``; or ``path`` is one
            version of an index, or a SavedModel that is not an index
            directory, which are never replaced.

    Example:
    >>> check_index_path("/tmp/no_such_index_yet")
    (PosixPath('/tmp/no_such_index_yet'), None)
    """
    path = check_export_path(path, overwrite, protected, role=role)
    found = None
    if path.exists():
        found = _pointer(path)
        if found is None or not str(found.get("current", "")).isdigit():
            raise ValueError(
                f"{role} is one SavedModel (a version inside an index, or an index written before "
                f"versions); it is never replaced: save to a new path or to the index directory. Received: path={path}"
            )
    return path, found


def publish(path, write, info, overwrite=False, protected=()):
    """Writes one more version of the index at ``path`` and makes it current.

    Args:
        path: the index directory (new, or an index of this tool).
        write: callable writing the SavedModel into the directory it is given.
        info: JSON-serialisable dict for the version's marker (and the pointer).
        overwrite: replace the current version of an existing index.
        protected: see ``export.check_export_path``.

    Returns:
        ``Path`` of the new version's SavedModel (``INDEX/<n>``).

    Raises:
        ValueError: see ``export.check_export_path``; or ``path`` is one
            version of an index, or an index in a single SavedModel (written
            before versions), which are never replaced; or the files cannot be
            written (disk full, read-only: one line, the previous index unchanged).

    Example:
    >>> def write(directory):
    ...     tf.saved_model.save(tf.Module(), directory)
    >>> publish("/tmp/index", write, {"metric": "cosine"}, overwrite=True)  # doctest: +SKIP
    PosixPath('/tmp/index/2')
    """
    path, found = check_index_path(path, overwrite, protected)
    try:
        if path.exists():
            return _add_version(path, write, info, found["current"])
        write_export(path, lambda directory: _write_version(Path(directory) / "1", write, info),
                     {**info, "current": "1"}, overwrite, protected)
    except (OSError, *damage_errors()) as error:  # disk full, read-only: the previous index is unchanged
        raise ValueError(f"Cannot write the index ({error_reason(error)}); a previous index there is unchanged. "
                         f"Received: path={path}") from None
    return path / "1"
