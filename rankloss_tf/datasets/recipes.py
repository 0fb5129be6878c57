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


# Cars196: the settings of benchmarks/cars196.py (N-pair batches 64 x 2, 512-d, about 2,000 steps);
# 3e-4 with the cosine decay gave the best frozen-feature Recall@1 of 1e-3, 3e-4 and 1e-4.
RECIPES = {
    "omniglot": Recipe(32, 32, 4, 40, 128, 1e-3),
    "digits": Recipe(None, 5, 16, 15, 64, 1e-3),
    "cars196": Recipe(224, 64, 2, 32, 512, 3e-4),
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
