"""Heatmap losses against hand computation and a per-map numpy loop (official JointsMSELoss)."""

import numpy as np
import pytest
import tensorflow as tf

from skelpose_tf.codec import HeatmapCodec
from skelpose_tf.keypoints import KeypointSet
from skelpose_tf.losses import keypoint_loss, pose_loss, skeletal_loss


def _numpy_joints_mse(pred, target, weights):
    """Official JointsMSELoss: per map 0.5 * mean over (B, H, W) of ((pred - gt) w)^2; sum / M."""
    total = 0.0
    num_maps = pred.shape[-1]
    for m in range(num_maps):
        w = weights[:, m][:, None, None]
        total += 0.5 * np.mean((pred[..., m] * w - target[..., m] * w) ** 2)
    return total / num_maps


def test_keypoint_loss_by_hand():
    # B=1, 1x2 maps, K=2. Map 0: errors (1, 3), weight 1 -> 0.5 * (1 + 9) / 2 = 2.5.
    # Map 1: errors (2, 0), weight 0.5 -> 0.5 * (1 + 0) / 2 = 0.25. Mean over maps: 1.375.
    pred = np.array([[[[1.0, 2.0], [3.0, 0.0]]]], np.float32)
    target = np.zeros_like(pred)
    weights = np.array([[1.0, 0.5]], np.float32)
    assert float(keypoint_loss(pred, target, weights)) == pytest.approx(1.375)


def test_losses_match_numpy_reference():
    rng = np.random.default_rng(0)
    pred = rng.normal(size=(3, 8, 6, 5)).astype(np.float32)
    target = rng.uniform(size=(3, 8, 6, 5)).astype(np.float32)
    weights = (rng.integers(0, 2, (3, 5)) * rng.uniform(0.5, 1.5, (3, 5))).astype(np.float32)
    expected = _numpy_joints_mse(pred, target, weights)
    assert float(keypoint_loss(pred, target, weights)) == pytest.approx(expected, rel=1e-5)
    assert float(skeletal_loss(pred, target, weights)) == pytest.approx(expected, rel=1e-5)


def test_weight_zero_map_with_huge_error_contributes_nothing():
    rng = np.random.default_rng(1)
    pred = rng.uniform(size=(2, 4, 4, 3)).astype(np.float32)
    target = rng.uniform(size=(2, 4, 4, 3)).astype(np.float32)
    weights = np.ones((2, 3), np.float32)
    weights[1, 2] = 0.0
    reference = float(keypoint_loss(pred, target, weights))
    pred[1, :, :, 2] = 1e6
    assert float(keypoint_loss(pred, target, weights)) == pytest.approx(reference, rel=1e-6)
    # The masked map still counts in the normalisation (official behaviour).
    assert reference == pytest.approx(_numpy_joints_mse(pred, target, weights), rel=1e-5)


def test_pose_loss_combines_terms_with_lambda():
    rng = np.random.default_rng(2)
    outputs = {
        "heatmaps": rng.normal(size=(2, 4, 3, 5)).astype(np.float32),
        "skeletal_heatmaps": rng.normal(size=(2, 4, 3, 4)).astype(np.float32),
    }
    targets = {
        "heatmaps": rng.uniform(size=(2, 4, 3, 5)).astype(np.float32),
        "heatmap_weights": np.ones((2, 5), np.float32),
        "skeletal_heatmaps": rng.uniform(size=(2, 4, 3, 4)).astype(np.float32),
        "skeletal_weights": np.array([[1, 0, 1, 1], [0, 1, 1, 1]], np.float32),
    }
    l_k = _numpy_joints_mse(outputs["heatmaps"], targets["heatmaps"], targets["heatmap_weights"])
    l_s = _numpy_joints_mse(
        outputs["skeletal_heatmaps"], targets["skeletal_heatmaps"], targets["skeletal_weights"]
    )
    for weight in (0.2, 1.5):
        total, keypoint_term, skeletal_term = pose_loss(outputs, targets, skeletal_weight=weight)
        assert float(keypoint_term) == pytest.approx(l_k, rel=1e-5)
        assert float(skeletal_term) == pytest.approx(l_s, rel=1e-5)
        assert float(total) == pytest.approx(l_k + weight * l_s, rel=1e-5)
    assert float(pose_loss(outputs, targets)[0]) == pytest.approx(l_k + 0.2 * l_s, rel=1e-5)


