"""MPII PCKh against a hand-computed case, an official-style numpy reference and the .mat reader."""

import numpy as np
import pytest
from scipy.io import savemat

from skelpose_tf.evaluation.mpii_pckh import compute_pckh, read_mpii_gt_mat
from skelpose_tf.keypoints import get_keypoint_set

MPII = get_keypoint_set("mpii")

# gt_valid.mat's joint names, in the file's (official) order.
_MAT_NAMES = ("rank", "rkne", "rhip", "lhip", "lkne", "lank", "pelv", "thor", "neck", "head",
              "rwri", "relb", "rsho", "lsho", "lelb", "lwri")  # fmt: skip


def _hand_case():
    """Two people; see test_hand_computed_pckh for the expected values."""
    rng = np.random.default_rng(1)
    joints = rng.uniform(0, 200, (2, 16, 2))
    # Head sizes: 0.6 * |(30, 40)| = 30 px and 0.6 * |(6, 8)| = 6 px.
    head_boxes = np.array([[[0, 0], [30, 40]], [[10, 10], [16, 18]]], np.float64)
    offsets = np.zeros((2, 16, 2))
    missing = np.zeros((2, 16), bool)
    at = MPII.index
    offsets[0, at("head_top")] = (14, 0)  # 14/30 = 0.467: right at 0.5, wrong at 0.1
    offsets[0, at("l_wrist")] = (16, 0)  # 16/30 = 0.533: wrong (right with a factor of 1)
    offsets[0, at("pelvis")] = (100, 0)  # wrong, excluded from the mean
    offsets[0, at("thorax")] = (0, 100)  # wrong, excluded from the mean
    offsets[0, at("l_knee")] = (3.15, 0)  # 0.105: wrong at 0.1, right at the official 0.11
    offsets[1, at("head_top")] = (3.5, 0)  # 3.5/6 = 0.583: wrong (right with a factor of 1)
    offsets[1, at("l_wrist")] = (0, 2.9)  # 0.483: right at 0.5, wrong at 0.1
    offsets[1, at("r_wrist")] = (50, 50)  # missing: ignored
    missing[1, at("r_wrist")] = True
    offsets[1, at("upper_neck")] = (1, 0)  # 0.167: right at 0.5, wrong at 0.1 and 0.11
    return joints + offsets, joints, missing, head_boxes


def test_hand_computed_pckh():
    predictions, joints, missing, head_boxes = _hand_case()
    result = compute_pckh(predictions, joints, missing, head_boxes, MPII)
    # Head is head_top only: 1 of 2. Wrist: l_wrist 1/2, r_wrist 1/1 (one missing) -> 0.75.
    assert result.groups == pytest.approx({
        "Head": 0.5, "Shoulder": 1.0, "Elbow": 1.0, "Wrist": 0.75, "Hip": 1.0, "Knee": 1.0,
        "Ankle": 1.0,
    })  # fmt: skip
    # 14 joints (no pelvis, thorax) x 2 people - 1 missing = 27 counted.
    assert result.mean == pytest.approx(25 / 27)
    # l_knee of person 0 lies at 0.105 head sizes: right at the official 0.11 only.
    assert result.mean_at_0_1 == pytest.approx(22 / 27)
    assert result.mean_at_exact_0_1 == pytest.approx(21 / 27)
    assert result.joint_counts["r_wrist"] == 1 and result.joint_counts["pelvis"] == 2
    assert result.per_joint["pelvis"] == 0.5 and result.per_joint["upper_neck"] == 1.0


def test_head_size_factor_is_applied():
    predictions, joints, missing, head_boxes = _hand_case()
    result = compute_pckh(predictions, joints, missing, head_boxes, MPII, head_size_factor=1.0)
    assert result.mean == pytest.approx(1.0)
    assert result.groups["Head"] == 1.0 and result.groups["Wrist"] == 1.0


