"""Pooling of a frozen backbone's last feature map: average or generalised mean (GeM), in the kernel, the
backbone, the feature cache, the configuration and a run whose export pools as its cached features did."""

import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from rankloss_tf import app
from rankloss_tf.app import cli
from rankloss_tf.app.config import POOLING_NAMES
from rankloss_tf.app.recipes import describe
from rankloss_tf.backbones import build_backbone, efficientnet_lite0, extract_view_features, views, weights
from rankloss_tf.backbones.pooling import (POOLINGS, GeneralizedMeanPooling2D, check_pooling, generalized_mean_pool,
                                           pooling_key)

MAPS = np.random.default_rng(0).uniform(0.0, 6.0, (3, 7, 7, 5)).astype(np.float32)


def gem_oracle(maps, power, epsilon=1e-6):
    """Per image and channel, loops in float64: (mean of max(x, eps) ** p) ** (1 / p)."""
    n, h, w, c = maps.shape
    out = np.zeros((n, c))
    for i in range(n):
        for k in range(c):
            values = [max(float(maps[i, y, x, k]), epsilon) for y in range(h) for x in range(w)]
            out[i, k] = np.mean(np.power(values, power)) ** (1.0 / power)
    return out


@pytest.mark.parametrize("power", [0.5, 1.0, 3.0, 7.5])
def test_gem_matches_the_loop_oracle(power):
    np.testing.assert_allclose(generalized_mean_pool(MAPS, power), gem_oracle(MAPS, power), rtol=1e-5)


def test_gem_of_power_one_is_the_average_and_large_powers_approach_the_maximum():
    np.testing.assert_allclose(generalized_mean_pool(MAPS, 1.0), MAPS.mean(axis=(1, 2)), rtol=1e-5)
    average, gem3, gem500 = (np.asarray(generalized_mean_pool(MAPS, p)) for p in (1.0, 3.0, 500.0))
    assert np.all(average <= gem3 + 1e-6) and np.all(gem3 <= MAPS.max(axis=(1, 2)) + 1e-6)
    np.testing.assert_allclose(gem500, MAPS.max(axis=(1, 2)), rtol=0.01)
    huge = MAPS * 1e30  # scaled by the channel's maximum inside: no overflow at p = 500
    np.testing.assert_allclose(generalized_mean_pool(huge, 500.0), gem500 * 1e30, rtol=1e-4)


def test_negative_responses_are_clamped_and_nan_stays_in_its_channel():
    maps = MAPS.copy()
    maps[0, :, :, 0] = -1.0
    maps[1, 2, 3, 4] = np.nan
    pooled = np.asarray(generalized_mean_pool(maps, 3.0))
    assert pooled[0, 0] == pytest.approx(1e-6, rel=1e-3)
    assert np.isnan(pooled[1, 4]) and np.isfinite(np.delete(pooled.ravel(), 1 * 5 + 4)).all()


@pytest.mark.parametrize("power", [0, -1.0, float("nan"), float("inf"), True, "3"])
def test_bad_powers_and_poolings_raise_naming_them(power):
    with pytest.raises(ValueError, match=r"Received: gem_power="):
        check_pooling("gem", power)
    with pytest.raises(ValueError, match=r"Received: gem_power="):
        GeneralizedMeanPooling2D(power)
    with pytest.raises(ValueError, match=r"Received: pooling='max'"):
        check_pooling("max")


def test_layer_round_trips_and_cache_keys():
    layer = GeneralizedMeanPooling2D(2.5, name="gem")
    again = GeneralizedMeanPooling2D.from_config(layer.get_config())
    np.testing.assert_allclose(again(MAPS), layer(MAPS), rtol=1e-6)
    assert (pooling_key("avg"), pooling_key("gem"), pooling_key("gem", 2)) == (None, "gem3.0", "gem2.0")
    assert POOLING_NAMES == POOLINGS  # the command line spells them without importing TensorFlow


