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
    rankloss-tf index --model runs/mine --gallery folder:photos/ --shard 0/2 --out shards/0   # on machine 1
    rankloss-tf index --model runs/mine --gallery folder:photos/ --shard 1/2 --out shards/1   # on machine 2
    rankloss-tf index --model runs/mine --merge shards/0 shards/1 --out indexes/photos
    rankloss-tf search --index indexes/photos query1.jpg query2.png --k 5

A build streams its gallery in blocks (``--block-size`` images), each
written to ``OUT.rankloss_tf-build/`` when finished (``retrieval.block_files``):
run a killed build again with the same command and it goes on from its last
finished block; killed after writing ``--out`` but before removing its work
files, the same command recognises its own output (the build key recorded in
its marker) and only removes them. Progress, images/s and the time left go
to stderr.
"""

import argparse
import os
import sys
import time
from pathlib import Path

from rankloss_tf.retrieval.ivf_lists import DEFAULT_LISTS

__all__ = ["add_index_arguments", "add_search_arguments", "run_index", "run_search"]

BLOCK_SIZE = 8192  # images per block file: a kill loses at most this (15 s for the small CNN at 32 px, index_build.md)
PROGRESS_SECONDS = 10.0  # off a terminal: one progress line this often
OPTION_NAMES = ("--probes", "--lists")  # how ivf_lists.check_probes names them here


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def shard_argument(text):
    """An argparse type for ``--shard i/N``: ``(i, N)`` with ``0 <= i < N``.

    Example:
    >>> shard_argument("1/4")
    (1, 4)
    """
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected i/N (shard i of N, counted from 0), got {text!r}")
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"expected 0 <= i < N (shards are counted from 0), got {text!r}")
    return index, count


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
    parser.add_argument("--gallery",
                        help="(required unless --merge) a dataset name (digits, omniglot, cars196, ...), "
                             "tfrecord:PATTERN (its --split, read as training reads it) or folder:PATH (every image of its class sub-folders, "
                             "labelled by folder)")
    parser.add_argument("--data-dir", type=path_argument, help="local copy of a named dataset (e.g. the Omniglot zips)")
    parser.add_argument("--split", choices=("test", "train"), default="test",
                        help="split of a named or tfrecord: dataset (default test: the held-out classes)")
    parser.add_argument("--image-size", type=_positive_int,
                        help="resize when loading (default: as stored; the model conforms any size itself)")
    parser.add_argument("--metric", choices=("cosine", "l2"), default="cosine")
    parser.add_argument("--batch-size", type=_positive_int, default=256, help="images per forward pass")
    parser.add_argument("--out", required=True, type=path_argument,
                        help="index directory to write (one SavedModel); with --shard, the shard's directory")
    parser.add_argument("--overwrite", action="store_true", help="replace a previous export of this tool at --out")
    parser.add_argument("--block-size", type=_positive_int, default=BLOCK_SIZE,
                        help="images per block of embeddings, each written beside --out (OUT.rankloss_tf-build/) "
                             f"as it finishes: a killed build run again goes on from its last block (default "
                             f"{BLOCK_SIZE})")
    parser.add_argument("--restart", action="store_true",
                        help="discard the blocks of an interrupted build of another model or gallery at --out")
    parser.add_argument("--shard", type=shard_argument, metavar="I/N",
                        help="embed only shard I of N (counted from 0) of the sorted gallery into the shard "
                             "directory --out; then --merge the N shards into the index")
    parser.add_argument("--merge", nargs="+", type=path_argument, metavar="SHARD",
                        help="build the index --out from the shard directories of every --shard I/N (with the "
                             "same --model; no --gallery)")
    # IVF hook: the approximate backend that ships inside the SavedModel (retrieval.ivf)
    parser.add_argument("--backend", choices=("exact", "ivf", "faiss_ivf"), default="exact",
                        help="exact search; ivf: inverted lists for galleries of millions, also inside the "
                             "SavedModel; faiss_ivf: faiss IVFFlat, searched by load_index / `rankloss-tf search` "
                             "in Python (pip install faiss-cpu; the SavedModel searches exactly) (default exact)")
    parser.add_argument("--lists", type=_positive_int,
                        help=f"ivf, faiss_ivf: number of lists (default: {DEFAULT_LISTS})")
    parser.add_argument("--probes", type=_positive_int,
                        help="ivf, faiss_ivf: lists probed per query (default: calibrated for recall@10 >= 0.95)")
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


def _duration(seconds):
    """``1h02m``, ``3m05s`` or ``42s``."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class _Progress:
    """Images embedded, images/s and the time left, on stderr: one updated line on a terminal, else a line
    every ``PROGRESS_SECONDS``; the rate counts only this run's images (not the blocks found finished)."""

    def __init__(self, label, stream=None):
        self.label, self.stream = label, stream or sys.stderr
        self.started = self.shown = time.perf_counter()

    def __call__(self, done, total, resumed=0):
        now = time.perf_counter()
        terminal = self.stream.isatty()
        if done < total and now - self.shown < (0.5 if terminal else PROGRESS_SECONDS):
            return
        self.shown = now
        elapsed = max(now - self.started, 1e-9)
        rate = (done - resumed) / elapsed
        left = f", {_duration((total - done) / rate)} left" if rate > 0 and done < total else ""
        kept = f" ({resumed} from an earlier run)" if resumed else ""
        line = f"{self.label}: {done}/{total} images{kept}, {rate:.0f} images/s{left}"
        end = "\n" if not terminal or done == total else ""
        self.stream.write(("\r" if terminal else "") + line + end)
        self.stream.flush()


