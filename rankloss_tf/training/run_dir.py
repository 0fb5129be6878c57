"""The run directory: what a training run owns on disk, its lock, its configuration and its phase.

A run directory holds only files this package wrote::

    out_dir/
      run.json             the resolved configuration the run was started with
      state.json           phase ("fitting", "fitted", "evaluated", "finished") and wall time so far
      .lock                held (flock) by the process writing the run
      checkpoints/         epoch-NNNN.weights.h5 while fitting (atomic; removed once fitted)
      history.csv          one row per finished epoch
      model.keras          the trained model (written once fitted)
      metrics.json         test metrics, configuration and timings
      unreadable_files.txt files of a folder dataset that could not be decoded (if any)
      plots/               tsne.png, recall_at_k.png, retrieval_gallery.png

Rules: a directory that is neither absent, empty nor a run directory is
refused; a second writer is refused while the lock is held (a dead process's
lock is released by the operating system, so stale locks cannot block); a
configuration that differs from the recorded one in anything that changes the
result is refused with the list of differences; every file is written to a
temporary name and renamed into place.
"""

import contextlib
import dataclasses
import fcntl
import json
import os
from pathlib import Path

__all__ = ["PHASES", "RunDirectory", "atomic_write_text"]

PHASES = ("fitting", "fitted", "evaluated", "finished")


def atomic_write_text(path, text):
    """Writes ``text`` to ``path`` through a temporary sibling and a rename (never half written).

    Example:
    >>> atomic_write_text("/tmp/rankloss_atomic_example.txt", "done")
    >>> open("/tmp/rankloss_atomic_example.txt").read()
    'done'
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


class RunDirectory:
    """One training run's directory (see the module docstring for its layout and rules).

    Args:
        path: the run directory (``TrainConfig.out_dir``).

    Raises:
        ValueError: ``path`` is a file, or a non-empty directory that is not a run directory.

    Example:
    >>> run = RunDirectory("/tmp/rankloss_doc_run")  # doctest: +SKIP
    >>> with run.locked():  # doctest: +SKIP
    ...     run.phase
    """

    CONFIG = "run.json"
    STATE = "state.json"
    LOCK = ".lock"
    MODEL = "model.keras"
    METRICS = "metrics.json"
    HISTORY = "history.csv"
    CHECKPOINTS = "checkpoints"
    UNREADABLE = "unreadable_files.txt"
    PLOTS = "plots"

    def __init__(self, path):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"The run directory --out is an existing file. Received: out_dir={self.path}")
        foreign = self.path.is_dir() and any(p.name != self.LOCK for p in self.path.iterdir())
        if foreign and not (self.path / self.CONFIG).is_file():
            raise ValueError(
                "The run directory --out holds files that are not a rankloss-tf run; choose an empty or new "
                f"directory (nothing there is overwritten). Received: out_dir={self.path}"
            )

    def __truediv__(self, name):
        return self.path / name

    @contextlib.contextmanager
    def locked(self):
        """Holds the run's lock for the ``with`` block; refuses a second writer."""
        self.path.mkdir(parents=True, exist_ok=True)
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
            self._remove_stale_temporaries()
            try:
                yield self
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _remove_stale_temporaries(self):
        """Deletes temporary files an attempt killed mid-write left (the lock says none is in use)."""
        for directory in (self.path, self.path / self.CHECKPOINTS):
            if directory.is_dir():
                for path in directory.glob(".*tmp-*"):
                    path.unlink()

    def start(self, config):
        """Records ``config`` in a new run, or checks it against the recorded one.

        Raises:
            ValueError: the run was started with a configuration that differs in
                a field that changes the result, listing each difference.
        """
        recorded = self.read_json(self.CONFIG)
        if recorded is None:
            self.write_json(self.CONFIG, dataclasses.asdict(config))
            return
        known = {f.name for f in dataclasses.fields(config)}
        previous = dataclasses.replace(config, **{k: v for k, v in recorded.items() if k in known})
        differences = previous.results_differ(config)
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
        """The recorded state: ``{"phase", "seconds", ...}`` (empty for a new run)."""
        return self.read_json(self.STATE) or {}

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
        except ValueError as error:
            raise ValueError(
                f"{path} is not valid JSON ({error}); restore it or start afresh in another --out. "
                f"Received: out_dir={self.path}"
            ) from None

    def write_json(self, name, value):
        """Writes ``value`` as the JSON file ``name`` of the run, atomically."""
        atomic_write_text(self.path / name, json.dumps(value, indent=2) + "\n")
