"""The whole job: train an embedding model, evaluate it on held-out classes, export it.

``train(TrainConfig(...))`` runs: datasets (zero-shot train / test split) ->
P x K sampler -> embedding model -> ``fit`` (progress bar, resumable
checkpoints) -> ``evaluate`` on the test classes -> plots -> SavedModel
export. Everything a run writes goes to ``config.out_dir``::

    out_dir/
      backup/         BackupAndRestore state while a run is unfinished
      history.csv     per-epoch logs (appended across resumed runs)
      model.keras     the trained model
      metrics.json    test metrics, configuration and timings
      plots/          tsne.png, recall_at_k.png, retrieval_gallery.png

A run interrupted at any point resumes from its last finished epoch when
started again with the same ``out_dir``. ``evaluate_model`` and
``export_model`` serve the ``evaluate`` and ``export`` commands.
"""

import dataclasses
import json
import logging
import time
from pathlib import Path

import keras
import numpy as np

from rankloss_tf import datasets, losses
from rankloss_tf.data import pk_batches
from rankloss_tf.evaluation import (
    RetrievalEvaluation,
    embed_dataset,
    evaluate,
    plot_recall_at_k,
    plot_retrieval_gallery,
    plot_tsne,
)
from rankloss_tf.export import SavedModelEmbedder, export_saved_model
from rankloss_tf.models import build_embedding_model

__all__ = [
    "DATASET_DEFAULTS",
    "TrainConfig",
    "TrainResult",
    "evaluate_model",
    "export_model",
    "load_model",
    "train",
]

logger = logging.getLogger(__name__)

# Per-dataset defaults for the fields of TrainConfig left as None; the "default"
# entry serves every other dataset (224x224 photos).
DATASET_DEFAULTS = {
    "omniglot": dict(image_size=32, classes_per_batch=32, samples_per_class=4, epochs=40, embedding_dim=128),
    "digits": dict(image_size=None, classes_per_batch=5, samples_per_class=16, epochs=15, embedding_dim=64),
    "default": dict(image_size=None, classes_per_batch=32, samples_per_class=4, epochs=20, embedding_dim=128),
}

MODEL_FILE = "model.keras"
METRICS_FILE = "metrics.json"


@dataclasses.dataclass
class TrainConfig:
    """What ``train`` does. Fields left as None take ``DATASET_DEFAULTS``.

    Attributes:
        dataset: a ``rankloss_tf.datasets.load`` name ("digits", "omniglot",
            "cars196", "folder:PATH", ...).
        data_dir: local copy of the data (see ``datasets.load``).
        loss: a ``rankloss_tf.losses.get`` name.
        alpha: angular / npair_angular angle in degrees (None: the loss default).
        margin: contrastive / triplet margin (None: the loss default).
        classes_per_batch: P of the P x K batches.
        samples_per_class: K of the P x K batches.
        epochs: training epochs; one epoch = about one pass over the
            training images (``steps_per_epoch`` batches).
        steps_per_epoch: batches per epoch (None: training images // (P x K)).
        embedding_dim: embedding size D.
        backbone: "small_cnn", a ``keras.applications`` name or a
            ``rankloss_tf.backbones`` name.
        image_size: side the images are resized to inside the model (None: as loaded).
        weights: backbone weights (None, "imagenet" or a file).
        learning_rate: initial Adam learning rate, decayed to 0 over the
            run with a cosine schedule.
        seed: seed of the weights initialisation, the sampler and k-means.
        out_dir: run directory (checkpoints, model, metrics, plots).
        export_dir: if set, where the SavedModel is exported.
        plots: draw the plots (needs matplotlib).
        eval_every: also evaluate (no clustering) on the test split every
            this many epochs; 0 evaluates only at the end.
        verbose: Keras ``fit`` verbosity (1: progress bar, 2: a line per epoch, 0: silent).

    Example:
    >>> config = TrainConfig(dataset="omniglot", data_dir=None).resolved()
    >>> config.image_size, config.classes_per_batch, config.samples_per_class, config.epochs
    (32, 32, 4, 40)
    """

    dataset: str = "omniglot"
    data_dir: str = None
    loss: str = "npair_angular"
    alpha: float = None
    margin: float = None
    classes_per_batch: int = None
    samples_per_class: int = None
    epochs: int = None
    steps_per_epoch: int = None
    embedding_dim: int = None
    backbone: str = "small_cnn"
    image_size: int = None
    weights: str = None
    learning_rate: float = 1e-3
    seed: int = 0
    out_dir: str = "runs/train"
    export_dir: str = None
    plots: bool = True
    eval_every: int = 0
    verbose: int = 1

    def resolved(self):
        """A copy with the dataset defaults filled in and every field checked."""
        defaults = DATASET_DEFAULTS.get(self.dataset, DATASET_DEFAULTS["default"])
        filled = {k: v if v is not None or k not in defaults else defaults[k]
                  for k, v in dataclasses.asdict(self).items()}
        config = dataclasses.replace(self, **filled)
        config._check()
        return config

    def _check(self):
        if self.loss not in losses.LOSSES:
            raise ValueError(f"Unknown loss; known: {', '.join(losses.LOSSES)}. Received: loss={self.loss!r}")
        positive_ints = ["classes_per_batch", "samples_per_class", "epochs", "embedding_dim"]
        positive_ints += [name for name in ("steps_per_epoch", "image_size") if getattr(self, name) is not None]
        for name in positive_ints:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"`learning_rate` must be positive. Received: learning_rate={self.learning_rate!r}")
        if self.eval_every < 0:
            raise ValueError(f"`eval_every` must be >= 0. Received: eval_every={self.eval_every!r}")
        if self.data_dir is not None and not Path(self.data_dir).is_dir():
            raise ValueError(f"Data directory not found. Received: data_dir={self.data_dir!r}")


