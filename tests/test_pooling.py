"""Pooling of a frozen backbone's last feature map: average or generalised mean (GeM), in the kernel, the
backbone, the feature cache, the configuration and a run whose export pools as its cached features did."""

import dataclasses
import json
import re
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
from rankloss_tf.backbones.pooling import (GEM_POWER_RANGE, POOLINGS, GeneralizedMeanPooling2D, check_gem_power,
                                           check_pooling, generalized_mean_pool, pooling_key)

MAPS = np.random.default_rng(0).uniform(0.0, 6.0, (3, 7, 7, 5)).astype(np.float32)
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "keras"


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
    with pytest.raises(ValueError, match=r"`gem_power` applies to pooling='gem'. Received: gem_power=2.0, "
                                         r"pooling='avg'$"):  # given: no note on where it came from
        app.TrainConfig(dataset="digits", backbone="efficientnet_lite0", pooling="avg", gem_power=2.0).resolved()
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


def _refusals(power):
    """Every door a GeM power goes through, each expected to refuse ``power`` with the same message."""
    yield lambda: check_gem_power(power)
    yield lambda: GeneralizedMeanPooling2D(power)
    yield lambda: generalized_mean_pool(MAPS, power)
    yield lambda: build_backbone("MobileNetV3Small", 64, weights=None, pooling="gem", gem_power=power)
    yield lambda: app.TrainConfig(dataset="cars196", pooling="gem", gem_power=power).resolved()


@pytest.mark.parametrize("power", [1e-8, 1e-6, 0.01, 0.0999, 1000.5, 0, -1.0, float("nan")])
def test_powers_outside_the_one_range_are_refused_everywhere_naming_value_and_range(power):
    """Tiny powers gave float32 noise (p = 1e-8 returned the maximum); 0 a ZeroDivisionError in the function."""
    assert GEM_POWER_RANGE == (0.1, 1000.0)
    for refuse in _refusals(power):
        with pytest.raises(ValueError, match=rf"`gem_power` must be a number in \[0.1, 1000\].*"
                                             rf"Received: gem_power={re.escape(repr(power))}$"):
            refuse()


def test_the_command_line_refuses_a_tiny_power_in_one_line(tmp_path, capsys):
    argv = ["train", "--dataset", "cars196", "--pooling", "gem", "--gem-power", "0.05", "--out", str(tmp_path / "r")]
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "`gem_power` must be a number in [0.1, 1000]" in err, err
    assert "Received: gem_power=0.05" in err and not (tmp_path / "r").exists()
    low, high = GEM_POWER_RANGE  # the help states the range pooling.py enforces
    fields = {field.name: field for field in dataclasses.fields(app.TrainConfig)}
    assert f"in [{low:g}, {high:g}]" in fields["gem_power"].metadata["help"]


@pytest.mark.parametrize("power", [0.1, 0.5, 1000.0])
def test_powers_at_and_inside_the_range_stay_accurate(power):
    maps = np.random.default_rng(3).uniform(0.0, 1.0, (4, 28, 28, 8)).astype(np.float32)  # 784 positions; x ** 1000 fits
    np.testing.assert_allclose(generalized_mean_pool(maps, power), gem_oracle(maps, power), rtol=3e-5)


@pytest.mark.parametrize("epsilon", [0.0, -1.0, float("nan"), float("inf"), True, "1e-6", None])
def test_bad_epsilons_are_refused_naming_them(epsilon):
    """epsilon = 0 gave NaN (0 / 0) on a channel without a positive response; -1 and NaN gave NaN silently."""
    message = rf"`epsilon` must be a finite number > 0.*Received: epsilon={re.escape(repr(epsilon))}$"
    with pytest.raises(ValueError, match=message):
        GeneralizedMeanPooling2D(epsilon=epsilon)
    with pytest.raises(ValueError, match=message):
        generalized_mean_pool(MAPS, 3.0, epsilon)
    zeros = np.zeros((1, 2, 2, 1), np.float32)
    assert np.asarray(GeneralizedMeanPooling2D(epsilon=1e-3)(zeros))[0, 0] == pytest.approx(1e-3)


