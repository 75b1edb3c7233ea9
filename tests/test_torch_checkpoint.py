"""The restricted `.pth` reader: layouts, dtypes, strides, wrappers, and refusal of foreign code.

Files are written by `torch_checkpoint_writer` (opcode by opcode, no PyTorch); where PyTorch is
installed, files written by `torch.save` are read too and compared with `torch.load`.
"""

import inspect
import os
import pickle
import re
import struct
import subprocess
import sys
import time
import types
import zipfile

import numpy as np
import pytest

from skelpose_tf import torch_checkpoint
from skelpose_tf.torch_checkpoint import (
    CheckpointError,
    CheckpointSizeError,
    UnsafeCheckpointError,
    extract_state_dict,
    load_checkpoint_numpy,
    read_state_dict,
)
from torch_checkpoint_writer import (
    LEGACY_MAGIC_NUMBER,
    StridedTensor,
    malicious_pickle,
    tensor_opcodes,
    write_legacy_checkpoint,
    write_zip_checkpoint,
)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WRITERS = {"zip": write_zip_checkpoint, "legacy": write_legacy_checkpoint}


def _sample_state_dict():
    rng = np.random.default_rng(0)
    return {
        "conv.weight": rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
        "bn.running_var": rng.uniform(0.5, 1.5, 4).astype(np.float32),
        "bn.num_batches_tracked": np.array(12, np.int64),
        "half": rng.normal(size=(2, 5)).astype(np.float16),
        "double": rng.normal(size=(3,)),
        "mask": np.array([True, False, True]),
        "index": np.arange(7, dtype=np.int32),
        "empty": np.zeros((0, 3), np.float32),
    }


@pytest.mark.parametrize("layout", sorted(WRITERS))
def test_round_trip_keeps_values_dtypes_and_shapes(tmp_path, layout):
    state = _sample_state_dict()
    path = tmp_path / "model.pth"
    WRITERS[layout](path, state)
    read = read_state_dict(path, reader="numpy")
    assert list(read) == list(state)
    for name, value in state.items():
        assert read[name].dtype == value.dtype, name
        assert read[name].shape == value.shape, name
        np.testing.assert_array_equal(read[name], value)


@pytest.mark.parametrize("layout", sorted(WRITERS))
def test_strided_views_of_a_shared_storage(tmp_path, layout):
    storage = np.arange(20, dtype=np.float32)
    state = {
        # Column-major 3x2 view starting at element 2: [[2, 7], [3, 8], [4, 9]].
        "transposed": StridedTensor(storage, 2, (3, 2), (1, 5)),
        # Every other element from 11: [11, 13, 15, 17].
        "every_other": StridedTensor(storage, 11, (4,), (2,)),
        # A scalar at element 19.
        "scalar": StridedTensor(storage, 19, (), ()),
        # A broadcast row (stride 0): [[5, 6], [5, 6]].
        "broadcast": StridedTensor(storage, 5, (2, 2), (0, 1)),
    }
    path = tmp_path / "views.pth"
    WRITERS[layout](path, state)
    read = read_state_dict(path, reader="numpy")
    np.testing.assert_array_equal(read["transposed"], [[2, 7], [3, 8], [4, 9]])
    np.testing.assert_array_equal(read["every_other"], [11, 13, 15, 17])
    assert read["scalar"].shape == () and read["scalar"] == 19
    np.testing.assert_array_equal(read["broadcast"], [[5, 6], [5, 6]])
    assert read["transposed"].flags["C_CONTIGUOUS"] and read["transposed"].flags["WRITEABLE"]


def test_big_endian_archive(tmp_path):
    state = _sample_state_dict()
    path = tmp_path / "big.pth"
    write_zip_checkpoint(path, state, byteorder="big")
    with zipfile.ZipFile(path) as archive:  # the stored bytes really are big-endian
        assert archive.read("archive/data/0") == state["conv.weight"].astype(">f4").tobytes()
    read = read_state_dict(path, reader="numpy")
    for name, value in state.items():
        assert read[name].dtype == value.dtype, name
        np.testing.assert_array_equal(read[name], value)


