"""SavedModel export: signature, parity with the Keras model, input conformation, atomic and safe writes."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from rankloss_tf.datasets.images import resize_uint8
from rankloss_tf.export import (
    MARKER,
    SIGNATURE,
    SavedModelEmbedder,
    check_export_path,
    check_images,
    conform_images,
    export_saved_model,
    read_export_info,
)
from rankloss_tf.models import build_embedding_model


@pytest.fixture(scope="module")
def model():
    return build_embedding_model((20, 20, 1), embedding_dim=12, image_size=(16, 16))


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    return export_saved_model(model, tmp_path_factory.mktemp("export") / "embedder")


def images(n, seed=0, shape=(20, 20, 1)):
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


def test_signature_takes_uint8_images_returns_embeddings(exported):
    loaded = tf.saved_model.load(str(exported))
    signature = loaded.signatures[SIGNATURE]
    _, inputs = signature.structured_input_signature
    assert list(inputs) == ["images"]
    assert inputs["images"].dtype == tf.uint8 and inputs["images"].shape.as_list() == [None, None, None, None]
    outputs = signature.structured_outputs
    assert list(outputs) == ["embeddings"]
    assert outputs["embeddings"].dtype == tf.float32 and outputs["embeddings"].shape.as_list() == [None, 12]


def test_every_export_carries_the_marker(exported):
    info = json.loads((exported / MARKER).read_text())
    assert info == read_export_info(exported)
    assert (info["format"], info["kind"], info["version"]) == ("rankloss_tf", "embedding", 1)
    assert info["image_shape"] == [20, 20, 1] and info["embedding_dim"] == 12


@pytest.mark.parametrize("batch_size", [1, 3, 32])
def test_saved_model_equals_keras_model(model, exported, batch_size):
    x = images(batch_size, seed=batch_size)
    want = model(x, training=False).numpy()
    loaded = tf.saved_model.load(str(exported))
    got = loaded.signatures[SIGNATURE](images=tf.constant(x))["embeddings"].numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(SavedModelEmbedder(exported)(x).numpy(), want, rtol=1e-5, atol=1e-6)
    layer_output = keras.layers.TFSMLayer(str(exported), call_endpoint=SIGNATURE)(x)
    np.testing.assert_allclose(np.asarray(layer_output["embeddings"]), want, rtol=1e-5, atol=1e-6)


def test_signature_resizes_other_sizes_and_converts_channels(model, exported):
    signature = tf.saved_model.load(str(exported)).signatures[SIGNATURE]
    small = images(3, seed=5, shape=(16, 16, 1))
    resized = np.stack([resize_uint8(tf.constant(image), (20, 20)).numpy() for image in small])
    want = model(resized, training=False).numpy()
    np.testing.assert_allclose(signature(images=small)["embeddings"].numpy(), want, rtol=1e-5, atol=1e-6)
    rgb = images(2, seed=6, shape=(20, 20, 3))
    rgba = np.concatenate([rgb, np.full((2, 20, 20, 1), 7, np.uint8)], axis=-1)
    want = model(tf.image.rgb_to_grayscale(rgb), training=False).numpy()
    np.testing.assert_allclose(signature(images=rgb)["embeddings"].numpy(), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(signature(images=rgba)["embeddings"].numpy(), want, rtol=1e-5, atol=1e-6)


def test_conform_tiles_gray_for_rgb_models_and_keeps_right_sized_images():
    gray = images(2, seed=7, shape=(9, 9, 1))
    np.testing.assert_array_equal(conform_images(gray, (9, 9, 3)).numpy(), np.repeat(gray, 3, axis=-1))
    np.testing.assert_array_equal(conform_images(gray, (9, 9, 1)).numpy(), gray)
    resized = conform_images(gray[0:1], (4, 6, 1))
    np.testing.assert_array_equal(resized.numpy()[0], resize_uint8(tf.constant(gray[0]), (4, 6)).numpy())


def test_signature_errors_name_rank_and_channels(exported):
    signature = tf.saved_model.load(str(exported)).signatures[SIGNATURE]
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"rank 4.*received shape"):
        signature(images=tf.zeros([20, 20, 1], tf.uint8))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"rank 4.*received shape"):
        signature(images=tf.zeros([1, 20, 20, 1, 1], tf.uint8))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"1 \(gray\), 3 \(RGB\) or 4 \(RGBA\)"):
        signature(images=tf.zeros([1, 20, 20, 2], tf.uint8))


def test_embedder_refuses_float_and_misshapen_images(exported):
    embedder = SavedModelEmbedder(exported)
    with pytest.raises(ValueError, match="uint8.*Received: dtype=float32"):
        embedder(np.random.default_rng(0).random((2, 20, 20, 1), dtype=np.float32))
    with pytest.raises(ValueError, match="Received: shape=\\(20, 20, 1\\)"):
        embedder(np.zeros((20, 20, 1), np.uint8))
    with pytest.raises(ValueError, match="Received: shape=\\(1, 20, 20, 2\\)"):
        check_images(np.zeros((1, 20, 20, 2), np.uint8))
    assert embedder(images(2, shape=(33, 40, 3))).shape == (2, 12)


def test_embedder_reports_image_shape_and_rejects_non_saved_models(exported, tmp_path):
    assert SavedModelEmbedder(exported).image_shape == (20, 20, 1)
    with pytest.raises(ValueError, match="saved_model.pb"):
        SavedModelEmbedder(tmp_path)


def test_existing_target_needs_overwrite(model, tmp_path):
    target = tmp_path / "embedder"
    export_saved_model(model, target)
    with pytest.raises(ValueError, match="already exists"):
        export_saved_model(model, target)
    other = build_embedding_model((20, 20, 1), embedding_dim=5)
    export_saved_model(other, target, overwrite=True)
    assert SavedModelEmbedder(target)(images(2)).shape == (2, 5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["embedder"]


def test_overwrite_never_replaces_what_is_not_our_export(model, tmp_path):
    user_dir = tmp_path / "photos"
    user_dir.mkdir()
    (user_dir / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(ValueError, match="not an export of rankloss_tf"):
        export_saved_model(model, user_dir, overwrite=True)
    assert (user_dir / "holiday.jpg").read_bytes() == b"precious"
    user_file = tmp_path / "notes.txt"
    user_file.write_text("keep")
    with pytest.raises(ValueError, match="exists and is not a directory"):
        export_saved_model(model, user_file, overwrite=True)
    assert user_file.read_text() == "keep"
    with pytest.raises(ValueError, match="under a file"):
        export_saved_model(model, user_file / "model", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "photos"]


def test_overwrite_never_replaces_an_export_of_another_kind(model, tmp_path):
    # A model export written with overwrite over an index directory replaced the index (an outside probe).
    from rankloss_tf.retrieval import Index, save_index

    index = Index(metric="l2")
    index.add_embeddings(np.eye(3, dtype=np.float32), labels=[0, 1, 2])
    save_index(index, tmp_path / "index")
    before = sorted(p.name for p in (tmp_path / "index").iterdir())
    with pytest.raises(ValueError, match="another kind \\('index'\\)"):
        export_saved_model(model, tmp_path / "index", overwrite=True)
    assert sorted(p.name for p in (tmp_path / "index").iterdir()) == before
    first = export_saved_model(model, tmp_path / "model")
    assert export_saved_model(model, first, overwrite=True) == first  # the same kind is replaced when asked


@pytest.mark.parametrize("relative", [".", "saved_model", ".."])
def test_check_export_path_refuses_protected_paths(tmp_path, relative):
    run = tmp_path / "runs" / "a"
    run.mkdir(parents=True)
    with pytest.raises(ValueError, match="equal to, inside or above"):
        check_export_path(run / relative, overwrite=True, protected=[run])
    assert check_export_path(tmp_path / "runs" / "b", protected=[run]) == tmp_path / "runs" / "b"


def test_check_export_path_refuses_the_model_file_itself(tmp_path):
    model_file = tmp_path / "run" / "model.keras"
    model_file.parent.mkdir()
    model_file.write_bytes(b"weights")
    with pytest.raises(ValueError, match="equal to, inside or above"):
        check_export_path(tmp_path / "run", overwrite=True, protected=[model_file])


def test_failed_export_leaves_nothing(model, tmp_path, monkeypatch):
    def fail(obj, export_dir, *args, **kwargs):
        tf.io.gfile.makedirs(export_dir)
        (tmp_path / export_dir).joinpath("saved_model.pb").write_bytes(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(tf.saved_model, "save", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        export_saved_model(model, tmp_path / "embedder")
    assert list(tmp_path.iterdir()) == []


def test_model_without_image_input_is_rejected(tmp_path):
    dense = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="image input"):
        export_saved_model(dense, tmp_path / "x")
