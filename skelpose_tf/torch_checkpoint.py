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
import pickle
import zipfile

import numpy as np

READERS = ("auto", "torch", "numpy")
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "net")
LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

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


class UnsafeCheckpointError(ValueError):
    """The pickle asks for something other than tensors and plain containers."""


class _StorageType:
    """Stand-in for a `torch.*Storage` class named in the pickle (one per reference)."""

    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    def numpy_dtype(self, byteorder):
        """numpy dtype of the raw elements; `byteorder` is "<" or ">"."""
        code = STORAGE_DTYPES[self.name]
        return np.dtype(byteorder + ("u2" if code == "bf16" else code))


class _Storage:
    """A flat storage: `array` is filled when its bytes have been read."""

    def __init__(self, storage_type, numel, source):
        self.storage_type = storage_type
        self.numel = int(numel)
        self.source = source
        self.array = None

    def set_bytes(self, data, byteorder):
        dtype = self.storage_type.numpy_dtype(byteorder)
        needed = self.numel * dtype.itemsize
        if len(data) < needed:
            raise ValueError(
                f"{self.source}: storage holds {len(data)} bytes, expected {needed} "
                f"({self.numel} x {self.storage_type.name}); the file is truncated or corrupt"
            )
        array = np.frombuffer(data, dtype=dtype, count=self.numel)
        if STORAGE_DTYPES[self.storage_type.name] == "bf16":
            array = (array.astype(np.uint32) << 16).view(np.float32)
        self.array = array.astype(array.dtype.newbyteorder("="), copy=False)


