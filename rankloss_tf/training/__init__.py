"""The whole job: train an embedding model, evaluate it on held-out classes, export it.

``train(TrainConfig(...))`` runs: zero-shot train / test split -> P x K sampler
-> embedding model -> ``fit`` (resumable) -> ``evaluate`` on the test classes ->
plots -> SavedModel export, everything written to the run directory
``config.out_dir`` (see ``run_dir``). Modules: ``config`` (TrainConfig, the
fields and their checks), ``protocols`` (end to end, frozen features),
``callbacks`` (atomic checkpoints, history), ``run_dir`` (what a run owns,
lock, phases), ``runner`` (``train``). Loading, evaluating and exporting saved
models live in ``rankloss_tf.artifacts`` (re-exported here).

Names are imported when first used, so that ``rankloss_tf.training.config``
(and the command line's ``--help``) loads without TensorFlow.
"""

import importlib

# name -> module that defines it
_HOMES = {
    "DATASET_DEFAULTS": "rankloss_tf.training.config",
    "TrainConfig": "rankloss_tf.training.config",
    "DivergedError": "rankloss_tf.training.callbacks",
    "TrainResult": "rankloss_tf.training.runner",
    "train": "rankloss_tf.training.runner",
    "evaluate_model": "rankloss_tf.artifacts",
    "export_model": "rankloss_tf.artifacts",
    "load_model": "rankloss_tf.artifacts",
}

__all__ = sorted(_HOMES)


def __getattr__(name):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)


def __dir__():
    return sorted(set(globals()) | set(_HOMES))