@pytest.mark.parametrize("shape", [(2, 3, 3), (2, 3, 3, 4, 5), (6,)])
def test_maps_of_another_rank_are_refused_naming_the_shape(shape):
    """A rank-3 input used to return (2,) while compute_output_shape promised (None, 3); rank 5 garbage."""
    message = (r"expects feature maps \[batch, height, width, channels\] \(rank 4\). "
               rf"Received: shape {re.escape(str(shape))} \(rank {len(shape)}\)")
    maps = np.ones(shape, np.float32)
    with pytest.raises(ValueError, match=message):
        GeneralizedMeanPooling2D()(maps)
    with pytest.raises(ValueError, match=message):
        generalized_mean_pool(maps)
    with pytest.raises(ValueError, match=message):
        GeneralizedMeanPooling2D().compute_output_shape(shape)
    with pytest.raises(ValueError, match=r"\[batch, height, width, channels\].*Received: shape \(None,"):
        GeneralizedMeanPooling2D()(keras.Input(shape[1:]))  # a functional model: refused when built


def test_an_empty_batch_pools_to_no_rows_like_the_average():
    layer, average = GeneralizedMeanPooling2D(), keras.layers.GlobalAveragePooling2D()
    empty = np.zeros((0, 3, 3, 2), np.float32)
    assert tuple(layer(empty).shape) == tuple(average(empty).shape) == (0, 2)
    assert tuple(generalized_mean_pool(empty).shape) == (0, 2) and layer(empty).dtype == "float32"
    traced = tf.function(layer, input_signature=[tf.TensorSpec([None, None, None, 2], tf.float32)])
    assert tuple(traced(empty).shape) == (0, 2)
    np.testing.assert_allclose(traced(MAPS[..., :2]), generalized_mean_pool(MAPS[..., :2]), rtol=1e-6)


@pytest.mark.parametrize("shape", [(2, 0, 3, 2), (2, 3, 0, 2), (0, 0, 0, 2)])
def test_maps_without_a_position_are_refused_naming_the_shape(shape):
    """The mean over no position is undefined (the average gives NaN); refused when the shape is known."""
    message = rf"at least one position.*Received: shape {re.escape(str(shape))}$"
    with pytest.raises(ValueError, match=message):
        GeneralizedMeanPooling2D()(np.zeros(shape, np.float32))
    with pytest.raises(ValueError, match=message):
        generalized_mean_pool(np.zeros(shape, np.float32))


def test_infinite_responses_pool_to_infinity_like_the_average_and_the_maximum():
    """+inf used to give NaN for its channel (inf / inf inside); -inf is clamped like any negative response."""
    maps = MAPS.copy()
    maps[0, 1, 2, 1] = np.inf
    maps[1, 0, 0, 3] = -np.inf
    maps[2, 4, 4, 0], maps[2, 5, 5, 0] = np.inf, np.nan  # NaN wins over +inf, as in the average
    pooled = np.asarray(generalized_mean_pool(maps, 3.0))
    average = np.asarray(keras.layers.GlobalAveragePooling2D()(maps))
    assert pooled[0, 1] == np.inf == average[0, 1]
    assert np.isnan(pooled[2, 0]) and np.isnan(average[2, 0])
    expected = gem_oracle(np.where(np.isfinite(maps), maps, -1.0), 3.0)  # -inf and -1 both clamp to epsilon
    finite = np.ones(pooled.shape, bool)
    finite[0, 1] = finite[2, 0] = False
    np.testing.assert_allclose(pooled[finite], expected[finite], rtol=1e-5)


