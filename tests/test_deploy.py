"""Deploy targets: LiteRT and ONNX files run by their own runtimes on real Omniglot images and give the
SavedModel's embeddings; the SavedModel's declared layout, ``serve`` endpoint and ``__call__``; safe writes."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from rankloss_tf import datasets
from rankloss_tf.app.cli import main
from rankloss_tf.deploy import export, export_litert, export_onnx
from rankloss_tf.export import SIGNATURE, export_saved_model
from rankloss_tf.models import build_embedding_model
from tests.conftest import SHARED_DATA

Interpreter = pytest.importorskip("ai_edge_litert.interpreter").Interpreter
onnxruntime = pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")

SHAPE = (105, 105, 1)  # Omniglot's own size; the model resizes to 32 inside (area), as the recipe's does
TOLERANCE = 1e-4  # the bound on |file - SavedModel| (float32 kernels of two runtimes)


@pytest.fixture(scope="module")
def omniglot():
    """24 real Omniglot characters of the held-out alphabets, at their own 105 x 105 x 1."""
    if not (SHARED_DATA / "omniglot").is_dir():
        pytest.skip(f"shared data folder not found at {SHARED_DATA}")
    images = datasets.load("omniglot", "test", data_dir=SHARED_DATA / "omniglot")
    return np.stack([image.numpy() for image, _ in images.take(24)])


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(3)
    return build_embedding_model(SHAPE, embedding_dim=16, image_size=32)


@pytest.fixture(scope="module")
def exports(model, tmp_path_factory):
    root = tmp_path_factory.mktemp("deploy")
    return {
        "saved_model": export(model, root / "saved_model"),
        "litert": export(model, root / "embedder.tflite", format="litert"),
        "onnx": export(model, root / "embedder.onnx", format="onnx"),
    }


def saved_model_embeddings(path, images):
    return tf.saved_model.load(str(path)).signatures[SIGNATURE](images=tf.constant(images))["embeddings"].numpy()


def litert_embeddings(path, images):
    return Interpreter(model_path=str(path)).get_signature_runner(SIGNATURE)(images=images)["embeddings"]


def onnx_embeddings(path, images):
    return onnxruntime.InferenceSession(str(path)).run(["embeddings"], {"images": images})[0]


@pytest.mark.parametrize("count", [1, 24])
def test_litert_and_onnx_files_give_the_saved_models_embeddings(exports, omniglot, count):
    want = saved_model_embeddings(exports["saved_model"], omniglot[:count])
    for run in (litert_embeddings(exports["litert"], omniglot[:count]),
                onnx_embeddings(exports["onnx"], omniglot[:count])):
        assert run.shape == (count, 16) and run.dtype == np.float32
        assert np.abs(run - want).max() <= TOLERANCE


def test_files_declare_uint8_images_of_the_model_size_and_a_free_batch(exports):
    interpreter = Interpreter(model_path=str(exports["litert"]))
    assert interpreter.get_signature_list() == {SIGNATURE: {"inputs": ["images"], "outputs": ["embeddings"]}}
    (given,), (taken,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert given["dtype"] == np.uint8 and given["shape_signature"].tolist() == [-1, *SHAPE]
    assert taken["dtype"] == np.float32 and taken["shape_signature"].tolist() == [-1, 16]
    session = onnxruntime.InferenceSession(str(exports["onnx"]))
    (given,), (taken,) = session.get_inputs(), session.get_outputs()
    assert (given.name, given.type, given.shape[1:]) == ("images", "tensor(uint8)", list(SHAPE))
    assert (taken.name, taken.type, taken.shape[1]) == ("embeddings", "tensor(float)", 16)
    assert isinstance(given.shape[0], str)  # a named free dimension: any batch size


def test_litert_holds_only_builtin_ops(exports):
    """No Flex op (the plain interpreter above could not run one), no EnsureShape, no antialiased resize."""
    from tensorflow.lite.python import schema_py_generated as schema

    graph = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(exports["litert"].read_bytes(), 0))
    codes = [code.builtinCode or code.deprecatedBuiltinCode for code in graph.operatorCodes]
    assert all(code != schema.BuiltinOperator.CUSTOM for code in codes), codes


def test_int8_litert_is_smaller_and_close(model, omniglot, exports, tmp_path):
    path = export_litert(model, tmp_path / "int8.tflite", int8=True, representative_images=omniglot)
    assert path.stat().st_size < exports["litert"].stat().st_size / 2
    got = litert_embeddings(path, omniglot)
    want = saved_model_embeddings(exports["saved_model"], omniglot)
    cosine = np.sum(got * want, axis=1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert got.dtype == np.float32 and cosine.min() > 0.95
    with pytest.raises(ValueError, match="representative_images"):
        export_litert(model, tmp_path / "other.tflite", int8=True)
    with pytest.raises(ValueError, match=r"model's shape \(105, 105, 1\)"):
        export_litert(model, tmp_path / "other.tflite", int8=True, representative_images=omniglot[:, :16])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8.tflite"]


def test_files_are_written_only_where_allowed(model, exports, tmp_path):
    with pytest.raises(ValueError, match=r"must end with \.onnx"):
        export_onnx(model, tmp_path / "embedder.tflite")
    with pytest.raises(ValueError, match="already exists"):
        export_litert(model, exports["litert"])
    for name, writer in (("notes.tflite", export_litert), ("notes.onnx", export_onnx)):
        (tmp_path / name).write_text("a user's file, not a model")
        with pytest.raises(ValueError, match=f"not a {name[5:]} model; it is never replaced"):
            writer(model, tmp_path / name, overwrite=True)
    with pytest.raises(ValueError, match="format"):
        export(model, tmp_path / "x.tfjs", format="tfjs")
    copy = tmp_path / "copy.tflite"
    copy.write_bytes(exports["litert"].read_bytes())
    assert export_litert(model, copy, overwrite=True) == copy
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.tflite", "notes.onnx", "notes.tflite"]
    assert {p.read_text() for p in tmp_path.glob("notes.*")} == {"a user's file, not a model"}


def test_failed_conversion_leaves_nothing(model, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        (tmp_path / ".half.onnx").write_bytes(b"partial")
        raise RuntimeError("disk full")

    import tf2onnx

    monkeypatch.setattr(tf2onnx.convert, "from_function", lambda *a, output_path, **k: (
        open(output_path, "wb").write(b"partial"), fail())[1])
    with pytest.raises(RuntimeError, match="disk full"):
        export_onnx(model, tmp_path / "embedder.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".half.onnx"]


def test_saved_model_signature_declares_rank_4_for_tools(exports):
    """What saved_model_cli / TF Serving's metadata read: the signature_def protobuf, without loading the model."""
    from tensorflow.python.tools import saved_model_utils

    signatures = saved_model_utils.get_meta_graph_def(str(exports["saved_model"]), "serve").signature_def
    assert {SIGNATURE, "serve"} <= set(signatures)
    for name in (SIGNATURE, "serve"):
        given, taken = signatures[name].inputs["images"], signatures[name].outputs["embeddings"]
        assert given.dtype == tf.uint8.as_datatype_enum and not given.tensor_shape.unknown_rank
        assert [dim.size for dim in given.tensor_shape.dim] == [-1, -1, -1, -1]
        assert taken.dtype == tf.float32.as_datatype_enum
        assert [dim.size for dim in taken.tensor_shape.dim] == [-1, 16]


