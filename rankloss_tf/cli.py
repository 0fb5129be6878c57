"""The ``rankloss-tf`` command: train | evaluate | export | index | search | demo.

Argument parsing only; the work is done by ``rankloss_tf.training``.

Examples::

    rankloss-tf train --dataset omniglot --data-dir data/omniglot --loss npair_angular --export runs/omniglot/saved_model
    rankloss-tf train --dataset cars196 --data-dir data/cars196 --backbone efficientnet_lite0 --out runs/cars196
    rankloss-tf evaluate --model runs/omniglot/saved_model --dataset omniglot --data-dir data/omniglot
    rankloss-tf export --model runs/omniglot --out exported/omniglot
    rankloss-tf index --model exported/omniglot --gallery omniglot --data-dir data/omniglot --out indexes/omniglot
    rankloss-tf search --index indexes/omniglot query.png --k 5
    rankloss-tf demo      # what `make demo` runs
"""

import argparse
import json
import logging
import math
import sys
from pathlib import Path

from rankloss_tf import losses
from rankloss_tf.retrieval import commands as retrieval_commands

__all__ = ["main"]

PROG = "rankloss-tf"


def _number(kind, minimum=None, maximum=None, open_interval=False):
    """An argparse type: ``kind`` (int or float) within the given bounds."""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        low_ok = minimum is None or (value > minimum if open_interval else value >= minimum)
        high_ok = maximum is None or (value < maximum if open_interval else value <= maximum)
        if not (low_ok and high_ok):
            bounds = f"({minimum}, {maximum})" if open_interval else f"[{minimum}, {maximum if maximum is not None else 'inf'})"
            raise argparse.ArgumentTypeError(f"must be in {bounds}, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _directory(text):
    if not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"directory not found: {text}")
    return text


def _existing_path(text):
    if not Path(text).exists():
        raise argparse.ArgumentTypeError(f"not found: {text}")
    return text


def _add_data_arguments(parser):
    parser.add_argument("--dataset", required=True,
                        help="digits, omniglot, cars196, caltech_birds2011, stanford_online_products or folder:PATH")
    parser.add_argument("--data-dir", type=_directory, help="local copy of the dataset (e.g. the Omniglot zips)")


def _add_training_arguments(parser):
    positive_int = _number(int, minimum=1)
    parser.add_argument("--loss", choices=sorted(losses.LOSSES), default="npair_angular",
                        help="ranking loss (default: npair_angular)")
    parser.add_argument("--alpha", type=_number(float, 0, 90, open_interval=True),
                        help="angle of the angular losses, degrees in (0, 90) (default 45)")
    parser.add_argument("--margin", type=_number(float, minimum=0.0),
                        help="margin of the contrastive / triplet losses (default 1.0)")
    parser.add_argument("--classes-per-batch", type=positive_int, help="P of the P x K batches")
    parser.add_argument("--samples-per-class", type=positive_int, help="K of the P x K batches")
    parser.add_argument("--epochs", type=positive_int, help="training epochs")
    parser.add_argument("--steps-per-epoch", type=positive_int, help="batches per epoch (default: one pass)")
    parser.add_argument("--embedding-dim", type=positive_int,
                        help="embedding size (default 128; digits 64, cars196 512)")
    parser.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None,
                        help="L2-normalise the embeddings in the model (default: yes, except a frozen-feature "
                        "head for npair / angular losses); --no-normalize trains on raw embeddings")
    parser.add_argument("--backbone", default="small_cnn",
                        help="small_cnn (default), efficientnet_lite0 or a keras.applications name (ResNet50, ...); "
                             "a pretrained backbone stays frozen: its features are computed once and cached, "
                             "and an embedding head trains on them")
    parser.add_argument("--weights", help="pretrained backbone weights: imagenet (default), a weights file, "
                                          "or random (with --fine-tune)")
    parser.add_argument("--fine-tune", action="store_true",
                        help="train the whole pretrained network on the images instead of a head on cached "
                             "features (slow without a GPU)")
    parser.add_argument("--cache-dir", help="feature cache of frozen backbones (default ~/.cache/rankloss_tf/features)")
    parser.add_argument("--image-size", type=positive_int,
                        help="side the images are resized to inside the model (default: as loaded; 224 for "
                             "pretrained backbones)")
    parser.add_argument("--learning-rate", type=_number(float, 0, math.inf, open_interval=True),
                        help="initial Adam learning rate, cosine-decayed (default 1e-3)")
    parser.add_argument("--seed", type=_number(int), default=0)
    parser.add_argument("--eval-every", type=_number(int, minimum=0), default=0,
                        help="also evaluate on the test split every N epochs (default: only at the end)")
    parser.add_argument("--no-plots", dest="plots", action="store_false", help="skip the plots")
    parser.add_argument("--export", dest="export_dir", help="export the trained model as a SavedModel here")
    parser.add_argument("--out", dest="out_dir", default="runs/train",
                        help="run directory: checkpoints (resume), model, metrics, plots (default runs/train)")
    parser.add_argument("--verbose", type=_number(int, 0, 2), default=1,
                        help="0 silent, 1 progress bar (default), 2 one line per epoch")


