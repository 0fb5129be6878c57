"""The ``rankloss-tf`` command: train | evaluate | export | index | search | demo.

Parsing and dispatch only. ``train``'s flags are generated from
``TrainConfig``'s fields (help, bounds and defaults live there); the work is
done by ``rankloss_tf.app`` and ``rankloss_tf.app.artifacts``. TensorFlow is
imported only once a command runs, so ``--help`` is instant.

Examples::

    rankloss-tf train --dataset folder:~/photos --export runs/photos_saved_model --out runs/photos
    rankloss-tf train --dataset omniglot --data-dir data/omniglot --loss npair_angular
    rankloss-tf train --dataset cars196 --data-dir data/cars196 --backbone efficientnet_lite0 --out runs/cars196
    rankloss-tf evaluate --model runs/omniglot --dataset omniglot --data-dir data/omniglot
    rankloss-tf export --model runs/omniglot --out exported/omniglot
    rankloss-tf export --model runs/omniglot --format litert --out exported/omniglot.tflite
    rankloss-tf index --model exported/omniglot --gallery omniglot --data-dir data/omniglot --out indexes/omniglot
    rankloss-tf search --index indexes/omniglot query.png --k 5
    rankloss-tf demo --data-dir data/omniglot      # what ``make demo`` runs
"""

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import re
import signal
import sys
import threading
from pathlib import Path

from rankloss_tf.app import index_commands
from rankloss_tf.app.index_commands import path_argument
from rankloss_tf.app.config import TrainConfig, check_field
from rankloss_tf.io.text import PRINTABLE_ERRORS

__all__ = ["build_parser", "main"]

PROG = "rankloss-tf"
# Where `demo` looks for the Omniglot zips when --data-dir is not given.
DATA_ENV = "RANKLOSS_TF_DATA"
# The demo's Omniglot run: the recipe without its augmentation and shortened, to stay within
# 5 minutes on 2 shared CPU cores (the full recipe takes 6-11 minutes; cut to 15 epochs with its
# augmentation it reached only Recall@1 0.51: augmented training needs its length).
DEMO = dict(epochs=25, augment="none", class_rotations=1)
# Commands whose interruption is resumed by running them again.
RESUMING_COMMANDS = ("train", "demo")
FIELDS = {field.name: field for field in dataclasses.fields(TrainConfig)}
# RANKLOSS_TF_SMOKE=1 cuts train and demo to this (the notebooks read the same variable).
SMOKE_ENV = "RANKLOSS_TF_SMOKE"
SMOKE = dict(epochs=1, steps_per_epoch=2)
# TensorFlow's start-up notices (absl before InitializeLog, oneDNN, cudart, CPU features, cuInit).
STARTUP_NOISE = re.compile(r"absl::InitializeLog|^[IWE]\d{4} [\d:. ]+\d+ (port|cudart_stub|cpu_feature_guard|"
                           r"cuda_executor|cuda_diagnostics|cuda_platform|gpu_device)\.cc:\d+\]|"
                           r"^To enable the following instructions")


def _typed(field):
    """An argparse type for a ``TrainConfig`` field: parse, then ``check_field``."""
    kind = field.metadata.get("kind", int if field.type is int else str)

    def parse(text):
        if kind is str:
            path_argument(text)  # an empty value: never a dataset, a name or a path (it would be the current directory)
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind is int else 'a number'}. Received: {text!r}") from None
        try:
            return check_field(field, value)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    parse.__name__ = kind.__name__
    return parse


def _add_field(parser, field, **overrides):
    """Adds the flag of one ``TrainConfig`` field; unset flags leave the field's default."""
    meta = {**field.metadata, **overrides}
    flag = meta.get("flag") or "--" + field.name.replace("_", "-")
    # A required field's dataclass default is the Python API's, never the command's: not shown.
    shown = field.default not in (None, False, True) and not field.metadata.get("required")
    default = f" (default: {field.default})" if shown else ""
    options = dict(dest=field.name, help=meta["help"] + default, default=argparse.SUPPRESS)
    if meta.get("kind") is bool:
        options["action"] = argparse.BooleanOptionalAction
    elif meta.get("choices"):
        options["choices"] = meta["choices"]
        if field.type is int:
            options["type"] = int
    else:
        options["type"] = _typed(field)
    if meta.get("required"):
        options["required"] = True
    parser.add_argument(flag, **options)


