"""Views of the frozen-feature protocol: the view layer, the averaged joined model, config, run and evaluate."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from rankloss_tf import app
from rankloss_tf.app import cli
from rankloss_tf.backbones import ImageView, View, build_backbone, extract_view_features, files, views, weights
from rankloss_tf.models import embedding_model, projection_head


def area_resize_oracle(images, size):
    """Area resize by an integer factor, loops: block means down, pixel repetition up."""
    n, h, w, c = images.shape
    out = np.zeros((n, size, size, c), np.float64)
    for i in range(size):
        for j in range(size):
            if size <= h:
                f = h // size
                out[:, i, j] = images[:, i * f:(i + 1) * f, j * f:(j + 1) * f].mean(axis=(1, 2))
            else:
                f = size // h
                out[:, i, j] = images[:, i // f, j // f]
    return out


def view_oracle(images, view):
    mirrored = images[:, :, ::-1] if view.mirror else images
    if view.size == images.shape[1]:
        return mirrored
    return np.floor(area_resize_oracle(mirrored.astype(np.float64), view.size)).astype(images.dtype)


IMAGES = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 1), dtype=np.uint8)


@pytest.mark.parametrize("view", [View(8), View(8, True), View(4), View(4, True), View(16, True)])
def test_image_view_matches_the_loop_oracle(view):
    got = ImageView(view.size, view.mirror)(IMAGES).numpy()
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, view_oracle(IMAGES, view))


def test_views_order_names_and_errors():
    assert views((224, 288), mirror=True) == (View(224), View(224, True), View(288), View(288, True))
    assert [v.name(224) for v in views((224, 288), mirror=True)] == ["plain", "flip", "plain288", "flip288"]
    assert views([np.int64(32)]) == (View(32),)
    for bad in ((), (224, 224), (0,), (True,), (22.5,)):
        with pytest.raises(ValueError, match=r"distinct positive integers\. Received: view_sizes="):
            views(bad)
    with pytest.raises(ValueError, match="Received: image_size=0"):
        ImageView(0)


def test_joined_model_embeds_the_head_of_the_mean_of_the_views_features():
    keras.utils.set_random_seed(0)
    chosen = views((8, 16), mirror=True)
    extractors = {s: build_backbone("small_cnn", None, None, input_shape=(s, s, 1)) for s in (8, 16)}
    head = projection_head(64, 16, normalize=False)
    model = embedding_model(extractors, head, chosen, (8, 8, 1))
    features = np.mean([extractors[v.size](view_oracle(IMAGES, v)).numpy() for v in chosen], axis=0)
    want = head(features).numpy()
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    np.testing.assert_allclose(model(IMAGES).numpy(), want, atol=1e-5)
    reloaded = keras.models.model_from_json(model.to_json())
    assert [layer.name for layer in reloaded.layers if isinstance(layer, ImageView)] == [
        "view_plain8", "view_flip8", "view_plain16", "view_flip16"]


def test_joined_model_refuses_views_without_their_extractor():
    extractors = {8: build_backbone("small_cnn", None, None, input_shape=(8, 8, 1))}
    with pytest.raises(ValueError, match=r"extractor of each view size\. Received: .*extractor sizes \[8\]"):
        embedding_model(extractors, projection_head(64, 4), views((8, 12)), (8, 8, 1))
    with pytest.raises(ValueError, match="input_shape=None"):
        embedding_model(extractors, projection_head(64, 4), views((8,)))


@pytest.fixture(scope="module")
def lite0_weights():
    """The ImageNet weights of EfficientNet-Lite0 (random ones give vanishing features: retrieval by noise)."""
    if not (files.default_cache_dir() / weights.WEIGHTS_FILENAME).is_file() and weights.installed_source() is None:
        pytest.skip("No ImageNet weights of efficientnet_lite0 on this machine")
    return "imagenet"


def test_view_features_are_the_joined_models_features(lite0_weights, tmp_path):
    """Cached view features equal the joined model's, including an upsized, mirrored one."""
    images = np.random.default_rng(1).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    dataset = tf.data.Dataset.from_tensor_slices((images, np.arange(4)))
    chosen = views((32, 40), mirror=True)
    extractors = {s: build_backbone("efficientnet_lite0", s, lite0_weights, input_shape=(s, s, 3)) for s in (32, 40)}
    identity = keras.layers.Identity()
    model = embedding_model(extractors, identity, chosen, (32, 32, 3))
    cached = [extract_view_features(dataset, view, 32, weights=lite0_weights, dataset_id="toy:test",
                                    cache_dir=tmp_path, verbose=0)[0] for view in chosen]
    assert len(list(tmp_path.glob("*.npz"))) == 4
    want = np.mean(cached, axis=0)
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    np.testing.assert_allclose(model(images).numpy(), want, atol=1e-5)