def _check_gallery(args):
    """Checks --gallery and --data-dir; returns the gallery folder (or None)."""
    from rankloss_tf import datasets

    folder = datasets.folder_path(args.gallery)
    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        raise ValueError(f"Data directory not found. Received: --data-dir={args.data_dir}")
    if folder is not None and not Path(folder).expanduser().is_dir():
        raise ValueError(f"The gallery folder does not exist. Received: --gallery={args.gallery}")
    if folder is None and args.gallery not in datasets.NAMES and not args.gallery.startswith(datasets.TFRECORD_PREFIX):
        raise ValueError(f"Unknown gallery; known: {', '.join(datasets.NAMES)}. Received: --gallery={args.gallery}")
    return folder


def _check_build_mode(args):
    """One of --gallery / --merge; --shard only with --gallery, and without the options applied at the merge."""
    if (args.gallery is None) == (args.merge is None):
        raise ValueError("index takes --gallery (embed a gallery) or --merge SHARD... (join the shards of a "
                         f"--shard build), one of the two. Received: --gallery={args.gallery}, --merge={args.merge}")
    if args.shard is not None and (args.backend != "exact" or args.lists is not None or args.probes is not None):
        raise ValueError("--backend, --lists and --probes apply when the shards are merged (--merge), not to one "
                         f"--shard. Received: --shard {args.shard[0]}/{args.shard[1]} --backend {args.backend}")