def test_archive_prefix_is_taken_from_the_file(tmp_path):
    # torch.save names the zip's top folder after the file; any name must work.
    state = {"w": np.ones((2, 2), np.float32)}
    path = tmp_path / "pose_hrnet_w32_256x192.pth"
    write_zip_checkpoint(path, state, archive_name="pose_hrnet_w32_256x192")
    np.testing.assert_array_equal(read_state_dict(path, reader="numpy")["w"], state["w"])


@pytest.mark.parametrize("layout", sorted(WRITERS))
def test_training_checkpoint_wrapper_and_module_prefix(tmp_path, layout):
    weight = np.arange(6, dtype=np.float32).reshape(2, 3)
    checkpoint = {
        "epoch": 140,
        "model": "pose_hrnet",
        "perf": 0.75,
        "state_dict": {"module.final_layer.weight": weight,
                       "module.final_layer.bias": np.zeros(2, np.float32)},
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.001}]},
    }
    path = tmp_path / "checkpoint.pth"
    WRITERS[layout](path, checkpoint)
    read = read_state_dict(path, reader="numpy")
    assert sorted(read) == ["final_layer.bias", "final_layer.weight"]
    np.testing.assert_array_equal(read["final_layer.weight"], weight)


def test_extract_state_dict_reports_what_it_found():
    with pytest.raises(ValueError, match=r"no state dict found.*'epoch', 'optimizer'"):
        extract_state_dict({"epoch": 3, "optimizer": {}}, "ckpt.pth")
    # A prefix is removed only when every name has it.
    mixed = {"module.a": np.zeros(1), "b": np.zeros(1)}
    assert sorted(extract_state_dict(mixed)) == ["b", "module.a"]


@pytest.mark.parametrize("layout", sorted(WRITERS))
def test_malicious_pickle_is_refused_without_running(tmp_path, layout):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.pth"
    if layout == "zip":
        write_zip_checkpoint(path, {"w": np.zeros(1, np.float32)},
                             data_pickle=malicious_pickle(f"touch {marker}"))
    else:
        path.write_bytes(malicious_pickle(f"touch {marker}"))
    with pytest.raises(UnsafeCheckpointError, match=r"refusing to load the global 'os\.system'"):
        read_state_dict(path, reader="numpy")
    assert not marker.exists()


def test_foreign_global_inside_a_state_dict_is_refused(tmp_path):
    # A tensor-like entry whose rebuild function is builtins.eval.
    evil = (b"\x80\x02}(X\x01\x00\x00\x00wcbuiltins\neval\n(X\x10\x00\x00\x00"
            b"__import__('os')tR" + b"u.")
    path = tmp_path / "evil.pth"
    write_zip_checkpoint(path, {}, data_pickle=evil)
    with pytest.raises(UnsafeCheckpointError, match="builtins.eval"):
        load_checkpoint_numpy(path)


def test_pickled_module_persistent_id_is_refused(tmp_path):
    # torch.save(model) of old PyTorch: persistent id ('module', class, file, source).
    pid = b"(X\x06\x00\x00\x00moduleX\x01\x00\x00\x00aX\x01\x00\x00\x00bX\x01\x00\x00\x00ct"
    path = tmp_path / "module.pth"
    write_zip_checkpoint(path, {}, data_pickle=b"\x80\x02" + pid + b"Q.")
    with pytest.raises(UnsafeCheckpointError, match="persistent id 'module'"):
        load_checkpoint_numpy(path)


def test_tensor_outside_its_storage_is_an_error(tmp_path):
    storage = np.arange(6, dtype=np.float32)
    path = tmp_path / "bad.pth"
    write_zip_checkpoint(path, {"w": StridedTensor(storage, 4, (2, 2), (2, 1))})
    with pytest.raises(ValueError, match=r"reaches element 7 of a storage of 6"):
        read_state_dict(path, reader="numpy")


