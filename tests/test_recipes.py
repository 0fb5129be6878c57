"""Tests of the per-dataset training recipes."""

import dataclasses

from rankloss_tf.app.recipes import PRETRAINED_IMAGE_SIZE, RECIPES, recipe
from rankloss_tf.app import TrainConfig


def test_training_takes_its_defaults_from_the_recipes(tmp_path, monkeypatch):
    from tests.test_first_contact import make_folder

    monkeypatch.setenv("RANKLOSS_TF_CACHE", str(tmp_path / "cache"))
    for name in ("omniglot", "digits", make_folder(tmp_path / "characters", ["grey"])):
        resolved = TrainConfig(dataset=name, out_dir=str(tmp_path / "run")).resolved()
        for field, value in dataclasses.asdict(recipe(name, kind=resolved.recipe)).items():
            assert getattr(resolved, field) == value, (name, field)
    assert TrainConfig(dataset="cars196", backbone="resnet50").resolved().image_size == 224


def test_lookup_folder_and_pretrained_rules():
    assert recipe("caltech_birds2011") == RECIPES["default"]
    assert recipe("folder:/some where/ü").image_size == 64
    assert recipe("folder:x", pretrained=True).image_size == PRETRAINED_IMAGE_SIZE
    assert recipe("digits", pretrained=True).image_size == PRETRAINED_IMAGE_SIZE
    assert recipe("omniglot", pretrained=True).image_size == 32


def test_a_given_image_size_scales_the_recipes_views_and_given_views_win():
    photos = dict(dataset="folder:x", recipe="photos", backbone="efficientnet_lite0", weights="imagenet")
    assert TrainConfig(**photos, image_size=64).resolved().view_sizes == (64, 82)  # 288 x 64 / 224 = 82.3
    assert TrainConfig(**photos).resolved().view_sizes == (224, 288)
    assert TrainConfig(**photos, image_size=64, view_sizes=(96,)).resolved().view_sizes == (96,)
    assert TrainConfig(dataset="cars196", image_size=112).resolved().view_sizes == (112, 144)
    assert TrainConfig(dataset="digits", backbone="efficientnet_lite0", image_size=48).resolved().view_sizes == (48,)
