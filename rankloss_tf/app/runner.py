"""``train(config)``: the whole job as one short story.

check paths -> lock the run directory -> load the zero-shot splits -> fit
(resumable, epoch by epoch) -> save the model -> evaluate on the test classes
-> plots -> export. Each phase is recorded in the run directory
(``RunDirectory``), so a run interrupted anywhere, by Ctrl-C or a kill, resumes
at the phase it was in when the same command runs again, and a finished run is
not trained again.
"""

import contextlib
import dataclasses
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from rankloss_tf import datasets
from rankloss_tf.datasets.folder import one_scan, printable
from rankloss_tf.evaluation import (
    KS,
    RetrievalEvaluation,
    evaluate,
    ks_within,
    plot_recall_at_k,
    plot_retrieval_gallery,
    plot_tsne,
    thumbnails,
)
from rankloss_tf.export import EMBEDDING_KIND, check_export_path, check_separate, export_saved_model
from rankloss_tf.loading import load_model
from rankloss_tf.losses import embedding_part
from rankloss_tf.references import references_of
from rankloss_tf.app.callbacks import DivergedError, EpochCheckpoint, EpochHistory
from rankloss_tf.cache import CACHE_ENV_VAR, default_cache_dir
from rankloss_tf.io.atomic import check_writable, remove_stale_temporaries, temporary_path, write_file
from rankloss_tf.io.text import UNDECODABLE, reason
from rankloss_tf.app.limits import check_image_memory
from rankloss_tf.app.protocols import protocol
from rankloss_tf.app.recipes import describe
from rankloss_tf.app.run_dir import RunDirectory
from rankloss_tf.app.split import check_split, check_test_classes, folder_split, record_split, split_changes
from rankloss_tf.app.strategy import (build_strategy, from_chief, is_chief, is_multi_worker,
                                           symbolic_build_from_spec, synchronized_batch_norm, worker_name)

__all__ = ["TrainResult", "train"]

logger = logging.getLogger(__name__)
# The temporary run directory of a worker other than the chief (in $TMPDIR, removed at its end).
WORKER_SCRATCH = "worker_run"


@dataclasses.dataclass
class TrainResult:
    """What ``train`` returns.

    Attributes:
        metrics: test metrics (``evaluate``'s dictionary; None on a worker
            other than the chief: the chief evaluates).
        model: the trained Keras model.
        out_dir: the run directory (None on a worker other than the chief:
            it writes no run directory).
        history: the ``keras.callbacks.History`` of this call's ``fit`` (None
            when this call did not train: the run was already fitted).
        seconds: wall times of the whole run, over every attempt: "fit",
            "evaluate" and "total".
        resumed: the phase the run directory was in when this call started
            (None for a new run; "finished" when nothing was left to do).
        worker: "chief" for the process that wrote the run directory (any
            single-process run), else e.g. "worker 1".

    Example:
    >>> result = train(TrainConfig(dataset="digits", out_dir="/tmp/run"))  # doctest: +SKIP
    >>> result.metrics["recall@1"], result.seconds["total"]  # doctest: +SKIP
    (0.94..., 30.1...)
    """

    metrics: dict
    model: keras.Model
    out_dir: object
    history: object
    seconds: dict
    resumed: str = None
    worker: str = "chief"


def _check_paths(config, run):
    """Refuses, before any work, an export that would replace the run, the data or a user's files, or that
    cannot be written."""
    data = {"the dataset folder": datasets.folder_path(config.dataset), "--data-dir": config.data_dir}
    check_separate(run.path, "--out", data)
    if config.export_dir:
        protected = {"the run directory --out": run.path, **data}
        check_separate(config.export_dir, "--export", protected)
        if not _exported_by(run, config.export_dir):
            check_export_path(config.export_dir, config.overwrite, protected, role="--export", kind=EMBEDDING_KIND)
            check_writable(config.export_dir, "--export")


def _check_caches(config):
    """Refuses, before any work, a cache directory that this run would write and cannot."""
    hint = f"Point {CACHE_ENV_VAR} (or --cache-dir for features) to a writable folder."
    caches = [default_cache_dir("folders")] if datasets.folder_path(config.dataset) else []
    if config.frozen:
        caches.append(config.cache_dir or default_cache_dir("features"))
    for cache in caches:
        role = "--cache-dir" if cache == config.cache_dir else f"The cache directory ({CACHE_ENV_VAR}={default_cache_dir()})"
        check_writable(cache, role, hint)


