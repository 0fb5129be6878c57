"""The ``rankloss-tf index`` and ``rankloss-tf search`` commands: arguments and work.

``cli.build_parser`` registers them::

    index = commands.add_parser("index", help=...)
    add_index_arguments(index)          # sets func=run_index
    search = commands.add_parser("search", help=...)
    add_search_arguments(search)        # sets func=run_search

and dispatches with ``args.func(args)``. TensorFlow is imported only when a
command runs, so ``--help`` stays fast.

Examples::

    rankloss-tf index --model runs/omniglot/saved_model --gallery omniglot --data-dir data/omniglot --out indexes/omniglot
    rankloss-tf index --model runs/mine --gallery folder:photos/ --out indexes/photos
    rankloss-tf search --index indexes/photos query1.jpg query2.png --k 5
"""

import argparse
import os
import sys
from pathlib import Path

__all__ = ["add_index_arguments", "add_search_arguments", "run_index", "run_search"]


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def path_argument(text):
    """An argparse type for a path: an empty one is refused (it would mean the current directory)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"expected a path. Received: {text!r}")
    return text


def add_index_arguments(parser):
    """Adds the arguments of ``index`` to ``parser`` and sets ``func=run_index``.

    Example:
    >>> parser = argparse.ArgumentParser()
    >>> add_index_arguments(parser)
    >>> parser.parse_args(["--model", "m", "--gallery", "digits", "--out", "o"]).metric
    'cosine'
    """
    parser.add_argument("--model", required=True, type=path_argument,
                        help="embedding model: SavedModel directory, .keras file or training run directory")
    parser.add_argument("--gallery", required=True,
                        help="a dataset name (digits, omniglot, cars196, ...), tfrecord:PATTERN (its --split, "
                             "read as training reads it) or folder:PATH (every image of its class sub-folders, "
                             "labelled by folder)")
    parser.add_argument("--data-dir", type=path_argument, help="local copy of a named dataset (e.g. the Omniglot zips)")
    parser.add_argument("--split", choices=("test", "train"), default="test",
                        help="split of a named or tfrecord: dataset (default test: the held-out classes)")
    parser.add_argument("--image-size", type=_positive_int,
                        help="resize when loading (default: as stored; the model conforms any size itself)")
    parser.add_argument("--metric", choices=("cosine", "l2"), default="cosine")
    parser.add_argument("--batch-size", type=_positive_int, default=256, help="images per forward pass")
    parser.add_argument("--out", required=True, type=path_argument, help="index directory to write (one SavedModel)")
    parser.add_argument("--overwrite", action="store_true", help="replace a previous export of this tool at --out")
    # IVF hook: the approximate backend that ships inside the SavedModel (retrieval.ivf)
    parser.add_argument("--backend", choices=("exact", "ivf"), default="exact",
                        help="exact search, or ivf: inverted lists for galleries of millions (default exact)")
    parser.add_argument("--lists", type=_positive_int, help="ivf: number of lists (default: sqrt of the gallery size)")
    parser.add_argument("--probes", type=_positive_int,
                        help="ivf: lists probed per query (default: calibrated for recall@10 >= 0.95)")
    parser.add_argument("--codes", choices=("float32", "int8"),
                        help="ivf: rows kept as float32 (default) or int8 codes (a quarter of the memory, for 10^7 items)")
    parser.set_defaults(func=run_index)


def add_search_arguments(parser):
    """Adds the arguments of ``search`` to ``parser`` and sets ``func=run_search``.

    Example:
    >>> parser = argparse.ArgumentParser()
    >>> add_search_arguments(parser)
    >>> parser.parse_args(["--index", "i", "a.png", "--k", "3"]).images
    ['a.png']
    """
    parser.add_argument("--index", required=True, type=path_argument,
                        help="index directory written by `rankloss-tf index`")
    parser.add_argument("images", nargs="+", type=path_argument,
                        help="query image files (JPEG, PNG, BMP, GIF; any size)")
    parser.add_argument("--k", type=_positive_int, default=5, help="neighbours per query (default 5)")
    parser.set_defaults(func=run_search)


class _Progress:
    """A Keras progress bar on a terminal, else one line per step."""

    def __init__(self, label):
        self.label = label
        self.bar = None

    def __call__(self, step, total):
        if sys.stdout.isatty():
            import keras

            if self.bar is None:
                self.bar = keras.utils.Progbar(total, unit_name="batch")
            self.bar.update(step)
        else:
            print(f"{self.label}: batch {step}/{total}", flush=True)


def _check_index_arguments(args):
    """Every argument of ``index`` checked before any work; returns the paths the index must not touch.

    Raises:
        ValueError: a model path that is no model form, a missing data
            directory or gallery folder, an unknown dataset, or an output
            path that may not be written (each message names the input).
    """
    from rankloss_tf import datasets
    from rankloss_tf.app.limits import check_image_memory
    from rankloss_tf.io.atomic import check_writable
    from rankloss_tf.loading import model_form
    from rankloss_tf.retrieval.versions import check_index_path

    model_form(args.model)
    folder = datasets.folder_path(args.gallery)
    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        raise ValueError(f"Data directory not found. Received: --data-dir={args.data_dir}")
    if folder is not None and not Path(folder).expanduser().is_dir():
        raise ValueError(f"The gallery folder does not exist. Received: --gallery={args.gallery}")
    if folder is None and args.gallery not in datasets.NAMES and not args.gallery.startswith(datasets.TFRECORD_PREFIX):
        raise ValueError(f"Unknown gallery; known: {', '.join(datasets.NAMES)}. Received: --gallery={args.gallery}")
    if args.probes is not None and args.lists is not None and args.probes > args.lists:
        raise ValueError(f"--probes {args.probes} exceeds --lists {args.lists}: a query probes at most every list. "
                         f"Received: --probes={args.probes}, --lists={args.lists}")
    if (args.lists is not None or args.probes is not None or args.codes is not None) and args.backend != "ivf":
        raise ValueError(f"--lists, --probes and --codes apply to --backend ivf. Received: --backend={args.backend}")
    check_image_memory(args.image_size, args.batch_size)
    protected = [args.model, args.data_dir, folder]
    check_index_path(args.out, args.overwrite, protected, role="--out")  # the save's rules, before any embedding
    check_writable(args.out, "--out")
    return protected


def run_index(args):
    """Embeds ``args.gallery`` with ``args.model`` and writes the index to ``args.out``.

    Every argument is checked (``_check_index_arguments``: the model's form,
    the gallery, the output path with the model, a folder gallery and the
    data directory protected), then the model is loaded, before the gallery
    is read or anything is embedded. Files of a folder that cannot be read are left out and listed,
    as in training. Ctrl-C exits with status 130 and writes nothing.

    Example:
    >>> run_index(argparse.Namespace(model="runs/demo/saved_model", gallery="digits", split="test",
    ...     data_dir=None, image_size=None, metric="cosine", batch_size=256, out="indexes/digits",
    ...     overwrite=False))  # doctest: +SKIP
    Index of 896 items (cosine) written to indexes/digits: ...
    """
    try:
        _index(args)
    except KeyboardInterrupt:
        print(f"\nrankloss-tf index: interrupted; nothing was written to {args.out} (a previous index there is "
              "unchanged). Run the same command again to build the index.", file=sys.stderr, flush=True)
        raise SystemExit(130) from None


def _index(args):
    from rankloss_tf.datasets.folder import printable
    from rankloss_tf.retrieval.build import build_index
    from rankloss_tf.retrieval.embedder import as_embedder
    from rankloss_tf.retrieval.gallery import load_gallery
    from rankloss_tf.retrieval.saved_model import save_index

    protected = _check_index_arguments(args)
    model = as_embedder(args.model)  # a damaged model is refused before the gallery is read
    gallery = load_gallery(args.gallery, split=args.split, data_dir=args.data_dir, image_size=args.image_size)
    if gallery.skipped:
        print(f"Skipped {len(gallery.skipped)} files that cannot be read (as training skips them):", flush=True)
        for path, reason in gallery.skipped:
            print(f"  {printable(path)}\t{reason}")
    _check_probes(args, len(gallery))
    print(f"Embedding {len(gallery)} gallery images of {args.gallery} with {args.model}", flush=True)
    ivf = {"backend": "ivf", "lists": args.lists, "probes": args.probes, "codes": args.codes} \
        if args.backend == "ivf" else {}  # IVF hook
    index = build_index(model, gallery, metric=args.metric, batch_size=args.batch_size,
                        on_batch=_Progress("embedding"), **ivf)
    version = save_index(index, args.out, overwrite=args.overwrite, protected=protected)
    print(f"Index of {len(index)} items ({args.metric}) written to {args.out} (version {version.name}, one "
          f"SavedModel at {version}) with signatures search(images, k), embed(images), search_embeddings("
          f"embeddings, k). Search it with `rankloss-tf search --index {args.out}`; TF Serving: "
          f"--model_base_path={Path(args.out).resolve()}. Load only indexes you trust (a SavedModel is a program).")
    if index.ivf is not None:  # IVF hook
        print(f"IVF: {len(index.ivf.centroids)} lists, {index.ivf.probes} probed per query, rows as {index.ivf.codes}; "
              "search_probes(images, k, probes) and search_embeddings_probes(embeddings, k, probes) set them per call")


def _check_probes(args, size):
    """Refuses, before embedding, more --probes than the gallery of ``size`` items will have lists."""
    from rankloss_tf.retrieval.ivf import default_lists

    if args.backend != "ivf" or args.probes is None:
        return
    lists = min(args.lists or default_lists(size), size)
    if args.probes > lists:
        raise ValueError(f"--probes {args.probes} exceeds the {lists} lists of this gallery of {size} items "
                         f"({'--lists' if args.lists else 'the default lists, sqrt of the size'}): pass --probes "
                         f"{lists} or less. Received: --probes={args.probes}")


def _read_image(path):
    """A query image as uint8 ``[1, H, W, C]``, decoded as training decodes: gray + alpha becomes gray."""
    import tensorflow as tf

    from rankloss_tf.app.errors import reason

    if not Path(path).is_file():
        raise ValueError(f"Query image not found. Received: {path}")
    try:
        image = tf.io.decode_image(tf.io.read_file(os.fsencode(path)), expand_animations=False)
    except tf.errors.InvalidArgumentError as error:
        raise ValueError(f"Cannot decode the query image ({reason(error)}). Received: {path}") from None
    if image.shape[-1] == 2:  # gray + alpha: the alpha is dropped, as for RGBA
        image = image[..., :1]
    return image[tf.newaxis]


def run_search(args):
    """Prints the ranked neighbours (rank, id, label, score, path) of each query image.

    Loading an index runs the SavedModel it holds: search only indexes you trust.

    Example:
    >>> run_search(argparse.Namespace(index="indexes/digits", images=["q.png"], k=2))  # doctest: +SKIP
    q.png:
      rank  similarity  label  id  path
         1      0.9871      7  digits/test/000012  -
         2      0.9802      7  digits/test/000140  -
    """
    try:
        _search(args)
    except KeyboardInterrupt:
        print("\nrankloss-tf search: interrupted.", file=sys.stderr, flush=True)
        raise SystemExit(130) from None


def _search(args):
    from rankloss_tf.datasets.folder import printable
    from rankloss_tf.retrieval.saved_model import load_index

    index = load_index(args.index)
    score_name = "similarity" if index.metric == "cosine" else "distance"
    for image_path in args.images:
        result = index.search(_read_image(image_path), min(args.k, len(index)))
        print(f"{printable(image_path)}:")
        print(f"  rank  {score_name:>10}  label  id  path")
        for rank, (item, score, label, path) in enumerate(
            zip(result.ids[0], result.scores[0], result.labels[0], result.paths[0]), start=1
        ):
            print(f"  {rank:>4}  {score:>10.4f}  {label:>5}  {printable(item)}  {printable(path) or '-'}")