def build_parser():
    """The argument parser of ``rankloss-tf``."""
    parser = argparse.ArgumentParser(prog=PROG, description="Deep metric learning for TensorFlow: "
                                     "train, evaluate and export embedding models.")
    commands = parser.add_subparsers(dest="command", required=True,
                                     metavar="{train,evaluate,export,index,search,demo}")

    train = commands.add_parser("train", help="train, evaluate on the held-out classes, plot, export")
    _add_data_arguments(train)
    _add_training_arguments(train)

    evaluate = commands.add_parser("evaluate", help="evaluate a saved model on a dataset's test classes")
    evaluate.add_argument("--model", required=True, type=_existing_path,
                          help="SavedModel directory, .keras file or training run directory")
    _add_data_arguments(evaluate)
    evaluate.add_argument("--split", choices=("test", "train"), default="test")
    evaluate.add_argument("--no-clustering", dest="clustering", action="store_false", help="skip NMI and F1")
    evaluate.add_argument("--json", dest="json_path", help="also write the metrics to this JSON file")

    export = commands.add_parser("export", help="export a trained model as a SavedModel")
    export.add_argument("--model", required=True, type=_existing_path, help=".keras file or training run directory")
    export.add_argument("--out", required=True, help="SavedModel directory to write")
    export.add_argument("--overwrite", action="store_true", help="replace an existing --out")

    retrieval_commands.add_index_arguments(
        commands.add_parser("index", help="embed a gallery (dataset or folder:) into a searchable index SavedModel"))
    retrieval_commands.add_search_arguments(
        commands.add_parser("search", help="print the nearest gallery items of query images from an index"))

    demo = commands.add_parser("demo", help="train and evaluate on Omniglot (when found) or the bundled digits")
    demo.add_argument("--out", dest="out_dir", default="runs/demo")
    return parser


def _demo_config(out_dir, shared_data=Path(__file__).resolve().parents[2] / "shared" / "data"):
    """Omniglot when ../shared/data/omniglot exists beside the repository, else digits."""
    from rankloss_tf.training import TrainConfig

    omniglot = Path(shared_data) / "omniglot"
    if omniglot.is_dir():
        return TrainConfig(dataset="omniglot", data_dir=str(omniglot), out_dir=out_dir,
                           export_dir=str(Path(out_dir) / "saved_model"))
    return TrainConfig(dataset="digits", out_dir=out_dir, export_dir=str(Path(out_dir) / "saved_model"))


def _run(args):
    from rankloss_tf import training
    from rankloss_tf.evaluation import format_table

    if args.command in ("train", "demo"):
        if args.command == "demo":
            config = _demo_config(args.out_dir)
        else:
            fields = {f for f in training.TrainConfig.__dataclass_fields__}
            config = training.TrainConfig(**{k: v for k, v in vars(args).items() if k in fields})
        protocol = f" (frozen {config.backbone} features)" if config.resolved().frozen else ""
        print(f"Training {config.loss} on {config.dataset}{protocol}"
              f"{f' ({config.data_dir})' if config.data_dir else ''}; run directory {config.out_dir}", flush=True)
        result = training.train(config)
        print(f"\nTest metrics ({config.dataset}, held-out classes), "
              f"trained in {result.seconds['fit']:.0f} s:\n{format_table(result.metrics)}")
        print(f"\nWritten to {result.out_dir}: model.keras, metrics.json"
              f"{', plots/' if config.plots else ''}"
              f"{f'; SavedModel in {config.export_dir}' if config.export_dir else ''}")
    elif args.command == "evaluate":
        metrics = training.evaluate_model(args.model, args.dataset, data_dir=args.data_dir, split=args.split,
                                          clustering=args.clustering)
        print(format_table(metrics))
        if args.json_path:
            Path(args.json_path).write_text(json.dumps(metrics, indent=2) + "\n")
    else:
        path = training.export_model(args.model, args.out, overwrite=args.overwrite)
        print(f"SavedModel written to {path} (signature serving_default: images uint8 -> embeddings)")


def main(argv=None):
    """Entry point of the ``rankloss-tf`` console script; returns the exit status.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).

    Example:
    >>> main(["train", "--dataset", "digits", "--epochs", "2", "--out", "/tmp/run"])  # doctest: +SKIP
    0
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if getattr(args, "func", None) is not None:
            args.func(args)
        else:
            _run(args)
    except (ValueError, ImportError, FileNotFoundError) as error:
        parser.exit(2, f"{PROG}: error: {error}\n")
    except KeyboardInterrupt:
        parser.exit(130, f"\n{PROG}: interrupted; run the same command again to resume from the last epoch.\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