def _scan(config):
    """A folder dataset's scan and split, its held-out classes checked before any work (None otherwise)."""
    folder = datasets.folder_path(config.dataset)
    if folder is None:
        return None
    index = datasets.scan_folder(folder)
    check_test_classes(index, folder_split(index, config.seed))
    return index


@contextlib.contextmanager
def _files_stay(config):
    """Turns a dataset file deleted, or an image found damaged, while it is read into a clear ``ValueError``."""
    try:
        yield
    except tf.errors.NotFoundError as error:
        text = (getattr(error, "message", "") or str(error)).strip()
        # TensorFlow names the file on some line of the message ("PATH; No such file or directory"), not
        # always the first (a streamed dataset's error starts "Graph execution error:").
        named = re.search(r"([^\s;{}\[\]]+); No such file or directory", text)
        gone = named.group(1) if named else (text.splitlines() or [type(error).__name__])[0]
        raise ValueError(_disappeared(config, gone)) from None
    except (tf.errors.InvalidArgumentError, tf.errors.FailedPreconditionError) as error:
        if not UNDECODABLE.search(getattr(error, "message", "") or str(error)):
            raise
        raise ValueError(f"An image of the dataset cannot be decoded ({reason(error, UNDECODABLE)}): remove or "
                         f"replace it, then run the same command again to resume. "
                         f"Received: dataset={printable(config.dataset)}") from None


def _disappeared(config, gone):
    """The message of a dataset file ``gone`` mid-run, with the advice that holds: a folder whose recorded split
    changed with it (a class folder deleted) is refused on resume (``split.record_split``), not resumed."""
    head = f"A file of the dataset disappeared while it was read ({printable(gone)})"
    received = f"Received: dataset={printable(config.dataset)}"
    folder = datasets.folder_path(config.dataset)
    try:
        changed = split_changes(config.out_dir, folder) if folder is not None and config.out_dir else []
    except (ValueError, OSError):  # the folder cannot be scanned as it is now: a rerun is refused before any work
        return f"{head}, and {printable(folder)} cannot be scanned as it is now: restore it. {received}"
    if changed:
        return (f"{head}, and with it the classes of the split this run recorded ({'; '.join(changed)}): a run "
                f"never resumes on other classes, so the same command would be refused. Restore the folder, or train "
                f"afresh in another --out. {received}")
    return f"{head}. Restore it, or run the same command again to resume on the files there are now. {received}"


def _fit_to_classes(config, given, train_images):
    """With a folder or TFRecord dataset of few training classes, P defaults to all of them instead of failing;
    a P given larger than the classes there are is refused before anything is written."""
    references = references_of(train_images)
    if references is None or not datasets.sizes_vary(config.dataset):
        return config
    available = int(np.unique(references.labels).size)
    if available >= config.classes_per_batch:
        return config
    if given.classes_per_batch is not None:
        raise ValueError(f"--classes-per-batch {config.classes_per_batch} needs as many training classes; "
                         f"{printable(config.dataset)} has {available}. Pass --classes-per-batch {available} or "
                         f"less. Received: classes_per_batch={config.classes_per_batch}")
    logger.warning("%s has %d training classes: batches of %d classes x %d samples.", printable(config.dataset),
                   available, available, config.samples_per_class)
    return dataclasses.replace(config, classes_per_batch=available)


def _exported_by(run, path):
    """True when this run already wrote its export to ``path`` (a re-run leaves it as it is)."""
    return run.state.get("exported_to") in (os.path.abspath(path), os.path.realpath(path)) and os.path.isdir(path)


def _load(config, split):
    """One zero-shot split; images of varying size are resized to ``image_size`` as they load."""
    size = config.image_size if datasets.sizes_vary(config.dataset) else None  # resize as they load
    images = datasets.load(config.dataset, split, data_dir=config.data_dir, image_size=size, seed=config.seed)
    if not images.element_spec[0].shape.is_fully_defined():
        images = datasets.load(config.dataset, split, data_dir=config.data_dir, image_size=config.image_size,
                               seed=config.seed)
    return images


def _list_unreadable(index, run):
    """Names, in the run directory and a warning, the files of a folder dataset that were left out."""
    unreadable = index.unreadable if index is not None else []
    if unreadable:
        lines = "".join(f"{printable(path)}\t{reason}\n" for path, reason in unreadable)
        write_file(run / run.UNREADABLE, lines)
        logger.warning("%d files of %s cannot be decoded and are left out (listed in %s): %s", len(unreadable),
                       index.root, run / run.UNREADABLE, ", ".join(printable(path) for path, _ in unreadable[:3]))