def test_result_dict_and_table():
    result = compute_pckh(*_hand_case(), MPII)
    values = result.to_dict()
    assert values["Mean"] == pytest.approx(25 / 27) and values["Head"] == 0.5
    assert values["Mean@0.1 (thr 0.11)"] == pytest.approx(22 / 27)
    assert values["Mean@0.1 (exact)"] == pytest.approx(21 / 27)
    lines = str(result).splitlines()
    assert lines[-2].split("  ")[-2:] == ["Mean@0.1 (thr 0.11)", "Mean@0.1 (exact)"]
    assert lines[-1].split()[1] == "50.0"  # Head
    assert lines[-1].split()[-3:] == ["92.6", "81.5", "77.8"]  # 25, 22 and 21 of 27


def test_mean_at_0_1_uses_the_official_threshold_0_11():
    # One person, head size 0.6 * |(30, 40)| = 30 px; 14 joints count (no pelvis, thorax).
    # Errors: l_ankle 3.2 px = 0.1067 and r_ankle 3.29 px = 0.1097 head sizes (in (0.10, 0.11]),
    # l_hip 2.9 px = 0.0967 (right at both), r_hip 3.4 px = 0.113 (wrong at both).
    joints = np.full((1, 16, 2), 100.0)
    predictions = joints.copy()
    at = MPII.index
    predictions[0, at("l_ankle")] += (3.2, 0)
    predictions[0, at("r_ankle")] += (0, 3.29)
    predictions[0, at("l_hip")] += (2.9, 0)
    predictions[0, at("r_hip")] += (0, 3.4)
    head_boxes = np.array([[[0, 0], [30, 40]]], np.float64)
    result = compute_pckh(predictions, joints, np.zeros((1, 16), bool), head_boxes, MPII)
    assert result.mean_at_0_1 == pytest.approx(13 / 14)  # official: all but r_hip
    assert result.mean_at_exact_0_1 == pytest.approx(11 / 14)  # also misses both ankles
    assert result.mean == 1.0


def _official_style_pckh(predictions, joints, missing, head_boxes):
    """The official HRNet `mpii.py::evaluate` computation, on its transposed array layout."""
    pos_pred_src = np.transpose(predictions, [1, 2, 0])
    pos_gt_src = np.transpose(joints, [1, 2, 0])
    headboxes_src = np.transpose(head_boxes, [1, 2, 0])
    jnt_visible = 1 - missing.T.astype(int)
    uv_err = np.linalg.norm(pos_pred_src - pos_gt_src, axis=1)
    headsizes = np.linalg.norm(headboxes_src[1, :, :] - headboxes_src[0, :, :], axis=0) * 0.6
    scaled_uv_err = np.divide(uv_err, headsizes * np.ones((len(uv_err), 1))) * jnt_visible
    jnt_count = np.sum(jnt_visible, axis=1)
    pck = lambda t: 100.0 * np.sum((scaled_uv_err <= t) * jnt_visible, axis=1) / jnt_count
    pckh = np.ma.array(pck(0.5), mask=False)
    pckh.mask[6:8] = True
    jnt_count = np.ma.array(jnt_count, mask=False)
    jnt_count.mask[6:8] = True
    jnt_ratio = jnt_count / np.sum(jnt_count).astype(np.float64)
    row11 = pck(np.arange(0, 0.5 + 0.01, 0.01)[11])
    pair = lambda a, b: 0.5 * (pckh[a] + pckh[b])
    return {
        "Head": pckh[9], "Shoulder": pair(13, 12), "Elbow": pair(14, 11), "Wrist": pair(15, 10),
        "Hip": pair(3, 2), "Knee": pair(4, 1), "Ankle": pair(5, 0),
        "Mean": np.sum(pckh * jnt_ratio), "Mean@0.1": np.sum(row11 * jnt_ratio),
    }  # fmt: skip


