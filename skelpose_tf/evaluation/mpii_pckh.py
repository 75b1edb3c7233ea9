"""MPII PCKh, as the official HRNet evaluation computes it (`lib/dataset/mpii.py::evaluate`).

A joint is correct when its error, divided by the person's head size, is at most the
threshold (0.5 for PCKh@0.5):

    head size = 0.6 x || head box corner 2 - corner 1 ||_2      (SC_BIAS = 0.6)
    correct   = || prediction - ground truth ||_2 / head size <= threshold

Only joints that are not missing in the ground truth count. Reported, as the official table:

- per joint group, as percentages of correct joints: Head (the `head_top` joint only, the
  official `head` index), Shoulder, Elbow, Wrist, Hip, Knee, Ankle (each the mean of the left
  and right joints' PCKh);
- Mean: correct / counted over every joint except pelvis and thorax (the official mean
  weighted by joint counts; `upper_neck` counts here though no group shows it);
- Mean@0.1 (thr 0.11): the same mean at the official code's "Mean@0.1" threshold, which is
  row 11 of `np.arange(0, 0.51, 0.01)`, i.e. **0.11**. The paper's PCKh@0.1 (Tables II-III)
  comes from that code, so this is the paper-comparable value: `PckhResult.mean_at_0_1`, the
  headline and the ablation's "PCKh@0.1 (official, thr 0.11)" column;
- Mean@0.1 (exact): the same mean at threshold exactly 0.1, `PckhResult.mean_at_exact_0_1`,
  printed beside it. It is lower or equal (joints with error in (0.1, 0.11] head sizes count
  only in the official value).

Coordinates are 0-based pixels (pixel centres at integers) in the original image; the error
and the head size are both differences, so the same values come out for 1-based inputs as
long as predictions and ground truth agree. `read_mpii_gt_mat` reads the official
`annot/gt_valid.mat` (1-based, MATLAB) into 0-based arrays.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from skelpose_tf.evaluation import report
from skelpose_tf.keypoints import MPII_MAT_JOINT_NAMES

HEAD_SIZE_FACTOR = 0.6  # official SC_BIAS
PCKH_THRESHOLD = 0.5
# Row 11 of the official threshold grid np.arange(0, 0.51, 0.01): 0.11, reported as "Mean@0.1".
OFFICIAL_MEAN_AT_0_1_THRESHOLD = float(np.arange(0.0, 0.51, 0.01)[11])
EXACT_MEAN_AT_0_1_THRESHOLD = 0.1

# Table rows and the keypoint names they average (names of `skelpose_tf.keypoints.MPII`).
PCKH_GROUPS = (
    ("Head", ("head_top",)),
    ("Shoulder", ("l_shoulder", "r_shoulder")),
    ("Elbow", ("l_elbow", "r_elbow")),
    ("Wrist", ("l_wrist", "r_wrist")),
    ("Hip", ("l_hip", "r_hip")),
    ("Knee", ("l_knee", "r_knee")),
    ("Ankle", ("l_ankle", "r_ankle")),
)
EXCLUDED_FROM_MEAN = ("pelvis", "thorax")

# Joint names in gt_valid.mat's `dataset_joints` -> keypoint names of the MPII set.
_MAT_JOINT_NAMES = {short: name for name, short in MPII_MAT_JOINT_NAMES.items()}


@dataclasses.dataclass(frozen=True)
class MpiiGroundTruth:
    """MPII validation ground truth in 0-based pixels.

    Attributes:
        joints: float64 [N, K, 2], (x, y) per person and joint, in the keypoint set's order.
        missing: bool [N, K], True where the joint is not annotated.
        head_boxes: float64 [N, 2, 2], head box corners ((x1, y1), (x2, y2)).
    """

    joints: np.ndarray
    missing: np.ndarray
    head_boxes: np.ndarray


def _as_text(value) -> str:
    """Unwrap scipy.io.loadmat's nested cell/char arrays down to one string."""
    while isinstance(value, np.ndarray):
        if value.size != 1:
            return "".join(str(v) for v in value.reshape(-1))
        value = value.reshape(-1)[0]
    return str(value)


