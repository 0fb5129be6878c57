"""The one atomic writer of this package: files, directories, their temporary names, writable paths.

Every file or directory this package writes goes to a temporary sibling first
and is renamed into place, so a reader (or a process killed mid-write) sees the
old content or the new one, never a mix:

- ``write_file(path, content)``: text, bytes, or a callback that writes the
  temporary path it is given (``np.savez``, ``model.save_weights``,
  ``model.save``); synced, then renamed over ``path``.
- ``write_directory(path, write, marker)``: ``write(temporary_dir)``, a marker
  file, then a rename (an existing directory is swapped out only when asked).

One temporary-name scheme, ``.rankloss_tf-{tmp|old}-{pid}-{8 hex}-{name}``: the
token ``rankloss_tf`` and the writer's process id are in the name, and the
target's name ends it (so suffixes that writers check, ``.keras`` or
``.weights.h5``, are kept). ``remove_stale_temporaries`` deletes only entries
named by this scheme whose writing process is dead: nothing else, however
temporary its name looks (``.notes.tmp-1`` is someone else's).
"""

import errno
import os
import re
import secrets
import shutil
from pathlib import Path

__all__ = ["TOKEN", "check_writable", "is_temporary", "remove_stale_temporaries", "temporary_path",
           "write_directory", "write_file"]

TOKEN = "rankloss_tf"
_TEMPORARY = re.compile(rf"^\.{TOKEN}-(tmp|old)-(\d+)-[0-9a-f]{{8}}-(.+)$")


def temporary_path(path, kind="tmp"):
    """The temporary sibling of ``path`` this process writes (``kind`` "tmp", or "old" for a swapped-out one).

    Example:
    >>> name = temporary_path("/tmp/run/model.keras").name
    >>> name.startswith(".rankloss_tf-tmp-") and name.endswith("-model.keras"), is_temporary(name)
    (True, True)
    """
    path = Path(path)
    return path.with_name(f".{TOKEN}-{kind}-{os.getpid()}-{secrets.token_hex(4)}-{path.name}")


def is_temporary(name, target=None):
    """True when ``name`` is a temporary of this package's scheme (of the file ``target``, when given).

    Example:
    >>> is_temporary(".rankloss_tf-tmp-12-0a1b2c3d-run.json"), is_temporary(".notes.tmp-1")
    (True, False)
    """
    match = _TEMPORARY.match(name)
    return bool(match) and (target is None or match.group(3) == target)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(directory, target=None):
    """Deletes this scheme's temporaries in ``directory`` whose writing process is dead; nothing else.

    Args:
        directory: the folder to clean (absent: nothing to do).
        target: only the temporaries of this file or directory name.

    Returns:
        The names removed, sorted.

    Example:
    >>> remove_stale_temporaries("/tmp/no_such_rankloss_dir")
    []
    """
    directory, removed = Path(directory), []
    if not directory.is_dir():
        return removed
    for entry in directory.iterdir():
        match = _TEMPORARY.match(entry.name)
        if match and (target is None or match.group(3) == target) and not _alive(int(match.group(2))):
            _remove(entry)
            removed.append(entry.name)
    return sorted(removed)


def _remove(path):
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _sync(path):
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def write_file(path, content, exclusive=False):
    """Writes a file atomically: a temporary sibling, synced, renamed over ``path``.

    Args:
        path: the file; its directory is created when needed.
        content: ``str`` (written as UTF-8), ``bytes``, or a callable that
            writes the temporary path (a ``str`` ending in ``path``'s name) it is given.
        exclusive: refuse to replace an existing ``path`` (``FileExistsError``),
            atomically even against another process.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        OSError: the write failed (a full disk, a read-only directory), naming
            ``path``; ``path`` is untouched and no temporary is left.

    Example:
    >>> write_file("/tmp/rankloss_atomic_example.txt", "done").read_text()
    'done'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(path)
    try:
        if isinstance(content, str):
            temporary.write_text(content, encoding="utf-8")
        elif isinstance(content, bytes):
            temporary.write_bytes(content)
        else:
            content(str(temporary))
        _sync(temporary)
        if exclusive:
            os.link(temporary, path)
        else:
            os.replace(temporary, path)
    except OSError as error:
        if error.filename in (None, str(temporary)):
            error.filename = str(path)  # name the file the user knows, not its temporary
        raise
    finally:
        _remove(temporary)
    return path


def write_directory(path, write, marker=None, replace=False):
    """Writes a directory atomically: ``write(temporary_dir)``, the marker, then a rename.

    Args:
        path: the directory; its parent is created when needed.
        write: callable writing the directory's content into the path (``str``) it
            is given (it may create it, or find it created).
        marker: ``(file name, text)`` written into the directory last, or None.
        replace: swap out an existing directory at ``path`` (else ``FileExistsError``).

    Returns:
        ``path`` as a ``Path``.

    Example:
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> path = write_directory(root / "out", lambda d: Path(d, "a.txt").write_text("a"), ("marker.json", "{}"))
    >>> sorted(p.name for p in path.iterdir())
    ['a.txt', 'marker.json']
    """
    path = Path(path)
    if path.exists() and not replace:
        raise FileExistsError(errno.EEXIST, "The directory exists and is not replaced", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(path)
    try:
        temporary.mkdir()
        write(str(temporary))
        if marker is not None:
            (temporary / marker[0]).write_text(marker[1], encoding="utf-8")
        if path.exists():
            previous = temporary_path(path, "old")
            os.replace(path, previous)
            os.replace(temporary, path)
            _remove(previous)
        else:
            os.replace(temporary, path)
    finally:
        _remove(temporary)
    return path


def check_writable(path, role, hint=""):
    """Refuses, before any work, a path that cannot be written: under a file, or on a read-only place.

    Args:
        path: a file or directory to be written (it need not exist yet).
        role: how to name ``path`` in the message (e.g. "--out").
        hint: a sentence added to the message (e.g. how to move a cache).

    Returns:
        ``path`` as a ``Path``.

    Raises:
        ValueError: the nearest existing folder of ``path`` is a file, or cannot
            be written (read-only file system, permissions); ``path`` or a
            folder above it is a symbolic link to nothing.

    Example:
    >>> check_writable("/dev/null/run", "--out")
    Traceback (most recent call last):
    ...
    ValueError: --out lies under a file (/dev/null), not a folder. Received: --out=/dev/null/run
    """
    path = Path(path).expanduser()
    extra = f" {hint}" if hint else ""
    for place in (path, *path.absolute().parents):
        if place.exists():
            existing = place
            break
        if place.is_symlink():
            raise ValueError(f"{role} is a symbolic link to a place that does not exist ({place} -> "
                             f"{os.readlink(place)}): create its target or pass another path.{extra} "
                             f"Received: {role}={path}")
    if not existing.is_dir():
        raise ValueError(f"{role} lies under a file ({existing}), not a folder.{extra} Received: {role}={path}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{role} cannot be written: {existing} is not writable (read-only file system or no "
                         f"permission).{extra} Received: {role}={path}")
    return path
