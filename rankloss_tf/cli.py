"""Deprecated: the command moved to ``rankloss_tf.app.cli`` (this module goes in 0.3).

``python -m rankloss_tf.cli`` still runs it for one release; the console script
``rankloss-tf`` and ``python -m rankloss_tf`` are the ways to start it.
"""

import sys
import warnings

from rankloss_tf.app.cli import main

__all__ = ["main"]

warnings.warn("rankloss_tf.cli moved to rankloss_tf.app.cli (rankloss_tf.cli goes in 0.3)",
              DeprecationWarning, stacklevel=2)

if __name__ == "__main__":
    sys.exit(main())
