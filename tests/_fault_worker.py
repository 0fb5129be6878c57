"""Runs ``rankloss-tf`` with one fault injected: the process sends itself a signal at a given phase.

Usage: python tests/_fault_worker.py PHASE SIGNAL [rankloss-tf arguments...]

PHASE: none (no fault), load (first dataset load), started (right after a run
directory records its configuration, before its first phase), epoch (second batch of the
second epoch), checkpoint (between writing and renaming the second epoch's
checkpoint), checkpointed (right after the second epoch's checkpoint is renamed
into place), evaluate (start of the test evaluation), export (between writing
and renaming the SavedModel). SIGNAL: SIGINT or SIGKILL.

Faults that are not signals (SIGNAL is then ignored): disk-full (the second
epoch's checkpoint meets a full disk: the file ``$FAULT_FILL`` is grown until the
file system is full when that variable is set, else the write fails with
ENOSPC after writing half a file), delete-images (every file under
``$FAULT_FOLDER`` is deleted at the end of the first epoch).
"""

import errno
import os
import signal
import sys
from pathlib import Path

import keras

from rankloss_tf import datasets
from rankloss_tf.app import cli
from rankloss_tf.app import callbacks, run_dir, runner


def fill(path):
    """Grows ``path`` until its file system is full."""
    with open(path, "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * (1 << 16))
                handle.flush()
        except OSError as error:
            assert error.errno == errno.ENOSPC, error


def full_disk_at_second_checkpoint():
    on_epoch_end = callbacks.EpochCheckpoint.on_epoch_end

    def save_weights(self, path, overwrite=True):
        with open(path, "wb") as handle:
            handle.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    def faulty(self, epoch, logs=None):
        if epoch == 1:
            if os.environ.get("FAULT_FILL"):
                fill(os.environ["FAULT_FILL"])
            else:
                keras.Model.save_weights = save_weights
        return on_epoch_end(self, epoch, logs)

    callbacks.EpochCheckpoint.on_epoch_end = faulty


def delete_images_after_first_epoch():
    on_epoch_end = callbacks.EpochHistory.on_epoch_end

    def faulty(self, epoch, logs=None):
        on_epoch_end(self, epoch, logs)
        for path in sorted(Path(os.environ["FAULT_FOLDER"]).rglob("*.*")):
            path.unlink()

    callbacks.EpochHistory.on_epoch_end = faulty


def inject(phase, signum):
    def die():
        os.kill(os.getpid(), signum)

    if phase == "load":
        load = datasets.load

        def faulty_load(*args, **kwargs):
            die()
            return load(*args, **kwargs)

        datasets.load = faulty_load
    elif phase == "epoch":
        seen = {"epoch": -1}
        begin = keras.callbacks.TerminateOnNaN.on_epoch_begin

        def on_epoch_begin(self, epoch, logs=None):
            seen["epoch"] = epoch
            return begin(self, epoch, logs)

        def on_batch_end(self, batch, logs=None):
            if seen["epoch"] == 1 and batch == 1:
                die()

        keras.callbacks.TerminateOnNaN.on_epoch_begin = on_epoch_begin
        keras.callbacks.TerminateOnNaN.on_batch_end = on_batch_end
    elif phase in ("checkpoint", "checkpointed", "export"):
        replace = os.replace

        def faulty_replace(source, target):
            name = os.path.basename(str(target))
            if (phase == "checkpoint" and name == "epoch-0002.weights.h5") or (
                    phase == "export" and name == os.environ["FAULT_EXPORT_NAME"]):
                die()
            replace(source, target)
            if phase == "checkpointed" and name == "epoch-0002.weights.h5":
                die()

        os.replace = faulty_replace
    elif phase == "started":
        start = run_dir.RunDirectory.start

        def faulty_start(self, config):
            start(self, config)
            die()

        run_dir.RunDirectory.start = faulty_start
    elif phase == "evaluate":
        evaluate = runner.evaluate

        def faulty_evaluate(*args, **kwargs):
            die()
            return evaluate(*args, **kwargs)

        runner.evaluate = faulty_evaluate
    elif phase == "disk-full":
        full_disk_at_second_checkpoint()
    elif phase == "delete-images":
        delete_images_after_first_epoch()
    elif phase != "none":
        raise SystemExit(f"unknown phase {phase!r}")


if __name__ == "__main__":
    inject(sys.argv[1], getattr(signal, sys.argv[2]))
    sys.exit(cli.main(sys.argv[3:]))
