"""Reads a PyTorch state dict (the legacy, pre-1.6 ``torch.save`` format) without torch.

The legacy format is five pickles in a row: a magic number, the protocol version,
system info, the state dict whose tensors point to storages by key, and the list
of storage keys; then, for each key in that order, the storage's element count
(int64, little endian) followed by its raw bytes. Every one of the five pickles is
read by an unpickler that resolves only the few globals a state dict of plain
tensors needs, each to a stand-in of this module (an ``OrderedDict``, a tensor
record, a storage name), and refuses every other one before anything is called:
reading a file never runs code from it (the rule of torch's ``weights_only=True``,
narrower). The tensors' offsets, sizes and strides are checked against their
storages before any array is made.

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


class _TensorRef:
    """A tensor view (offset, size, stride in elements) of a storage."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


def _rebuild_tensor(storage, offset, size, stride, *unused):
    """Stands for ``torch._utils._rebuild_tensor_v2``: records the view, resolved once storages are read."""
    return _TensorRef(storage, offset, size, stride)


def _is_index(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _tensor_array(name, tensor):
    """The NumPy array of a ``_TensorRef`` whose view lies inside its storage; else a ValueError."""
    storage = getattr(tensor, "storage", None)
    if not isinstance(tensor, _TensorRef) or not isinstance(storage, _StorageRef) or storage.array is None:
        raise ValueError(f"Expected a tensor with its storage. Received: {name!r} = {type(tensor).__name__}")
    size, stride, offset = tensor.size, tensor.stride, tensor.offset
    if (not isinstance(size, tuple) or not isinstance(stride, tuple) or len(size) != len(stride)
            or not all(map(_is_index, size + stride + (offset,)))):
        raise ValueError(f"Expected sizes, strides and an offset of non-negative ints. Received: {name!r} with "
                         f"size={size!r}, stride={stride!r}, offset={offset!r}")
    last = offset + sum((n - 1) * s for n, s in zip(size, stride)) if all(size) else offset - 1
    if last >= len(storage.array):
        raise ValueError(f"Tensor {name!r} reads past its storage of {len(storage.array)} elements "
                         f"(size={size}, stride={stride}, offset={offset})")
    itemsize = storage.array.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage.array[offset:], shape=size, strides=tuple(s * itemsize for s in stride)
    )
    return np.array(view)


class _Unpickler(pickle.Unpickler):
    """An unpickler that resolves no global and loads no persistent id: plain data only."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"A state dict of plain tensors does not reference {module}.{name}.")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError(f"Unexpected storage reference. Received: {pid!r}")


class _StateDictUnpickler(_Unpickler):
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
        return super().find_class(module, name)

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or len(pid) != 6 or pid[0] != "storage" or pid[5] is not None:
            return super().persistent_load(pid)
        _, storage_type, key, _location, numel, _ = pid
        if storage_type not in _STORAGE_DTYPES or not isinstance(key, str) or not _is_index(numel):
            return super().persistent_load(pid)
        if key not in self.storages:
            self.storages[key] = _StorageRef(_STORAGE_DTYPES[storage_type], numel)
        return self.storages[key]


def _read_storages(file, storages, keys):
    """Reads the storages' bytes, in the order of ``keys``, into their ``array``."""
    if not isinstance(keys, list) or not all(isinstance(key, str) and key in storages for key in keys):
        raise ValueError(f"Expected the list of the state dict's storage keys. Received: {keys!r}")
    for key in keys:
        storage, count = storages[key], file.read(8)
        numel = int(np.frombuffer(count, dtype="<i8")[0]) if len(count) == 8 else -1
        dtype = np.dtype(storage.dtype).newbyteorder("<")
        data = file.read(numel * dtype.itemsize) if numel >= 0 else b""
        if numel != storage.numel or len(data) != numel * dtype.itemsize:
            raise ValueError(f"Storage {key!r} is truncated or not the size its tensors name")
        storage.array = np.frombuffer(data, dtype=dtype)


def _read(file):
    """The state dict of an open legacy-format file: {name: array}; pickle or ValueError errors."""
    if _Unpickler(file).load() != _MAGIC_NUMBER:
        raise ValueError("Expected a legacy-format PyTorch file (no torch magic number)")
    _Unpickler(file).load()  # protocol version
    _Unpickler(file).load()  # system info (endianness, type sizes)
    unpickler = _StateDictUnpickler(file)
    state = unpickler.load()
    if not isinstance(state, dict):
        raise ValueError(f"Expected a state dict. Received: {type(state).__name__}")
    _read_storages(file, unpickler.storages, _Unpickler(file).load())
    return {name: _tensor_array(name, tensor) for name, tensor in state.items()}


def read_torch_state_dict(path):
    """Reads a legacy-format PyTorch state dict into NumPy arrays, without torch and without running code.

    Args:
        path: path of a ``.pth`` file written by ``torch.save(model.state_dict())``
            with PyTorch < 1.6 (or ``_use_new_zipfile_serialization=False``).

    Returns:
        dict mapping each state-dict key (e.g. "_bn0.running_mean") to a NumPy
        array of the tensor's shape and dtype, in the file's order.

    Raises:
        ValueError: if the file is not a legacy-format PyTorch state dict of plain
            tensors: another format, a global other than the tensors' (code a crafted
            file would run: refused, never called), a truncated file, a tensor outside
            its storage.

    Example:
    >>> state = read_torch_state_dict("efficientnet-lite0-57934424.pth")  # doctest: +SKIP
    >>> state["_conv_stem.weight"].shape  # doctest: +SKIP
    (32, 3, 3, 3)
    """
    with open(path, "rb") as file:
        try:
            return _read(file)
        except Exception as error:  # a damaged or crafted file: whatever the parser met, one message
            raise ValueError(
                f"Expected a legacy-format PyTorch state dict of plain tensors. Received: path={str(path)!r} ({error})"
            ) from error