def test_power_one_is_the_average_of_the_clamped_map_not_of_a_signed_one():
    """What the docs say: p = 1 averages max(x, eps); equal to the average only for non-negative maps."""
    signed = np.random.default_rng(4).normal(0.0, 1.0, (2, 5, 5, 3)).astype(np.float32)  # e.g. ConvNeXt's
    pooled = np.asarray(generalized_mean_pool(signed, 1.0))
    np.testing.assert_allclose(pooled, np.maximum(signed, 1e-6).mean(axis=(1, 2)), rtol=1e-5)
    assert np.all(pooled > signed.mean(axis=(1, 2)) + 0.1)
    relu6 = np.clip(signed * 3.0, 0.0, 6.0)
    np.testing.assert_allclose(generalized_mean_pool(relu6, 1.0), relu6.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
    help_text = {f.name: f for f in dataclasses.fields(app.TrainConfig)}["gem_power"].metadata["help"]
    guide = (Path(__file__).resolve().parents[1] / "docs" / "guide.md").read_text()
    for text in (help_text, GeneralizedMeanPooling2D.__doc__, build_backbone.__doc__, guide):
        assert "the average of the map clamped at" in " ".join(text.split()), text[:200]


def test_a_power_with_the_average_is_refused_by_the_backbone_as_by_the_configuration():
    """build_backbone(pooling="avg", gem_power=5) used to ignore the power; the command line refused it."""
    message = r"`gem_power` applies to pooling='gem'. Received: gem_power=5, pooling='avg'$"
    with pytest.raises(ValueError, match=message):
        build_backbone("MobileNetV3Small", 64, weights=None, pooling="avg", gem_power=5)
    with pytest.raises(ValueError, match=message):
        build_backbone("small_cnn", 32, weights=None, gem_power=5)
    with pytest.raises(ValueError, match=message):
        check_pooling("avg", 5)
    assert check_pooling("avg") == ("avg", None) and check_pooling("gem", None) == ("gem", 3.0)


def test_a_default_average_pooling_is_named_as_the_recipe_s_when_a_power_is_given(tmp_path, capsys):
    """--gem-power without --pooling: the error says the 'avg' is the recipe's default, not the user's."""
    note = "pooling='avg' (not given: the recipe's default for this dataset; pass --pooling gem)"
    with pytest.raises(ValueError, match=re.escape(f"Received: gem_power=2.0, {note}")):
        app.TrainConfig(dataset="digits", backbone="efficientnet_lite0", gem_power=2.0).resolved()
    argv = ["train", "--dataset", "digits", "--backbone", "efficientnet_lite0", "--gem-power", "2",
            "--out", str(tmp_path / "run")]
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2 and f"`gem_power` applies to pooling='gem'. Received: gem_power=2.0, {note}" in err


def write_gem_fixture(out):
    """Wrote ``gem_5e38d94.keras`` / ``.npz`` with the layer as it was at commit 5e38d94 (run once)."""
    inputs = keras.Input((3, 3, 2), name="maps")
    model = keras.Model(inputs, GeneralizedMeanPooling2D(2.5, epsilon=1e-4, name="gem")(inputs), name="gem_5e38d94")
    maps = np.random.default_rng(0).uniform(-1.0, 4.0, (2, 3, 3, 2)).astype("float32")
    model.save(Path(out) / "gem_5e38d94.keras")
    np.savez(Path(out) / "gem_5e38d94.npz", maps=maps, pooled=model.predict(maps, verbose=0))


def test_a_keras_file_saved_with_the_former_layer_loads_and_pools_the_same():
    import rankloss_tf

    model = rankloss_tf.load_model(FIXTURES / "gem_5e38d94.keras")
    layer = model.get_layer("gem")
    assert isinstance(layer, GeneralizedMeanPooling2D) and (layer.power, layer.epsilon) == (2.5, 1e-4)
    saved = np.load(FIXTURES / "gem_5e38d94.npz")
    np.testing.assert_allclose(model.predict(saved["maps"], verbose=0), saved["pooled"], rtol=1e-6)
    again = GeneralizedMeanPooling2D.from_config(layer.get_config())
    assert again.get_config() == layer.get_config()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_maps_pool_in_float32_and_keep_their_dtype(dtype):
    maps = np.random.default_rng(0).uniform(0.05, 6.0, (3, 7, 7, 5))
    expected = np.mean(maps ** 0.1, axis=(1, 2)) ** 10.0
    half = tf.cast(tf.constant(maps, tf.float32), dtype)
    pooled = generalized_mean_pool(half, 0.1)
    assert keras.backend.standardize_dtype(pooled.dtype) == dtype
    # Computed in the half type, p = 0.1 raises its rounding to the 10th power (about 1e-2 in float16).
    reference = np.mean(np.asarray(tf.cast(half, tf.float32)) ** 0.1, axis=(1, 2)) ** 10.0
    tolerance = 4e-3 if dtype == "float16" else 2e-2  # one rounding of the result to the half type
    np.testing.assert_allclose(np.asarray(tf.cast(pooled, tf.float32)), reference, rtol=tolerance)
    np.testing.assert_allclose(reference, expected, rtol=tolerance)
