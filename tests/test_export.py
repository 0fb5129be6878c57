"""SavedModel export: signature, parity with the Keras model, atomic writes."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from rankloss_tf.export import SIGNATURE, SavedModelEmbedder, export_saved_model
from rankloss_tf.models import build_embedding_model


@pytest.fixture(scope="module")
def model():
    return build_embedding_model((20, 20, 1), embedding_dim=12, image_size=(16, 16))


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    return export_saved_model(model, tmp_path_factory.mktemp("export") / "embedder")


def images(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, 20, 20, 1), dtype=np.uint8)


def test_signature_takes_uint8_images_returns_embeddings(exported):
    loaded = tf.saved_model.load(str(exported))
    signature = loaded.signatures[SIGNATURE]
    _, inputs = signature.structured_input_signature
    assert list(inputs) == ["images"]
    assert inputs["images"].dtype == tf.uint8 and inputs["images"].shape.as_list() == [None, 20, 20, 1]
    outputs = signature.structured_outputs
    assert list(outputs) == ["embeddings"]
    assert outputs["embeddings"].dtype == tf.float32 and outputs["embeddings"].shape.as_list() == [None, 12]


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