class _TensorRef:
    """A tensor to cut from a storage once every storage has been read."""

    def __init__(self, storage, offset, size, stride):
        self.storage = storage
        self.offset = int(offset)
        self.size = tuple(int(s) for s in size)
        self.stride = tuple(int(s) for s in stride)

    def materialise(self):
        """A C-contiguous copy `[*size]` of the strided view of the storage."""
        flat = self.storage.array
        source = self.storage.source
        if len(self.size) != len(self.stride):
            raise ValueError(f"{source}: tensor sizes {self.size} and strides {self.stride} "
                             "differ in length")
        if any(s < 0 for s in self.size + self.stride) or self.offset < 0:
            raise ValueError(f"{source}: negative tensor size, stride or offset "
                             f"(size={self.size}, stride={self.stride}, offset={self.offset})")
        if 0 in self.size:
            return np.zeros(self.size, flat.dtype)
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
        if last >= flat.size:
            raise ValueError(
                f"{source}: tensor (size={self.size}, stride={self.stride}, "
                f"offset={self.offset}) reaches element {last} of a storage of {flat.size}"
            )
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset:], shape=self.size,
            strides=tuple(s * flat.itemsize for s in self.stride), writeable=False,
        )
        return np.array(view, order="C")


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
        # Bound methods and fresh objects: a BUILD opcode cannot alter shared state through them.
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return self._rebuild_tensor
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return self._rebuild_parameter
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise UnsafeCheckpointError(
            f"{self.source}: refusing to load the global '{module}.{name}'. Only tensors "
            "(torch._utils._rebuild_tensor_v2, _rebuild_parameter, torch.*Storage) and "
            "collections.OrderedDict are accepted; nothing from the file was executed"
        )

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid or pid[0] not in ("storage", b"storage"):
            kind = pid[0] if isinstance(pid, tuple) and pid else pid
            raise UnsafeCheckpointError(
                f"{self.source}: unsupported persistent id {kind!r} (a pickled nn.Module? "
                "save model.state_dict() instead)"
            )
        storage_type = pid[1]
        if not isinstance(storage_type, _StorageType) or storage_type.name not in STORAGE_DTYPES:
            raise UnsafeCheckpointError(f"{self.source}: storage type {storage_type!r} is not a "
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


def _load_zip(path):
    """Object tree of a zip-format `torch.save` file (tensors as numpy arrays)."""
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise ValueError(f"{path}: not a torch.save zip archive (expected one "
                             f"'<prefix>/data.pkl', found {pickles})")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = "<"
        if prefix + "byteorder" in archive.namelist():
            order = archive.read(prefix + "byteorder").decode().strip()
            if order not in ("little", "big"):
                raise ValueError(f"{path}: unknown byteorder {order!r}")
            byteorder = "<" if order == "little" else ">"
        storages = {}

        def storage_factory(storage_type, key, numel, pid):
            if key not in storages:
                name = f"{prefix}data/{key}"
                storage = _Storage(storage_type, numel, f"{path}:{name}")
                try:
                    data = archive.read(name)
                except KeyError:
                    raise ValueError(f"{path}: storage record {name!r} is missing") from None
                storage.set_bytes(data, byteorder)
                storages[key] = storage
            return storages[key]

        with archive.open(pickles[0]) as stream:
            tree = RestrictedUnpickler(io.BytesIO(stream.read()), str(path), storage_factory).load()
    return _materialise(tree)


def _load_legacy(path):
    """Object tree of a legacy (pre-zip) `torch.save` file (tensors as numpy arrays)."""
    with open(path, "rb") as f:
        stream = io.BytesIO(f.read())

    def plain_pickle(what):
        return RestrictedUnpickler(stream, f"{path} ({what})", _no_storage).load()

    def _no_storage(*_):
        raise UnsafeCheckpointError(f"{path}: storage reference outside the object pickle")

    try:
        magic = plain_pickle("magic number")
    except (pickle.UnpicklingError, EOFError, ValueError) as error:
        if isinstance(error, UnsafeCheckpointError):
            raise
        raise ValueError(f"{path}: neither a torch.save zip archive nor a legacy PyTorch "
                         f"file ({error})") from None
    if magic != LEGACY_MAGIC_NUMBER:
        raise ValueError(f"{path}: not a PyTorch file (bad magic number {magic!r}); "
                         "tar-format files of PyTorch < 0.4 need reader='torch'")
    version = plain_pickle("protocol version")
    if version != LEGACY_PROTOCOL_VERSION:
        raise ValueError(f"{path}: unsupported legacy protocol version {version!r}")
    sys_info = plain_pickle("system info")
    little_endian = not isinstance(sys_info, dict) or sys_info.get("little_endian", True)
    if not little_endian:
        raise ValueError(f"{path}: written on a big-endian machine by legacy PyTorch; "
                         "use reader='torch'")
    storages = {}
    views = []

    def storage_factory(storage_type, key, numel, pid):
        view = pid[5] if len(pid) > 5 else None
        if key not in storages:
            storages[key] = _Storage(storage_type, numel, f"{path}:storage {key}")
        if view is None:
            return storages[key]
        view_key, view_offset, view_size = view
        view_storage = _Storage(storage_type, view_size, f"{path}:view {view_key}")
        views.append((view_storage, storages[key], int(view_offset)))
        return view_storage

    tree = RestrictedUnpickler(stream, str(path), storage_factory).load()
    keys = plain_pickle("storage keys")
    for key in keys:
        key = key.decode() if isinstance(key, bytes) else str(key)
        if key not in storages:
            raise ValueError(f"{path}: storage {key!r} is listed but never referenced")
        storage = storages[key]
        count = np.frombuffer(stream.read(8), "<i8")
        if count.size != 1 or int(count[0]) != storage.numel:
            raise ValueError(f"{path}: storage {key!r} header does not match its size "
                             f"{storage.numel}; the file is truncated or corrupt")
        itemsize = storage.storage_type.numpy_dtype("<").itemsize
        storage.set_bytes(stream.read(storage.numel * itemsize), "<")
    for view_storage, root, offset in views:
        if root.array is None or offset + view_storage.numel > root.array.size:
            raise ValueError(f"{view_storage.source}: storage view outside its root storage")
        view_storage.array = root.array[offset:offset + view_storage.numel]
    return _materialise(tree)


def load_checkpoint_numpy(path):
    """Object tree of a `.pth` file, tensors as numpy arrays, without PyTorch (zip or legacy).

    Raises:
        UnsafeCheckpointError: the pickle references anything but tensors and containers.
        ValueError: the file is neither layout, or is truncated or inconsistent.
    """
    path = str(path)
    if zipfile.is_zipfile(path):
        return _load_zip(path)
    return _load_legacy(path)


def load_checkpoint_torch(path):
    """Object tree of a `.pth` file read by `torch.load(weights_only=True)`, tensors as numpy."""
    import torch

    tree = torch.load(str(path), map_location="cpu", weights_only=True)

    def to_numpy(obj):
        if isinstance(obj, torch.Tensor):
            tensor = obj.detach().cpu()
            if tensor.dtype == torch.bfloat16:
                tensor = tensor.float()
            return tensor.numpy().copy()
        if isinstance(obj, dict):
            return {key: to_numpy(value) for key, value in obj.items()}
        if isinstance(obj, (list, tuple)):
            return type(obj)(to_numpy(v) for v in obj)
        return obj

    return to_numpy(tree)


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
        described = sorted(map(str, tree)) if isinstance(tree, dict) else type(tree).__name__
        raise ValueError(
            f"{source}: no state dict found (a dict of tensors, or one under "
            f"{', '.join(STATE_DICT_KEYS)}). Found: {described}"
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
    """
    if reader not in READERS:
        raise ValueError(f"reader must be one of {READERS}. Received: reader={reader!r}")
    if reader == "auto":
        reader = "torch" if torch_available() else "numpy"
    tree = load_checkpoint_torch(path) if reader == "torch" else load_checkpoint_numpy(path)
    return extract_state_dict(tree, str(path))