def test_config_views_defaults_and_errors():
    cars = app.TrainConfig(dataset="cars196").resolved()
    assert (cars.backbone, cars.frozen, cars.view_sizes, cars.mirror_views) == (
        "efficientnet_lite0", True, (224, 288), True)
    assert (cars.loss, cars.loss_options, cars.learning_rate, cars.normalize) == (
        "npair", {"variant": "mc", "l2_reg": 0.002}, 2e-4, False)
    other_loss = app.TrainConfig(dataset="cars196", loss="triplet_semihard").resolved()
    assert other_loss.loss_options is None
    single = app.TrainConfig(dataset="digits", backbone="efficientnet_lite0").resolved()
    assert (single.view_sizes, single.mirror_views) == ((224,), False)
    fine_tune = app.TrainConfig(dataset="cars196", fine_tune=True).resolved()
    assert (fine_tune.view_sizes, fine_tune.mirror_views) == (None, False)
    assert app.TrainConfig(dataset="cars196", view_sizes=[224, 256]).view_sizes == (224, 256)
    with pytest.raises(ValueError, match=r"frozen pretrained features.*Received: view_sizes=\(32,\)"):
        app.TrainConfig(dataset="digits", view_sizes=(32,)).resolved()
    with pytest.raises(ValueError, match=r"Received: mirror_views=True, backbone='efficientnet_lite0', fine_tune"):
        app.TrainConfig(dataset="cars196", fine_tune=True, mirror_views=True).resolved()
    with pytest.raises(ValueError, match=r"Received: view_sizes=\(224, 224\)"):
        app.TrainConfig(dataset="cars196", view_sizes=(224, 224)).resolved()


def test_cli_view_flags(tmp_path, capsys):
    args = cli.build_parser().parse_args(["train", "--dataset", "cars196", "--view-sizes", "224,256",
                                          "--no-mirror-views"])
    assert (args.view_sizes, args.mirror_views) == ((224, 256), False)
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["train", "--dataset", "cars196", "--view-sizes", "224,big"])
    assert "Received: '224,big'" in capsys.readouterr().err


@pytest.mark.slow
def test_run_with_views_evaluates_the_same_from_the_saved_model_and_export(lite0_weights, tmp_path, capsys):
    """Training reports the metrics of the head on averaged cached features; the saved model and
    the export, embedding raw images through every view in-graph, give the same metrics; a re-run
    of the finished run (its configuration read back from JSON) is not refused."""
    run, export = tmp_path / "run", tmp_path / "export"
    argv = ["train", "--dataset", "digits", "--backbone", "efficientnet_lite0", "--weights", lite0_weights,
            "--image-size", "32", "--view-sizes", "32,40", "--mirror-views", "--epochs", "2",
            "--steps-per-epoch", "3", "--embedding-dim", "16", "--loss", "npair", "--cache-dir", tmp_path / "cache",
            "--no-plots", "--verbose", "0", "--out", run, "--export", export]
    assert cli.main([str(a) for a in argv]) == 0
    reported = json.loads((run / "metrics.json").read_text())
    assert reported["config"]["view_sizes"] == [32, 40] and reported["config"]["mirror_views"] is True
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 8  # 4 views x 2 splits
    for model in (run, export):
        path = tmp_path / f"{model.name}.json"
        assert cli.main(["evaluate", "--model", str(model), "--dataset", "digits", "--json", str(path)]) == 0
        assert json.loads(path.read_text()) == pytest.approx(reported["metrics"], abs=2e-3), model
    capsys.readouterr()
    assert cli.main([str(a) for a in argv]) == 0
    assert "already finished" in capsys.readouterr().out
