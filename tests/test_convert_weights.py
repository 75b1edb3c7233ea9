"""Importing HRNet PyTorch checkpoints: names, layouts, reports, errors, converted files.

Without PyTorch, checkpoints are generated from a Keras model by the reverse mapping and written
in torch.save's layouts by `torch_checkpoint_writer`; the names and shapes are checked against the
official W32 state dict (`hrnet_w32_state_dict.txt`, listed from the official PyTorch model).
With PyTorch, a PyTorch HRNet written from the documented topology
(`bench/torch_hrnet.py`, the benchmarks' PyTorch peer) is the oracle for the outputs.
"""

import ast
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from skelpose_tf.convert_weights import (
    OFFICIAL_DEPTH,
    WeightImportError,
    checkpoint_width,
    convert_checkpoint,
    converted_file_info,
    load_backbone_weights,
    load_state_dict_into_model,
    model_to_state_dict,
    torch_module_path,
)
from skelpose_tf.models.image_normalization import IMAGENET_MEAN, IMAGENET_STD
from skelpose_tf.models.pose_model import (BLOCKS_PER_BRANCH, STAGE_MODULES, TOPOLOGIES,
                                           build_pose_model)
from torch_checkpoint_writer import (
    StridedTensor,
    malicious_pickle,
    write_legacy_checkpoint,
    write_zip_checkpoint,
)

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(TESTS_DIR)
WIDTH = 8
SIZE = (64, 64)


def _official_w32_shapes():
    shapes = {}
    with open(os.path.join(TESTS_DIR, "hrnet_w32_state_dict.txt")) as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                name, shape = line.split(" ", 1)
                shapes[name] = tuple(ast.literal_eval(shape.strip()))
    return shapes


