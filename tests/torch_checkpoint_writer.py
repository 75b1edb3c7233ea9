"""Write `.pth` files in PyTorch's layouts without PyTorch, for the checkpoint tests.

The pickles are emitted opcode by opcode (protocol 2), exactly as `torch.save` lays them out, so
the tests do not depend on the reader under test nor on PyTorch:
- zip layout (`write_zip_checkpoint`): `<archive>/data.pkl`, `<archive>/data/<key>` raw
  little-endian bytes, `<archive>/version`, `<archive>/byteorder`; tensors are
  `torch._utils._rebuild_tensor_v2((persistent id ('storage', torch.FloatStorage, key, 'cpu',
  numel)), offset, size, stride, False, collections.OrderedDict())`.
- legacy layout (`write_legacy_checkpoint`): pickles of the magic number, protocol version 1001
  and system info, the object pickle (persistent ids with a sixth `view` field, None), the
  sorted storage keys, then per storage an int64 element count and its raw bytes.

Values in the object tree: numpy arrays (one contiguous storage each), `StridedTensor` (a view
into a shared 1-D storage with explicit offset and strides), dicts, lists, str, int, float.
"""

from __future__ import annotations

import dataclasses
import pickle
import struct
import zipfile

import numpy as np

STORAGE_TYPES = {
    np.dtype("float32"): "FloatStorage",
    np.dtype("float64"): "DoubleStorage",
    np.dtype("float16"): "HalfStorage",
    np.dtype("int64"): "LongStorage",
    np.dtype("int32"): "IntStorage",
    np.dtype("uint8"): "ByteStorage",
    np.dtype("bool"): "BoolStorage",
}
LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C


@dataclasses.dataclass
class StridedTensor:
    """A tensor `storage[offset + sum(i_k * stride_k)]` of shape `size` (element strides).

    `claimed_numel` makes the storage reference claim another element count than the bytes
    written (a damaged or crafted file).
    """

    storage: np.ndarray  # 1-D, shared by identity between tensors
    offset: int
    size: tuple
    stride: tuple
    claimed_numel: int | None = None


def _global(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _str(text):
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _int(value):
    if -2**31 <= value < 2**31:
        return b"J" + struct.pack("<i", value)
    data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(data)]) + data  # LONG1, as pickle writes big ints


def _tuple(items):
    return b"(" + b"".join(items) + b"t"


class _ObjectPickle:
    """Emits the object pickle and collects the storages it references."""

    def __init__(self, legacy):
        self.legacy = legacy
        self.storages = {}  # key -> 1-D array

    def storage_key(self, array):
        for key, stored in self.storages.items():
            if stored is array:
                return key
        key = str(len(self.storages))
        self.storages[key] = array
        return key

    def tensor(self, storage, offset, size, stride, claimed_numel=None):
        key = self.storage_key(storage)
        numel = storage.size if claimed_numel is None else claimed_numel
        pid = [_str("storage"), _global("torch", STORAGE_TYPES[storage.dtype]), _str(key),
               _str("cpu"), _int(numel)]
        if self.legacy:
            pid.append(b"N")
        return (_global("torch._utils", "_rebuild_tensor_v2")
                + _tuple([_tuple(pid) + b"Q", _int(offset), _tuple([_int(s) for s in size]),
                          _tuple([_int(s) for s in stride]), b"\x89",
                          _global("collections", "OrderedDict") + b")R"])
                + b"R")

    def value(self, obj):
        if isinstance(obj, StridedTensor):
            return self.tensor(obj.storage, obj.offset, obj.size, obj.stride, obj.claimed_numel)
        if isinstance(obj, np.ndarray):
            flat = np.ascontiguousarray(obj).reshape(-1)
            strides = [int(np.prod(obj.shape[k + 1:])) for k in range(obj.ndim)]
            return self.tensor(flat, 0, obj.shape, strides)
        if isinstance(obj, dict):
            items = b"".join(_str(k) + self.value(v) for k, v in obj.items())
            return b"}(" + items + b"u"
        if isinstance(obj, list):
            return b"](" + b"".join(self.value(v) for v in obj) + b"e"
        if isinstance(obj, str):
            return _str(obj)
        if isinstance(obj, bool):
            return b"\x88" if obj else b"\x89"
        if isinstance(obj, int):
            return _int(obj)
        if isinstance(obj, float):
            return b"G" + struct.pack(">d", obj)
        raise TypeError(f"cannot write {type(obj).__name__}")

    def dumps(self, obj):
        return b"\x80\x02" + self.value(obj) + b"."


def _storage_bytes(array, byteorder="little"):
    order = "<" if byteorder == "little" else ">"
    return np.ascontiguousarray(array).astype(array.dtype.newbyteorder(order)).tobytes()


def write_zip_checkpoint(path, obj, archive_name="archive", data_pickle=None,
                         byteorder="little"):
    """Write `obj` as `torch.save` does (zip layout). `data_pickle` replaces the object pickle;
    `byteorder` "big" writes what a big-endian machine would."""
    writer = _ObjectPickle(legacy=False)
    pickled = writer.dumps(obj)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{archive_name}/data.pkl",
                         pickled if data_pickle is None else data_pickle)
        archive.writestr(f"{archive_name}/byteorder", byteorder)
        for key, storage in writer.storages.items():
            archive.writestr(f"{archive_name}/data/{key}", _storage_bytes(storage, byteorder))
        archive.writestr(f"{archive_name}/version", "3\n")


def write_legacy_checkpoint(path, obj):
    """Write `obj` in the legacy (pre-zip) layout of `torch.save`."""
    writer = _ObjectPickle(legacy=True)
    pickled = writer.dumps(obj)
    sys_info = {"protocol_version": 1001, "little_endian": True,
                "type_sizes": {"short": 2, "int": 4, "long": 4}}
    with open(path, "wb") as f:
        for header in (LEGACY_MAGIC_NUMBER, 1001, sys_info):
            f.write(pickle.dumps(header, protocol=2))
        f.write(pickled)
        keys = sorted(writer.storages)
        f.write(pickle.dumps(keys, protocol=2))
        for key in keys:
            storage = writer.storages[key]
            f.write(struct.pack("<q", storage.size))
            f.write(_storage_bytes(storage))


def tensor_opcodes(array):
    """The opcodes that rebuild `array` from storage "0" (zip layout), to splice into a
    hand-made `data_pickle` of a file written with `{"w": array}`."""
    return _ObjectPickle(legacy=False).value(array)


def malicious_pickle(command):
    """A protocol-2 pickle whose loading would call `os.system(command)`."""
    return b"\x80\x02" + _global("os", "system") + _tuple([_str(command)]) + b"R."
