"""Per-dataset training defaults (recipes): the settings ``TrainConfig`` fields left as None take."""

import dataclasses

from rankloss_tf.datasets.folder import FOLDER_PREFIX, folder_path
from rankloss_tf.datasets.tfrecord import TFRECORD_PREFIX

PRETRAINED_IMAGE_SIZE = 224
FOLDER_IMAGE_SIZE = 64


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
# views did not beat N-pair there (proxy-anchor 0.781, multi-similarity 0.785, 0.787 at 1024-d; cosface 0.702).
# Omniglot: chosen on validation alphabets (benchmarks/omniglot_recipe.py, results/omniglot_recipe.md): npair_angular,
# 32 x 32, 32 x 4, lr 3e-3 cosine-decayed over 80 epochs of 21 batches (1,680 steps; validation one-shot 0.860,
# 2,100 steps 0.859), affine (15 degrees, 6 px) at 105 px, every class turned by quarter turns into 4.
RECIPES = {
    "omniglot": Recipe(32, 32, 4, 80, 128, 3e-3, augment="affine", class_rotations=4),
    "digits": Recipe(None, 5, 16, 15, 64, 1e-3),
    "cars196": Recipe(224, 64, 2, 64, 1280, 2e-4, backbone="efficientnet_lite0", loss="npair",
                      loss_options={"variant": "mc", "l2_reg": 0.002}, view_sizes=(224, 288), mirror_views=True),
    FOLDER_PREFIX: Recipe(FOLDER_IMAGE_SIZE, 32, 4, 20, 128, 1e-3),
    "default": Recipe(None, 32, 4, 20, 128, 1e-3),
}


def recipe(name, pretrained=False, fine_tune=False):
    """The training defaults of dataset ``name`` ("folder:PATH" and "tfrecord:PATTERN" take the folder recipe).

    Args:
        name: a ``rankloss_tf.datasets.load`` name.
        pretrained: a pretrained backbone: an unset image size, and a folder's,
            become PRETRAINED_IMAGE_SIZE (224).
        fine_tune: a pretrained backbone trained end to end: the photo recipe
            ``FINE_TUNE`` (crop + flip, a lower backbone learning rate); without
            it, a pretrained backbone's features are cached: ``FROZEN``.

    Returns:
        A ``Recipe``; datasets without their own take the "default" one.

    Example:
    >>> recipe("omniglot").classes_per_batch
    32
    >>> recipe("folder:/data/birds", pretrained=True).image_size
    224
    >>> recipe("cars196", pretrained=True, fine_tune=True).augment
    'crop_flip'
    """
    key = FOLDER_PREFIX if folder_path(name) is not None or str(name).startswith(TFRECORD_PREFIX) else name
    found = RECIPES.get(key, RECIPES["default"])
    if pretrained and (found.image_size is None or key == FOLDER_PREFIX):
        found = dataclasses.replace(found, image_size=PRETRAINED_IMAGE_SIZE)
    if pretrained:
        found = dataclasses.replace(found, **(FINE_TUNE if fine_tune else FROZEN))
    return found


__all__ = ["FINE_TUNE", "FROZEN", "PRETRAINED_IMAGE_SIZE", "RECIPES", "Recipe", "recipe"]
