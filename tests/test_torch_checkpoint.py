"""The restricted `.pth` reader: layouts, dtypes, strides, wrappers, and refusal of foreign code.

Files are written by `torch_checkpoint_writer` (opcode by opcode, no PyTorch); where PyTorch is
installed, files written by `torch.save` are read too and compared with `torch.load`.
"""

import zipfile

import numpy as np
import pytest

from skelpose_tf.torch_checkpoint import (
    UnsafeCheckpointError,
    extract_state_dict,
    load_checkpoint_numpy,
    read_state_dict,
)
from torch_checkpoint_writer import (
    StridedTensor,
    malicious_pickle,
    write_legacy_checkpoint,
    write_zip_checkpoint,
)

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
    with pytest.raises(ValueError, match=r"storage holds 10 bytes, expected 32"):
        read_state_dict(truncated, reader="numpy")


def test_not_a_checkpoint_and_bad_reader(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("hello")
    with pytest.raises(ValueError, match="neither a torch.save zip archive nor a legacy"):
        read_state_dict(path, reader="numpy")
    with pytest.raises(ValueError, match="reader must be one of"):
        read_state_dict(path, reader="pickle")


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
