"""The whole job: train an embedding model, evaluate it on held-out classes, export it.

``train(TrainConfig(...))`` runs: zero-shot train / test split -> P x K sampler
-> embedding model -> ``fit`` (resumable) -> ``evaluate`` on the test classes ->
plots -> SavedModel export, everything written to the run directory
``config.out_dir`` (see ``run_dir``). Modules: ``config`` (TrainConfig, the
fields and their checks), ``protocols`` (end to end, frozen features),
``fine_tune`` (frozen batch norm, a lower backbone learning rate),
``callbacks`` (atomic checkpoints, history), ``run_dir`` (what a run owns,
lock, phases), ``runner`` (``train``). Loading, evaluating and exporting saved
models live in ``rankloss_tf.artifacts`` (re-exported here).

Names are imported when first used, so that ``rankloss_tf.training.config``
(and the command line's ``--help``) loads without TensorFlow.
"""

from rankloss_tf.lazy import lazy_attributes

# name -> module that defines it
_HOMES = {
    "TrainConfig": "rankloss_tf.training.config",
    "DivergedError": "rankloss_tf.training.callbacks",
    "TrainResult": "rankloss_tf.training.runner",
    "train": "rankloss_tf.training.runner",
    "evaluate_model": "rankloss_tf.artifacts",
    "export_model": "rankloss_tf.artifacts",
    "load_model": "rankloss_tf.artifacts",
}

__all__ = sorted(_HOMES)


__getattr__, __dir__ = lazy_attributes(__name__, _HOMES)