def _existing_path(text):
    path_argument(text)
    if not Path(text).exists():
        raise argparse.ArgumentTypeError(f"not found: {text}")
    return text


def _ks(text):
    try:
        ks = tuple(int(k) for k in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers. Received: {text!r}") from None
    if not ks or min(ks) < 1 or list(ks) != sorted(set(ks)):
        raise argparse.ArgumentTypeError(f"expected increasing positive integers. Received: {text!r}")
    return ks


def build_parser():
    """The argument parser of ``rankloss-tf``.

    Example:
    >>> build_parser().parse_args(["train", "--dataset", "digits", "--epochs", "2"]).epochs
    2
    """
    parser = argparse.ArgumentParser(prog=PROG, description="Deep metric learning for TensorFlow: "
                                     "train, evaluate and export embedding models.")
    commands = parser.add_subparsers(dest="command", required=True,
                                     metavar="{train,evaluate,export,index,search,demo}")

    train = commands.add_parser("train", help="train, evaluate on the held-out classes, plot, export")
    for field in FIELDS.values():
        if field.metadata["cli"]:
            _add_field(train, field)
    train.set_defaults(func=_train)

    evaluate = commands.add_parser("evaluate", help="evaluate a saved model on a dataset's test classes")
    evaluate.add_argument("--model", required=True, type=_existing_path,
                          help="SavedModel directory, .keras file or training run directory")
    _add_field(evaluate, FIELDS["dataset"], required=False)
    _add_field(evaluate, FIELDS["data_dir"])
    evaluate.add_argument("--one-shot", metavar="ALL_RUNS_ZIP", type=_existing_path,
                          help="also (or, without --dataset, only) score the official Omniglot 20-way one-shot runs "
                               "(all_runs.zip or its extracted folder) by nearest neighbour")
    evaluate.add_argument("--one-shot-shift", type=int, metavar="PIXELS",
                          help="test-time augmentation of --one-shot: each image embeds as the mean over itself and its "
                               "8 translates by PIXELS of the runs' images; 0: off (default: the Omniglot recipe's)")
    evaluate.add_argument("--split", choices=("test", "train"), default="test",
                          help="score the held-out test classes (default) or the training classes")
    _add_field(evaluate, FIELDS["image_size"], help="side the images are resized to as they load (default: the "
               "model's input size, for datasets whose images vary in size)")
    _add_field(evaluate, FIELDS["seed"], help="seed of the folder split (as given to train) and of k-means (default: "
               "a run directory's recorded seed, else 0; a run's other seed is refused)")
    evaluate.add_argument("--ks", type=_ks, default=(1, 2, 4, 8), help="the K of Recall@K (default 1,2,4,8)")
    evaluate.add_argument("--no-clustering", dest="clustering", action="store_false", help="skip NMI and F1")
    evaluate.add_argument("--json", dest="json_path", type=path_argument,
                          help="also write the metrics to this (new) JSON file")
    evaluate.set_defaults(func=_evaluate)

    export = commands.add_parser("export", help="export a trained model: SavedModel, LiteRT or ONNX")
    export.add_argument("--model", required=True, type=_existing_path, help=".keras file or training run directory")
    export.add_argument("--out", required=True, type=path_argument,
                        help="SavedModel directory (for TF Serving: a numbered version "
                                                     "folder, e.g. models/mine/1), or the .tflite / .onnx file")
    export.add_argument("--format", default="saved_model", choices=("saved_model", "litert", "onnx"),
                        help="saved_model: any image size, gray / RGB / RGBA (default); litert (.tflite) and "
                             "onnx (.onnx): the model's fixed input size, uint8 [N, H, W, C] -> float32 [N, D]")
    export.add_argument("--int8", action="store_true", help="litert: quantise to int8, calibrated on 256 training "
                        "images of --dataset (about a quarter of the size; see docs/serving.md)")
    export.add_argument("--dataset", help="with --int8: the dataset the model was trained on, as given to train "
                                          "(its training classes calibrate the quantisation)")
    export.add_argument("--data-dir", type=path_argument,
                        help="with --int8: the dataset's local copy, as given to train")
    export.add_argument("--seed", type=int, default=0, help="with --int8: the folder split's seed, as given to train")
    export.add_argument("--overwrite", action="store_true", help="replace a previous export at --out")
    export.set_defaults(func=_export)

    index_commands.add_index_arguments(
        commands.add_parser("index", help="embed a gallery (dataset, tfrecord: or folder:) into a searchable index SavedModel"))
    index_commands.add_search_arguments(
        commands.add_parser("search", help="print the nearest gallery items of query images from an index"))

    demo = commands.add_parser("demo", help="train and evaluate on Omniglot (when found) or the bundled digits")
    demo.add_argument("--data-dir", type=path_argument,
                      help=f"folder with the Omniglot zips (default: ${DATA_ENV}/omniglot when set; "
                      "else scikit-learn's digits)")
    demo.add_argument("--out", dest="out_dir", default="runs/demo", type=path_argument,
                      help="run directory (default runs/demo)")
    demo.set_defaults(func=_demo)
    return parser


def _demo_config(out_dir, data_dir=None):
    """Omniglot from ``data_dir`` (or ``$RANKLOSS_TF_DATA/omniglot``) when it exists, else digits."""
    if data_dir is None and os.environ.get(DATA_ENV):
        data_dir = str(Path(os.environ[DATA_ENV]) / "omniglot")
    export_dir = str(Path(out_dir).with_name(Path(out_dir).name + "_saved_model"))  # beside the run, not inside
    if data_dir is not None and Path(data_dir).is_dir():
        return TrainConfig(dataset="omniglot", data_dir=str(data_dir), out_dir=out_dir, export_dir=export_dir,
                           **DEMO)
    return TrainConfig(dataset="digits", out_dir=out_dir, export_dir=export_dir)


def _train(args):
    config = TrainConfig(**{name: value for name, value in vars(args).items() if name in FIELDS})
    _run_training(config)


def _demo(args):
    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        raise ValueError(f"Data directory not found. Received: --data-dir={args.data_dir}")
    _run_training(_demo_config(args.out_dir, args.data_dir))


def _run_training(config):
    from rankloss_tf.app.recipes import describe
    from rankloss_tf.app.runner import train
    from rankloss_tf.evaluation import format_table

    config = _smoke(config)
    resolved = config.resolved()
    if describe(resolved):  # a folder's recipe, chosen from its images
        print(describe(resolved), flush=True)
    protocol = f" (frozen {resolved.backbone} features)" if resolved.frozen else ""
    print(f"Training {resolved.loss} on {config.dataset}{protocol}"
          f"{f' ({config.data_dir})' if config.data_dir else ''}; run directory {config.out_dir}", flush=True)
    with _feature_cache_events() as events:
        result = train(config)
    if result.worker != "chief":
        print(f"\n{result.worker.capitalize()} done: it trained its share of every step; the chief wrote the run "
              f"directory {config.out_dir} (metrics, model{', export' if config.export_dir else ''}).")
        return
    if result.resumed == "finished":
        print(f"\nThis run had already finished: its stored test metrics ({config.dataset}, held-out classes; "
              f"nothing was trained again):\n{format_table(result.metrics)}")
    else:
        print(f"\nTest metrics ({config.dataset}, held-out classes), trained in {result.seconds['fit']:.0f} s"
              f"{' over several attempts' if result.resumed else ''}:\n{format_table(result.metrics)}")
    plots_dir = Path(result.out_dir) / "plots"  # skipped without matplotlib or with --no-plots
    plots = plots_dir.is_dir() and any(plots_dir.iterdir())
    print(f"\nWritten to {result.out_dir}: model.keras, metrics.json, history.csv"
          f"{', plots/' if plots else ''}"
          f"{f'; SavedModel in {config.export_dir}' if config.export_dir else ''}")
    if events:
        print(_feature_cache_line(events))


@contextlib.contextmanager
def _feature_cache_events():
    """Collects what the frozen-feature cache gave each of its files while a run trains: ``{path: event}``.

    The events are ``extract_features``' INFO records (``CACHE_EVENT``), kept off the screen (its
    warnings still show); the first event of a file stays (computed, then read back: computed).
    """
    from rankloss_tf.backbones import features

    events = {}

    def collect(record):
        event, path = getattr(record, features.CACHE_EVENT, (None, None))
        if event is not None:
            events.setdefault(path, event)
        return record.levelno >= logging.WARNING

    log = logging.getLogger(features.__name__)
    level = log.level
    log.setLevel(logging.INFO)
    log.addFilter(collect)
    try:
        yield events
    finally:
        log.removeFilter(collect)
        log.setLevel(level)


def _feature_cache_line(events):
    """One line saying whether a run's frozen features were read from the cache or computed."""
    from rankloss_tf.backbones.features import READ

    read = sum(event == READ for event in events.values())
    where = Path(next(iter(events))).parent
    if read == len(events):
        return (f"Frozen features: all {read} feature files read from the cache {where} (no image went through "
                f"the backbone)")
    return (f"Frozen features: {len(events) - read} feature files computed and cached in {where}"
            f"{f', {read} read from there' if read else ''} (a run on the same images reads them from there)")


def _evaluate(args):
    from rankloss_tf.app.artifacts import evaluate_model
    from rankloss_tf.evaluation import format_table
    from rankloss_tf.io.atomic import write_file
    from rankloss_tf.app.split import evaluation_seed

    if args.json_path:
        _check_new_file(args.json_path, "--json")
    if getattr(args, "dataset", None) is None and args.one_shot is None:
        raise ValueError("evaluate needs --dataset, --one-shot or both. Received: neither")
    metrics = {}
    if getattr(args, "dataset", None) is not None:
        seed = evaluation_seed(args.model, args.dataset, getattr(args, "seed", None))
        metrics = evaluate_model(args.model, args.dataset, data_dir=getattr(args, "data_dir", None), split=args.split,
                                 ks=args.ks, clustering=args.clustering, image_size=getattr(args, "image_size", None),
                                 seed=seed)
    if args.one_shot is not None:
        from rankloss_tf.loading import load_model
        from rankloss_tf.evaluation import one_shot_accuracy
        from rankloss_tf.app.recipes import ONE_SHOT_SHIFT

        shift = ONE_SHOT_SHIFT if args.one_shot_shift is None else args.one_shot_shift
        result = one_shot_accuracy(load_model(args.model), args.one_shot, shift=shift)
        metrics[f"one_shot_{result['ways']}way"] = result["accuracy"]
    print(format_table(metrics))
    if args.json_path:
        write_file(args.json_path, json.dumps(metrics, indent=2) + "\n", exclusive=True)


def _check_new_file(path, role):
    """Refuses, before any work, a path that is not a new file in a writable place (nothing is overwritten)."""
    from rankloss_tf.io.atomic import check_writable

    if Path(path).is_dir():
        raise ValueError(f"{role} names a directory; give the path of a new file in it (e.g. "
                         f"{Path(path) / 'metrics.json'}). Received: {role}={path}")
    if Path(path).exists() or Path(path).is_symlink():
        raise ValueError(f"{role} names an existing file; it is not overwritten. Received: {role}={path}")
    check_writable(path, role)


def _export(args):
    from rankloss_tf.app.artifacts import export_model

    options = {}
    if args.int8 and (args.format != "litert" or args.dataset is None):
        raise ValueError(f"--int8 needs --format litert and --dataset (the training images calibrate it). "
                         f"Received: --format {args.format}, --dataset {args.dataset}")
    if args.int8:
        options = {"int8": True, "representative": (args.dataset, args.data_dir, args.seed)}
    path = export_model(args.model, args.out, overwrite=args.overwrite, format=args.format, **options)
    written = {"saved_model": "SavedModel", "litert": "LiteRT model", "onnx": "ONNX model"}[args.format]
    print(f"{written} written to {path} (signature serving_default: images uint8 -> embeddings)")


def _smoke(config):
    """``config`` cut to a smoke run when ``RANKLOSS_TF_SMOKE=1`` (the docs' tests and CI use it)."""
    if os.environ.get(SMOKE_ENV) != "1":
        return config
    logging.getLogger(__name__).warning("%s=1: a smoke run of %d epoch(s) x %d batches, not a trained model.",
                                        SMOKE_ENV, SMOKE["epochs"], SMOKE["steps_per_epoch"])
    return dataclasses.replace(config, **SMOKE)


def _load_tensorflow():
    """``_quiet_tensorflow`` with Ctrl-C held until TensorFlow has loaded, then raised as KeyboardInterrupt.

    An interrupt inside TensorFlow's C++ import surfaces as a traceback or an unrelated ImportError;
    held, it becomes exit 130 with one line a few seconds later.
    """
    if threading.current_thread() is not threading.main_thread():
        _quiet_tensorflow()
        return
    interrupted = []
    previous = signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
    try:
        _quiet_tensorflow()
    finally:
        signal.signal(signal.SIGINT, previous)
    if interrupted:
        raise KeyboardInterrupt


def _quiet_tensorflow():
    """Imports TensorFlow without its C++ and absl start-up chatter, unless TF_CPP_MIN_LOG_LEVEL is set.

    TF_CPP_MIN_LOG_LEVEL=3 silences TensorFlow's own C++ log (the CPU-feature notice, the cuInit
    error); the oneDNN and cudart notices are written by absl before its logging starts, which no
    setting reaches, once per TensorFlow library (hence twice): they are kept out by sending the
    process's stderr to a file while TensorFlow loads, and any other line there is written back.
    """
    logging.getLogger("absl").setLevel(logging.ERROR)
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ or "tensorflow" in sys.modules:
        return  # the user asked for TensorFlow's log level, or it is too late
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()  # loads the device plugins (cuInit) while stderr is captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode(errors="replace").splitlines(keepends=True)
                    if not STARTUP_NOISE.search(line)]
    sys.stderr.write("".join(kept))