class _Clock:
    """Wall time of the whole run: what earlier attempts recorded plus this one's."""

    def __init__(self, before):
        self.before, self.started = before, time.perf_counter()

    def __call__(self):
        return self.before + time.perf_counter() - self.started


def train(config, callbacks=()):
    """Trains, evaluates, plots and exports, as described by ``config``; resumes an interrupted run.

    Args:
        config: a ``TrainConfig``.
        callbacks: extra Keras callbacks for ``fit``.

    Returns:
        A ``TrainResult``.

    Raises:
        ValueError: a bad configuration (unknown names, bad numbers, missing
            data), a run directory or export path that would overwrite what this
            run does not own, a run started with another configuration, a run
            locked by another process, or a loss that became NaN
            (``DivergedError``; the last good checkpoint is kept).

    Example:
    >>> result = train(TrainConfig(dataset="digits", epochs=1, out_dir="/tmp/run", plots=False))  # doctest: +SKIP
    >>> sorted(result.metrics)  # doctest: +SKIP
    ['f1', 'map@r', 'nmi', 'r_precision', 'recall@1', 'recall@2', 'recall@4', 'recall@8']
    """
    strategy = build_strategy(config.strategy, config.tpu)  # first: a multi-worker one configures the runtime
    with one_scan(), _workers_stay(strategy):  # a folder dataset is scanned once (recipe, splits, recorded split)
        return _train(config, strategy, callbacks)


@contextlib.contextmanager
def _workers_stay(strategy):
    """Turns the loss of another worker of a multi-worker job into a clear ``ValueError`` (one line)."""
    try:
        yield
    except (tf.errors.UnavailableError, tf.errors.CancelledError, tf.errors.DeadlineExceededError,
            tf.errors.AbortedError) as error:
        if not is_multi_worker(strategy):
            raise
        unhealthy = re.search(r"unhealthy.*?(/job:\S+)", str(error), re.DOTALL)  # TensorFlow's heartbeat check
        lost = f"({unhealthy.group(1)} stopped)" if unhealthy else f"({type(error).__name__})"
        raise ValueError(f"Another worker of the job was lost during training {lost}. The chief's run directory "
                         "keeps the finished epochs: start every worker again with the same command to resume. "
                         f"Received: strategy=multi_worker, this process={worker_name(strategy)}") from None


def _train(config, strategy, callbacks):
    """``train`` under ``strategy``."""
    resolved = config.resolved()
    if describe(resolved):  # a folder's recipe, chosen from its images
        logger.info("%s", describe(resolved))
    if not is_chief(strategy):
        return _train_worker(resolved, config, strategy, callbacks)
    _check_caches(resolved)
    run = RunDirectory(resolved.out_dir)
    _check_paths(resolved, run)
    index = _scan(resolved)
    if index is not None:  # a started run's classes changed: named as such, before the data's checks (P)
        check_split(run, index, resolved.seed)
    # The data is loaded (and with it every user error it can hold) before the run directory is created.
    config, train_images, test_images = _prepare(resolved, config)
    with run.locked():
        if index is not None:  # first: a class added to the folder is named as such, not as another P
            record_split(run, index, config.seed)
        run.start(config)
        resumed, clock = run.phase, _Clock(run.seconds)
        _list_unreadable(index, run)
        steps = _steps(config, train_images)
        method = protocol(config, train_images.element_spec[0].shape)
        history = None
        if _fitted(run.reached("fitted"), strategy):
            model = _load_model(run)
        else:
            run.advance("fitting", clock())
            with _files_stay(config):
                model, history = _fit(method, run, config, steps, train_images, test_images, callbacks, strategy)
            _save_model(model, run)
            run.advance("fitted", clock(), fit_seconds=clock())
            shutil.rmtree(run / run.CHECKPOINTS, ignore_errors=True)
            if strategy.num_replicas_in_sync > 1 or is_multi_worker(strategy):
                model = _load_model(run)  # evaluated and exported on this process alone, outside the strategy
        fit_seconds = run.require_json(run.STATE, "fit_seconds")
        if run.reached("evaluated"):
            metrics = run.require_json(run.METRICS, "metrics")
        else:
            with _files_stay(config):
                metrics = _evaluate(method, model, run, config, test_images)
            _record(run, config, method, metrics, fit_seconds, clock())
            run.advance("evaluated", clock())
        if config.export_dir and not _exported_by(run, config.export_dir):
            export_saved_model(model, config.export_dir, overwrite=config.overwrite,
                               protected={"the run directory --out": run.path}, split=run.read_json(run.SPLIT))
            run.advance("evaluated", clock(), exported_to=os.path.abspath(config.export_dir))
        seconds = _record(run, config, method, metrics, fit_seconds, clock())
        run.advance("finished", clock())
    return TrainResult(metrics=metrics, model=model, out_dir=run.path, history=history, seconds=seconds,
                       resumed=resumed)