def _randomise(model, seed):
    """Give every weight a random value; heatmaps stay O(1) (BN variances positive)."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        shape = tuple(variable.shape)
        if variable.name == "kernel":
            fan_in = int(np.prod(shape[:-1]))
            value = rng.normal(0.0, 1.0 / np.sqrt(fan_in), shape)
        elif variable.name == "gamma":  # small: keeps activations O(1) through the residuals
            value = rng.uniform(0.1, 0.3, shape)
        elif variable.name == "moving_variance":
            value = rng.uniform(0.5, 1.5, shape)
        else:  # beta, moving_mean, bias
            value = rng.normal(0.0, 0.1, shape)
        variable.assign(value.astype("float32"))
    return model


def _weights_by_path(model):
    return {v.path: np.array(v.numpy()) for v in model.weights}


@pytest.fixture(scope="module")
def source_model():
    """A randomised tiny baseline (COCO) and its PyTorch-named state dict."""
    model = _randomise(build_pose_model(WIDTH, SIZE, "coco", skeletal_attention=False), seed=1)
    return model, model_to_state_dict(model)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(7).uniform(0, 255, (2, *SIZE, 3)).astype("float32")


def test_names_and_shapes_equal_the_official_w32_state_dict():
    model = build_pose_model(32, SIZE, "coco", skeletal_attention=False)
    state = model_to_state_dict(model)
    assert {name: value.shape for name, value in state.items()} == _official_w32_shapes()


def test_module_paths_of_each_kind_of_layer():
    expected = {
        "stem_conv1_conv": "conv1",
        "stem_conv2_bn": "bn2",
        "stage1_block0_downsample_conv": "layer1.0.downsample.0",
        "stage1_block3_bn3": "layer1.3.bn3",
        "transition1_branch0_conv": "transition1.0.0",
        "transition1_branch1_bn": "transition1.1.0.1",
        "transition3_branch3_conv": "transition3.3.0.0",
        "stage3_module2_branch1_block3_conv2": "stage3.2.branches.1.3.conv2",
        "stage4_module0_fuse0_from3_bn": "stage4.0.fuse_layers.0.3.1",
        "stage4_module1_fuse3_from0_down2_conv": "stage4.1.fuse_layers.3.0.2.0",
        "keypoint_head": "final_layer",
        "stage3_module0_fuse1_relu": None,
    }
    assert {name: torch_module_path(name) for name in expected} == expected


def test_layouts_are_transposed_as_documented(source_model):
    model, state = source_model
    kernel = model.get_layer("stage2_module0_branch0_block0_conv1").kernel.numpy()  # kh,kw,in,out
    weight = state["stage2.0.branches.0.0.conv1.weight"]  # out, in, kh, kw
    assert weight.shape == (WIDTH, WIDTH, 3, 3)
    assert weight[5, 3, 0, 2] == kernel[0, 2, 3, 5]
    bn = model.get_layer("stem_conv1_bn")
    np.testing.assert_array_equal(state["bn1.weight"], bn.gamma.numpy())
    np.testing.assert_array_equal(state["bn1.running_var"], bn.moving_variance.numpy())
    assert state["bn1.num_batches_tracked"].dtype == np.int64


@pytest.mark.parametrize("writer", [write_zip_checkpoint, write_legacy_checkpoint])
def test_pose_checkpoint_round_trip_is_exact(tmp_path, source_model, images, writer):
    model, state = source_model
    path = tmp_path / "pose.pth"
    writer(path, state)
    target = build_pose_model(WIDTH, SIZE, "coco", skeletal_attention=False)
    report = load_backbone_weights(target, path, reader="numpy")
    assert report.checkpoint_kind == "pose"
    assert report.unused == report.missing == report.ignored == report.own_init_layers == []
    assert len(report.loaded) == len(target.weights)
    expected = _weights_by_path(model)
    for name, value in _weights_by_path(target).items():
        np.testing.assert_array_equal(value, expected[name], err_msg=name)
    np.testing.assert_array_equal(target(images)["heatmaps"], model(images)["heatmaps"])


def test_pose_checkpoint_into_skeletal_model_keeps_module_init(tmp_path, source_model):
    model, state = source_model
    path = tmp_path / "pose.pth"
    write_zip_checkpoint(path, state)
    target = build_pose_model(WIDTH, SIZE, "coco")
    module_before = _weights_by_path(target.get_layer("skeletal_attention"))
    report = load_backbone_weights(target, path, reader="numpy")
    assert report.own_init_layers == ["skeletal_attention"]
    assert report.unused == report.missing == []
    for name, value in _weights_by_path(target.get_layer("skeletal_attention")).items():
        np.testing.assert_array_equal(value, module_before[name])
    expected = _weights_by_path(model)
    for name, value in _weights_by_path(target).items():
        if not name.startswith("skeletal_attention/"):
            np.testing.assert_array_equal(value, expected[name], err_msg=name)
    assert "kept their own initialisation (1): skeletal_attention" in report.summary()


def test_skeletal_model_round_trip_includes_the_module(tmp_path, images):
    model = _randomise(build_pose_model(WIDTH, SIZE, "mpii"), seed=2)
    state = model_to_state_dict(model)
    assert state["skeletal_attention.weight"].shape == (16, WIDTH, 1, 1)
    path = tmp_path / "skeletal.pth"
    write_zip_checkpoint(path, {"state_dict": {"module." + k: v for k, v in state.items()}})
    target = build_pose_model(WIDTH, SIZE, "mpii")
    report = load_backbone_weights(target, path, reader="numpy")
    assert report.own_init_layers == [] and len(report.loaded) == len(target.weights)
    out, expected = target(images), model(images)
    for key in ("heatmaps", "skeletal_heatmaps"):
        np.testing.assert_array_equal(out[key], expected[key])


def test_unused_tensors_fail_unless_allowed(source_model):
    model, state = source_model
    extra = dict(state, **{"head2.weight": np.zeros((3, WIDTH, 1, 1), np.float32)})
    target = build_pose_model(WIDTH, SIZE, "coco", skeletal_attention=False)
    before = _weights_by_path(target)
    with pytest.raises(WeightImportError, match=r"1 unused tensors") as error:
        load_state_dict_into_model(target, extra)
    assert error.value.report.unused == ["head2.weight"]
    assert "unused (in the checkpoint, not in the model) (1): head2.weight" in str(error.value)
    for name, value in _weights_by_path(target).items():  # nothing was assigned
        np.testing.assert_array_equal(value, before[name])
    report = load_state_dict_into_model(target, extra, allow_unused=True)
    assert report.unused == ["head2.weight"]
    np.testing.assert_array_equal(target.get_layer("keypoint_head").bias.numpy(),
                                  state["final_layer.bias"])


def test_missing_tensors_fail_unless_allowed(source_model):
    model, state = source_model
    gone = "stage3.1.fuse_layers.2.0.1.1.running_mean"
    partial = {k: v for k, v in state.items() if k != gone}
    target = build_pose_model(WIDTH, SIZE, "coco", skeletal_attention=False)
    bn = target.get_layer("stage3_module1_fuse2_from0_down1_bn")
    with pytest.raises(WeightImportError, match="1 missing tensors") as error:
        load_state_dict_into_model(target, partial)
    assert error.value.report.missing == [gone]
    report = load_state_dict_into_model(target, partial, allow_missing=True)
    assert report.missing == [gone]
    np.testing.assert_array_equal(bn.moving_mean.numpy(), np.zeros(4 * WIDTH))  # own init
    np.testing.assert_array_equal(bn.moving_variance.numpy(),
                                  state["stage3.1.fuse_layers.2.0.1.1.running_var"])


def test_other_width_or_keypoint_count_is_a_clear_error(source_model):
    _, state = source_model
    wider = build_pose_model(16, SIZE, "coco", skeletal_attention=False)
    with pytest.raises(ValueError, match=r"checkpoint is HRNet-W8 .* model is W16; build the "
                                         r"model with width=8 \(--width 8\)"):
        load_state_dict_into_model(wider, state, source="w8.pth")
    mpii = build_pose_model(WIDTH, SIZE, "mpii", skeletal_attention=False)
    with pytest.raises(ValueError, match=r"predicts 17 keypoints \(final_layer.weight "
                                         r"\(17, 8, 1, 1\)\) but the model has 16"):
        load_state_dict_into_model(mpii, state, source="coco.pth")
    # As the message suggests, the backbone alone loads; the 16-keypoint head keeps its init.
    head_before = mpii.get_layer("keypoint_head").kernel.numpy()
    report = load_state_dict_into_model(mpii, state, checkpoint_kind="imagenet")
    assert sorted(report.ignored) == ["final_layer.bias", "final_layer.weight"]
    np.testing.assert_array_equal(mpii.get_layer("keypoint_head").kernel.numpy(), head_before)


def test_a_tensor_of_the_wrong_shape_is_named(source_model):
    _, state = source_model
    bad = dict(state)
    bad["layer1.2.conv2.weight"] = np.zeros((64, 64, 1, 1), np.float32)
    target = build_pose_model(WIDTH, SIZE, "coco", skeletal_attention=False)
    with pytest.raises(ValueError, match=r"layer1.2.conv2.weight has shape \(64, 64, 1, 1\), but "
                                         r"Keras stage1_block2_conv2/kernel \(3, 3, 64, 64\)"):
        load_state_dict_into_model(target, bad)


def _imagenet_extras(width, rng):
    """Classification-only tensors of an ImageNet HRNet checkpoint (names as published)."""
    channels = [width * 2**i for i in range(4)]
    extras = {}

    def conv(name, out, inp, k):
        extras[name] = rng.normal(size=(out, inp, k, k)).astype(np.float32)

    def bn(name, c):
        for suffix in ("weight", "bias", "running_mean", "running_var"):
            extras[f"{name}.{suffix}"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
        extras[f"{name}.num_batches_tracked"] = np.array(100, np.int64)

    # The last stage-4 module fuses to all four resolutions in classification.
    for i in range(1, 4):
        for j in range(4):
            prefix = f"stage4.2.fuse_layers.{i}.{j}"
            if j > i:
                conv(f"{prefix}.0.weight", channels[i], channels[j], 1)
                bn(f"{prefix}.1", channels[i])
            for k in range(i - j):
                out = channels[i] if k == i - j - 1 else channels[j]
                conv(f"{prefix}.{k}.0.weight", out, channels[j], 3)
                bn(f"{prefix}.{k}.1", out)
    for b, c in enumerate(channels):
        conv(f"incre_modules.{b}.0.conv1.weight", 32 * 2**b, c, 1)
        bn(f"incre_modules.{b}.0.bn1", 32 * 2**b)
    for b in range(3):
        conv(f"downsamp_modules.{b}.0.weight", 256 * 2**b, 128 * 2**b, 3)
        extras[f"downsamp_modules.{b}.0.bias"] = np.zeros(256 * 2**b, np.float32)
        bn(f"downsamp_modules.{b}.1", 256 * 2**b)
    conv("final_layer.0.weight", 2048, 1024, 1)
    extras["final_layer.0.bias"] = np.zeros(2048, np.float32)
    bn("final_layer.1", 2048)
    extras["classifier.weight"] = rng.normal(size=(1000, 2048)).astype(np.float32)
    extras["classifier.bias"] = np.zeros(1000, np.float32)
    return extras


@pytest.fixture(scope="module")
def imagenet_state(source_model):
    _, state = source_model
    backbone = {k: v for k, v in state.items() if not k.startswith("final_layer.")}
    extras = _imagenet_extras(WIDTH, np.random.default_rng(3))
    return {**backbone, **extras}, sorted(k for k in extras if not k.endswith("_tracked"))


def test_imagenet_checkpoint_loads_the_backbone_and_lists_what_it_ignored(
        tmp_path, source_model, imagenet_state):
    model, _ = source_model
    state, extra_names = imagenet_state
    path = tmp_path / "hrnet_w8-imagenet.pth"
    write_zip_checkpoint(path, state)
    target = build_pose_model(WIDTH, SIZE, "coco")
    own_before = {**_weights_by_path(target.get_layer("keypoint_head")),
                  **_weights_by_path(target.get_layer("skeletal_attention"))}
    report = load_backbone_weights(target, path, reader="numpy")
    assert report.checkpoint_kind == "imagenet"
    assert sorted(report.ignored) == extra_names
    assert report.unused == report.missing == []
    assert report.own_init_layers == ["keypoint_head", "skeletal_attention"]
    expected = _weights_by_path(model)
    for name, value in _weights_by_path(target).items():
        if name in own_before:
            np.testing.assert_array_equal(value, own_before[name], err_msg=name)
        else:
            np.testing.assert_array_equal(value, expected[name], err_msg=name)
    summary = report.summary()
    for group in ("stage4.2.fuse_layers.1.*", "stage4.2.fuse_layers.3.*", "incre_modules.0.*",
                  "downsamp_modules.2.*", "final_layer.*", "classifier.*"):
        assert group in summary


def test_imagenet_checkpoint_must_still_cover_the_backbone(imagenet_state):
    state, _ = imagenet_state
    partial = {k: v for k, v in state.items() if not k.startswith("layer1.3.")}  # 3 conv + 3 BN
    target = build_pose_model(WIDTH, SIZE, "coco", skeletal_attention=False)
    with pytest.raises(WeightImportError, match="15 missing tensors"):
        load_state_dict_into_model(target, partial)


def test_converted_pose_file_is_keras_weights_of_the_baseline(tmp_path, source_model, images):
    model, state = source_model
    checkpoint = tmp_path / "pose_hrnet_w8.pth"
    write_zip_checkpoint(checkpoint, state)
    out = tmp_path / "converted" / "pose_hrnet_w8.weights.h5"
    report = convert_checkpoint(checkpoint, out, reader="numpy")  # width read from the file
    assert report.checkpoint_kind == "pose" and not report.unused
    # Published models use HRNet's heatmap coordinates; loading the file keeps that.
    assert converted_file_info(out)["pixel_convention"] == "hrnet"
    from skelpose_tf.model_loading import load_pose_model

    loaded, _ = load_pose_model(str(out), width=WIDTH, input_size=(96, 64),
                                skeletal_attention=False)
    assert loaded.pixel_convention == "hrnet"
    assert loaded.codec.pixel_convention == "hrnet"
    baseline = build_pose_model(WIDTH, (96, 64), "coco", skeletal_attention=False)
    baseline.load_weights(out)  # plain Keras loading
    expected = _weights_by_path(model)
    for name, value in _weights_by_path(baseline).items():
        np.testing.assert_array_equal(value, expected[name], err_msg=name)
    skeletal = build_pose_model(WIDTH, SIZE, "coco")
    report = load_backbone_weights(skeletal, out)
    assert "converted from pose_hrnet_w8.pth" in report.source
    assert report.own_init_layers == ["skeletal_attention"] and not report.missing
    np.testing.assert_array_equal(skeletal.get_layer("keypoint_head").kernel.numpy(),
                                  model.get_layer("keypoint_head").kernel.numpy())


def test_converted_imagenet_file_keeps_its_record(tmp_path, source_model, imagenet_state):
    model, _ = source_model
    state, extra_names = imagenet_state
    checkpoint = tmp_path / "hrnet_w8.pth"
    write_zip_checkpoint(checkpoint, state)
    out = tmp_path / "hrnet_w8.weights.h5"
    convert_checkpoint(checkpoint, out, width=WIDTH, reader="numpy")
    target = build_pose_model(WIDTH, SIZE, "mpii")  # any keypoint set: the head is not loaded
    head_before = target.get_layer("keypoint_head").kernel.numpy()
    info = converted_file_info(out)
    assert (info["checkpoint_kind"], info["width"]) == ("imagenet", WIDTH)
    assert info["source"] == "hrnet_w8.pth"
    report = load_backbone_weights(target, out)
    assert report.checkpoint_kind == "imagenet"
    assert sorted(report.ignored) == extra_names
    assert report.own_init_layers == ["keypoint_head", "skeletal_attention"]
    np.testing.assert_array_equal(target.get_layer("keypoint_head").kernel.numpy(), head_before)
    np.testing.assert_array_equal(target.get_layer("stage4_module2_fuse0_from3_conv").kernel,
                                  model.get_layer("stage4_module2_fuse0_from3_conv").kernel)


def test_conversion_rejects_wrong_width_and_foreign_files(tmp_path, source_model):
    model, state = source_model
    checkpoint = tmp_path / "w8.pth"
    write_zip_checkpoint(checkpoint, state)
    with pytest.raises(ValueError, match="model is W16"):
        convert_checkpoint(checkpoint, tmp_path / "w.weights.h5", width=16, reader="numpy")
    with pytest.raises(ValueError, match=r"must end in '.weights.h5'"):
        convert_checkpoint(checkpoint, tmp_path / "w.h5")
    keras_file = tmp_path / "plain.weights.h5"
    model.save_weights(keras_file)
    assert converted_file_info(keras_file) is None
    with pytest.raises(ValueError, match="not a file written by"):
        load_backbone_weights(model, keras_file)
    with pytest.raises(ValueError, match="Checkpoint file not found"):
        load_backbone_weights(model, tmp_path / "nope.pth")
    assert not (tmp_path / "w.weights.h5").exists()


def test_command_line(tmp_path, source_model):
    _, state = source_model
    checkpoint = tmp_path / "w8.pth"
    write_zip_checkpoint(checkpoint, state)
    out = tmp_path / "w8.weights.h5"
    command = [sys.executable, "-m", "skelpose_tf.convert_weights", "--checkpoint",
               str(checkpoint), "--out", str(out), "--width", str(WIDTH), "--reader", "numpy"]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"pose checkpoint, loaded {len(_tensor_names(state))} tensors" in done.stdout
    assert out.exists()
    failed = subprocess.run(command[:-4] + ["--keypoint_set", "mpii"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=300)
    assert failed.returncode != 0
    assert "predicts 17 keypoints" in failed.stderr


def _tensor_names(state):
    return [k for k in state if not k.endswith("num_batches_tracked")]


# --- Bad files through the command line: one line, exit status 1, no traceback (issue 13).


def _bad_checkpoints(tmp_path):
    """name -> (path, text the message must hold after the file name)."""
    files = {"missing": (tmp_path / "missing.pth", "no such checkpoint file"),
             "directory": (tmp_path, "is a directory, not a checkpoint file")}
    huge = tmp_path / "huge.pth"
    write_zip_checkpoint(huge, {"transition1.0.0.weight": StridedTensor(
        np.arange(6, dtype=np.float32), 0, (10**6, 10**6), (0, 0))})
    files["terabyte tensor"] = (huge, "tensor 'transition1.0.0.weight' (sizes (1000000, "
                                      "1000000), strides (0, 0), storage offset 0) claims "
                                      "1,000,000,000,000 elements (3.64 TiB), but its storage "
                                      "'archive/data/0' holds 6: the sizes exceed the storage")
    evil = tmp_path / "evil.pth"
    write_zip_checkpoint(evil, {"w": np.zeros(1, np.float32)},
                         data_pickle=malicious_pickle("touch executed"))
    files["foreign code"] = (evil, "refusing to load the global 'os.system'")
    good = tmp_path / "good.pth"
    write_zip_checkpoint(good, {"w": np.zeros(64, np.float32)})
    cut = tmp_path / "cut.pth"
    cut.write_bytes(good.read_bytes()[:200])
    files["truncated"] = (cut, "a zip archive without its end")
    opcode = tmp_path / "opcode.pth"
    write_zip_checkpoint(opcode, {"w": np.zeros(1, np.float32)},
                         data_pickle=b"\x80\x02(X\x04\x00\x00\x00trueios\nsystem\n.")
    files["refused opcode"] = (opcode, "refusing the pickle opcode INST")
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    files["not a checkpoint"] = (text, "neither a torch.save zip archive nor a legacy PyTorch")
    return files


def test_bad_checkpoints_fail_in_one_line_naming_the_file(tmp_path):
    def limit_memory():  # the terabyte tensor must be refused, not attempted
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    for name, (path, expected) in _bad_checkpoints(tmp_path).items():
        done = subprocess.run(
            [sys.executable, "-m", "skelpose_tf.convert_weights", "--checkpoint", str(path),
             "--out", str(tmp_path / "out.weights.h5"), "--reader", "numpy"],
            cwd=tmp_path, capture_output=True, text=True, timeout=120, preexec_fn=limit_memory,
            env={**os.environ, "PYTHONPATH": REPO_ROOT, "OPENBLAS_NUM_THREADS": "1"})
        assert done.returncode == 1, (name, done.stderr)
        assert "Traceback" not in done.stderr, name
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, (name, done.stderr)
        assert lines[0].startswith(f"python -m skelpose_tf.convert_weights: error: {path}"), name
        assert expected in lines[0], (name, lines[0])
    assert not (tmp_path / "executed").exists()
    assert not (tmp_path / "out.weights.h5").exists()


def test_weights_that_are_not_finite_floats_are_named(source_model):
    _, state = source_model
    target = build_pose_model(WIDTH, SIZE, "coco", skeletal_attention=False)
    broken = dict(state, **{"layer1.0.bn1.running_var": np.full(64, np.nan, np.float32)})
    with pytest.raises(ValueError, match=r"w8.pth: layer1.0.bn1.running_var holds 64 non-finite "
                                         r"values \(NaN or inf\) of 64"):
        load_state_dict_into_model(target, broken, source="w8.pth")
    integers = dict(state, **{"conv1.weight": state["conv1.weight"].astype(np.int64)})
    with pytest.raises(ValueError, match=r"conv1.weight holds int64 values, not floating"):
        load_state_dict_into_model(target, integers, source="w8.pth")
    flat = dict(state, **{"transition1.0.0.weight": np.zeros(8, np.float32)})
    with pytest.raises(ValueError, match=r"transition1.0.0.weight has shape \(8,\), not that of "
                                         r"a conv weight"):
        checkpoint_width(flat, "w8.pth")


def test_a_checkpoint_of_another_depth_names_the_topology(tmp_path):
    tiny = build_pose_model(WIDTH, SIZE, "coco", skeletal_attention=False, **TOPOLOGIES["tiny"])
    state = model_to_state_dict(tiny)
    official = build_pose_model(WIDTH, SIZE, "coco", skeletal_attention=False)
    with pytest.raises(WeightImportError) as error:
        load_state_dict_into_model(official, state, source="tiny.pth")
    message = str(error.value).splitlines()[0]
    assert ("the checkpoint has stages 1-1-1 x 1 block (the 'tiny' topology), the model stages "
            "1-4-3 x 4 blocks (the 'official' topology)") in message
    assert "build the model with the checkpoint's depth (--topology)" in message
    checkpoint = tmp_path / "tiny.pth"
    write_zip_checkpoint(checkpoint, state)
    with pytest.raises(ValueError, match=r"tiny.pth: the checkpoint has stages 1-1-1 x 1 block, "
                                         r"but convert_weights writes the official HRNet depth "
                                         r"\(stages 1-4-3 x 4 blocks\)"):
        convert_checkpoint(checkpoint, tmp_path / "tiny.weights.h5", reader="numpy")
    assert OFFICIAL_DEPTH == (tuple(STAGE_MODULES), BLOCKS_PER_BRANCH)


def test_a_weights_file_of_another_architecture_says_what_differs(tmp_path):
    """A `.weights.h5` of a tiny-topology model loaded as official names --topology; width,
    keypoint set and skeletal module differences are each named from the file's shapes."""
    from skelpose_tf.model_loading import load_pose_model

    tiny = TOPOLOGIES["tiny"]
    weights = str(tmp_path / "tiny.weights.h5")
    build_pose_model(WIDTH, SIZE, "coco", **tiny).save_weights(weights)
    cases = [
        ({}, r"W8 64x64 coco, skeletal attention model: the file has 41 convolution layers and "
             r"the model 293: it was saved from a network of another depth, the 'tiny' topology "
             r"\(--topology=tiny\)"),
        (dict(width=16, **tiny), r"the file is HRNet-W8 and the model W16 \(--width=8\)"),
        (dict(keypoint_set="mpii", **tiny),
         r"the file predicts 17 keypoints and the model 16 \(mpii; --keypoint_set=coco\)"),
        (dict(skeletal_attention=False, **tiny),
         r"the file has the skeletal attention module and the model does not "
         r"\(--skeletal_attention=true\)"),
    ]
    for arguments, expected in cases:
        arguments = {"width": WIDTH, **arguments}
        with pytest.raises(ValueError, match=expected) as error:
            load_pose_model(weights, input_size="64x64", **arguments)
        assert str(error.value).startswith(f"The weights in {weights} do not fit a")
        assert len(str(error.value).splitlines()) == 1
    baseline = str(tmp_path / "baseline.weights.h5")
    build_pose_model(WIDTH, SIZE, "coco", skeletal_attention=False, **tiny).save_weights(baseline)
    with pytest.raises(ValueError, match=r"the file has no skeletal attention module \(an HRNet "
                                         r"baseline; --skeletal_attention=false\)"):
        load_pose_model(baseline, width=WIDTH, input_size="64x64", **tiny)
    loaded, _ = load_pose_model(weights, width=WIDTH, input_size="64x64", **tiny)  # it fits
    assert loaded.width == WIDTH
    text = tmp_path / "text.weights.h5"
    text.write_text("not HDF5")
    with pytest.raises(ValueError, match=rf"{text}: not a readable HDF5 weights file"):
        load_pose_model(str(text), width=WIDTH, input_size="64x64")
    with pytest.raises(ValueError, match=rf"{text}: not a readable HDF5 weights file"):
        converted_file_info(text)


