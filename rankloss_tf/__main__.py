"""``python -m rankloss_tf``: the ``rankloss-tf`` command."""

import sys

from rankloss_tf.app.cli import main

if __name__ == "__main__":
    sys.exit(main())