def test_truncated_storage_is_an_error(tmp_path):
    path = tmp_path / "short.pth"
    write_zip_checkpoint(path, {"w": np.ones(8, np.float32)})
    truncated = tmp_path / "truncated.pth"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(truncated, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            dst.writestr(name, data[:10] if name.endswith("data/0") else data)
    with pytest.raises(ValueError, match=r"'archive/data/0' claims 8 x FloatStorage \(32 bytes\) "
                                         r"but the file holds 10 bytes"):
        read_state_dict(truncated, reader="numpy")


def test_not_a_checkpoint_and_bad_reader(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("hello")
    with pytest.raises(ValueError, match="neither a torch.save zip archive nor a legacy"):
        read_state_dict(path, reader="numpy")
    with pytest.raises(ValueError, match="reader must be one of"):
        read_state_dict(path, reader="pickle")


# --- Damaged and crafted files: one clear error naming the file, nothing run, nothing big
# allocated (issue 13).

TERABYTE_TENSOR = StridedTensor(np.arange(6, dtype=np.float32), 0, (10**6, 10**6), (0, 0))


@pytest.mark.parametrize("layout", sorted(WRITERS))
def test_a_terabyte_tensor_is_refused_before_anything_is_allocated(tmp_path, layout):
    # Six floats in the file; sizes (1e6, 1e6) with strides 0 would copy out 3.64 TiB.
    path = tmp_path / "huge.pth"
    WRITERS[layout](path, {"conv1.weight": TERABYTE_TENSOR})
    start = time.perf_counter()
    with pytest.raises(CheckpointSizeError) as error:
        read_state_dict(path, reader="numpy")
    assert time.perf_counter() - start < 5
    message = str(error.value)
    assert message.startswith(f"{path}: tensor 'conv1.weight'")
    assert "1,000,000,000,000 elements (3.64 TiB)" in message
    assert "the sizes exceed the storage" in message and "holds 6" in message
    # Under a 1 GiB address-space limit the refusal is the same: nothing tried to allocate.
    script = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
              "from skelpose_tf.torch_checkpoint import read_state_dict\n"
              "try:\n    read_state_dict(sys.argv[1], reader='numpy')\n"
              "except ValueError as error:\n    print(type(error).__name__, error)\n")
    done = subprocess.run([sys.executable, "-c", script, str(path)], cwd=REPO_ROOT, text=True,
                          capture_output=True, timeout=120,
                          env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    assert done.stdout.startswith("CheckpointSizeError"), done.stdout + done.stderr


@pytest.mark.parametrize("tensor, expected", [
    (StridedTensor(np.arange(6, dtype=np.float32), 0, (1000, 1000), (1000, 1)),
     r"claims 1,000,000 elements \(3.81 MiB\), but its storage 'archive/data/0' holds 6"),
    (StridedTensor(np.arange(6, dtype=np.float32), 5, (2,), (1,)),
     r"reaches element 6 of a storage of 6"),
    (StridedTensor(np.arange(6, dtype=np.float32), 0, (2, 3), (3,)),
     r"sizes and strides differ in length"),
    (StridedTensor(np.arange(6, dtype=np.float32), 0, (0, 2**40, 2**40), (1, 1, 1)),
     r"sizes of an empty tensor are not plausible"),
    (StridedTensor(np.arange(6, dtype=np.float32), 0, (2, 3), (3, 1), claimed_numel=2**40),
     r"storage 'archive/data/0' claims 1,099,511,627,776 x FloatStorage \(4.00 TiB\) but "
     r"the file holds 24 bytes"),
])
def test_sizes_strides_and_storages_are_checked_against_the_file(tmp_path, tensor, expected):
    path = tmp_path / "bad.pth"
    write_zip_checkpoint(path, {"backbone.w": tensor})
    with pytest.raises(CheckpointSizeError, match=expected) as error:
        read_state_dict(path, reader="numpy")
    assert str(error.value).startswith(str(path))


def test_a_legacy_storage_cut_short_is_named(tmp_path):
    path = tmp_path / "legacy.pth"
    write_legacy_checkpoint(path, {"w": np.ones(100, np.float32)})
    data = path.read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[:-100])
    with pytest.raises(CheckpointSizeError, match=r"cut.pth: storage 'storage 0' claims 100 x "
                                                  r"FloatStorage \(400 bytes\) but the file "
                                                  r"holds 300 bytes"):
        read_state_dict(cut, reader="numpy")
    # A header that disagrees with the pickle.
    header = struct.pack("<q", 100)
    lying = tmp_path / "lying.pth"
    lying.write_bytes(data.replace(header, struct.pack("<q", 10**12), 1))
    with pytest.raises(CheckpointError, match=r"lying.pth: storage '0' header does not match"):
        read_state_dict(lying, reader="numpy")


def _zip_bytes(tmp_path, **members):
    path = tmp_path / "members.pth"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name.replace("__", "/"), data)
    return path


