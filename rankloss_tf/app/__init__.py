"""The application: ``rankloss-tf``'s runs, built on the library and never imported by it.

The library (losses, ops, data, datasets, backbones, models, evaluation,
retrieval, export, deploy, io) gives building blocks; this package decides how
a run uses them, in one place each:

- ``config``: ``TrainConfig``, every field's help, bounds and default;
  ``recipes``: the per-dataset defaults its unset fields take;
- ``protocols``: the two ways a model trains (end to end, frozen features);
- ``runner``: ``train(config)``, the whole job as one story; ``run_dir``
  (what a run owns, its lock and phases), ``callbacks`` (atomic checkpoints,
  history), ``split`` (a folder's split by class name), ``strategy``
  (``tf.distribute``);
- ``artifacts``: evaluate or export a trained model of any form;
- ``cli``: the ``rankloss-tf`` command (``index_commands``: its ``index`` and
  ``search``).

``train(TrainConfig(...))`` runs: zero-shot train / test split -> P x K sampler
-> embedding model -> ``fit`` (resumable) -> ``evaluate`` on the test classes ->
plots -> SavedModel export, everything written to the run directory
``config.out_dir``.

Names are imported when first used, so that ``rankloss_tf.app.config``
(and the command line's ``--help``) loads without TensorFlow.
"""

from rankloss_tf.lazy import lazy_attributes

# name -> module that defines it
_HOMES = {
    "TrainConfig": "rankloss_tf.app.config",
    "DivergedError": "rankloss_tf.app.callbacks",
    "TrainResult": "rankloss_tf.app.runner",
    "train": "rankloss_tf.app.runner",
    "evaluate_model": "rankloss_tf.app.artifacts",
    "export_model": "rankloss_tf.app.artifacts",
    "load_model": "rankloss_tf.loading",
}

__all__ = sorted(_HOMES)


__getattr__, __dir__ = lazy_attributes(__name__, _HOMES)