@dataclasses.dataclass
class TrainResult:
    """What ``train`` returns.

    Attributes:
        metrics: test metrics (``evaluate``'s dictionary).
        model: the trained Keras model.
        out_dir: the run directory.
        history: the ``keras.callbacks.History`` of this call's ``fit``.
        seconds: wall times: "fit", "evaluate" and "total".

    Example:
    >>> result = train(TrainConfig(dataset="digits", out_dir="/tmp/run"))  # doctest: +SKIP
    >>> result.metrics["recall@1"], result.seconds["total"]  # doctest: +SKIP
    (0.94..., 30.1...)
    """

    metrics: dict
    model: keras.Model
    out_dir: Path
    history: keras.callbacks.History
    seconds: dict


def _build_loss(config):
    kwargs = {name: getattr(config, name) for name in ("alpha", "margin") if getattr(config, name) is not None}
    try:
        return losses.get(config.loss, **kwargs)
    except TypeError:
        raise ValueError(
            f"Loss {config.loss!r} takes no {' / '.join(kwargs)} argument. Received: {kwargs}"
        ) from None


def _load_split(config, split):
    return datasets.load(config.dataset, split, data_dir=config.data_dir)


def train(config, callbacks=()):
    """Trains, evaluates, plots and exports, as described by ``config``.

    Args:
        config: a ``TrainConfig``.
        callbacks: extra Keras callbacks for ``fit``.

    Returns:
        A ``TrainResult``.

    Raises:
        ValueError: a bad configuration (unknown names, bad numbers, missing
            data directory), from here or from the loaders, losses and sampler.

    Example:
    >>> result = train(TrainConfig(dataset="digits", epochs=1, out_dir="/tmp/run", plots=False))  # doctest: +SKIP
    >>> sorted(result.metrics)  # doctest: +SKIP
    ['f1', 'map@r', 'nmi', 'r_precision', 'recall@1', 'recall@2', 'recall@4', 'recall@8']
    """
    started = time.perf_counter()
    config = config.resolved()
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(config.seed)

    loss = _build_loss(config)
    train_images = _load_split(config, "train")
    test_images = _load_split(config, "test")
    batch_size = config.classes_per_batch * config.samples_per_class
    steps = config.steps_per_epoch or max(1, int(train_images.cardinality()) // batch_size)
    batches = pk_batches(
        train_images,
        classes_per_batch=config.classes_per_batch,
        samples_per_class=config.samples_per_class,
        seed=config.seed,
    )
    image_size = None if config.image_size is None else (config.image_size, config.image_size)
    model = build_embedding_model(
        tuple(train_images.element_spec[0].shape),
        embedding_dim=config.embedding_dim,
        backbone=config.backbone,
        image_size=image_size,
        weights=config.weights,
    )
    schedule = keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=config.epochs * steps)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=loss)
    fit_callbacks = [
        keras.callbacks.BackupAndRestore(str(out_dir / "backup")),
        keras.callbacks.CSVLogger(str(out_dir / "history.csv"), append=True),
    ]
    if config.eval_every:
        fit_callbacks.insert(0, RetrievalEvaluation(test_images, frequency=config.eval_every))
    logger.info("Training %s on %s: %d epochs x %d batches of %d x %d.", config.loss, config.dataset,
                config.epochs, steps, config.classes_per_batch, config.samples_per_class)
    history = model.fit(batches, epochs=config.epochs, steps_per_epoch=steps, shuffle=False,
                        callbacks=[*fit_callbacks, *callbacks], verbose=config.verbose)
    fitted = time.perf_counter()
    model.save(out_dir / MODEL_FILE)

    embeddings, labels, thumbnails = embed_dataset(model, test_images, thumbnail_size=64)
    metrics = evaluate(embeddings, labels, seed=config.seed)
    evaluated = time.perf_counter()
    if config.plots:
        _plot(out_dir / "plots", metrics, embeddings, labels, thumbnails, config.seed)
    if config.export_dir:
        export_saved_model(model, config.export_dir, overwrite=True)
    seconds = {"fit": fitted - started, "evaluate": evaluated - fitted, "total": time.perf_counter() - started}
    record = {"metrics": metrics, "config": dataclasses.asdict(config), "seconds": seconds}
    (out_dir / METRICS_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return TrainResult(metrics=metrics, model=model, out_dir=out_dir, history=history, seconds=seconds)


def _plot(plots_dir, metrics, embeddings, labels, thumbnails, seed):
    """Draws the three evaluation plots; skipped with a warning without matplotlib."""
    try:
        plot_recall_at_k(metrics, plots_dir / "recall_at_k.png")
    except ImportError as error:
        logger.warning("Plots skipped: %s", error)
        return
    plot_tsne(embeddings, labels, plots_dir / "tsne.png", seed=seed)
    plot_retrieval_gallery(thumbnails, labels, embeddings, plots_dir / "retrieval_gallery.png", seed=seed)


def load_model(path):
    """Loads a trained embedding model for evaluation or export.

    Args:
        path: a SavedModel directory from ``export_saved_model``, a ``.keras``
            file, or a run directory of ``train`` (its ``model.keras``).

    Returns:
        A ``keras.Model`` or a ``SavedModelEmbedder``; both map ``uint8
        [N, H, W, C]`` images to ``[N, D]`` embeddings.

    Raises:
        ValueError: ``path`` is none of these.

    Example:
    >>> model = load_model("runs/demo")  # doctest: +SKIP
    >>> model(images).shape  # doctest: +SKIP
    TensorShape([16, 128])
    """
    path = Path(path)
    if (path / "saved_model.pb").is_file():
        return SavedModelEmbedder(path)
    if path.is_dir() and (path / MODEL_FILE).is_file():
        path = path / MODEL_FILE
    if path.is_file() and path.suffix == ".keras":
        return keras.models.load_model(path)
    raise ValueError(
        "`model` must be a SavedModel directory, a .keras file or a training run directory "
        f"holding {MODEL_FILE}. Received: {path}"
    )


def evaluate_model(model_path, dataset, data_dir=None, split="test", ks=(1, 2, 4, 8), clustering=True):
    """Evaluates a saved model on one split of a dataset.

    Args:
        model_path: anything ``load_model`` accepts.
        dataset: a ``datasets.load`` name.
        data_dir: local copy of the data.
        split: "test" (the held-out classes) or "train".
        ks: the K of Recall@K.
        clustering: also compute NMI and F1.

    Returns:
        ``evaluate``'s metric dictionary.

    Raises:
        ValueError: bad paths or names, or images of another shape than the model's input.

    Example:
    >>> evaluate_model("runs/demo/saved_model", "digits")  # doctest: +SKIP
    {'recall@1': 0.94..., ...}
    """
    if data_dir is not None and not Path(data_dir).is_dir():
        raise ValueError(f"Data directory not found. Received: data_dir={data_dir!r}")
    model = load_model(model_path)
    images = datasets.load(dataset, split, data_dir=data_dir)
    expected = model.image_shape if isinstance(model, SavedModelEmbedder) else tuple(model.input_shape[1:])
    got = tuple(images.element_spec[0].shape)
    if got != tuple(expected):
        raise ValueError(
            f"The model takes images of shape {tuple(expected)}; dataset {dataset!r} has {got}. "
            f"Received: model={model_path}, dataset={dataset!r}"
        )
    embeddings, labels = embed_dataset(model, images)
    return evaluate(embeddings, labels, ks=ks, clustering=clustering)


def export_model(model_path, export_dir, overwrite=False):
    """Exports a trained Keras model (``.keras`` file or run directory) as a SavedModel.

    Args:
        model_path: a ``.keras`` file or a ``train`` run directory.
        export_dir: target directory (see ``export_saved_model``).
        overwrite: replace an existing ``export_dir``.

    Returns:
        ``Path`` of the export.

    Example:
    >>> export_model("runs/demo", "exported/demo", overwrite=True)  # doctest: +SKIP
    PosixPath('exported/demo')
    """
    model = load_model(model_path)
    if isinstance(model, SavedModelEmbedder):
        raise ValueError(f"`model` is already a SavedModel export. Received: {model_path}")
    return export_saved_model(model, export_dir, overwrite=overwrite)
