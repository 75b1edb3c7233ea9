"""The pose model: exact official sizes, forward pass, serialisation, mixed precision."""

import keras
import numpy as np
import pytest

from skelpose_tf.keypoints import KeypointSet, SkeletalLink
from skelpose_tf.model_info import count_macs, count_parameters
from skelpose_tf.models.pose_model import build_pose_model

# Official pose_hrnet trainable parameters and BN buffers (shared/reference/hrnet-reference.md).
OFFICIAL_SIZES = {
    (32, "coco"): (28_536_113, 54_336),
    (32, "mpii"): (28_536_080, 54_336),
    (48, "coco"): (63_595_745, 79_584),
    (48, "mpii"): (63_595_696, 79_584),
}


@pytest.mark.parametrize("width,keypoint_set", sorted(OFFICIAL_SIZES))
def test_parameters_equal_official_hrnet(width, keypoint_set):
    baseline = build_pose_model(width, (64, 64), keypoint_set, skeletal_attention=False)
    assert count_parameters(baseline) == OFFICIAL_SIZES[width, keypoint_set]
    with_module = build_pose_model(width, (64, 64), keypoint_set)
    # The module adds one 1x1 conv C -> 16 with bias: 16 * C + 16 parameters (528 / 784).
    trainable, non_trainable = count_parameters(with_module)
    assert trainable - OFFICIAL_SIZES[width, keypoint_set][0] == 16 * width + 16
    assert non_trainable == OFFICIAL_SIZES[width, keypoint_set][1]


def test_macs_equal_official_hrnet_w32():
    # Official MACs (conv weights x output pixels), measured on the PyTorch model.
    assert count_macs(build_pose_model(32, (256, 192), skeletal_attention=False)) == 7_645_003_776
    # The module's 1x1 conv adds 32 * 16 weights at 64 x 48 heatmap pixels.
    assert count_macs(build_pose_model(32, (256, 192))) == 7_645_003_776 + 512 * 64 * 48


@pytest.mark.slow
@pytest.mark.parametrize("width,size,keypoint_set,macs", [
    (48, (256, 192), "coco", 15_691_825_152),
    (32, (384, 288), "coco", 17_201_258_496),
    (48, (384, 288), "coco", 35_306_606_592),
    (32, (256, 256), "mpii", 10_193_207_296),
    (48, (256, 256), "mpii", 20_922_236_928),
])
def test_macs_equal_official_hrnet_other_sizes(width, size, keypoint_set, macs):
    model = build_pose_model(width, size, keypoint_set, skeletal_attention=False)
    assert count_macs(model) == macs


def test_tiny_forward_pass_shapes_and_inputs():
    model = build_pose_model(8, (64, 96), "coco")
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 96, 3)).astype("uint8")
    out = model(images)
    assert set(out) == {"heatmaps", "skeletal_heatmaps"}
    assert tuple(out["heatmaps"].shape) == (2, 16, 24, 17)
    assert tuple(out["skeletal_heatmaps"].shape) == (2, 16, 24, 16)
    assert out["heatmaps"].dtype == "float32"
    # uint8 and float pixels are the same input.
    out_float = model(images.astype("float32"))
    np.testing.assert_allclose(out["heatmaps"], out_float["heatmaps"], atol=1e-6)
    assert model.heatmap_size == (16, 24)


def test_baseline_has_no_skeletal_output_and_same_backbone_names():
    baseline = build_pose_model(8, (64, 64), skeletal_attention=False)
    full = build_pose_model(8, (64, 64))
    assert set(baseline.output) == {"heatmaps"}
    names = {layer.name for layer in full.layers} - {"skeletal_attention", "skeletal_heatmaps"}
    assert names == {layer.name for layer in baseline.layers}


def test_stable_official_layer_names():
    names = {layer.name for layer in build_pose_model(8, (64, 64)).layers}
    for expected in ("stem_conv1_conv", "stem_conv2_bn", "stage1_block0_downsample_conv",
                     "transition1_branch1_conv", "transition3_branch3_conv",
                     "stage2_module0_branch1_block3_conv2", "stage3_module3_fuse2_from0_down1_conv",
                     "stage4_module2_fuse0_from3_conv", "skeletal_attention", "keypoint_head"):
        assert expected in names
    # The last stage-4 module fuses branch 0 only (multi_scale_output=False).
    assert "stage4_module2_fuse1_from0_down0_conv" not in names


def test_keras_round_trip_under_safe_mode(tmp_path):
    model = build_pose_model(8, (64, 64), "mpii", pixel_convention="hrnet")
    images = np.random.default_rng(1).integers(0, 256, (1, 64, 64, 3)).astype("uint8")
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert loaded.get_config() == model.get_config()
    assert loaded.pixel_convention == "hrnet"
    for key, value in model(images).items():
        np.testing.assert_allclose(value, loaded(images)[key], atol=1e-6)


def test_custom_keypoint_set_any_number_of_links(tmp_path):
    custom = KeypointSet(
        name="three", keypoint_names=("a", "b", "c"), flip_pairs=((0, 2),),
        links=(SkeletalLink(0, 1, "physical", "upper"), SkeletalLink(1, 2, "physical", "lower"),
               SkeletalLink(0, 2, "virtual", "upper")),
        oks_sigmas=(0.05, 0.05, 0.05), upper_body=(0, 1),
    )
    model = build_pose_model(8, (64, 64), custom)
    out = model(np.zeros((1, 64, 64, 3), np.uint8))
    assert out["heatmaps"].shape[-1] == 3 and out["skeletal_heatmaps"].shape[-1] == 3
    model.save(tmp_path / "custom.keras")
    loaded = keras.saving.load_model(tmp_path / "custom.keras", safe_mode=True)
    assert loaded.keypoint_set == custom


def test_float32_outputs_under_mixed_precision():
    model = build_pose_model(8, (64, 64), dtype="mixed_bfloat16")
    out = model(np.zeros((1, 64, 64, 3), np.uint8))
    assert out["heatmaps"].dtype == "float32" and out["skeletal_heatmaps"].dtype == "float32"
    conv = model.get_layer("stage2_module0_branch0_block0_conv1")
    assert conv.compute_dtype == "bfloat16" and conv.variable_dtype == "float32"


@pytest.mark.parametrize("kwargs,message", [
    (dict(input_size=(250, 192)), "multiples of 32"),
    (dict(input_size="256by192"), "look like"),
    (dict(width=0), "width must be a positive integer"),
    (dict(keypoint_set="nope"), "Unknown keypoint set"),
    (dict(pixel_convention="corner"), "pixel_convention must be one of"),
])
def test_invalid_arguments_give_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_pose_model(**{"width": 8, "input_size": (64, 64), **kwargs})