def _damaged_files(tmp_path):
    """name -> (path, regex of the message after the file name)."""
    good = tmp_path / "good.pth"
    write_zip_checkpoint(good, {"w": np.arange(64, dtype=np.float32)})
    data = good.read_bytes()
    files = {}
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) // 2])
    files["truncated zip"] = (cut, r"a zip archive without its end \(central directory\): the "
                                   r"file is truncated")
    flipped = bytearray(data)
    start = data.index(np.arange(64, dtype=np.float32).tobytes())
    flipped[start + 10] ^= 0xFF
    bad_crc = tmp_path / "bad_crc.pth"
    bad_crc.write_bytes(bytes(flipped))
    files["bad CRC"] = (bad_crc, r"damaged zip archive \(BadZipFile: Bad CRC-32")
    files["no data.pkl"] = (_zip_bytes(tmp_path, archive__version=b"3"),
                            r"not a torch.save zip archive \(expected one '<prefix>/data.pkl'")
    magic = tmp_path / "magic.pth"
    magic.write_bytes(pickle.dumps(12345, protocol=2) + b"rest")
    files["wrong magic"] = (magic, r"not a PyTorch file \(bad magic number 12345\)")
    version = tmp_path / "version.pth"
    version.write_bytes(pickle.dumps(LEGACY_MAGIC_NUMBER, protocol=2)
                        + pickle.dumps(7, protocol=2))
    files["wrong version"] = (version, r"unsupported legacy protocol version 7")
    text = tmp_path / "notes.pth"
    text.write_text("hello")
    files["text"] = (text, r"neither a torch.save zip archive nor a legacy PyTorch file")
    missing = tmp_path / "missing.pth"
    files["missing"] = (missing, r"no such checkpoint file")
    files["directory"] = (tmp_path, r" is a directory, not a checkpoint file")
    return files


def test_damaged_files_are_named_with_what_is_wrong(tmp_path):
    for name, (path, expected) in _damaged_files(tmp_path).items():
        with pytest.raises(CheckpointError) as error:
            read_state_dict(path, reader="numpy")
        message = str(error.value)
        assert message.startswith(str(path)), name
        assert len(message.splitlines()) == 1, name
        assert re.search(expected, message), (name, message)


# Hand-made pickles: opcodes torch.save never writes for a state dict, lengths that overrun the
# file, cut pickles. Each is refused before it is loaded; none runs anything.
_GLOBAL_SYSTEM = b"cos\nsystem\n"
_TOUCH = b"X\x05\x00\x00\x00touch"
REFUSED_PICKLES = {
    "INST": (b"\x80\x02(" + _TOUCH + b"ios\nsystem\n.", r"refusing the pickle opcode INST"),
    "OBJ": (b"\x80\x02(" + _GLOBAL_SYSTEM + _TOUCH + b"o.", r"refusing the pickle opcode OBJ"),
    "NEWOBJ": (b"\x80\x02" + _GLOBAL_SYSTEM + b")\x81.", r"refusing the pickle opcode NEWOBJ"),
    "EXT1": (b"\x80\x02\x82\x01.", r"refusing the pickle opcode EXT1"),
    "PERSID": (b"\x80\x02Pfoo\n.", r"refusing the pickle opcode PERSID"),
    "unknown opcode": (b"\x80\x02\xff.", r"not a valid pickle .*opcode b'\\xff' unknown"),
    "huge bytes length": (b"\x80\x04\x8e" + (2**40).to_bytes(8, "little") + b"abc.",
                          r"not a valid pickle .*expected 1099511627776 bytes"),
    "no STOP": (b"\x80\x02}(X\x01\x00\x00\x00wK\x01", r"not a valid pickle"),
    "STACK_GLOBAL": (b"\x80\x04\x8c\x02os\x8c\x06system\x93" + _TOUCH + b"\x85R.",
                     r"refusing to load the global 'os.system'"),
    "pickle error": (b"\x80\x02}(X\x01\x00\x00\x00wh\x07u.",
                     r"the pickle is malformed .*\(UnpicklingError: Memo value not found"),
}