def _check_index_arguments(args):
    """Every argument of ``index`` checked before any work; returns the paths the index must not touch.

    Raises:
        ValueError: a model path that is no model form, a missing data
            directory or gallery folder, an unknown dataset, both or none of
            --gallery and --merge, or an output path that may not be written
            (each message names the input).
    """
    from rankloss_tf.app.limits import check_image_memory
    from rankloss_tf.export import check_export_path
    from rankloss_tf.io.atomic import check_writable
    from rankloss_tf.loading import model_form
    from rankloss_tf.retrieval.ann import check_backend
    from rankloss_tf.retrieval.block_files import SHARD_KIND
    from rankloss_tf.retrieval.ivf import LIST_BACKENDS
    from rankloss_tf.retrieval.ivf_lists import check_probes
    from rankloss_tf.retrieval.versions import check_index_path

    model_form(args.model)
    _check_build_mode(args)
    folder = None if args.gallery is None else _check_gallery(args)
    check_probes(args.probes, args.lists, names=OPTION_NAMES)
    if (args.lists is not None or args.probes is not None) and args.backend not in LIST_BACKENDS:
        raise ValueError(f"--lists and --probes apply to --backend {' or '.join(LIST_BACKENDS)}. "
                         f"Received: --backend={args.backend}")
    if args.codes is not None and args.backend != "ivf":
        raise ValueError(f"--codes applies to --backend ivf. Received: --backend={args.backend}")
    check_backend(args.backend)  # faiss_ivf without faiss: refused before any work
    check_image_memory(args.image_size, args.batch_size)
    protected = [args.model, args.data_dir, folder, *(args.merge or ())]
    # --out written by this very build, killed before removing its work files: compared once the gallery is read
    replace = args.overwrite or _leftover(args)
    if args.shard is not None:
        check_export_path(args.out, replace, protected, role="--out", kind=SHARD_KIND)
    else:
        check_index_path(args.out, replace, protected, role="--out")  # the save's rules, before any embedding
    check_writable(args.out, "--out")
    return protected


def run_index(args):
    """Embeds ``args.gallery`` with ``args.model`` and writes the index (or one shard) to ``args.out``.

    Every argument is checked (``_check_index_arguments``: the model's form,
    the gallery, the output path with the model, a folder gallery and the
    data directory protected), then the model is loaded, before the gallery
    is read or anything is embedded. Files of a folder that cannot be read are left out and listed,
    as in training. The gallery streams in blocks, each kept in
    ``OUT.rankloss_tf-build/`` once embedded: Ctrl-C (or a kill) exits
    leaving --out as it was, and the same command run again goes on from
    the last finished block (killed after writing --out, it only removes the
    work files: ``_finish``). With ``args.merge``, the shards are joined instead.

    Example:
    >>> run_index(argparse.Namespace(model="runs/demo/saved_model", gallery="digits", split="test",
    ...     data_dir=None, image_size=None, metric="cosine", batch_size=256, out="indexes/digits",
    ...     overwrite=False))  # doctest: +SKIP
    Index of 896 items (cosine) written to indexes/digits: ...
    """
    try:
        _index(args)
    except KeyboardInterrupt:
        from rankloss_tf.retrieval.block_files import work_path

        kept = work_path(args.out)
        blocks = (f" The finished blocks of embeddings are kept in {kept}: run the same command again to go on "
                  "from there." if kept.is_dir() else " Run the same command again to build the index.")
        print(f"\nrankloss-tf index: interrupted; nothing was written to {args.out} (a previous index there is "
              f"unchanged).{blocks}", file=sys.stderr, flush=True)
        raise SystemExit(130) from None


def _backend_options(args):
    """The ``Index`` backend arguments of the command line."""
    if args.backend == "exact":
        return {}
    return {"backend": args.backend, "lists": args.lists, "probes": args.probes, "codes": args.codes}


def _index(args):
    from rankloss_tf.retrieval.block_files import BuildWork, shard_range, work_path
    from rankloss_tf.retrieval.embedder import as_embedder
    from rankloss_tf.retrieval.gallery import load_gallery

    protected = _check_index_arguments(args)
    model = as_embedder(args.model)  # a damaged model is refused before the gallery is read
    if args.merge is not None:
        return _merge(args, model, protected)
    gallery = load_gallery(args.gallery, split=args.split, data_dir=args.data_dir, image_size=args.image_size)
    _print_skipped(gallery)
    _check_probes(args, len(gallery))
    start, stop = shard_range(len(gallery), args.shard)
    plan = _plan(args, gallery, start, stop)
    if _leftover(args):
        return _finish(args, plan)
    work = BuildWork(work_path(args.out), plan).open(args.restart)
    _embed(args, model, gallery, work)
    embeddings, labels = work.read()
    ids, paths = gallery.ids[start:stop], gallery.paths[start:stop]
    if args.shard is not None:
        _write_shard(args, (embeddings, labels, ids, paths), gallery, work, protected)
    else:
        from rankloss_tf.retrieval.build import index_from_embeddings

        index = index_from_embeddings(model, embeddings, labels, ids, paths, args.metric, **_backend_options(args))
        del embeddings
        _save(args, index, protected, _build_key(args, plan))
    _remove_work(args, work)


