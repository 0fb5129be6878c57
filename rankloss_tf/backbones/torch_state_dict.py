"""Reads a PyTorch state dict (the legacy, pre-1.6 ``torch.save`` format) without torch.

The legacy format is five pickles in a row: a magic number, the protocol version,
system info, the state dict whose tensors point to storages by key, and the list
of storage keys; then, for each key in that order, the storage's element count
(int64, little endian) followed by its raw bytes. The unpickler here accepts only
the few globals that a state dict of plain tensors needs, so reading a file never
runs code from it.

Reference: ``torch/serialization.py`` (``_legacy_load``) and ``torch/_utils.py``
(``_rebuild_tensor_v2``) in PyTorch 1.x-2.x.
"""

import collections
import pickle

import numpy as np

_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageRef:
    """A storage named in the pickle; its bytes follow the pickles in the file."""

    def __init__(self, dtype, numel):
        self.dtype = dtype
        self.numel = numel
        self.array = None


def _rebuild_tensor(storage, offset, size, stride, *unused):
    """Stands for ``torch._utils._rebuild_tensor_v2``; resolved once storages are read."""
    return _TensorRef(storage, offset, tuple(size), tuple(stride))


class _TensorRef:
    """A tensor view (offset, size, stride in elements) of a storage."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def to_numpy(self):
        itemsize = self.storage.array.itemsize
        view = np.lib.stride_tricks.as_strided(
            self.storage.array[self.offset :],
            shape=self.size,
            strides=tuple(s * itemsize for s in self.stride),
        )
        return np.array(view)


class _StateDictUnpickler(pickle.Unpickler):
    """Unpickler that knows storages and tensors, and refuses every other global."""

    def __init__(self, file):
        super().__init__(file)
        self.storages = {}

    def find_class(self, module, name):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return name
        raise pickle.UnpicklingError(
            f"A state dict of plain tensors does not reference {module}.{name}."
        )

    def persistent_load(self, pid):
        kind, storage_type, key, _location, numel, view_metadata = pid
        if kind != "storage" or view_metadata is not None:
            raise pickle.UnpicklingError(f"Unsupported storage reference. Received: {pid!r}")
        if key not in self.storages:
            self.storages[key] = _StorageRef(_STORAGE_DTYPES[storage_type], numel)
        return self.storages[key]


def read_torch_state_dict(path):
    """Reads a legacy-format PyTorch state dict into NumPy arrays, without torch.

    Args:
        path: path of a ``.pth`` file written by ``torch.save(model.state_dict())``
            with PyTorch < 1.6 (or ``_use_new_zipfile_serialization=False``).

    Returns:
        dict mapping each state-dict key (e.g. "_bn0.running_mean") to a NumPy
        array of the tensor's shape and dtype, in the file's order.

    Raises:
        ValueError: if the file is not a legacy-format PyTorch file.

    Example:
    >>> state = read_torch_state_dict("efficientnet-lite0-57934424.pth")  # doctest: +SKIP
    >>> state["_conv_stem.weight"].shape  # doctest: +SKIP
    (32, 3, 3, 3)
    """
    with open(path, "rb") as file:
        try:
            magic = pickle.load(file)
        except pickle.UnpicklingError as error:
            raise ValueError(
                f"Expected a legacy-format PyTorch file. Received: path={path!r} ({error})"
            ) from error
        if magic != _MAGIC_NUMBER:
            raise ValueError(
                f"Expected a legacy-format PyTorch file. Received: path={path!r}"
            )
        pickle.load(file)  # protocol version
        pickle.load(file)  # system info (endianness, type sizes)
        unpickler = _StateDictUnpickler(file)
        state = unpickler.load()
        for key in pickle.load(file):
            storage = unpickler.storages[key]
            numel = int(np.frombuffer(file.read(8), dtype="<i8")[0])
            storage.array = np.frombuffer(
                file.read(numel * np.dtype(storage.dtype).itemsize),
                dtype=np.dtype(storage.dtype).newbyteorder("<"),
            )
    return {name: tensor.to_numpy() for name, tensor in state.items()}
