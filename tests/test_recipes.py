"""Tests of the per-dataset training recipes."""

import dataclasses

from rankloss_tf.datasets.recipes import PRETRAINED_IMAGE_SIZE, RECIPES, recipe
from rankloss_tf.training import DATASET_DEFAULTS


def test_recipes_equal_the_training_defaults_they_replace():
    for name, defaults in DATASET_DEFAULTS.items():
        assert dataclasses.asdict(RECIPES[name]) == defaults, name


def test_lookup_folder_and_pretrained_rules():
    assert recipe("caltech_birds2011") == RECIPES["default"]
    assert recipe("folder:/some where/ü").image_size == 64
    assert recipe("folder:x", pretrained=True).image_size == PRETRAINED_IMAGE_SIZE
    assert recipe("digits", pretrained=True).image_size == PRETRAINED_IMAGE_SIZE
    assert recipe("omniglot", pretrained=True).image_size == 32
