"""Runs ``rankloss-tf`` with one fault injected: the process sends itself a signal at a given phase.

Usage: python tests/_fault_worker.py PHASE SIGNAL [rankloss-tf arguments...]

PHASE: none (no fault), load (first dataset load), epoch (second batch of the
second epoch), checkpoint (between writing and renaming the second epoch's
checkpoint), evaluate (start of the test evaluation), export (between writing
and renaming the SavedModel). SIGNAL: SIGINT or SIGKILL.
"""

import os
import signal
import sys

import keras

from rankloss_tf import cli, datasets
from rankloss_tf.training import runner


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
    elif phase in ("checkpoint", "export"):
        replace = os.replace

        def faulty_replace(source, target):
            name = os.path.basename(str(target))
            if (phase == "checkpoint" and name == "epoch-0002.weights.h5") or (
                    phase == "export" and name == os.environ["FAULT_EXPORT_NAME"]):
                die()
            return replace(source, target)

        os.replace = faulty_replace
    elif phase == "evaluate":
        evaluate = runner.evaluate

        def faulty_evaluate(*args, **kwargs):
            die()
            return evaluate(*args, **kwargs)

        runner.evaluate = faulty_evaluate
    elif phase != "none":
        raise SystemExit(f"unknown phase {phase!r}")


if __name__ == "__main__":
    inject(sys.argv[1], getattr(signal, sys.argv[2]))
    sys.exit(cli.main(sys.argv[3:]))
