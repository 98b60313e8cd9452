"""The arrays of a PyTorch checkpoint, read with NumPy alone (no PyTorch, and no arbitrary pickle).

Only the legacy format `torch.save` wrote before PyTorch 1.6 is read: a magic number, a protocol
version and system information as three small pickles; then the state dict, whose tensors point
at storages by key; then the list of storage keys in file order, each followed by its element
count (int64) and raw bytes. The pickles may name only a tensor rebuilder, storage types and an
OrderedDict: anything else is refused, so a hostile file cannot run code.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
from dataclasses import dataclass

import numpy as np

from core.errors import LittleDataError

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001
STORAGE_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
                  "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
                  "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_}


class CheckpointError(LittleDataError):
    """A file that is not a legacy PyTorch checkpoint we can read safely."""


@dataclass(frozen=True)
class _StorageType:
    dtype: type


@dataclass(frozen=True)
class _TensorRef:
    key: str
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    return _TensorRef(storage, int(storage_offset), tuple(size), tuple(stride))


class _StateDictUnpickler(pickle.Unpickler):
    def __init__(self, handle, storages: dict):
        super().__init__(handle)
        self.storages = storages

    def find_class(self, module, name):
        if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(STORAGE_DTYPES[name])
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise CheckpointError(f"The checkpoint's pickle names {module}.{name}, which a plain state dict "
                              "does not; refusing to load it.")

    def persistent_load(self, saved_id):
        if not (isinstance(saved_id, tuple) and saved_id[0] == "storage" and len(saved_id) == 6):
            raise CheckpointError(f"Unexpected persistent id {saved_id!r:.80} in the checkpoint.")
        _, storage_type, key, _location, numel, view = saved_id
        if view is not None or not isinstance(storage_type, _StorageType):
            raise CheckpointError("Storage views are not supported.")
        self.storages[key] = (storage_type.dtype, int(numel))
        return key


def read_legacy_checkpoint(data: bytes) -> dict[str, np.ndarray]:
    """The state dict of a legacy `torch.save` file, as name -> NumPy array (C-contiguous copies).

    Raises:
        CheckpointError: another format (a zip-based checkpoint, anything else), a truncated file,
            or a pickle that names anything but tensors and storages.
    """
    handle = io.BytesIO(data)
    try:
        if pickle.load(handle) != MAGIC_NUMBER:
            raise CheckpointError("Not a legacy PyTorch checkpoint (wrong magic number).")
        if pickle.load(handle) != PROTOCOL_VERSION:
            raise CheckpointError("Unsupported PyTorch checkpoint protocol.")
        _StateDictUnpickler(handle, {}).load()  # system information: plain values only
        storages: dict[str, tuple[type, int]] = {}
        state = _StateDictUnpickler(handle, storages).load()
        keys = _StateDictUnpickler(handle, {}).load()
        buffers = {}
        for key in keys:
            dtype, numel = storages[key]
            (count,) = struct.unpack("<q", handle.read(8))
            raw = handle.read(count * np.dtype(dtype).itemsize)
            if count != numel or len(raw) != count * np.dtype(dtype).itemsize:
                raise CheckpointError(f"Storage {key} is truncated or mis-sized.")
            buffers[key] = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))
    except CheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, KeyError, struct.error, TypeError, ValueError) as exc:
        raise CheckpointError(f"Not a readable legacy PyTorch checkpoint: {exc}") from exc
    if not isinstance(state, dict):
        raise CheckpointError("The checkpoint does not hold a state dict.")
    arrays = {}
    for name, ref in state.items():
        if not isinstance(ref, _TensorRef):
            raise CheckpointError(f"{name} is not a tensor.")
        buffer = buffers[ref.key]
        itemsize = buffer.dtype.itemsize
        end = ref.offset + sum((n - 1) * s for n, s in zip(ref.shape, ref.stride)) + 1
        if min(ref.shape, default=1) > 0 and end > buffer.size:
            raise CheckpointError(f"{name} reaches past its storage.")
        if not ref.shape:  # a 0-d tensor (batch-norm step counters)
            view = np.array(buffer[ref.offset])
        else:
            view = np.lib.stride_tricks.as_strided(buffer[ref.offset:], ref.shape,
                                                   tuple(s * itemsize for s in ref.stride), writeable=False)
        arrays[name] = np.array(view, dtype=buffer.dtype.newbyteorder("="), order="C")  # a copy; 0-d stays 0-d
    return arrays