@pytest.mark.parametrize("name", sorted(REFUSED_PICKLES))
def test_refused_pickles_name_the_file_and_run_nothing(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)  # where `touch` would leave its mark
    data, expected = REFUSED_PICKLES[name]
    path = tmp_path / "crafted.pth"
    write_zip_checkpoint(path, {"w": np.zeros(1, np.float32)}, data_pickle=data)
    with pytest.raises(CheckpointError, match=expected) as error:
        read_state_dict(path, reader="numpy")
    assert str(error.value).startswith(str(path))
    assert os.listdir(tmp_path) == ["crafted.pth"]
    if isinstance(error.value, UnsafeCheckpointError):
        assert "torch.save(model.state_dict()" in str(error.value)


def test_a_pickle_cannot_alter_a_tensor_after_its_checks(tmp_path):
    # BUILD on a rebuilt tensor would reset its sizes past its storage.
    array = np.arange(6, dtype=np.float32)
    state = b"}(X\x04\x00\x00\x00size(J\x00\x00\x01\x00J\x00\x00\x01\x00tu"
    data = b"\x80\x02}(X\x01\x00\x00\x00w" + tensor_opcodes(array) + state + b"bu."
    path = tmp_path / "build.pth"
    write_zip_checkpoint(path, {"w": array}, data_pickle=data)
    with pytest.raises(CheckpointError, match=r"sets attributes of a _TensorRef"):
        read_state_dict(path, reader="numpy")


def test_no_message_suggests_turning_weights_only_off():
    source = inspect.getsource(torch_checkpoint)
    assert "weights_only=False" not in source and "weights_only = False" not in source


# The text PyTorch 2.6+ gives when its weights-only reader refuses a pickle.
TORCH_REFUSAL = (
    "Weights only load failed. In PyTorch 2.6, we changed the default value of the "
    "`weights_only` argument in `torch.load` from `False` to `True`. Re-running `torch.load` "
    "with `weights_only` set to `False` will likely succeed, but it can result in arbitrary "
    "code execution. Do it only if you got the file from a trusted source.\n\n\nTrying to "
    "load unsupported GLOBAL os.system whose module os is blocked.\n\nCheck the documentation "
    "of torch.load to learn more about types accepted by default with weights_only "
    "https://pytorch.org/docs/stable/generated/torch.load.html."
)


def _fake_torch(monkeypatch, error):
    def load(*args, **kwargs):
        raise error

    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(load=load))


def _assert_refusal_message(message, path):
    assert message.startswith(f"{path}: refused without running anything: the file holds "
                              "objects other than tensors and plain containers")
    assert "unsupported GLOBAL os.system" in message
    assert "torch.save(model.state_dict(), 'weights.pth')" in message
    assert "weights_only" not in message and "False" not in message
    assert len(message.splitlines()) == 1


def test_a_pickle_refused_by_pytorch_gets_our_message(tmp_path, monkeypatch):
    path = tmp_path / "evil.pth"
    write_zip_checkpoint(path, {"w": np.zeros(1, np.float32)},
                         data_pickle=malicious_pickle("true"))
    _fake_torch(monkeypatch, pickle.UnpicklingError(TORCH_REFUSAL))
    with pytest.raises(UnsafeCheckpointError) as error:
        read_state_dict(path, reader="torch")
    _assert_refusal_message(str(error.value), path)
    _fake_torch(monkeypatch, RuntimeError("PytorchStreamReader failed reading zip archive"))
    with pytest.raises(CheckpointError, match=r"evil.pth: PyTorch cannot read it \(RuntimeError"):
        read_state_dict(path, reader="torch")


