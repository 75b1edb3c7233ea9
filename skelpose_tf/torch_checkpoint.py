"""Read PyTorch `.pth` state dicts into numpy arrays, with or without PyTorch, never running code.

`read_state_dict(path)` returns `{name: np.ndarray}` in PyTorch's layouts (conv weights
`[out, in, kh, kw]`), whatever wrapped the state dict in the file.

Two readers:
- `reader="torch"`: `torch.load(path, map_location="cpu", weights_only=True)` (PyTorch's own
  restricted loader; install with `pip install .[torch]`).
- `reader="numpy"`: no PyTorch needed. The pickle is parsed by `RestrictedUnpickler`, whose
  `find_class` hands out only stand-ins for the tensor-rebuild functions
  (`torch._utils._rebuild_tensor_v2`, `torch._utils._rebuild_parameter`),
  `collections.OrderedDict` and the `torch.*Storage` types, and refuses every other global with
  `UnsafeCheckpointError` before anything is called. The raw storages are read with numpy,
  honouring dtype, byte order, storage offset, sizes and strides. Two file layouts are read:
  - the zip layout of `torch.save` since PyTorch 1.6: `<prefix>/data.pkl` (persistent ids
    `('storage', torch.FloatStorage, key, location, numel)`), `<prefix>/data/<key>` raw bytes,
    `<prefix>/byteorder` (`little` when absent);
  - the legacy layout of older PyTorch, in which the published HRNet checkpoints (2019) were
    saved: pickles of the magic number, the protocol version and the system info, the object
    pickle (persistent ids `('storage', type, key, location, numel, view)`), the sorted storage
    keys, then per storage an int64 element count and the little-endian raw bytes.
- `reader="auto"` (default) takes PyTorch when it is importable, numpy otherwise.

Wrappers: a plain state dict, or a dict holding one under `state_dict`, `model_state_dict`,
`model` or `net` (as training checkpoints do); a `module.` prefix on every name
(`DataParallel`) is removed.

What a file cannot make the reader do: every problem is a `CheckpointError` (a `ValueError`)
whose one-line message starts with the file name, raised before anything big is allocated.
- Run code: globals other than the ones above, and the pickle opcodes that build arbitrary
  objects (`INST`, `OBJ`, `NEWOBJ`, `EXT*`, ...; `PICKLE_OPCODES` lists the accepted ones)
  are refused (`UnsafeCheckpointError`) before the pickle is loaded; so is a pickle that
  PyTorch's weights-only reader refuses. No message suggests turning that mode off.
- Allocate what the file does not hold: every length in the pickle is checked against the
  bytes that follow it before unpickling; every storage against its record's size before its
  bytes are read; every tensor's sizes, strides and storage offset against its storage before
  any tensor is copied (`CheckpointSizeError`, naming the tensor). A tensor may not hold more
  elements than its storage: `torch.save` of a state dict never writes such expanded views,
  and a crafted one could claim terabytes from a few bytes.
- Fail with a bug's traceback, or load damaged bytes: truncated zips, records that fail their
  CRC-32 (checked before `torch.load` too, which skips it), missing records, a wrong magic
  number or malformed pickles are reported as such.

Example:
```python
from skelpose_tf.torch_checkpoint import read_state_dict
state = read_state_dict("pose_hrnet_w32_256x192.pth", reader="numpy")
state["conv1.weight"].shape  # (64, 3, 3, 3)
```
"""

from __future__ import annotations

import collections
import importlib.util
import io
import math
import os
import pickle
import pickletools
import re
import reprlib
import struct
import zipfile
import zlib

import numpy as np

READERS = ("auto", "torch", "numpy")
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "net")
LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001
RESAVE_ADVICE = ("To use it, load it only where you trust the file and the code that made it, "
                 "and save just the weights: torch.save(model.state_dict(), 'weights.pth')")