def test_tfsm_layer_default_endpoint_and_call(model, exports, omniglot):
    want = model(omniglot, training=False).numpy()
    layer = keras.layers.TFSMLayer(str(exports["saved_model"]))  # call_endpoint="serve"
    np.testing.assert_allclose(np.asarray(layer(omniglot)["embeddings"]), want, rtol=1e-5, atol=1e-5)
    loaded = tf.saved_model.load(str(exports["saved_model"]))
    rgb = np.repeat(omniglot, 3, axis=-1)  # __call__ conforms like the signature
    np.testing.assert_allclose(loaded(rgb).numpy(), want, rtol=1e-5, atol=1e-5)


HUB_SCRIPT = """
import sys
import numpy as np
import tensorflow_hub as hub
import tf_keras
images = np.load(sys.argv[2])
layer = hub.KerasLayer(sys.argv[1])
model = tf_keras.Sequential([tf_keras.Input(images.shape[1:], dtype="uint8"), layer])
np.save(sys.argv[3], model.predict(images, verbose=0))
"""


@pytest.mark.slow
def test_hub_keras_layer_loads_the_export(model, exports, omniglot, tmp_path):
    """TF Hub needs tf_keras (Keras 2): it runs in a subprocess with TF_USE_LEGACY_KERAS=1.

    Slow (a second TensorFlow start, ~10-30 s) but the only check that ``hub.KerasLayer(path)`` works.
    """
    pytest.importorskip("tensorflow_hub")
    pytest.importorskip("tf_keras")
    np.save(tmp_path / "images.npy", omniglot)
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", HUB_SCRIPT, str(exports["saved_model"]), str(tmp_path / "images.npy"),
                           str(tmp_path / "out.npy")], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), model(omniglot, training=False).numpy(),
                               rtol=1e-5, atol=1e-5)