def _os_error(error):
    """One line for an ``OSError`` met while writing (a full disk, a read-only place)."""
    text = str(error).strip()  # h5py's errors span several lines: the errno says it in one
    reason = os.strerror(error.errno) if error.errno else (text.splitlines()[0] if text else type(error).__name__)
    where = f" ({error.filename})" if error.filename else ""
    return (f"{reason}{where}. What was written before stays intact: free space or fix the permissions, then run "
            f"the same command again to resume. Received: {type(error).__name__} errno={error.errno}")


def _out_of_memory(error):
    """One line for TensorFlow's out-of-memory error (its message spans a page of allocator notes)."""
    from rankloss_tf.io.text import reason

    return (f"Out of memory ({reason(error)}). What was written before stays intact: pass a smaller --image-size or "
            "batch (--classes-per-batch / --batch-size), then run the same command again. "
            "Received: ResourceExhaustedError")


def main(argv=None):
    """Entry point of the ``rankloss-tf`` console script; returns the exit status.

    Exit status: 0 done, 2 bad input (the message names it) or a file that
    cannot be written (a full disk, a read-only place; what was written stays
    intact), 3 the training diverged (NaN loss; the last good checkpoint is
    kept), 130 interrupted.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).

    Example:
    >>> main(["train", "--dataset", "digits", "--epochs", "2", "--out", "/tmp/run"])  # doctest: +SKIP
    0
    """
    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 prints as caf\xe9, never a traceback
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors=PRINTABLE_ERRORS)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _load_tensorflow()
    except KeyboardInterrupt:
        parser.exit(130, f"\n{PROG}: interrupted before any work began; nothing was written.\n")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import tensorflow as tf

    from rankloss_tf.app.callbacks import DivergedError
    from rankloss_tf.datasets.folder import one_scan

    try:
        with one_scan():  # a folder is scanned once per command, however many steps read it
            args.func(args)
    except DivergedError as error:
        parser.exit(3, f"{PROG}: error: {error}\n")
    except tf.errors.ResourceExhaustedError as error:
        parser.exit(2, f"{PROG}: error: {_out_of_memory(error)}\n")
    except (ValueError, ImportError, FileNotFoundError) as error:
        parser.exit(2, f"{PROG}: error: {error}\n")
    except OSError as error:  # a full disk, a read-only place met mid-way: what is written stays intact
        parser.exit(2, f"{PROG}: error: {_os_error(error)}\n")
    except KeyboardInterrupt:
        if args.command in RESUMING_COMMANDS:
            parser.exit(130, f"\n{PROG}: interrupted; run the same command again to resume (finished epochs and "
                             "phases are kept).\n")
        parser.exit(130, f"\n{PROG}: interrupted; what {args.command} writes is written whole or not at all: "
                         "run the same command again.\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
