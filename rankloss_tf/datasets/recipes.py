"""Per-dataset training defaults (recipes): the settings ``TrainConfig`` fields left as None take."""

import dataclasses

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
    backbone: str = "small_cnn"
    loss: str = "npair_angular"
    loss_options: dict = None
    view_sizes: tuple = None
    mirror_views: bool = False


# Cars196: a head on frozen ImageNet EfficientNet-Lite0 features, chosen on validation classes 74-98
# (benchmarks/cars196_recipe.py, results/cars196_recipe.md): N-pair mc (l2_reg 0.002), batches 64 x 2, 512-d,
# linear head, lr 2e-4 cosine-decayed over 64 epochs of the 8,054 images (3,968 steps); 4 views (the 224 crop,
# the image at 288, each mirrored): training on every view, embedding the mean of the views' features.
RECIPES = {
    "omniglot": Recipe(32, 32, 4, 40, 128, 1e-3),
    "digits": Recipe(None, 5, 16, 15, 64, 1e-3),
    "cars196": Recipe(224, 64, 2, 64, 512, 2e-4, backbone="efficientnet_lite0", loss="npair",
                      loss_options={"variant": "mc", "l2_reg": 0.002}, view_sizes=(224, 288), mirror_views=True),
    "folder:": Recipe(FOLDER_IMAGE_SIZE, 32, 4, 20, 128, 1e-3),
    "default": Recipe(None, 32, 4, 20, 128, 1e-3),
}


def recipe(name, pretrained=False):
    """The training defaults of dataset ``name`` ("folder:PATH" takes the folder recipe).

    Args:
        name: a ``rankloss_tf.datasets.load`` name.
        pretrained: a pretrained backbone: an unset image size, and a folder's,
            become PRETRAINED_IMAGE_SIZE (224).

    Returns:
        A ``Recipe``; datasets without their own take the "default" one.

    Example:
    >>> recipe("omniglot").classes_per_batch
    32
    >>> recipe("folder:/data/birds", pretrained=True).image_size
    224
    """
    key = "folder:" if str(name).startswith("folder:") else name
    found = RECIPES.get(key, RECIPES["default"])
    if pretrained and (found.image_size is None or key == "folder:"):
        found = dataclasses.replace(found, image_size=PRETRAINED_IMAGE_SIZE)
    return found


__all__ = ["PRETRAINED_IMAGE_SIZE", "RECIPES", "Recipe", "recipe"]
