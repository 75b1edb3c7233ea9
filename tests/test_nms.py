"""OKS and greedy OKS-NMS against hand-computed cases."""

import math

import numpy as np
import pytest

from skelpose_tf.evaluation.nms import oks, oks_nms
from skelpose_tf.keypoints import get_keypoint_set

SIGMAS = (0.1, 0.2)


def test_oks_matches_hand_computed_value():
    # Keypoint 0 is 5 px away (3-4-5), keypoint 1 is exact. Mean area (100 + 200) / 2 = 150.
    # e0 = 25 / (2 * 0.1)^2 / 150 / 2 = 2.0833..., OKS = (exp(-e0) + exp(0)) / 2.
    pose_a = np.array([[0.0, 0.0], [10.0, 10.0]])
    pose_b = np.array([[[3.0, 4.0], [10.0, 10.0]]])
    value = oks(pose_a, pose_b, 100.0, [200.0], SIGMAS)
    assert value.shape == (1,)
    assert value[0] == pytest.approx(0.5622572357220615, abs=1e-12)
    assert value[0] == pytest.approx((math.exp(-25 / 0.04 / 150 / 2) + 1) / 2, abs=1e-12)


def test_oks_ignores_score_column_and_uses_every_keypoint():
    pose_a = np.array([[0.0, 0.0, 0.9], [10.0, 10.0, 0.01]])
    pose_b = np.array([[[3.0, 4.0, 0.0], [10.0, 10.0, 0.0]], [[0.0, 0.0, 1.0], [10.0, 10.0, 1.0]]])
    value = oks(pose_a, pose_b, 100.0, [200.0, 100.0], SIGMAS)
    np.testing.assert_allclose(value, [0.5622572357220615, 1.0], atol=1e-12)


def test_oks_rejects_wrong_sigma_count():
    with pytest.raises(ValueError, match="one sigma per keypoint"):
        oks(np.zeros((2, 2)), np.zeros((1, 2, 2)), 1.0, [1.0], (0.1, 0.1, 0.1))


def _pose(offset, scale=50.0):
    """A COCO-sized pose: 17 keypoints spread over a `scale`-pixel square, shifted by offset."""
    t = np.linspace(0.0, 1.0, 17)
    return np.stack([t, t**2], axis=-1) * scale + np.asarray(offset, np.float64)


def test_near_duplicates_keep_only_the_best_scored():
    sigmas = get_keypoint_set("coco").oks_sigmas
    keypoints = np.stack([_pose((0, 0)), _pose((0.5, 0.2))])
    kept = oks_nms(keypoints, scores=[0.6, 0.8], areas=[2500.0, 2500.0], sigmas=sigmas)
    np.testing.assert_array_equal(kept, [1])


def test_distant_poses_are_all_kept_in_score_order():
    sigmas = get_keypoint_set("coco").oks_sigmas
    keypoints = np.stack([_pose((0, 0)), _pose((200, 0)), _pose((0, 300))])
    kept = oks_nms(keypoints, scores=[0.5, 0.9, 0.7], areas=[2500.0] * 3, sigmas=sigmas)
    np.testing.assert_array_equal(kept, [1, 2, 0])


def test_a_suppressed_pose_suppresses_nothing():
    # A (best) overlaps B; B overlaps C; A does not overlap C. Greedy NMS keeps A and C.
    sigmas = np.full(17, 0.05)
    keypoints = np.stack([_pose((0, 0)), _pose((2.0, 0)), _pose((4.0, 0))])
    areas = np.full(3, 2500.0)
    pair_oks = lambda i, j: oks(keypoints[i], keypoints[j:j + 1], areas[i], [areas[j]], sigmas)[0]
    assert pair_oks(0, 1) > 0.9 and pair_oks(1, 2) > 0.9 and pair_oks(0, 2) <= 0.9
    kept = oks_nms(keypoints, scores=[0.9, 0.8, 0.7], areas=areas, sigmas=sigmas)
    np.testing.assert_array_equal(kept, [0, 2])


def test_threshold_decides_suppression():
    sigmas = np.full(17, 0.05)
    keypoints = np.stack([_pose((0, 0)), _pose((2.0, 0))])
    value = oks(keypoints[0], keypoints[1:], 2500.0, [2500.0], sigmas)[0]
    assert len(oks_nms(keypoints, [1.0, 0.5], [2500.0] * 2, sigmas, threshold=value)) == 2
    assert len(oks_nms(keypoints, [1.0, 0.5], [2500.0] * 2, sigmas, threshold=value - 1e-6)) == 1


def test_empty_input_keeps_nothing():
    kept = oks_nms(np.zeros((0, 17, 2)), [], [], get_keypoint_set("coco").oks_sigmas)
    assert kept.shape == (0,)
