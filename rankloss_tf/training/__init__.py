"""Deprecated: the application moved to ``rankloss_tf.app`` (this package goes in 0.3).

``rankloss_tf.training.X`` (``TrainConfig``, ``train``, ...) and its modules
(``rankloss_tf.training.config`` ...) still work for one release and warn;
``rankloss_tf.training.fine_tune`` is ``rankloss_tf.fine_tune``.
"""

import importlib
import sys
import warnings

warnings.warn("rankloss_tf.training moved to rankloss_tf.app (rankloss_tf.training goes in 0.3): "
              "import rankloss_tf.app instead", DeprecationWarning, stacklevel=2)

_MOVED = {name: f"rankloss_tf.app.{name}"
          for name in ("callbacks", "config", "protocols", "run_dir", "runner", "split", "strategy")}
_MOVED["fine_tune"] = "rankloss_tf.fine_tune"
for _name, _home in _MOVED.items():
    sys.modules[f"{__name__}.{_name}"] = importlib.import_module(_home)

from rankloss_tf.app import *  # noqa: E402,F401,F403  (the moved names, for one release)
from rankloss_tf.app import __all__  # noqa: E402