def test_pose_loss_without_skeletal_outputs():
    rng = np.random.default_rng(3)
    heatmaps = rng.normal(size=(2, 4, 3, 5)).astype(np.float32)
    targets = {
        "heatmaps": rng.uniform(size=(2, 4, 3, 5)).astype(np.float32),
        "heatmap_weights": np.ones((2, 5), np.float32),
        "skeletal_heatmaps": rng.uniform(size=(2, 4, 3, 4)).astype(np.float32),
        "skeletal_weights": np.ones((2, 4), np.float32),
    }
    expected = _numpy_joints_mse(heatmaps, targets["heatmaps"], targets["heatmap_weights"])
    for outputs in ({"heatmaps": heatmaps}, heatmaps):
        total, keypoint_term, skeletal_term = pose_loss(outputs, targets)
        assert float(skeletal_term) == 0.0
        assert float(total) == pytest.approx(expected, rel=1e-5)
        assert float(keypoint_term) == pytest.approx(expected, rel=1e-5)


def test_pose_loss_on_codec_targets():
    codec = HeatmapCodec((32, 32), keypoint_set="coco")
    rng = np.random.default_rng(6)
    targets = codec.encode(
        rng.uniform(0, 32, (2, 17, 2)).astype(np.float32), np.ones((2, 17), np.float32)
    )
    outputs = {"heatmaps": targets["heatmaps"], "skeletal_heatmaps": targets["skeletal_heatmaps"]}
    np.testing.assert_array_equal([float(v) for v in pose_loss(outputs, targets)], [0, 0, 0])
    zeros = {key: tf.zeros_like(value) for key, value in outputs.items()}
    total, keypoint_term, skeletal_term = pose_loss(zeros, targets, skeletal_weight=0.5)
    expected_k = 0.5 * np.mean(targets["heatmaps"].numpy() ** 2)
    expected_s = 0.5 * np.mean(targets["skeletal_heatmaps"].numpy() ** 2)
    assert float(keypoint_term) == pytest.approx(expected_k, rel=1e-5)
    assert float(total) == pytest.approx(expected_k + 0.5 * expected_s, rel=1e-5)


def test_keypoint_set_without_links_gives_zero_skeletal_term():
    no_links = KeypointSet(
        name="pair",
        keypoint_names=("a", "b"),
        flip_pairs=((0, 1),),
        links=(),
        oks_sigmas=(0.05, 0.05),
        upper_body=(0, 1),
    )
    codec = HeatmapCodec((32, 32), keypoint_set=no_links)
    targets = codec.encode(np.full((1, 2, 2), 8.0, np.float32), np.ones((1, 2), np.float32))
    assert targets["skeletal_heatmaps"].shape == (1, 8, 8, 0)
    outputs = {"heatmaps": targets["heatmaps"], "skeletal_heatmaps": targets["skeletal_heatmaps"]}
    total, _, skeletal_term = pose_loss(outputs, targets)
    assert float(skeletal_term) == 0.0 and float(total) == 0.0


def test_losses_are_float32_for_mixed_precision_inputs():
    rng = np.random.default_rng(4)
    pred = rng.normal(size=(2, 4, 4, 3)).astype(np.float32)
    target = rng.uniform(size=(2, 4, 4, 3)).astype(np.float32)
    weights = np.ones((2, 3), np.float32)
    pred_bf16 = tf.cast(pred, tf.bfloat16)
    loss = keypoint_loss(pred_bf16, target, weights)
    assert loss.dtype == tf.float32
    expected = _numpy_joints_mse(tf.cast(pred_bf16, tf.float32).numpy(), target, weights)
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    targets = {"heatmaps": target, "heatmap_weights": weights}
    total, _, _ = pose_loss({"heatmaps": tf.cast(pred, tf.float16)}, targets)
    assert total.dtype == tf.float32


def test_loss_inside_xla_function_matches_eager():
    rng = np.random.default_rng(5)
    pred = tf.constant(rng.normal(size=(2, 4, 4, 3)).astype(np.float32))
    target = tf.constant(rng.uniform(size=(2, 4, 4, 3)).astype(np.float32))
    weights = tf.constant(rng.integers(0, 2, (2, 3)).astype(np.float32))
    eager = keypoint_loss(pred, target, weights)
    xla = tf.function(keypoint_loss, jit_compile=True)(pred, target, weights)
    assert float(xla) == pytest.approx(float(eager), rel=1e-6)


def test_shape_errors():
    with pytest.raises(ValueError, match="equal shapes"):
        keypoint_loss(np.zeros((1, 4, 4, 3)), np.zeros((1, 4, 4, 2)), np.ones((1, 3)))
    with pytest.raises(ValueError, match=r"weights must be \[B, 3\]"):
        keypoint_loss(np.zeros((1, 4, 4, 3)), np.zeros((1, 4, 4, 3)), np.ones((1, 2)))
    with pytest.raises(ValueError, match="targets lack"):
        pose_loss(
            {"heatmaps": np.zeros((1, 2, 2, 1)), "skeletal_heatmaps": np.zeros((1, 2, 2, 1))},
            {"heatmaps": np.zeros((1, 2, 2, 1)), "heatmap_weights": np.ones((1, 1))},
        )
