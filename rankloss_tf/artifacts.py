"""Deprecated: moved to ``rankloss_tf.app.artifacts`` (this module goes in 0.3)."""

import warnings

from rankloss_tf.app.artifacts import evaluate_model, export_model
from rankloss_tf.loading import load_model

__all__ = ["evaluate_model", "export_model", "load_model"]

warnings.warn("rankloss_tf.artifacts moved to rankloss_tf.app.artifacts (rankloss_tf.artifacts goes in 0.3)",
              DeprecationWarning, stacklevel=2)