@pytest.fixture(scope="module")
def lite0_weights():
    """ImageNet weights (random ones give feature maps of ~1e-13, all below GeM's floor)."""
    if not weights.imagenet_weights_available():
        pytest.skip("No ImageNet weights of efficientnet_lite0 on this machine")
    return "imagenet"


def test_backbones_pool_their_last_map_by_gem(lite0_weights):
    images = np.random.default_rng(1).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    maps = efficientnet_lite0(include_top=False, weights=lite0_weights, image_size=64, pooling=None)(images).numpy()
    assert maps.shape == (2, 2, 2, 1280) and np.mean(maps > 0.1) > 0.1
    average = build_backbone("efficientnet_lite0", 64, lite0_weights)(images).numpy()
    gem1 = build_backbone("efficientnet_lite0", 64, lite0_weights, pooling="gem", gem_power=1.0)(images).numpy()
    gem3 = build_backbone("efficientnet_lite0", 64, lite0_weights, pooling="gem")(images).numpy()
    np.testing.assert_allclose(average, maps.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gem1, average, rtol=1e-5, atol=2e-6)  # ReLU6 maps: only zeros clamped to 1e-6
    np.testing.assert_allclose(gem3, gem_oracle(maps, 3.0), rtol=1e-4, atol=1e-6)
    assert np.mean(gem3 > average * 1.05) > 0.2  # a real difference where a channel's responses vary


def test_pooling_of_other_backbones_and_errors():
    images = np.zeros((2, 64, 64, 3), np.uint8)
    mobile = build_backbone("MobileNetV3Small", 64, weights=None, pooling="gem", gem_power=2.0)
    assert mobile(images).shape == (2, 576)
    with pytest.raises(ValueError, match=r"small_cnn pools in its own way.*Received: pooling='gem'"):
        build_backbone("small_cnn", 32, weights=None, pooling="gem")
    with pytest.raises(ValueError, match=r"Received: pooling='max'"):
        build_backbone("MobileNetV3Small", 64, weights=None, pooling="max")


def test_gem_features_are_cached_apart_and_equal_the_backbone_s(lite0_weights, tmp_path):
    """Average, GeM p=3 and GeM p=2 features of one view are three cache files; GeM's are the backbone's."""
    images = np.random.default_rng(2).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    dataset = tf.data.Dataset.from_tensor_slices((images, np.arange(4)))
    (view,) = views((64,))

    def extract(**pooling):
        return extract_view_features(dataset, view, 64, weights=lite0_weights, dataset_id="toy:test",
                                     cache_dir=tmp_path / "cache", verbose=0, **pooling)[0]

    average, gem = extract(), extract(pooling="gem")
    gem2 = extract(pooling="gem", gem_power=2.0)
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 3
    assert not np.allclose(average, gem, rtol=1e-3, atol=0) and not np.allclose(gem, gem2, rtol=1e-3, atol=0)
    backbone = build_backbone("efficientnet_lite0", 64, lite0_weights, pooling="gem")
    np.testing.assert_allclose(backbone(images).numpy(), gem, atol=1e-5)