def _print_skipped(gallery):
    from rankloss_tf.datasets.folder import printable

    if gallery.skipped:
        print(f"Skipped {len(gallery.skipped)} files that cannot be read (as training skips them):", flush=True)
        for path, reason in gallery.skipped:
            print(f"  {printable(path)}\t{reason}")


def _plan(args, gallery, start, stop):
    """What the blocks of this build are of (``BuildWork``'s plan): a build of another plan is never mixed in."""
    from rankloss_tf.retrieval.block_files import model_key

    return {"model": model_key(args.model), "gallery": gallery.content_key(), "image_size": args.image_size,
            "range": [start, stop], "block_size": args.block_size}


def _build_key(args, plan):
    """What this build writes, recorded in --out's marker: the blocks' plan and, for an index, its settings."""
    if args.shard is not None:
        return dict(plan)
    return {**plan, "metric": args.metric, "index": _backend_options(args)}


def _leftover(args):
    """True when --out records the build that wrote it and that build's work directory is beside it: a build
    killed after writing --out but before removing its work files (``_finish`` compares it with this one)."""
    from rankloss_tf.export import read_export_info
    from rankloss_tf.retrieval.block_files import MANIFEST, work_path

    if args.overwrite or args.merge is not None:
        return False
    recorded = (read_export_info(args.out) or {}).get("build")
    return isinstance(recorded, dict) and (work_path(args.out) / MANIFEST).is_file()


def _finish(args, plan):
    """Removes the work files left by a killed run of this very build, whose --out is complete; refuses
    (naming what differs) when --out was written by another build."""
    from rankloss_tf.export import read_export_info
    from rankloss_tf.retrieval.block_files import BuildWork, changes, work_path

    what = "index" if args.shard is None else "shard"
    changed = changes(read_export_info(args.out)["build"], _build_key(args, plan))
    if changed:
        raise ValueError(f"--out holds the {what} of another build ({'; '.join(changed)}); it is replaced only "
                         f"with --overwrite. Received: --out={args.out}")
    work = BuildWork(work_path(args.out), plan)
    if work.changes():
        left = f"{work.directory} holds the blocks of another build: left as it is"
    elif work.remove():
        left = f"removed its work files in {work.directory}"
    else:
        left = f"removed its work files; {work.directory} is left: it holds files this build did not write"
    print(f"{args.out} already holds the {what} this command builds (an earlier run stopped before cleaning up): "
          f"{left}.", flush=True)


def _embed(args, model, gallery, work):
    """Embeds the missing blocks, saying what an earlier run left and showing the progress."""
    from rankloss_tf.retrieval.build import embed_blocks

    start, stop = work.plan["range"]
    part = f" (shard {args.shard[0]}/{args.shard[1]}: items {start}-{stop})" if args.shard is not None else ""
    print(f"Embedding {stop - start} gallery images of {args.gallery}{part} with {args.model}", flush=True)
    missing = work.missing()
    left = sum(b - a for a, b in missing)
    if left < stop - start:
        print(f"Resuming: {stop - start - left} images already embedded in {work.directory} "
              f"({len(work.blocks()) - len(missing)} of {len(work.blocks())} blocks)", flush=True)
    try:
        embed_blocks(model, gallery, work, args.batch_size, on_progress=_Progress("embedding"))
    except BaseException:
        if len(work.missing()) == len(work.blocks()):  # not one block finished: nothing worth keeping
            work.remove()
        raise