def test_pytorch_reader_sizes_are_checked_before_torch_load(tmp_path, monkeypatch):
    path = tmp_path / "huge.pth"
    write_zip_checkpoint(path, {"conv1.weight": TERABYTE_TENSOR})
    _fake_torch(monkeypatch, AssertionError("torch.load must not be reached"))
    with pytest.raises(CheckpointSizeError, match=r"tensor 'conv1.weight' .* sizes exceed"):
        read_state_dict(path, reader="torch")
    with pytest.raises(CheckpointError, match=r"missing.pth: no such checkpoint file"):
        read_state_dict(tmp_path / "missing.pth", reader="torch")


def test_real_pytorch_refusals_and_sizes(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "evil.pth"
    write_zip_checkpoint(evil, {"w": np.zeros(1, np.float32)},
                         data_pickle=malicious_pickle("touch executed"))
    with pytest.raises(UnsafeCheckpointError) as error:
        read_state_dict(evil, reader="torch")
    _assert_refusal_message(str(error.value), evil)
    assert not (tmp_path / "executed").exists()
    for name, (path, _) in _damaged_files(tmp_path).items():  # a bad CRC too: torch skips it
        with pytest.raises(CheckpointError) as error:
            read_state_dict(path, reader="torch")
        assert str(error.value).startswith(str(path)), name
        assert "weights_only" not in str(error.value), name
    # torch.load keeps the terabyte view without allocating; the copy to numpy is refused.
    huge = tmp_path / "huge.pth"
    write_zip_checkpoint(huge, {"conv1.weight": TERABYTE_TENSOR})
    monkeypatch.setattr(torch_checkpoint, "_precheck_for_torch", lambda path: None)
    with pytest.raises(CheckpointSizeError, match=r"huge.pth: tensor 'conv1.weight' .* claims "
                                                  r"1,000,000,000,000 elements \(3.64 TiB\)"):
        read_state_dict(huge, reader="torch")


# --- With PyTorch installed: files written by torch.save, and our writer checked by torch.load.


@pytest.mark.parametrize("legacy", [False, True])
def test_files_written_by_torch_save_read_like_torch_load(tmp_path, legacy):
    torch = pytest.importorskip("torch")
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(4, 3, 3, 3, generator=generator)
    state = {
        "module.conv.weight": weight,
        "module.transposed": weight.permute(1, 0, 3, 2),  # non-contiguous, shared storage
        "module.slice": weight[1:3, :, 1],  # offset into the shared storage
        "module.bf16": torch.randn(5, generator=generator).to(torch.bfloat16),
        "module.half": torch.randn(2, 2, generator=generator).half(),
        "module.param": torch.nn.Parameter(torch.randn(3, generator=generator)),
        "module.bn.num_batches_tracked": torch.tensor(5),
    }
    path = tmp_path / "torch_saved.pth"
    torch.save({"epoch": 1, "state_dict": state}, path, _use_new_zipfile_serialization=not legacy)
    ours = read_state_dict(path, reader="numpy")
    theirs = read_state_dict(path, reader="torch")
    assert list(ours) == list(theirs) == [name[len("module."):] for name in state]
    for name, value in theirs.items():
        assert ours[name].dtype == value.dtype, name
        np.testing.assert_array_equal(ours[name], value)
    np.testing.assert_array_equal(ours["transposed"], weight.permute(1, 0, 3, 2).numpy())
    np.testing.assert_array_equal(ours["bf16"], state["module.bf16"].float().numpy())


@pytest.mark.parametrize("layout", sorted(WRITERS))
def test_writer_output_is_read_by_torch_load(tmp_path, layout):
    torch = pytest.importorskip("torch")
    state = _sample_state_dict()
    path = tmp_path / "ours.pth"
    WRITERS[layout](path, state)
    loaded = torch.load(path, weights_only=True)
    for name, value in state.items():
        np.testing.assert_array_equal(loaded[name].numpy(), value)