def read_mpii_gt_mat(path: str, keypoint_set) -> MpiiGroundTruth:
    """Read an official `gt_valid.mat`-style file (1-based MATLAB) as 0-based arrays.

    The file holds `dataset_joints` (16 joint names: rank, rkne, ..., head, ..., lwri),
    `jnt_missing` [16, N], `pos_gt_src` [16, 2, N] and `headboxes_src` [2, 2, N]. Joints are
    matched to `keypoint_set` (the MPII set) by name and 1 is subtracted from every coordinate.
    People keep the file's order (in the official files, the order of `annot/valid.json`), so
    predictions must be listed in that order too.
    """
    from scipy.io import loadmat

    try:
        content = loadmat(path)
    except (OSError, ValueError) as error:
        raise ValueError(f"Cannot read MPII ground truth {path}: {error}") from None
    fields = ("dataset_joints", "jnt_missing", "pos_gt_src", "headboxes_src")
    missing_fields = [name for name in fields if name not in content]
    if missing_fields:
        raise ValueError(f"{path} lacks field(s) {', '.join(missing_fields)}.")
    file_names = [_as_text(v) for v in np.asarray(content["dataset_joints"], object).reshape(-1)]
    unknown = [name for name in file_names if name not in _MAT_JOINT_NAMES]
    if unknown:
        raise ValueError(f"{path}: unknown joint name(s) in dataset_joints: {unknown}")
    file_index = {_MAT_JOINT_NAMES[name]: i for i, name in enumerate(file_names)}
    absent = [name for name in keypoint_set.keypoint_names if name not in file_index]
    if absent:
        raise ValueError(f"{path} has no joint(s) {absent} of keypoint set {keypoint_set.name!r}.")
    order = [file_index[name] for name in keypoint_set.keypoint_names]
    joints = np.transpose(np.asarray(content["pos_gt_src"], np.float64), (2, 0, 1))[:, order] - 1.0
    missing = np.asarray(content["jnt_missing"]).T[:, order].astype(bool)
    head_boxes = np.transpose(np.asarray(content["headboxes_src"], np.float64), (2, 0, 1)) - 1.0
    return MpiiGroundTruth(joints=joints, missing=missing, head_boxes=head_boxes)


def normalized_errors(predictions, joints, head_boxes, head_size_factor=HEAD_SIZE_FACTOR):
    """Joint errors divided by the head size.

    Args:
        predictions: float [N, K, 2] (a third score column is ignored), 0-based pixels.
        joints: float [N, K, 2], ground truth in the same pixels.
        head_boxes: float [N, 2, 2], head box corners ((x1, y1), (x2, y2)).
        head_size_factor: head size = factor x the head box diagonal (official 0.6).

    Returns:
        float64 [N, K].
    """
    predictions = np.asarray(predictions, np.float64)[..., :2]
    joints = np.asarray(joints, np.float64)
    head_boxes = np.asarray(head_boxes, np.float64)
    if predictions.shape != joints.shape or joints.ndim != 3 or joints.shape[-1] != 2:
        raise ValueError(
            f"predictions and joints must both be [N, K, 2]. Received shapes "
            f"{predictions.shape} and {joints.shape}"
        )
    if head_boxes.shape != (joints.shape[0], 2, 2):
        raise ValueError(
            f"head_boxes must be [N, 2, 2] = {(joints.shape[0], 2, 2)}. "
            f"Received shape {head_boxes.shape}"
        )
    head_sizes = head_size_factor * np.linalg.norm(head_boxes[:, 1] - head_boxes[:, 0], axis=-1)
    bad = np.flatnonzero(~(head_sizes > 0))
    if bad.size:
        raise ValueError(
            f"{bad.size} person(s) have an empty head box (zero head size), e.g. person "
            f"{bad[0]} with corners {head_boxes[bad[0]].tolist()}."
        )
    return np.linalg.norm(predictions - joints, axis=-1) / head_sizes[:, None]


@dataclasses.dataclass(frozen=True)
class PckhResult:
    """PCKh values as fractions in [0, 1] (the report prints percentages).

    Attributes:
        groups: Head, Shoulder, Elbow, Wrist, Hip, Knee, Ankle -> PCKh@threshold.
        mean: PCKh@threshold over every joint except pelvis and thorax.
        mean_at_0_1: the same mean at the official code's "Mean@0.1" threshold, 0.11
            (`OFFICIAL_MEAN_AT_0_1_THRESHOLD`): the paper's PCKh@0.1, comparable with
            published numbers.
        mean_at_exact_0_1: the same mean at threshold exactly 0.1.
        per_joint: keypoint name -> PCKh@threshold (NaN where no joint is annotated).
        joint_counts: keypoint name -> number of annotated joints.
        threshold: the PCKh threshold of `groups`, `mean` and `per_joint` (0.5).
    """

    groups: dict
    mean: float
    mean_at_0_1: float
    mean_at_exact_0_1: float
    per_joint: dict
    joint_counts: dict
    threshold: float

    def table_values(self) -> dict:
        """The ten table columns: the groups, "Mean", "Mean@0.1 (thr 0.11)" (official,
        paper-comparable) and "Mean@0.1 (exact)"."""
        return {**self.groups, "Mean": self.mean, report.MEAN_AT_0_1_COLUMN: self.mean_at_0_1,
                report.MEAN_AT_EXACT_0_1_COLUMN: self.mean_at_exact_0_1}

    def __str__(self) -> str:
        return report.format_pckh_table(self.table_values(), title=f"MPII PCKh@{self.threshold:g}")

    def to_dict(self) -> dict:
        """A JSON-serialisable dict (NaN values become None)."""
        clean = lambda v: None if np.isnan(v) else float(v)
        return {
            **{name: clean(value) for name, value in self.table_values().items()},
            "threshold": self.threshold,
            "per_joint": {name: clean(value) for name, value in self.per_joint.items()},
            "joint_counts": dict(self.joint_counts),
        }


