"""The run directory: what a training run owns on disk, its lock, its configuration and its phase.

A run directory holds only files this package wrote::

    out_dir/
      .rankloss_tf_run     the marker: this is a run of rankloss_tf (format, version, run id)
      run.json             the resolved configuration the run was started with
      split.json           a folder dataset's split by class name (seed, fraction, train / test classes)
      state.json           phase ("fitting", "fitted", "evaluated", "finished") and wall time so far
      .lock                held (flock) by the process writing the run
      checkpoints/         epoch-NNNN.weights.h5 while fitting (atomic; removed once fitted)
      history.csv          one row per finished epoch
      model.keras          the trained model (written once fitted)
      metrics.json         test metrics, configuration and timings
      unreadable_files.txt files of a folder dataset that could not be decoded (if any)
      plots/               tsne.png, recall_at_k.png, retrieval_gallery.png

Rules: a directory is a run only by its marker ``.rankloss_tf_run``, which only
this package writes (a ``run.json`` proves nothing: other tools write one); a
directory that is neither absent, empty nor marked is refused and nothing in it
is touched (a run of rankloss_tf 0.1, written before the marker, is refused
too: train it again in a new ``--out``); ``--out`` under a file or on a
read-only place is refused before any work; a second writer is refused while
the lock is held (a dead process's lock is released by the operating system, so
stale locks cannot block); a configuration that differs from the recorded one
in anything that changes the result is refused with the list of differences
(paths compare resolved: ``runs/a/``, ``runs/a`` and a symlink to it are one
run); every file is written through ``rankloss_tf.io.atomic``, whose
temporaries (and only those) are removed when a killed attempt left them.
"""

import contextlib
import dataclasses
import fcntl
import json
import os
import secrets
from pathlib import Path

from rankloss_tf.datasets import FOLDER_PREFIX, folder_path
from rankloss_tf.io.atomic import check_writable, is_temporary, remove_stale_temporaries, write_file
from rankloss_tf.loading import MODEL_FILE

__all__ = ["MARKER", "PHASES", "RunDirectory"]

PHASES = ("fitting", "fitted", "evaluated", "finished")
MARKER = ".rankloss_tf_run"
FORMAT, VERSION = "rankloss_tf run", 1


def _resolved_paths(config):
    """``config`` with its data paths resolved (``data/x/``, ``data/x`` and a symlink to it are one path)."""
    def resolve(path):
        return None if path is None else os.path.realpath(os.path.expanduser(path))

    dataset = config.dataset
    if folder_path(dataset) is not None:
        dataset = FOLDER_PREFIX + resolve(folder_path(dataset))
    return dataclasses.replace(config, dataset=dataset, data_dir=resolve(config.data_dir))


