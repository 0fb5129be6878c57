"""Per-dataset training defaults (recipes): the settings ``TrainConfig`` fields left as None take."""

import dataclasses

from rankloss_tf.datasets.folder import FOLDER_PREFIX, folder_path
from rankloss_tf.datasets.tfrecord import TFRECORD_PREFIX

PRETRAINED_IMAGE_SIZE = 224
FOLDER_IMAGE_SIZE = 64
# What a folder (or TFRecord files) holds, as ``choose`` reads it from a sample of the images: its recipe's name.
# Small grey images (Omniglot-like: fewer than COLOUR_FRACTION of them carry colour, the median image's larger side
# at most SMALL_SIDE pixels) train the small CNN with the Omniglot recipe's settings; tiny ones (a larger side under
# TINY_SIDE: nothing for ImageNet features to see) the small CNN with the plain folder recipe; anything else is photos.
PHOTOS, SMALL_GREY, IMAGES = "photos", "small_grey", "images"
KINDS = (PHOTOS, SMALL_GREY, IMAGES)
COLOUR_FRACTION = 0.25
SMALL_SIDE = 160
TINY_SIDE = 32


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Training defaults of one dataset.

    Attributes:
        image_size: side the images are resized to (None: as loaded).
        classes_per_batch: P.
        samples_per_class: K.
        epochs: training epochs.
        embedding_dim: embedding size D.
        learning_rate: Adam's initial learning rate.
        augment: batch augmentation, a ``rankloss_tf.data.augment.AUGMENTATIONS``
            name.
        class_rotations: 1, 2 or 4 rotated copies of every class
            (``rankloss_tf.data.augment.rotated_classes``).
        backbone_lr_scale: a fine-tuned backbone's learning rate relative to
            the head's.
        backbone: the backbone name (a pretrained one trains a head on its frozen features).
        loss: the ranking loss (a ``rankloss_tf.losses.get`` name).
        loss_options: the loss's arguments, taken when the loss is the recipe's.
        view_sizes: frozen features: the sides each image is seen at (None: ``image_size``).
        mirror_views: frozen features: each size's mirror image is a view too.
        pooling: frozen features: the pooling of the backbone's last feature map,
            "avg" or "gem" (``rankloss_tf.backbones.pooling``; None: the average, and
            none for a network trained end to end).

    Example:
    >>> Recipe(32, 32, 4, 40, 128, 1e-3).samples_per_class
    4
    """

    image_size: int
    classes_per_batch: int
    samples_per_class: int
    epochs: int
    embedding_dim: int
    learning_rate: float
    augment: str = "none"
    class_rotations: int = 1
    backbone_lr_scale: float = 1.0
    backbone: str = "small_cnn"
    loss: str = "npair_angular"
    loss_options: dict = None
    view_sizes: tuple = None
    mirror_views: bool = False
    pooling: str = None


# The photo recipe of --fine-tune (benchmarks/finetune_gpu.py): random resized crop + flip,
# the backbone at a tenth of the head's learning rate (its batch-norm statistics frozen:
# rankloss_tf.fine_tune).
FINE_TUNE = dict(augment="crop_flip", backbone_lr_scale=0.1)
# A head on cached frozen features sees every image once, as it is: no augmentation.
FROZEN = dict(augment="none", class_rotations=1)

# Cars196: a head on frozen ImageNet EfficientNet-Lite0 features, chosen on validation classes 74-98
# (benchmarks/cars196_recipe.py, results/cars196_recipe.md): N-pair mc (l2_reg 0.002), batches 64 x 2, 1280-d
# (the features' size; validation R@1 at 2,000 steps, seed 0: 0.804 against 0.785 at 512-d, 0.798 at 1024, 0.803 at
# 2048), linear head, lr 2e-4 cosine-decayed over 64 epochs of the 8,054 images (3,968 steps); 4 views (the 224
# crop, the image at 288, each mirrored): training on every view, embedding the mean of the views' features. Today's losses on the same
# views did not beat N-pair there (proxy-anchor 0.781, multi-similarity 0.785, 0.787 at 1024-d; cosface 0.702). Issue 31
# part 3, at the recipe's 3,968 steps (N-pair: 0.802 / 0.799 / 0.800, seeds 0-2): proxies at 100x the head's rate
# (class_lr_multiplier) lift proxy-anchor to 0.799 (head lr 1e-4; 0.794 at 3e-5, 0.737 at 3e-4), cosface to 0.782 and
# arcface to 0.770, below N-pair; multi-similarity 0.769 and supcon 0.704 at 1280-d; 72 x 2 batches 0.800; a layer norm
# of the features before the dense layer 0.813 / 0.805 / 0.804 (+0.007, within the seeds' noise, MAP@R 0.254 against
# 0.263; test 0.787 / 0.786 against 0.783), batch norm 0.770. The backbone's last map pooled by its generalised mean
# (GeM p = 3, Radenovic et al. 2018) instead of its average: plain view, 512-d head 0.764 against 0.741; the recipe
# 0.828 / 0.829 against 0.802 / 0.799 (seeds 0 / 1), test classes 99-196 0.807 / 0.806 against 0.782 / 0.778
# (MAP@R 0.194 / 0.195 against 0.187 / 0.188).
# Omniglot: chosen on validation alphabets (benchmarks/omniglot_recipe.py, results/omniglot_recipe.md): npair_angular,
# 32 x 32, 32 x 4, lr 3e-3 cosine-decayed over 80 epochs of 21 batches (1,680 steps; validation one-shot 0.860,
# 2,100 steps 0.859), affine (15 degrees, 6 px) at 105 px, every class turned by quarter turns into 4. Today's losses
# at this length with their tuned settings (issue 31; validation R@1 / one-shot / at 8 px, seeds 0-2): npair_angular
# 0.944 / 0.852 / 0.876, multi-similarity 0.940 / 0.846 / 0.878, cosface 0.924 / 0.835 / 0.857 (arcface, seed 0:
# 0.921 / 0.811 / 0.848): none wins validation, npair_angular stays.
# The test-time augmentation of the Omniglot one-shot runs (``rankloss-tf evaluate --one-shot``), chosen with the
# recipe: each image embeds as the mean over itself and its 8 translates by this many pixels of the 105 px images
# (``rankloss_tf.evaluation.one_shot_accuracy``'s ``shift``; 0: off). Chosen on the validation episodes (Korean, 200
# episodes; results/omniglot_recipe.md): 0.849 plain, 0.861 / 0.868 / 0.874 / 0.881 / 0.885 / 0.885 at 2 / 3 / 4 / 6 /
# 8 / 10 px (the training's affine shifts reach 6 px); the CLI defaults on the 20 official runs: 0.872 / 0.888 plain,
# 0.900 / 0.915 at 8 px (seeds 0 / 1).
ONE_SHOT_SHIFT = 8
SMALL_GREY_RECIPE = Recipe(32, 32, 4, 80, 128, 3e-3, augment="affine", class_rotations=4)
RECIPES = {
    "omniglot": SMALL_GREY_RECIPE,
    "digits": Recipe(None, 5, 16, 15, 64, 1e-3),
    "cars196": Recipe(224, 64, 2, 64, 1280, 2e-4, backbone="efficientnet_lite0", loss="npair",
                      loss_options={"variant": "mc", "l2_reg": 0.002}, view_sizes=(224, 288), mirror_views=True,
                      pooling="gem"),
    FOLDER_PREFIX: Recipe(FOLDER_IMAGE_SIZE, 32, 4, 20, 128, 1e-3),
    # A folder's small grey images: the Omniglot recipe (R@1 0.753 on 30 Omniglot characters, against 0.390 with the
    # plain folder recipe and 0.550 with frozen efficientnet_lite0 features: results/first_contact.md).
    SMALL_GREY: SMALL_GREY_RECIPE,
    # A folder's (or TFRecord files') photos: a head on frozen ImageNet EfficientNet-Lite0 features, the Cars196
    # recipe's views; chosen on folders of real photos (benchmarks/first_contact.py, results/first_contact.md):
    # 10 epochs beat 40 on 8 car models x 20 photos (0.850 vs 0.819, 2 splits) and tie on larger folders.
    PHOTOS: Recipe(PRETRAINED_IMAGE_SIZE, 32, 4, 10, 512, 1e-3, backbone="efficientnet_lite0", loss="npair",
                   loss_options={"variant": "mc", "l2_reg": 0.002}, view_sizes=(224, 288), mirror_views=True),
    "default": Recipe(None, 32, 4, 20, 128, 1e-3),
}


def _key(name):
    """The RECIPES key of dataset ``name``: "folder:PATH" and "tfrecord:PATTERN" are ``FOLDER_PREFIX``."""
    return FOLDER_PREFIX if folder_path(name) is not None or str(name).startswith(TFRECORD_PREFIX) else name


def chosen_from_images(name):
    """True for the datasets whose recipe ``choose`` reads from their images ("folder:", "tfrecord:").

    Example:
    >>> chosen_from_images("folder:photos"), chosen_from_images("cars196")
    (True, False)
    """
    return _key(name) == FOLDER_PREFIX


def recipe(name, pretrained=False, fine_tune=False, kind=None):
    """The training defaults of dataset ``name`` ("folder:PATH" and "tfrecord:PATTERN" take the folder recipe).

    Args:
        name: a ``rankloss_tf.datasets.load`` name.
        pretrained: a pretrained backbone: an unset image size, and a folder's,
            become PRETRAINED_IMAGE_SIZE (224); a folder's frozen features take
            the ``PHOTOS`` recipe.
        kind: what a folder holds (``choose``): the small CNN on ``SMALL_GREY``
            images takes that recipe.
        fine_tune: a pretrained backbone trained end to end: the photo recipe
            ``FINE_TUNE`` (crop + flip, a lower backbone learning rate); without
            it, a pretrained backbone's features are cached: ``FROZEN``.

    Returns:
        A ``Recipe``; datasets without their own take the "default" one.

    Example:
    >>> recipe("omniglot").classes_per_batch
    32
    >>> recipe("folder:/data/birds", pretrained=True).view_sizes
    (224, 288)
    >>> recipe("cars196", pretrained=True, fine_tune=True).augment
    'crop_flip'
    """
    key = _key(name)
    if key == FOLDER_PREFIX and pretrained and not fine_tune:
        return RECIPES[PHOTOS]
    if key == FOLDER_PREFIX and not pretrained and kind == SMALL_GREY:
        return RECIPES[SMALL_GREY]
    found = RECIPES.get(key, RECIPES["default"])
    if pretrained and (found.image_size is None or key == FOLDER_PREFIX):
        found = dataclasses.replace(found, image_size=PRETRAINED_IMAGE_SIZE)
    if pretrained:
        found = dataclasses.replace(found, **(FINE_TUNE if fine_tune else FROZEN))
    return found


def views_at(found, image_size=None):
    """The view sizes of recipe ``found`` for a run at ``image_size``: the recipe's views scaled by ``image_size``
    over the recipe's own image size (a given ``--image-size`` scales the views as it scales the image: the
    photos recipe's 224 and 288 become 64 and 82 at 64), the recipe's own when ``image_size`` is None.

    Example:
    >>> views_at(RECIPES[PHOTOS], 64), views_at(RECIPES[PHOTOS])
    ((64, 82), (224, 288))
    """
    if image_size is None or not found.view_sizes or not found.image_size:
        return found.view_sizes
    return tuple(dict.fromkeys(max(1, round(side * image_size / found.image_size)) for side in found.view_sizes))


@dataclasses.dataclass(frozen=True)
class Choice:
    """What a "folder:" or "tfrecord:" dataset holds, and why it was read so.

    Attributes:
        kind: one of ``KINDS``.
        why: the evidence, for the log ("colour, median 480x360").
    """

    kind: str
    why: str


def choose(name, kind=None, why=None):
    """Reads from a sample of its images what a "folder:" / "tfrecord:" dataset holds (None for other datasets).

    Args:
        name: a ``rankloss_tf.datasets.load`` name.
        kind: the kind a run recorded when it started (``TrainConfig.recipe``
            in its run.json), or one given: taken as it is, nothing is read.
        why: with ``kind``, the reason recorded with it.

    Returns:
        A ``Choice``: ``IMAGES`` when the median image's larger side is under
        ``TINY_SIDE``; ``SMALL_GREY`` when fewer than ``COLOUR_FRACTION`` of the
        sampled images carry colour and that side is at most ``SMALL_SIDE``;
        ``PHOTOS`` otherwise. None for a dataset with its own recipe.

    Raises:
        ValueError: an unknown ``kind``, or a kind for a dataset with its own recipe.

    Example:
    >>> choose("omniglot") is None
    True
    >>> choose("folder:photos", kind="photos")
    Choice(kind='photos', why='given')
    """
    if not chosen_from_images(name):
        if kind is not None:
            raise ValueError(f"`recipe` applies to folder: and tfrecord: datasets. Received: recipe={kind!r}, "
                             f"dataset={name!r}")
        return None
    if kind is not None:
        if kind not in KINDS:
            raise ValueError(f"Unknown recipe; known: {', '.join(KINDS)}. Received: recipe={kind!r}")
        return Choice(kind, why or "given")
    from rankloss_tf.datasets.image_sample import sample_dataset

    sample = sample_dataset(name)
    colour = sample.colour_fraction >= COLOUR_FRACTION
    looks = ("colour" if sample.colour_fraction == 1.0 else "grey" if sample.colour_fraction == 0.0
             else f"{sample.colour_fraction:.0%} of them colour")
    why = f"{looks}, median {sample.width}x{sample.height}"
    if sample.largest_side < TINY_SIDE:
        return Choice(IMAGES, f"{why}: smaller than {TINY_SIDE} px")
    if colour or sample.largest_side > SMALL_SIDE:
        return Choice(PHOTOS, why + ("" if colour else f": larger than {SMALL_SIDE} px"))
    return Choice(SMALL_GREY, why)


def default_backbone(name, choice=None):
    """The backbone dataset ``name`` trains when none is given; ``choice``: what a folder holds (``choose``).

    Example:
    >>> default_backbone("cars196"), default_backbone("folder:x", Choice(PHOTOS, "colour"))
    ('efficientnet_lite0', 'efficientnet_lite0')
    """
    if choice is not None and choice.kind == PHOTOS:
        return RECIPES[PHOTOS].backbone
    return recipe(name).backbone


def describe(config):
    """The log line that says which recipe a resolved ``TrainConfig`` trains, why, and how to train the other
    (None for a dataset with its own recipe).

    Example:
    >>> from rankloss_tf.app.config import TrainConfig
    >>> config = TrainConfig(dataset="folder:x", backbone="small_cnn", image_size=64, recipe="photos",
    ...                      recipe_why="colour, median 480x360")
    >>> describe(config)
    'recipe: photos (colour, median 480x360); backbone small_cnn given -> small_cnn trained from scratch at 64 px'
    """
    if config.recipe is None:
        return None
    choice = Choice(config.recipe, config.recipe_why)
    if config.frozen:
        views = ",".join(str(size) for size in config.view_sizes or (config.image_size,))
        pooled = f", GeM p={config.gem_power:g}" if config.pooling == "gem" else ""
        trains = (f"frozen {config.backbone} features (views {views}{' + mirrored' if config.mirror_views else ''}"
                  f"{pooled}, {config.loss} head)")
    else:
        extras = [f"{config.augment} augmentation"] * (config.augment not in (None, "none")) + \
            [f"{config.class_rotations} class rotations"] * ((config.class_rotations or 1) > 1)
        extras = f" ({', '.join(extras)})" if extras else ""
        trains = f"{config.backbone} {'fine-tuned' if config.fine_tune else 'trained from scratch'} at " \
                 f"{config.image_size} px{extras}"
    head = f"recipe: {choice.kind} ({choice.why})"
    if config.backbone != default_backbone(config.dataset, choice):
        return f"{head}; backbone {config.backbone} given -> {trains}"
    other = "small_cnn to train a CNN from scratch" if choice.kind == PHOTOS else \
        f"{RECIPES[PHOTOS].backbone} for frozen pretrained features"
    return f"{head} -> {trains}; pass --backbone {other}"


__all__ = ["COLOUR_FRACTION", "Choice", "FINE_TUNE", "FROZEN", "KINDS", "ONE_SHOT_SHIFT", "PHOTOS",
           "PRETRAINED_IMAGE_SIZE", "RECIPES", "Recipe", "SMALL_GREY", "SMALL_GREY_RECIPE", "IMAGES", "SMALL_SIDE",
           "TINY_SIDE", "choose", "chosen_from_images", "default_backbone", "describe", "recipe"]