def lacking_pckh_joints(keypoint_set) -> list:
    """The MPII joints PCKh reads (its groups and the joints left out of the mean) that
    `keypoint_set` does not name, in PCKh order."""
    needed = [name for _, names in PCKH_GROUPS for name in names] + list(EXCLUDED_FROM_MEAN)
    return [name for name in dict.fromkeys(needed) if name not in keypoint_set.keypoint_names]


def compute_pckh(
    predictions,
    joints,
    missing,
    head_boxes,
    keypoint_set,
    threshold: float = PCKH_THRESHOLD,
    head_size_factor: float = HEAD_SIZE_FACTOR,
) -> PckhResult:
    """PCKh per joint group and mean, as the official MPII table.

    Args:
        predictions: float [N, K, 2] (a third score column is ignored), 0-based pixels.
        joints: float [N, K, 2], ground truth, 0-based pixels.
        missing: bool [N, K], True where the ground truth joint is not annotated (ignored).
        head_boxes: float [N, 2, 2], head box corners ((x1, y1), (x2, y2)).
        keypoint_set: the MPII `KeypointSet` (groups and exclusions are found by name).
        threshold: the PCKh threshold (0.5).
        head_size_factor: head size = factor x head box diagonal (official SC_BIAS 0.6).

    Returns:
        A `PckhResult`. A group whose joints are never annotated is NaN (the official code
        divides by zero there); a group with one annotated side takes that side's value.
    """
    lacking = lacking_pckh_joints(keypoint_set)
    if lacking:
        raise ValueError(
            f"PCKh needs the MPII joint names; keypoint set {keypoint_set.name!r} lacks "
            f"{', '.join(lacking)}."
        )
    errors = normalized_errors(predictions, joints, head_boxes, head_size_factor)
    missing = np.asarray(missing, bool)
    if missing.shape != errors.shape:
        raise ValueError(f"missing must be [N, K] = {errors.shape}. Received shape {missing.shape}")
    if errors.shape[1] != keypoint_set.num_keypoints:
        raise ValueError(
            f"Predictions have {errors.shape[1]} joints but keypoint set "
            f"{keypoint_set.name!r} has {keypoint_set.num_keypoints}."
        )
    annotated = ~missing
    counts = annotated.sum(axis=0)
    in_mean = np.ones(keypoint_set.num_keypoints, bool)
    in_mean[[keypoint_set.index(name) for name in EXCLUDED_FROM_MEAN]] = False

    def correct_at(t):
        return ((errors <= t) & annotated).sum(axis=0)

    def mean_at(t):
        total = counts[in_mean].sum()
        return float(correct_at(t)[in_mean].sum() / total) if total else float("nan")

    with np.errstate(invalid="ignore", divide="ignore"):
        per_joint = correct_at(threshold) / counts
    per_joint = np.where(counts > 0, per_joint, np.nan)
    groups = {}
    for label, names in PCKH_GROUPS:
        values = per_joint[[keypoint_set.index(name) for name in names]]
        values = values[~np.isnan(values)]
        groups[label] = float(np.mean(values)) if values.size else float("nan")
    return PckhResult(
        groups=groups,
        mean=mean_at(threshold),
        mean_at_0_1=mean_at(OFFICIAL_MEAN_AT_0_1_THRESHOLD),
        mean_at_exact_0_1=mean_at(EXACT_MEAN_AT_0_1_THRESHOLD),
        per_joint=dict(zip(keypoint_set.keypoint_names, per_joint.tolist())),
        joint_counts=dict(zip(keypoint_set.keypoint_names, counts.tolist())),
        threshold=float(threshold),
    )
