"""The callbacks that make a run resumable: atomic epoch checkpoints and a one-row-per-epoch history.

``EpochCheckpoint`` writes model + optimizer state after every finished epoch
to ``epoch-NNNN.weights.h5`` through ``rankloss_tf.io.atomic.write_file``, so a run
killed at any instant leaves either the previous or the new checkpoint, never
a truncated one; an epoch whose loss is not finite is not saved, so the last
checkpoint is the last good one. ``EpochHistory`` writes ``history.csv`` with
exactly the logged keys (rewritten atomically, never half a row) and, on
resume, drops rows of epochs that are trained again, so each epoch appears once.
The runner places ``EpochHistory`` before ``EpochCheckpoint``: an epoch's row
is written before its checkpoint, so a kill between the two trains the epoch
again (its row is replaced), and no checkpointed epoch lacks its row.
"""

import csv
import io
import math
import re
from pathlib import Path

import keras

from rankloss_tf.io.atomic import write_file

__all__ = ["DivergedError", "EpochCheckpoint", "EpochHistory"]

_CHECKPOINT = re.compile(r"^epoch-(\d{4,})\.weights\.h5$")


class DivergedError(ValueError):
    """The loss became non-finite during training (raised after ``fit`` stops on it).

    Example:
    >>> isinstance(DivergedError("loss NaN in epoch 2"), ValueError)
    True
    """


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves weights and optimizer state after each epoch, atomically; restores the latest.

    Args:
        directory: where the ``epoch-NNNN.weights.h5`` files go (created when needed).

    Example:
    >>> checkpoint = EpochCheckpoint("/tmp/run/checkpoints")  # doctest: +SKIP
    >>> start = checkpoint.restore(model)  # 0 for a new run  # doctest: +SKIP
    >>> model.fit(batches, initial_epoch=start, epochs=10, callbacks=[checkpoint])  # doctest: +SKIP
    """

    def __init__(self, directory):
        super().__init__()
        self.directory = Path(directory)
        self.diverged_at = None

    def latest(self):
        """``(epochs done, path)`` of the newest checkpoint, or ``(0, None)``."""
        found = []
        if self.directory.is_dir():
            found = [(int(m.group(1)), p) for p in self.directory.iterdir() if (m := _CHECKPOINT.match(p.name))]
        return max(found) if found else (0, None)

    def restore(self, model):
        """Loads the newest checkpoint into a compiled ``model``; returns the epochs it holds.

        Raises:
            ValueError: the checkpoint cannot be read, naming it and the way out.
        """
        epochs, path = self.latest()
        if path is None:
            return 0
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        try:
            model.load_weights(path)
        except Exception as error:  # h5py and Keras raise several types for a damaged or foreign file.
            raise ValueError(
                f"The checkpoint {path} cannot be loaded ({type(error).__name__}: {error}). Delete it to resume "
                f"from the checkpoint before it, or delete {self.directory} to train from the first epoch."
            ) from None
        return epochs

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.diverged_at = epoch
            return
        path = self.directory / f"epoch-{epoch + 1:04d}.weights.h5"
        write_file(path, lambda temporary: self.model.save_weights(temporary, overwrite=True))
        for done, older in self._all():
            if done < epoch + 1:
                older.unlink()

    def _all(self):
        return [(int(m.group(1)), p) for p in self.directory.iterdir() if (m := _CHECKPOINT.match(p.name))]


class EpochHistory(keras.callbacks.Callback):
    """Appends one CSV row per finished epoch (``epoch`` and the logged values).

    Args:
        path: the CSV file.
        initial_epoch: the first epoch this ``fit`` trains; rows of this epoch and
            later ones (left by an interrupted attempt) are dropped first.

    Example:
    >>> history = EpochHistory("/tmp/run/history.csv", initial_epoch=0)  # doctest: +SKIP
    """

    def __init__(self, path, initial_epoch=0):
        super().__init__()
        self.path = Path(path)
        self.initial_epoch = initial_epoch

    def on_train_begin(self, logs=None):
        rows = self._rows()
        kept = [row for row in rows if int(row["epoch"]) < self.initial_epoch]
        if len(kept) != len(rows):
            self._write(kept)

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()}}
        self._write([row for row in self._rows() if int(row["epoch"]) < epoch] + [row])

    def _rows(self):
        if not self.path.is_file():
            return []
        with self.path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        if not all(str(row.get("epoch")).isdigit() for row in rows):
            raise ValueError(f"{self.path} is not a history this package wrote (a row without an epoch number); "
                             f"restore it or delete it to resume. Received: path={self.path}")
        return rows

    def _write(self, rows):
        """Rewrites the whole file atomically (a kill never leaves half a row)."""
        if not rows:
            self.path.unlink(missing_ok=True)
            return
        fields = list(dict.fromkeys(name for row in rows for name in row))
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows)
        write_file(self.path, text.getvalue())