def test_cli_export_formats(model, tmp_path, capsys):
    model.save(tmp_path / "model.keras")
    assert main(["export", "--model", str(tmp_path / "model.keras"), "--format", "onnx",
                 "--out", str(tmp_path / "embedder.onnx")]) == 0
    assert "ONNX model written to" in capsys.readouterr().out
    assert onnx_embeddings(tmp_path / "embedder.onnx", np.zeros((2, *SHAPE), np.uint8)).shape == (2, 16)
    with pytest.raises(SystemExit) as stop:
        main(["export", "--model", str(tmp_path / "model.keras"), "--format", "litert",
              "--out", str(tmp_path / "embedder.onnx")])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip().endswith(f"must end with .tflite. Received: path={tmp_path / 'embedder.onnx'}")


@pytest.mark.parametrize("size", [(32, 32), (28, 40), (210, 64)])
def test_portable_area_resize_equals_resize_area(omniglot, size):
    """The exporters' area resize (two matrix products) against TensorFlow's ResizeArea, pixels in [0, 1]."""
    from rankloss_tf.backbones.preprocessing import ImagePreprocessing, portable_resize

    layer = ImagePreprocessing(image_size=size)
    want = layer(omniglot[:4]).numpy()
    with portable_resize():
        got = layer(omniglot[:4]).numpy()
    assert got.shape == want.shape and np.abs(got - want).max() <= 1e-5


def test_cli_int8_litert_calibrates_on_the_training_classes(tmp_path, capsys):
    digits = build_embedding_model((8, 8, 1), embedding_dim=4)
    digits.save(tmp_path / "digits.keras")
    command = ["export", "--model", str(tmp_path / "digits.keras"), "--format", "litert", "--int8",
               "--out", str(tmp_path / "int8.tflite")]
    with pytest.raises(SystemExit) as stop:
        main(command)
    assert stop.value.code == 2 and "--int8 needs --format litert and --dataset" in capsys.readouterr().err
    assert main([*command, "--dataset", "digits"]) == 0
    quantised = Interpreter(model_path=str(tmp_path / "int8.tflite"))
    assert any(detail["dtype"] == np.int8 for detail in quantised.get_tensor_details())
    out = quantised.get_signature_runner()(images=np.zeros((3, 8, 8, 1), np.uint8))["embeddings"]
    assert out.shape == (3, 4) and out.dtype == np.float32


def test_portable_area_resize_of_image_views_stays_within_a_grey_level(omniglot):
    """ImageView (multi-view frozen backbones) floors its area resize: float rounding may move a pixel by 1."""
    from rankloss_tf.backbones.image_views import ImageView
    from rankloss_tf.backbones.preprocessing import portable_resize

    view = ImageView(image_size=48, mirror=True)
    want = view(omniglot[:4]).numpy().astype(int)
    with portable_resize():
        got = view(omniglot[:4]).numpy().astype(int)
    assert np.abs(got - want).max() <= 1 and np.mean(got == want) > 0.99


def test_area_weights_round_like_tensorflows_kernel():
    """At 256 -> 224 exact weights are ~0.005 grey levels from ResizeArea; float32 bounds like its kernel's, ~5e-5."""
    from rankloss_tf.backbones.preprocessing import area_resize, portable_resize

    images = np.random.default_rng(0).random((2, 256, 256, 3)).astype(np.float32) * 255
    want = np.asarray(area_resize(images, (224, 224)))
    with portable_resize():
        got = np.asarray(area_resize(images, (224, 224)))
    assert np.abs(got - want).max() <= 2e-4