class RunDirectory:
    """One training run's directory (see the module docstring for its layout and rules).

    Args:
        path: the run directory (``TrainConfig.out_dir``).

    Raises:
        ValueError: ``path`` is a file, lies under a file, cannot be written, or
            is a non-empty directory without this package's run marker.

    Example:
    >>> run = RunDirectory("/tmp/rankloss_doc_run")  # doctest: +SKIP
    >>> with run.locked():  # doctest: +SKIP
    ...     run.phase
    """

    CONFIG = "run.json"
    SPLIT = "split.json"
    STATE = "state.json"
    LOCK = ".lock"
    MODEL = MODEL_FILE
    METRICS = "metrics.json"
    HISTORY = "history.csv"
    CHECKPOINTS = "checkpoints"
    UNREADABLE = "unreadable_files.txt"
    PLOTS = "plots"

    def __init__(self, path):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"The run directory --out is an existing file. Received: out_dir={self.path}")
        check_writable(self.path, "--out")
        entries = {p.name for p in self.path.iterdir() if not is_temporary(p.name)} if self.path.is_dir() else set()
        if entries and MARKER not in entries:
            raise ValueError(self._foreign(entries))
        if MARKER in entries:
            self._check_marker()

    def _foreign(self, entries):
        """The refusal of a directory without the marker (a run of rankloss_tf 0.1 is named as such)."""
        if {self.CONFIG, self.STATE} <= entries:
            return (f"The run directory --out holds a run written by rankloss_tf 0.1 (no {MARKER} marker): it is "
                    "not continued or changed. Its model.keras can still be evaluated or exported; to train again, "
                    f"pass a new --out. Received: out_dir={self.path}")
        return ("The run directory --out holds files that are not a rankloss-tf run (no " + MARKER + " marker); "
                "choose an empty or new directory (nothing there is touched or overwritten). "
                f"Received: out_dir={self.path}")

    def _check_marker(self):
        try:
            marker = json.loads((self.path / MARKER).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            marker = None
        if not isinstance(marker, dict) or marker.get("format") != FORMAT:
            raise self.damaged(f"{MARKER} is not a marker of rankloss_tf")
        if marker.get("version", 0) > VERSION:
            raise ValueError("The run directory --out was written by a newer rankloss_tf; upgrade to continue it. "
                             f"Received: out_dir={self.path}, version={marker.get('version')}")

    def damaged(self, what):
        """The ``ValueError`` of a damaged run directory: what is wrong and the way out."""
        return ValueError(f"The run directory is damaged: {what}. Restore it, or train afresh in another --out "
                          f"(this one is left as it is). Received: out_dir={self.path}")

    def __truediv__(self, name):
        return self.path / name

    @contextlib.contextmanager
    def locked(self):
        """Marks the run as ours (once) and holds its lock for the ``with`` block; refuses a second writer.

        A run that has not reached its first phase when the block fails (a user error found late, Ctrl-C) is
        removed: the files it wrote by name, and the directory when this call created it and it is empty.
        """
        created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        if not (self.path / MARKER).is_file():
            marker = {"format": FORMAT, "version": VERSION, "run_id": secrets.token_hex(8)}
            with contextlib.suppress(FileExistsError):  # another process marked it first: one run all the same
                write_file(self.path / MARKER, json.dumps(marker, indent=2) + "\n", exclusive=True)
        with open(self.path / self.LOCK, "a+", encoding="utf-8") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                owner = handle.read().strip() or "another process"
                raise ValueError(
                    f"Another training (pid {owner}) is writing to this run directory; wait for it or use "
                    f"another --out. Received: out_dir={self.path}"
                ) from None
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            for directory in (self.path, self.path / self.CHECKPOINTS):
                remove_stale_temporaries(directory)
            try:
                yield self
            except BaseException:
                if self._not_started():
                    self._remove_unstarted(created)
                raise
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _not_started(self):
        """True when the run has reached no phase (a damaged state counts as started: it is left as it is)."""
        try:
            return self.phase is None
        except ValueError:
            return False

    def _remove_unstarted(self, created):
        """Removes what a run that never reached its first phase wrote (by name), the marker first."""
        for name in (MARKER, self.CONFIG, self.SPLIT, self.UNREADABLE, self.STATE, self.HISTORY, self.LOCK):
            with contextlib.suppress(FileNotFoundError):
                (self.path / name).unlink()
        if created:
            with contextlib.suppress(OSError):  # not empty: something else is there now, and stays
                self.path.rmdir()

    @property
    def run_id(self):
        """The random id the marker gives this run (None before ``locked`` marks a new run)."""
        path = self.path / MARKER
        return json.loads(path.read_text(encoding="utf-8")).get("run_id") if path.is_file() else None

    def start(self, config):
        """Records ``config`` in a new run (or one that reached no phase yet), or checks it against the recorded one.

        Raises:
            ValueError: the run was started with a configuration that differs in
                a field that changes the result, listing each difference; a
                damaged ``run.json``.
        """
        recorded = self.read_json(self.CONFIG)
        if recorded is None and self.phase is not None:
            raise self.damaged(f"{self.CONFIG} is missing")
        if self.phase is None:  # nothing was computed yet (an attempt killed early): this command's configuration
            self.write_json(self.CONFIG, dataclasses.asdict(config))
            return
        if not isinstance(recorded, dict):
            raise self.damaged(f"{self.CONFIG} holds a {type(recorded).__name__}, not a configuration")
        known = {f.name for f in dataclasses.fields(config)}
        # A frozen-features run recorded before pooling was a choice pooled by average.
        before_pooling = {"pooling": "avg", "gem_power": None} if config.pooling is not None else {}
        previous = dataclasses.replace(config, **{**before_pooling, **{k: v for k, v in recorded.items() if k in known}})
        differences = _resolved_paths(previous).results_differ(_resolved_paths(config))
        if differences:
            lines = "; ".join(f"{name}: {old!r} -> {new!r}" for name, old, new in differences)
            raise ValueError(
                f"The run in {self.path} was started with another configuration ({lines}). Re-run the "
                "original command to resume it, or pass another --out (or delete this directory) to start "
                f"afresh. Received: out_dir={self.path}"
            )

    @property
    def phase(self):
        """The last phase reached: None (nothing yet) or one of ``PHASES``."""
        return self.state.get("phase")

    @property
    def seconds(self):
        """Wall time recorded by all attempts of this run so far (seconds)."""
        return self.state.get("seconds", 0.0)

    def reached(self, phase):
        """True when the run has reached ``phase`` (or a later one)."""
        current = self.phase
        return current is not None and PHASES.index(current) >= PHASES.index(phase)

    @property
    def state(self):
        """The recorded state: ``{"phase", "seconds", ...}`` (empty for a new run).

        Raises:
            ValueError: a damaged ``state.json`` (not an object, an unknown phase).
        """
        state = self.read_json(self.STATE) or {}
        if not isinstance(state, dict):
            raise self.damaged(f"{self.STATE} holds a {type(state).__name__}, not a state")
        if state.get("phase") not in (None, *PHASES):
            raise self.damaged(f"{self.STATE} names an unknown phase {state['phase']!r} (known: {', '.join(PHASES)})")
        if not isinstance(state.get("seconds", 0.0), (int, float)):
            raise self.damaged(f"{self.STATE} holds seconds={state['seconds']!r}, not a number")
        return state

    def advance(self, phase, seconds, **fields):
        """Records that ``phase`` is reached, the run's total wall time so far and other ``fields``."""
        if phase not in PHASES:
            raise ValueError(f"Unknown phase; known: {PHASES}. Received: phase={phase!r}")
        self.write_json(self.STATE, {**self.state, **fields, "phase": phase, "seconds": seconds})

    def read_json(self, name):
        """The parsed JSON file ``name`` of the run, or None when absent."""
        path = self.path / name
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, OSError) as error:
            raise self.damaged(f"{path} cannot be read as JSON ({error})") from None

    def require_json(self, name, what):
        """The JSON object ``name`` that the run's phase says was written, with the key ``what``.

        Raises:
            ValueError: the file is missing or lacks ``what`` (a damaged run directory).
        """
        value = self.read_json(name)
        if not isinstance(value, dict) or what not in value:
            found = "is missing" if value is None else f"holds no {what!r}"
            raise self.damaged(f"the run reached phase {self.phase!r} but {name} {found}")
        return value[what]

    def write_json(self, name, value):
        """Writes ``value`` as the JSON file ``name`` of the run, atomically."""
        write_file(self.path / name, json.dumps(value, indent=2) + "\n")