# numpy dtype (without byte order) of each storage type; bfloat16 is read as uint16 bits.
STORAGE_DTYPES = {
    "FloatStorage": "f4",
    "DoubleStorage": "f8",
    "HalfStorage": "f2",
    "BFloat16Storage": "bf16",
    "LongStorage": "i8",
    "IntStorage": "i4",
    "ShortStorage": "i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "b1",
    "ComplexFloatStorage": "c8",
    "ComplexDoubleStorage": "c16",
    "UntypedStorage": "u1",
}

# The pickle opcodes of plain data (numbers, strings, bytes, None, bool, tuples, lists, dicts,
# sets), of the memo, and the ones that rebuild tensors: GLOBAL / STACK_GLOBAL (names checked by
# `find_class`), REDUCE (calls only what `find_class` handed out), BUILD (the `_metadata` of a
# state dict) and BINPERSID (storages). Any other opcode (INST, OBJ, NEWOBJ, NEWOBJ_EX, EXT1-4,
# PERSID, out-of-band buffers) is refused before the pickle is loaded.
PICKLE_OPCODES = frozenset((
    "PROTO", "FRAME", "STOP", "MARK", "POP", "POP_MARK", "DUP",
    "PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE", "GET", "BINGET", "LONG_BINGET",
    "NONE", "NEWTRUE", "NEWFALSE", "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1",
    "LONG4", "FLOAT", "BINFLOAT",
    "STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE",
    "BINUNICODE8", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8",
    "EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "EMPTY_LIST", "LIST", "APPEND",
    "APPENDS", "EMPTY_DICT", "DICT", "SETITEM", "SETITEMS", "EMPTY_SET", "ADDITEMS",
    "FROZENSET",
    "GLOBAL", "STACK_GLOBAL", "REDUCE", "BUILD", "BINPERSID",
))
# What malformed pickle bytes can raise inside the unpickler (not bugs: reported as the file's).
_PICKLE_ERRORS = (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError,
                  AttributeError, OverflowError, struct.error)
# What reading a damaged zip archive can raise.
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError,
               struct.error)
# What torch.load raises for a file it cannot read (a refused pickle is an UnpicklingError).
_TORCH_LOAD_ERRORS = _PICKLE_ERRORS + (RuntimeError, zipfile.BadZipFile)
# An empty tensor's non-zero sizes may not multiply past this (a crafted shape, not a tensor).
_MAX_EMPTY_TENSOR_ELEMENTS = 2**31
_MAX_DETAIL_CHARS = 200


class CheckpointError(ValueError):
    """The file is not a readable `torch.save` state dict; the message names the file.

    Args:
        message: the one-line message.
        detail: what went wrong underneath, without the file name (for wrapping messages).
    """

    def __init__(self, message, detail=""):
        super().__init__(message)
        self.detail = detail


class UnsafeCheckpointError(CheckpointError):
    """The pickle asks for something other than tensors and plain containers."""


class CheckpointSizeError(CheckpointError):
    """A storage or tensor claims more elements than the file holds."""