def test_config_pooling_defaults_and_errors(capsys):
    cars = app.TrainConfig(dataset="cars196").resolved()
    assert (cars.pooling, cars.gem_power) == ("gem", 3.0)  # the Cars196 recipe's (results/cars196_recipe.md)
    average = app.TrainConfig(dataset="cars196", pooling="avg").resolved()
    assert (average.pooling, average.gem_power) == ("avg", None)
    photos = app.TrainConfig(dataset="digits", backbone="efficientnet_lite0").resolved()
    assert (photos.pooling, photos.gem_power) == ("avg", None)
    assert app.TrainConfig(dataset="cars196", gem_power=4.0).resolved().gem_power == 4.0
    with pytest.raises(ValueError, match=r"`gem_power` applies to pooling='gem'. Received: gem_power=2.0"):
        app.TrainConfig(dataset="cars196", pooling="avg", gem_power=2.0).resolved()
    assert app.TrainConfig(dataset="cars196", fine_tune=True).resolved().pooling is None
    with pytest.raises(ValueError, match=r"Received: pooling='gem', backbone='small_cnn'"):
        app.TrainConfig(dataset="digits", pooling="gem").resolved()
    with pytest.raises(ValueError, match=r"Received: pooling='gem', backbone='efficientnet_lite0', fine_tune"):
        app.TrainConfig(dataset="cars196", fine_tune=True, pooling="gem").resolved()
    with pytest.raises(ValueError, match=r"Unknown pooling.*Received: pooling='max'"):
        app.TrainConfig(dataset="cars196", pooling="max").resolved()
    with pytest.raises(ValueError, match=r"gem_power.*Received: gem_power=0.0"):
        app.TrainConfig(dataset="cars196", pooling="gem", gem_power=0.0).resolved()
    args = cli.build_parser().parse_args(["train", "--dataset", "cars196", "--pooling", "gem", "--gem-power", "2.5"])
    assert (args.pooling, args.gem_power) == ("gem", 2.5)
    assert "GeM p=2.5" in describe(app.TrainConfig(
        dataset="folder:x", backbone="efficientnet_lite0", image_size=224, view_sizes=(224,), recipe="photos",
        recipe_why="given", pooling="gem", gem_power=2.5))


@pytest.mark.slow
def test_a_gem_run_evaluates_the_same_from_its_export(lite0_weights, tmp_path, capsys):
    """The head trains on cached GeM features; the export pools by GeM in-graph and scores the same."""
    run, export = tmp_path / "run", tmp_path / "export"
    argv = ["train", "--dataset", "digits", "--backbone", "efficientnet_lite0", "--weights", lite0_weights,
            "--image-size", "32", "--pooling", "gem", "--epochs", "1", "--steps-per-epoch", "2",
            "--embedding-dim", "16", "--loss", "npair", "--cache-dir", tmp_path / "cache", "--no-plots",
            "--verbose", "0", "--out", run, "--export", export]
    assert cli.main([str(a) for a in argv]) == 0
    reported = json.loads((run / "metrics.json").read_text())
    assert (reported["config"]["pooling"], reported["config"]["gem_power"]) == ("gem", 3.0)
    path = tmp_path / "export.json"
    assert cli.main(["evaluate", "--model", str(export), "--dataset", "digits", "--json", str(path)]) == 0
    assert json.loads(path.read_text()) == pytest.approx(reported["metrics"], abs=2e-3)
    capsys.readouterr()
    keras.backend.clear_session()


def started_without_pooling(config):
    """A run of ``config`` past its first phase, its run.json as recorded before pooling was a field."""
    from rankloss_tf.app.run_dir import RunDirectory

    out = Path(config.out_dir)
    with RunDirectory(out).locked() as run:
        run.start(config)
        run.advance("fitting", 1.0)
    recorded = json.loads((out / "run.json").read_text())
    del recorded["pooling"], recorded["gem_power"]
    (out / "run.json").write_text(json.dumps(recorded))
    return RunDirectory(out)


def test_a_run_recorded_before_pooling_resumes_only_with_the_average(tmp_path):
    """A frozen-features run recorded without ``pooling`` pooled by average: resuming it on GeM features is
    refused, naming the field; with the average it resumes. An end-to-end run is not concerned."""
    out = str(tmp_path / "run")
    with started_without_pooling(app.TrainConfig(dataset="cars196", out_dir=out).resolved()).locked() as run:
        run.start(app.TrainConfig(dataset="cars196", out_dir=out, pooling="avg").resolved())
        with pytest.raises(ValueError, match=r"another configuration \(pooling: 'avg' -> 'gem'; gem_power: None"):
            run.start(app.TrainConfig(dataset="cars196", out_dir=out, pooling="gem").resolved())
    small = app.TrainConfig(dataset="digits", out_dir=str(tmp_path / "small")).resolved()
    with started_without_pooling(small).locked() as run:
        run.start(small)