def test_matches_official_style_computation_on_random_data():
    rng = np.random.default_rng(7)
    n = 60
    joints = rng.uniform(0, 300, (n, 16, 2))
    corner = rng.uniform(0, 300, (n, 2))
    head_boxes = np.stack([corner, corner + rng.uniform(5, 40, (n, 2))], axis=1)
    head_sizes = 0.6 * np.linalg.norm(head_boxes[:, 1] - head_boxes[:, 0], axis=-1)
    angle = rng.uniform(0, 2 * np.pi, (n, 16))
    radius = rng.uniform(0, 0.8, (n, 16)) * head_sizes[:, None]
    predictions = joints + np.stack([np.cos(angle), np.sin(angle)], -1) * radius[..., None]
    missing = rng.uniform(size=(n, 16)) < 0.15
    official = _official_style_pckh(predictions, joints, missing, head_boxes)
    result = compute_pckh(predictions, joints, missing, head_boxes, MPII)
    for name, value in result.groups.items():
        assert 100 * value == pytest.approx(float(official[name]), abs=1e-9), name
    assert 100 * result.mean == pytest.approx(float(official["Mean"]), abs=1e-9)
    assert 100 * result.mean_at_0_1 == pytest.approx(float(official["Mean@0.1"]), abs=1e-9)


def test_reads_gt_valid_mat_by_joint_name(tmp_path):
    rng = np.random.default_rng(3)
    n = 4
    joints = rng.uniform(0, 100, (n, 16, 2))
    missing = rng.uniform(size=(n, 16)) < 0.3
    head_boxes = rng.uniform(0, 100, (n, 2, 2))
    # The file lists its joints in reverse: the reader must match them by name.
    file_order = list(range(16))[::-1]
    names = np.empty((1, 16), object)
    names[0, :] = [_MAT_NAMES[j] for j in file_order]
    path = str(tmp_path / "gt_valid.mat")
    savemat(path, {
        "dataset_joints": names,
        "jnt_missing": missing[:, file_order].T.astype(np.float64),
        "pos_gt_src": np.transpose(joints[:, file_order] + 1.0, (1, 2, 0)),
        "headboxes_src": np.transpose(head_boxes + 1.0, (1, 2, 0)),
    })  # fmt: skip
    gt = read_mpii_gt_mat(path, MPII)
    np.testing.assert_allclose(gt.joints, joints, atol=1e-12)
    np.testing.assert_array_equal(gt.missing, missing)
    np.testing.assert_allclose(gt.head_boxes, head_boxes, atol=1e-12)


def test_bad_inputs_give_clear_errors(tmp_path):
    predictions, joints, missing, head_boxes = _hand_case()
    empty_head = head_boxes.copy()
    empty_head[1, 1] = empty_head[1, 0]
    with pytest.raises(ValueError, match="empty head box.*person 1"):
        compute_pckh(predictions, joints, missing, empty_head, MPII)
    with pytest.raises(ValueError, match=r"predictions and joints must both be \[N, K, 2\]"):
        compute_pckh(predictions[:, :15], joints, missing, head_boxes, MPII)
    with pytest.raises(ValueError, match="have 17 joints but keypoint set 'mpii' has 16"):
        compute_pckh(np.zeros((2, 17, 2)), np.zeros((2, 17, 2)), np.zeros((2, 17), bool),
                     head_boxes, MPII)  # fmt: skip
    with pytest.raises(ValueError, match="'coco' lacks head_top, pelvis, thorax"):
        compute_pckh(np.zeros((2, 17, 2)), np.zeros((2, 17, 2)), np.zeros((2, 17), bool),
                     head_boxes, get_keypoint_set("coco"))  # fmt: skip
    path = str(tmp_path / "partial.mat")
    savemat(path, {"jnt_missing": np.zeros((16, 1))})
    with pytest.raises(ValueError, match="lacks field.*dataset_joints"):
        read_mpii_gt_mat(path, MPII)