def _short(text, limit=_MAX_DETAIL_CHARS) -> str:
    """`text` on one line, cut to `limit` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + " ..."


def _brief(value, limit) -> str:
    """A short repr of a value read from the file (however deep or long it is)."""
    return _short(reprlib.repr(value), limit)


def _describe(error: BaseException) -> str:
    return _short(f"{type(error).__name__}: {error}" if str(error) else type(error).__name__)


def _human_bytes(count: int) -> str:
    """`count` bytes as "3.64 TiB" (or "24 bytes")."""
    if count < 1024:
        return f"{count} bytes"
    exponent = min(int(math.log(count, 1024)), 5)
    return f"{count / 1024**exponent:.2f} {('KiB', 'MiB', 'GiB', 'TiB', 'PiB')[exponent - 1]}"


def _refuse_build(self, state):
    """`__setstate__` of the stand-ins: a BUILD opcode may not alter them."""
    del state
    raise pickle.UnpicklingError(f"the pickle sets attributes of a {type(self).__name__}, "
                                 "which torch.save never does")


class _StorageType:
    """Stand-in for a `torch.*Storage` class named in the pickle (one per reference)."""

    __slots__ = ("name",)
    __setstate__ = _refuse_build

    def __init__(self, name):
        self.name = name

    def numpy_dtype(self, byteorder):
        """numpy dtype of the raw elements; `byteorder` is "<" or ">"."""
        code = STORAGE_DTYPES[self.name]
        return np.dtype(byteorder + ("u2" if code == "bf16" else code))


class _Callable:
    """Stand-in for a rebuild function named in the pickle (a BUILD cannot alter it)."""

    __slots__ = ("function",)
    __setstate__ = _refuse_build

    def __init__(self, function):
        self.function = function

    def __call__(self, *args):
        return self.function(*args)


class _Storage:
    """A flat storage: `array` is filled when its bytes have been read.

    Args:
        storage_type: `_StorageType`.
        numel: element count claimed by the pickle.
        source: file name for messages.
        record: the storage's record in the file (zip member or legacy key), for messages.
    """

    __slots__ = ("storage_type", "numel", "source", "record", "array")
    __setstate__ = _refuse_build

    def __init__(self, storage_type, numel, source, record):
        self.storage_type = storage_type
        self.numel = int(numel)
        self.source = source
        self.record = record
        self.array = None
        if self.numel < 0:
            raise CheckpointSizeError(f"{source}: storage {record!r} claims {self.numel} "
                                      "elements; the file is corrupt")

    @property
    def itemsize(self):
        return self.storage_type.numpy_dtype("<").itemsize

    def check_available(self, available_bytes):
        """Refuse a storage that claims more bytes than its record holds (nothing read yet)."""
        needed = self.numel * self.itemsize
        if available_bytes < needed:
            raise CheckpointSizeError(
                f"{self.source}: storage {self.record!r} claims {self.numel:,} x "
                f"{self.storage_type.name} ({_human_bytes(needed)}) but the file holds "
                f"{available_bytes:,} bytes for it; the file is truncated or corrupt"
            )

    def set_bytes(self, data, byteorder):
        self.check_available(len(data))
        dtype = self.storage_type.numpy_dtype(byteorder)
        array = np.frombuffer(data, dtype=dtype, count=self.numel)
        if STORAGE_DTYPES[self.storage_type.name] == "bf16":
            array = (array.astype(np.uint32) << 16).view(np.float32)
        self.array = array.astype(array.dtype.newbyteorder("="), copy=False)


class _TensorRef:
    """A tensor to cut from a storage once every storage has been read."""

    __slots__ = ("storage", "offset", "size", "stride")
    __setstate__ = _refuse_build

    def __init__(self, storage, offset, size, stride):
        self.storage = storage
        self.offset = int(offset)
        self.size = tuple(int(s) for s in size)
        self.stride = tuple(int(s) for s in stride)

    def check(self, name):
        """Refuse sizes, strides or offset that reach outside the storage (allocates nothing).

        Args:
            name: the tensor's key in the file, for the message.

        Raises:
            CheckpointSizeError: naming the file and the tensor.
        """
        storage = self.storage
        where = (f"{storage.source}: tensor {name!r} (sizes {self.size}, strides {self.stride}, "
                 f"storage offset {self.offset})")
        if len(self.size) != len(self.stride):
            raise CheckpointSizeError(f"{where}: sizes and strides differ in length; the file "
                                      "is corrupt")
        if any(s < 0 for s in self.size + self.stride) or self.offset < 0:
            raise CheckpointSizeError(f"{where}: negative size, stride or offset; the file is "
                                      "corrupt")
        count = math.prod(self.size)
        if count == 0:
            if math.prod(s for s in self.size if s) > _MAX_EMPTY_TENSOR_ELEMENTS:
                raise CheckpointSizeError(f"{where}: the sizes of an empty tensor are not "
                                          "plausible; the file is corrupt or crafted")
            return
        if count > storage.numel:
            raise CheckpointSizeError(
                f"{where} claims {count:,} elements ({_human_bytes(count * storage.itemsize)}), "
                f"but its storage {storage.record!r} holds {storage.numel:,}: the sizes exceed "
                "the storage, so the file is corrupt or crafted (nothing was allocated)"
            )
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
        if last >= storage.numel:
            raise CheckpointSizeError(
                f"{where} reaches element {last} of a storage of {storage.numel} "
                f"({storage.record!r}); the file is corrupt or crafted"
            )

    def materialise(self):
        """A C-contiguous copy `[*size]` of the strided view of the storage (after `check`)."""
        flat = self.storage.array
        if 0 in self.size:
            return np.zeros(self.size, flat.dtype)
        strides = tuple(0 if n == 1 else s * flat.itemsize for n, s in zip(self.size, self.stride))
        view = np.lib.stride_tricks.as_strided(flat[self.offset:], shape=self.size,
                                               strides=strides, writeable=False)
        return np.array(view, order="C")


def check_pickle_opcodes(stream, source):
    """Refuse a pickle with an opcode outside `PICKLE_OPCODES`, or whose lengths overrun it.

    Scans from the stream's position to the pickle's STOP opcode and seeks back; nothing is
    built, and no length read from the pickle is allocated before the bytes are there.

    Raises:
        UnsafeCheckpointError: a refused opcode.
        CheckpointError: an unknown opcode, or a pickle cut short.
    """
    start = stream.tell()
    try:
        for opcode, _, position in pickletools.genops(stream):
            if opcode.name not in PICKLE_OPCODES:
                raise UnsafeCheckpointError(
                    f"{source}: refusing the pickle opcode {opcode.name} at byte {position} "
                    "(it builds arbitrary objects; a torch.save state dict never holds it); "
                    f"nothing from the file was executed. {RESAVE_ADVICE}"
                )
    except (ValueError, EOFError, struct.error) as error:
        if isinstance(error, CheckpointError):
            raise
        raise CheckpointError(f"{source}: not a valid pickle ({_describe(error)}); the file is "
                              "truncated, corrupt or not a PyTorch checkpoint",
                              _describe(error)) from None
    stream.seek(start)


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that builds only tensors, storages and plain containers.

    Args:
        file: binary file object positioned at a pickle.
        source: file name for error messages.
        storage_factory: `(storage_type, key, numel, pid) -> _Storage` for each persistent id
            `('storage', ...)`; it decides where the bytes come from.
    """

    def __init__(self, file, source, storage_factory):
        super().__init__(file, encoding="utf-8")
        self.source = source
        self.storage_factory = storage_factory

    def find_class(self, module, name):
        # Fresh stand-ins: a BUILD opcode cannot alter shared state through them.
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _Callable(self._rebuild_tensor)
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return _Callable(self._rebuild_parameter)
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise UnsafeCheckpointError(
            f"{self.source}: refusing to load the global '{module}.{name}'. Only tensors "
            "(torch._utils._rebuild_tensor_v2, _rebuild_parameter, torch.*Storage) and "
            "collections.OrderedDict are accepted; nothing from the file was executed. "
            + RESAVE_ADVICE
        )

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid or pid[0] not in ("storage", b"storage"):
            kind = pid[0] if isinstance(pid, tuple) and pid else pid
            raise UnsafeCheckpointError(
                f"{self.source}: unsupported persistent id {_brief(kind, 60)} (a pickled "
                "nn.Module?); nothing from the file was executed. " + RESAVE_ADVICE
            )
        if len(pid) < 5:
            raise CheckpointError(f"{self.source}: storage reference {_brief(pid, 80)} "
                                  "has too few fields; the file is corrupt")
        storage_type = pid[1]
        if not isinstance(storage_type, _StorageType) or storage_type.name not in STORAGE_DTYPES:
            raise UnsafeCheckpointError(f"{self.source}: storage type "
                                        f"{_brief(storage_type, 60)} is not a "
                                        "torch.*Storage")
        key = pid[2].decode() if isinstance(pid[2], bytes) else str(pid[2])
        return self.storage_factory(storage_type, key, int(pid[4]), pid)

    def _rebuild_tensor(self, storage, storage_offset, size, stride, requires_grad=False,
                        backward_hooks=None, metadata=None):
        """Stand-in for `torch._utils._rebuild_tensor_v2`: records where the tensor lies."""
        del requires_grad, backward_hooks, metadata
        if not isinstance(storage, _Storage):
            raise UnsafeCheckpointError(
                f"{self.source}: tensor rebuild got {type(storage).__name__}, not a storage")
        return _TensorRef(storage, storage_offset, size, stride)

    def _rebuild_parameter(self, data, requires_grad=False, backward_hooks=None):
        """Stand-in for `torch._utils._rebuild_parameter`: a parameter is its tensor."""
        del requires_grad, backward_hooks
        if not isinstance(data, _TensorRef):
            raise UnsafeCheckpointError(
                f"{self.source}: parameter rebuild got {type(data).__name__}, not a tensor")
        return data