def _prepare(config, given):
    """The configuration fitted to the data, and the loaded splits: ``(config, train images, test images)``.

    Every user error the data holds (an unknown name, a pattern that matches no file, too few classes for P,
    images too large for this machine's memory) is raised here, before anything is written.
    """
    keras.utils.set_random_seed(config.seed)
    with _files_stay(config):
        train_images, test_images = _load(config, "train"), _load(config, "test")
    config = _fit_to_classes(config, given, train_images)
    sides = [config.image_size, *(config.view_sizes or ()), *train_images.element_spec[0].shape[:2]]
    check_image_memory(max((side for side in sides if side), default=None), config.batch_size, "--image-size")
    return config, train_images, test_images


def _steps(config, train_images):
    """Steps per epoch: the configured number, else one pass over the training images."""
    return config.steps_per_epoch or max(1, int(train_images.cardinality()) // config.batch_size)


def _fitted(reached, strategy):
    """Whether the chief's run has been fitted already, as every worker learns it from the chief."""
    return bool(from_chief(strategy, [float(reached)])[0] > 0.5)


@contextlib.contextmanager
def _scratch():
    """A worker's temporary folder in ``$TMPDIR`` (this package's temporary scheme), removed at the end; the
    folders of workers killed earlier (their process dead) are removed first."""
    remove_stale_temporaries(tempfile.gettempdir(), target=WORKER_SCRATCH)
    scratch = temporary_path(Path(tempfile.gettempdir()) / WORKER_SCRATCH)
    scratch.mkdir()
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _train_worker(config, given, strategy, callbacks):
    """A worker other than the chief: trains its share of every step beside the chief and writes nothing in
    ``--out`` (its checkpoints and history go to a temporary folder, removed at the end); the chief restores,
    evaluates and exports."""
    config, train_images, test_images = _prepare(config, given)
    steps = _steps(config, train_images)
    method = protocol(config, train_images.element_spec[0].shape)
    name, started = worker_name(strategy), time.perf_counter()
    if _fitted(False, strategy):
        logger.info("%s: the chief's run is fitted already; nothing to train.", name)
        return TrainResult(metrics=None, model=None, out_dir=None, history=None, seconds={}, resumed="fitted",
                           worker=name)
    with _scratch() as scratch:
        run = RunDirectory(scratch / "run")
        with _files_stay(config):
            model, history = _fit(method, run, config, steps, train_images, test_images, callbacks, strategy)
    return TrainResult(metrics=None, model=model, out_dir=None, history=history,
                       seconds={"fit": time.perf_counter() - started}, worker=name)


def _load_model(run):
    """The fitted model of a run that reached "fitted" (a missing ``model.keras`` is a damaged run)."""
    if not (run / run.MODEL).is_file():
        raise run.damaged(f"the run reached phase {run.phase!r} but {run.MODEL} is missing")
    return load_model(run / run.MODEL)  # the one loader: registers the package's Keras objects


def _fit(method, run, config, steps, train_images, test_images, callbacks, strategy):
    """Fits from the newest checkpoint on, under ``strategy``: ``(image model, history)``."""
    checkpoint = EpochCheckpoint(run / run.CHECKPOINTS)
    with strategy.scope():  # the optimizer's variables belong to the strategy too (and are collective to create)
        trained, model = method.build(steps, train_images)  # the images: a class head's class count
        trained.optimizer.build(trained.trainable_variables)
    start = _restore(checkpoint, trained, strategy, lambda: method.build(steps, train_images)[0])
    if start:
        logger.warning("Resuming %s at epoch %d of %d.", config.out_dir, start + 1, config.epochs)
    # The history row before the checkpoint: a kill between the two trains the epoch again (its row replaced).
    fit_callbacks = [keras.callbacks.TerminateOnNaN(), EpochHistory(run / run.HISTORY, initial_epoch=start), checkpoint,
                     *callbacks]
    if config.eval_every:
        fit_callbacks.insert(0, RetrievalEvaluation(method.evaluation_data(test_images), frequency=config.eval_every,
                                                    embedder=embedding_part(trained)))
    batches = _shared(method.batches(train_images, skip=start * steps), strategy)
    symbolic_build_from_spec(trained, batches.element_spec, strategy)
    with synchronized_batch_norm(trained, strategy):
        history = trained.fit(batches, initial_epoch=start, epochs=config.epochs, steps_per_epoch=steps, shuffle=False,
                              callbacks=fit_callbacks, verbose=config.verbose)
    if checkpoint.diverged_at is not None:
        kept, path = checkpoint.latest()
        raise DivergedError(
            f"Training diverged: the loss became NaN or infinite in epoch {checkpoint.diverged_at + 1}. "
            f"The last good checkpoint ({f'epoch {kept}: {path}' if path else 'none yet'}) is kept. Try a lower "
            f"--learning-rate in a new --out. Received: learning_rate={config.learning_rate}"
        )
    return model, history


def _restore(checkpoint, trained, strategy, build):
    """The chief's newest checkpoint in ``trained`` on every worker; returns the epochs it holds.

    Under several workers the chief reads the checkpoint into a plain copy (``build()``, outside the strategy:
    loading into the distributed model would start collectives on the chief alone) and every worker receives
    its values in one all-reduce.
    """
    if not is_multi_worker(strategy):
        return checkpoint.restore(trained)
    variables = [*trained.weights, *trained.optimizer.variables]
    start, values = 0, [variable.numpy() for variable in variables]
    if is_chief(strategy) and checkpoint.latest()[1] is not None:
        plain = build()  # called outside the strategy's scope
        start = checkpoint.restore(plain)
        values = [variable.numpy() for variable in [*plain.weights, *plain.optimizer.variables]]
    start = int(from_chief(strategy, [start])[0])
    if start:
        for variable, value in zip(variables, from_chief(strategy, values)):
            variable.assign(value.astype(variable.dtype))
    return start


def _shared(batches, strategy):
    """The P x K batches as ``fit`` splits them over replicas: each gets its rows of every global batch."""
    if strategy.num_replicas_in_sync == 1:
        return batches
    options = tf.data.Options()
    # Every worker draws the same global batches (same seed) and keeps its replicas' rows of each one.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return batches.with_options(options)


def _record(run, config, method, metrics, fit_seconds, total):
    """Writes metrics.json (metrics, configuration, protocol, wall times); returns the wall times."""
    seconds = {"fit": fit_seconds, "evaluate": total - fit_seconds, "total": total}
    run.write_json(run.METRICS, {"metrics": metrics, "config": dataclasses.asdict(config), "protocol": method.name,
                                 "seconds": seconds})
    return seconds


def _save_model(model, run):
    write_file(run / run.MODEL, model.save)


def _evaluate(method, model, run, config, test_images):
    """Test metrics (and plots); records the "evaluated" phase with them."""
    embeddings, labels = method.embed(model, test_images)
    # A small held-out set (a folder of few images) scores the K it has: Recall@K needs K other images.
    ks = ks_within(len(labels))
    if ks != KS:
        logger.warning("%d held-out images: Recall@K for K in %s only (Recall@%s needs more images).", len(labels),
                       ks, ", ".join(str(k) for k in KS if k not in ks))
    metrics = evaluate(embeddings, labels, ks=ks, seed=config.seed)
    if config.plots:
        _plot(run / run.PLOTS, metrics, embeddings, labels, test_images, config.seed)
    return metrics


def _plot(plots_dir, metrics, embeddings, labels, test_images, seed):
    """Draws the three evaluation plots; skipped with a warning without matplotlib."""
    try:
        plot_recall_at_k(metrics, plots_dir / "recall_at_k.png")
    except ImportError as error:
        logger.warning("Plots skipped: %s", error)
        return
    plot_tsne(embeddings, labels, plots_dir / "tsne.png", seed=seed)
    # Only the images shown are read again and kept (a 100k-image test set's thumbnails took 1.2 GB).
    plot_retrieval_gallery(lambda shown: thumbnails(test_images, 64, indices=shown), labels, embeddings,
                           plots_dir / "retrieval_gallery.png", seed=seed)