# --- Equivalence with a PyTorch HRNet (only where PyTorch is installed).


def _torch_reference(width, num_keypoints, seed):
    torch = pytest.importorskip("torch")
    from bench.torch_hrnet import TorchPoseHRNet

    torch.manual_seed(seed)
    net = TorchPoseHRNet(width, num_keypoints)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.1, 0.3, generator=generator)
                module.bias.normal_(0.0, 0.1, generator=generator)
                module.running_mean.normal_(0.0, 0.1, generator=generator)
                module.running_var.uniform_(0.5, 1.5, generator=generator)
            elif isinstance(module, torch.nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.normal_(0.0, fan_in ** -0.5, generator=generator)
                if module.bias is not None:
                    module.bias.normal_(0.0, 0.1, generator=generator)
    return torch, net.eval()


@pytest.mark.parametrize("legacy", [False, True])
def test_converted_model_matches_pytorch_at_256x192(tmp_path, legacy):
    torch, net = _torch_reference(WIDTH, 17, seed=4)
    path = tmp_path / "torch_hrnet.pth"
    torch.save(net.state_dict(), path, _use_new_zipfile_serialization=not legacy)
    model = build_pose_model(WIDTH, (256, 192), "coco", skeletal_attention=False)
    for reader in ("numpy", "torch"):
        report = load_backbone_weights(model, path, reader=reader)
        assert not report.unused and not report.missing
    images = np.random.default_rng(5).uniform(0, 255, (2, 256, 192, 3)).astype("float32")
    normalised = (images / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    with torch.no_grad():
        expected = net(torch.from_numpy(normalised.transpose(0, 3, 1, 2)).float()).numpy()
    heatmaps = np.asarray(model(images)["heatmaps"]).transpose(0, 3, 1, 2)
    assert heatmaps.shape == expected.shape == (2, 17, 64, 48)
    assert np.abs(expected).max() > 0.1  # the comparison is not between near-zero maps
    np.testing.assert_allclose(heatmaps, expected, rtol=0, atol=1e-4)


def test_reverse_mapping_loads_strictly_into_pytorch(images):
    torch, net = _torch_reference(WIDTH, 16, seed=6)
    model = _randomise(build_pose_model(WIDTH, SIZE, "mpii", skeletal_attention=False), seed=8)
    state = {k: torch.from_numpy(v) for k, v in model_to_state_dict(model).items()}
    net.load_state_dict(state, strict=True)
    normalised = (images / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    with torch.no_grad():
        expected = net(torch.from_numpy(normalised.transpose(0, 3, 1, 2)).float()).numpy()
    heatmaps = np.asarray(model(images)["heatmaps"]).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(heatmaps, expected, rtol=0, atol=1e-4)


@pytest.mark.slow
def test_full_size_w32_conversion(tmp_path):
    """Converts a generated full-size W32 checkpoint (prints the time; no threshold)."""
    model = _randomise(build_pose_model(32, (256, 192), "coco", skeletal_attention=False), 9)
    state = model_to_state_dict(model)
    checkpoint = tmp_path / "pose_hrnet_w32_256x192.pth"
    write_zip_checkpoint(checkpoint, state, archive_name="pose_hrnet_w32_256x192")
    start = time.perf_counter()
    report = convert_checkpoint(checkpoint, tmp_path / "w32.weights.h5", reader="numpy")
    print(f"\nW32 conversion: {time.perf_counter() - start:.1f} s, "
          f"{report.num_values:,} values")
    assert report.num_values == 28_536_113 + 54_336
    assert len(report.loaded) == len(_tensor_names(state))