def _unpickle(stream, source, storage_factory):
    """Check the opcodes of the pickle at `stream`'s position, then load it restricted.

    Raises:
        CheckpointError: for anything wrong with the bytes (never another exception type).
    """
    check_pickle_opcodes(stream, source)
    try:
        return RestrictedUnpickler(stream, source, storage_factory).load()
    except CheckpointError:
        raise
    except _PICKLE_ERRORS as error:
        raise CheckpointError(
            f"{source}: the pickle is malformed or holds something other than tensors and "
            f"containers ({_describe(error)}); the file is corrupt or not a state dict",
            _describe(error)) from None


def _tensors(obj, name=""):
    """`(key path, _TensorRef)` of every tensor inside dicts, lists and tuples."""
    if isinstance(obj, _TensorRef):
        yield name or "<root>", obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _tensors(value, f"{name}/{key}" if name else str(key))
    elif isinstance(obj, (list, tuple)):
        for index, value in enumerate(obj):
            yield from _tensors(value, f"{name}[{index}]")


def _materialise(obj):
    """Replace every `_TensorRef` inside dicts, lists and tuples by its numpy array."""
    if isinstance(obj, _TensorRef):
        return obj.materialise()
    if isinstance(obj, dict):
        out = type(obj)() if isinstance(obj, collections.OrderedDict) else {}
        for key, value in obj.items():
            out[key] = _materialise(value)
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialise(v) for v in obj)
    return obj