def _remove_work(args, work):
    """Removes the work files once --out is written (interrupted meanwhile: the same command finishes it)."""
    try:
        gone = work.remove()
    except KeyboardInterrupt:
        print(f"\nrankloss-tf index: interrupted after {args.out} was written, before its work files in "
              f"{work.directory} were removed: run the same command again to remove them.", file=sys.stderr, flush=True)
        raise SystemExit(130) from None
    if not gone:
        print(f"Left {work.directory}: it holds files this build did not write.", flush=True)


def _write_shard(args, items, gallery, work, protected):
    from rankloss_tf.retrieval.block_files import write_shard

    index, count = args.shard
    start, stop = work.plan["range"]
    info = {"shard": index, "shards": count, "range": [start, stop], "items": len(gallery),
            "items_key": gallery.items_key(), "model": work.plan["model"], "gallery": args.gallery,
            "build": _build_key(args, work.plan)}
    write_shard(args.out, *items, info, overwrite=args.overwrite, protected=protected)
    print(f"Shard {index}/{count} (items {start}-{stop} of {len(gallery)}) written to {args.out}. When every shard "
          f"is written: rankloss-tf index --model {args.model} --merge SHARD_DIR... --out INDEX")


def _merge(args, model, protected):
    """Joins the shards of ``args.merge`` into the index ``args.out``; refuses shards of another model."""
    from rankloss_tf.retrieval.block_files import model_key, read_shards
    from rankloss_tf.retrieval.build import index_from_embeddings

    embeddings, labels, ids, paths, info = read_shards(args.merge)
    if info["model"] != model_key(args.model):
        raise ValueError(f"The shards were embedded by another model than --model (its files differ): merge them "
                         f"with the model that embedded them. Received: --model={args.model}")
    _check_probes(args, len(ids))
    print(f"Merging {len(args.merge)} shards: {len(ids)} items of {info.get('gallery')}", flush=True)
    index = index_from_embeddings(model, embeddings, labels, ids, paths, args.metric, **_backend_options(args))
    _save(args, index, protected)


def _save(args, index, protected, build=None):
    from rankloss_tf.retrieval.ivf import lists_for
    from rankloss_tf.retrieval.saved_model import save_index

    version = save_index(index, args.out, overwrite=args.overwrite, protected=protected, build=build)
    print(f"Index of {len(index)} items ({args.metric}) written to {args.out} (version {version.name}, one "
          f"SavedModel at {version}) with signatures search(images, k), embed(images), search_embeddings("
          f"embeddings, k). Search it with `rankloss-tf search --index {args.out}`; TF Serving: "
          f"--model_base_path={Path(args.out).resolve()}. Load only indexes you trust (a SavedModel is a program).")
    if index.ivf is not None:  # IVF hook
        print(f"IVF: {len(index.ivf.centroids)} lists, {index.ivf.probes} probed per query, rows as {index.ivf.codes}; "
              "search_probes(images, k, probes) and search_embeddings_probes(embeddings, k, probes) set them per call")
    if index.backend == "faiss_ivf":
        print(f"faiss_ivf: {lists_for(len(index), args.lists)} lists, {args.probes or 'calibrated'} probes; faiss builds "
              "them on the first search of load_index / `rankloss-tf search` (its SavedModel signatures search exactly)")


def _check_probes(args, size):
    """Refuses, before embedding, more --probes than the gallery of ``size`` items will have lists."""
    from rankloss_tf.retrieval.ivf_lists import LIST_BACKENDS, check_probes

    if args.backend in LIST_BACKENDS:
        check_probes(args.probes, args.lists, size, names=OPTION_NAMES)


def _read_image(path):
    """A query image as uint8 ``[1, H, W, C]``, decoded as training decodes: gray + alpha becomes gray."""
    import tensorflow as tf

    from rankloss_tf.io.text import reason

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