def _checked_tree(tree, path, materialise):
    """Check every tensor of `tree` against its storage, then (optionally) copy them out."""
    try:
        for name, tensor in _tensors(tree):
            tensor.check(name)
        return _materialise(tree) if materialise else tree
    except RecursionError:
        raise CheckpointError(f"{path}: objects nested too deeply (or in a cycle) for a state "
                              "dict; the file is corrupt or crafted") from None


def _load_zip(path, materialise=True):
    """Object tree of a zip-format `torch.save` file (tensors as numpy arrays).

    `materialise=False` checks the pickle, the storage records' sizes and every tensor without
    reading any storage.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            return _load_zip_archive(archive, path, materialise)
    except _ZIP_ERRORS as error:
        raise CheckpointError(f"{path}: damaged zip archive ({_describe(error)}); the file is "
                              "truncated or corrupt: download or save it again") from None


def _load_zip_archive(archive, path, materialise):
    names = archive.namelist()
    pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise CheckpointError(f"{path}: not a torch.save zip archive (expected one "
                              f"'<prefix>/data.pkl', found {_short(pickles, 80)})")
    prefix = pickles[0][: -len("data.pkl")]
    byteorder = "<"
    if prefix + "byteorder" in names:
        order = archive.read(prefix + "byteorder").decode(errors="replace").strip()
        if order not in ("little", "big"):
            raise CheckpointError(f"{path}: unknown byteorder {_brief(order, 40)}")
        byteorder = "<" if order == "little" else ">"
    storages = {}

    def storage_factory(storage_type, key, numel, pid):
        del pid
        if key not in storages:
            record = f"{prefix}data/{key}"
            storage = _Storage(storage_type, numel, path, record)
            try:
                info = archive.getinfo(record)
            except KeyError:
                raise CheckpointError(f"{path}: storage record {record!r} is missing; the "
                                      "file is truncated or corrupt") from None
            storage.check_available(info.file_size)
            if materialise:
                with archive.open(info) as member:
                    storage.set_bytes(member.read(storage.numel * storage.itemsize), byteorder)
            storages[key] = storage
        return storages[key]

    data = archive.read(pickles[0])
    tree = _unpickle(io.BytesIO(data), str(path), storage_factory)
    return _checked_tree(tree, path, materialise)


def _load_legacy(path, materialise=True):
    """Object tree of a legacy (pre-zip) `torch.save` file (tensors as numpy arrays)."""
    with open(path, "rb") as f:
        stream = io.BytesIO(f.read())
    starts_with_proto = stream.getbuffer()[:1] == b"\x80"

    def plain_pickle(what):
        return _unpickle(stream, f"{path} ({what})", _no_storage)

    def _no_storage(*_):
        raise UnsafeCheckpointError(f"{path}: storage reference outside the object pickle")

    try:
        magic = plain_pickle("magic number")
    except CheckpointError as error:
        # Legacy torch.save pickles with protocol 2, so its files start with PROTO (0x80): a
        # refused global there is a real refusal; anything else is some other kind of file.
        if isinstance(error, UnsafeCheckpointError) and starts_with_proto:
            raise
        detail = error.detail or "it does not start with a pickle"
        raise CheckpointError(f"{path}: neither a torch.save zip archive nor a legacy PyTorch "
                              f"file ({detail})") from None
    if type(magic) is not int or magic != LEGACY_MAGIC_NUMBER:
        raise CheckpointError(f"{path}: not a PyTorch file (bad magic number "
                              f"{_brief(magic, 60)}); tar-format files of PyTorch < 0.4 "
                              "need reader='torch'")
    version = plain_pickle("protocol version")
    if version != LEGACY_PROTOCOL_VERSION:
        raise CheckpointError(f"{path}: unsupported legacy protocol version "
                              f"{_brief(version, 60)}")
    sys_info = plain_pickle("system info")
    little_endian = not isinstance(sys_info, dict) or sys_info.get("little_endian", True)
    if not little_endian:
        raise CheckpointError(f"{path}: written on a big-endian machine by legacy PyTorch; "
                              "use reader='torch'")
    storages = {}
    views = []

    def storage_factory(storage_type, key, numel, pid):
        view = pid[5] if len(pid) > 5 else None
        if key not in storages:
            storages[key] = _Storage(storage_type, numel, path, f"storage {key}")
        if view is None:
            return storages[key]
        view_key, view_offset, view_size = view
        view_storage = _Storage(storage_type, view_size, path, f"view {view_key}")
        views.append((view_storage, storages[key], int(view_offset)))
        return view_storage

    tree = _unpickle(stream, str(path), storage_factory)
    keys = plain_pickle("storage keys")
    if not isinstance(keys, (list, tuple)):
        raise CheckpointError(f"{path}: the storage key list is a {type(keys).__name__}; the "
                              "file is corrupt")
    for key in keys:
        key = key.decode() if isinstance(key, bytes) else str(key)
        if key not in storages:
            raise CheckpointError(f"{path}: storage {_brief(key, 40)} is listed but "
                                  "never referenced")
        storage = storages[key]
        count = np.frombuffer(stream.read(8), "<i8")
        if count.size != 1 or int(count[0]) != storage.numel:
            raise CheckpointError(f"{path}: storage {key!r} header does not match its size "
                                  f"{storage.numel}; the file is truncated or corrupt")
        storage.set_bytes(stream.read(storage.numel * storage.itemsize), "<")
    for view_storage, root, offset in views:
        if root.array is None or offset < 0 or offset + view_storage.numel > root.array.size:
            raise CheckpointSizeError(f"{path}: {view_storage.record} lies outside its root "
                                      f"{root.record}; the file is corrupt")
        view_storage.array = root.array[offset:offset + view_storage.numel]
    return _checked_tree(tree, path, materialise)


def _check_exists(path):
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such checkpoint file; pass the .pth file written by "
                              "torch.save (check the path)")
    if not os.path.isfile(path):
        raise CheckpointError(f"{path} is a directory, not a checkpoint file; pass the .pth "
                              "file written by torch.save")


def _check_not_a_cut_zip(path):
    """Refuse a file that starts as a zip archive but has lost its end (a cut download)."""
    with open(path, "rb") as f:
        start = f.read(4)
    if start == b"PK\x03\x04":
        raise CheckpointError(f"{path}: a zip archive without its end (central directory): the "
                              "file is truncated; download or save it again")


def load_checkpoint_numpy(path):
    """Object tree of a `.pth` file, tensors as numpy arrays, without PyTorch (zip or legacy).

    Raises:
        UnsafeCheckpointError: the pickle references anything but tensors and containers.
        CheckpointSizeError: a storage or tensor claims more than the file holds.
        CheckpointError: the file is missing, neither layout, truncated or inconsistent.
    """
    path = os.fspath(path)
    _check_exists(path)
    if zipfile.is_zipfile(path):
        return _load_zip(path)
    _check_not_a_cut_zip(path)
    return _load_legacy(path)


def _torch_refusal(path, error) -> UnsafeCheckpointError:
    """Our message for a pickle refused by `torch.load(weights_only=True)`.

    PyTorch's own text suggests retrying with the weights-only mode off (running the file's
    code) or allow-listing globals; only its diagnosis (e.g. "Trying to load unsupported GLOBAL
    os.system") is kept.
    """
    sentences = re.split(r"(?<=[.!?:])\s+|\n+", str(error))
    unwanted = ("weights_only", "weights only", "safe_globals", "trust", "documentation",
                "file an issue", "http", "pytorch 2.")
    detail = " ".join(s for s in sentences
                      if s.strip() and not any(word in s.lower() for word in unwanted))
    detail = detail.replace("WeightsUnpickler error:", "").strip()
    return UnsafeCheckpointError(
        f"{path}: refused without running anything: the file holds objects other than tensors "
        "and plain containers" + (f" ({_short(detail, 120)})" if detail else "") + ". "
        + RESAVE_ADVICE
    )


def _check_zip_crc(path):
    """Refuse a zip archive whose records fail their CRC-32 (`torch.load` does not check)."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except _ZIP_ERRORS as error:
        raise CheckpointError(f"{path}: damaged zip archive ({_describe(error)}); the file is "
                              "truncated or corrupt: download or save it again") from None
    if bad is not None:
        raise CheckpointError(f"{path}: damaged zip archive (record {bad!r} fails its CRC-32 "
                              "check); the file is corrupt: download or save it again")


def _precheck_for_torch(path):
    """Before `torch.load` reads the file: check the zip records' CRC-32 (which it skips), and
    storage and tensor sizes with the restricted parser (it allocates storages as the pickle
    states them). Files this parser cannot follow (other globals, other layouts) are left to
    PyTorch."""
    if zipfile.is_zipfile(path):
        _check_zip_crc(path)
        check = _load_zip
    else:
        _check_not_a_cut_zip(path)
        check = _load_legacy
    try:
        check(path, materialise=False)
    except CheckpointSizeError:
        raise
    except CheckpointError:
        pass


def load_checkpoint_torch(path):
    """Object tree of a `.pth` file read by `torch.load(weights_only=True)`, tensors as numpy.

    Raises:
        UnsafeCheckpointError: PyTorch's weights-only reader refused the pickle.
        CheckpointSizeError: a storage or tensor claims more than the file holds.
        CheckpointError: the file is missing or PyTorch cannot read it.
    """
    import torch

    path = os.fspath(path)
    _check_exists(path)
    _precheck_for_torch(path)
    try:
        tree = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise _torch_refusal(path, error) from None
    except _TORCH_LOAD_ERRORS as error:
        raise CheckpointError(f"{path}: PyTorch cannot read it ({_describe(error)}); the file "
                              "is truncated, corrupt or not a torch.save file") from None

    def to_numpy(obj, name):
        if isinstance(obj, torch.Tensor):
            tensor = obj.detach().cpu()
            needed = tensor.numel() * tensor.element_size()
            held = tensor.untyped_storage().nbytes()
            if tensor.numel() and needed > held:
                raise CheckpointSizeError(
                    f"{path}: tensor {name!r} (sizes {tuple(tensor.shape)}, strides "
                    f"{tensor.stride()}) claims {tensor.numel():,} elements "
                    f"({_human_bytes(needed)}), but its storage holds {_human_bytes(held)}: "
                    "the sizes exceed the storage, so the file is corrupt or crafted (nothing "
                    "was allocated)"
                )
            if tensor.dtype == torch.bfloat16:
                tensor = tensor.float()
            try:
                return tensor.numpy().copy()
            except (TypeError, RuntimeError) as error:
                raise CheckpointError(f"{path}: tensor {name!r} cannot be read as numpy "
                                      f"({_describe(error)}); not a plain state dict") from None
        if isinstance(obj, dict):
            return {key: to_numpy(value, f"{name}/{key}" if name else str(key))
                    for key, value in obj.items()}
        if isinstance(obj, (list, tuple)):
            return type(obj)(to_numpy(v, f"{name}[{i}]") for i, v in enumerate(obj))
        return obj

    try:
        return to_numpy(tree, "")
    except RecursionError:
        raise CheckpointError(f"{path}: objects nested too deeply (or in a cycle) for a state "
                              "dict; the file is corrupt or crafted") from None


def torch_available():
    """True when PyTorch can be imported."""
    return importlib.util.find_spec("torch") is not None


def extract_state_dict(tree, source="checkpoint"):
    """`{name: array}` from a loaded object tree: the state dict itself or inside a wrapper.

    Args:
        tree: what the file held (tensors already numpy arrays).
        source: file name for error messages.

    Returns:
        Plain dict of name -> numpy array, with a `module.` prefix common to all names removed.
    """
    def is_state_dict(obj):
        return (isinstance(obj, dict) and obj
                and all(isinstance(k, str) and isinstance(v, np.ndarray) for k, v in obj.items()))

    state = None
    if is_state_dict(tree):
        state = tree
    elif isinstance(tree, dict):
        for key in STATE_DICT_KEYS:
            if is_state_dict(tree.get(key)):
                state = tree[key]
                break
    if state is None:
        described = (", ".join(sorted(map(reprlib.repr, tree))) if isinstance(tree, dict)
                     else type(tree).__name__)
        raise CheckpointError(
            f"{source}: no state dict found (a dict of tensors, or one under "
            f"{', '.join(STATE_DICT_KEYS)}). Found: {_short(described, 120)}"
        )
    state = dict(state)
    if all(name.startswith("module.") for name in state):
        state = {name[len("module."):]: value for name, value in state.items()}
    return state


def read_state_dict(path, reader="auto"):
    """Read a PyTorch checkpoint file into `{name: np.ndarray}` (PyTorch layouts).

    Args:
        path: `.pth` / `.pt` file written by `torch.save`.
        reader: "auto" (PyTorch when importable, else numpy), "torch" or "numpy".

    Returns:
        Dict of tensor name -> numpy array (bfloat16 tensors as float32).

    Raises:
        CheckpointError (a `ValueError`): the file is missing, unreadable, unsafe or holds no
            state dict; the message names the file (see the module docstring).
    """
    if reader not in READERS:
        raise ValueError(f"reader must be one of {READERS}. Received: reader={reader!r}")
    if reader == "auto":
        reader = "torch" if torch_available() else "numpy"
    tree = load_checkpoint_torch(path) if reader == "torch" else load_checkpoint_numpy(path)
    return extract_state_dict(tree, os.fspath(path))
