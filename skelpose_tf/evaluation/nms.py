"""Object keypoint similarity (OKS) between poses and greedy OKS non-maximum suppression.

Both follow the official HRNet code (`lib/nms/nms.py`: `oks_iou`, `oks_nms`) as its COCO
evaluation calls them, in numpy only:

- OKS between pose a and pose b, over all K keypoints (the official call passes no
  `in_vis_thre`, so every keypoint counts, whatever its score):

      OKS = mean_k exp(-e_k),   e_k = d_k^2 / (2 sigma_k)^2 / ((area_a + area_b) / 2 + eps) / 2

  with d_k the pixel distance between the two poses' keypoint k, sigma_k the keypoint set's
  OKS constant (`KeypointSet.oks_sigmas`, e.g. 0.026 for the COCO nose) and eps = 2.2e-16
  (`np.spacing(1)`). The areas are the instances' own areas; the official evaluation uses the
  1.25-padded box area in pixels (prod of scale x 200). Unlike COCOeval's OKS, nothing depends
  on ground truth visibility: both sides are predictions.
- Greedy OKS-NMS: visit the instances by decreasing score, keep the best remaining one and drop
  every remaining instance whose OKS with it is above the threshold (0.9 in the official
  evaluation); repeat until none remain.

Coordinates may be in any pixel space as long as the areas are in the same space squared.
"""

from __future__ import annotations

import numpy as np


def _check_sigmas(sigmas, num_keypoints: int) -> np.ndarray:
    sigmas = np.asarray(sigmas, np.float64).reshape(-1)
    if sigmas.shape[0] != num_keypoints:
        raise ValueError(
            f"OKS needs one sigma per keypoint: got {sigmas.shape[0]} sigmas for "
            f"{num_keypoints} keypoints."
        )
    return sigmas


def oks(keypoints_a, keypoints_b, area_a, areas_b, sigmas) -> np.ndarray:
    """OKS between one pose and each of N other poses (official HRNet `oks_iou`).

    Args:
        keypoints_a: float [K, 2] or [K, 3], (x, y[, score]) in pixels; a score column is
            ignored (every keypoint is used).
        keypoints_b: float [N, K, 2] or [N, K, 3], the same for N poses.
        area_a: the area of pose a, in squared pixels.
        areas_b: float [N], the areas of the N poses.
        sigmas: float [K], per-keypoint OKS constants (`KeypointSet.oks_sigmas`).

    Returns:
        float64 [N], OKS values in [0, 1].

    Example:
        >>> oks(np.zeros((2, 2)), np.zeros((1, 2, 2)), 100.0, [100.0], [0.1, 0.1])
        array([1.])
    """
    keypoints_a = np.asarray(keypoints_a, np.float64)
    keypoints_b = np.asarray(keypoints_b, np.float64)
    if keypoints_a.ndim != 2 or keypoints_a.shape[1] not in (2, 3):
        raise ValueError(
            f"keypoints_a must be [K, 2] or [K, 3]. Received shape {keypoints_a.shape}"
        )
    num_keypoints = keypoints_a.shape[0]
    if keypoints_b.ndim != 3 or keypoints_b.shape[1] != num_keypoints or (
        keypoints_b.shape[2] not in (2, 3)
    ):
        raise ValueError(
            f"keypoints_b must be [N, {num_keypoints}, 2] or [N, {num_keypoints}, 3] to match "
            f"keypoints_a. Received shape {keypoints_b.shape}"
        )
    areas_b = np.asarray(areas_b, np.float64).reshape(-1)
    if areas_b.shape[0] != keypoints_b.shape[0]:
        raise ValueError(
            f"areas_b needs one area per pose: {areas_b.shape[0]} areas for "
            f"{keypoints_b.shape[0]} poses."
        )
    variances = (2.0 * _check_sigmas(sigmas, num_keypoints)) ** 2
    squared_distance = np.sum((keypoints_b[..., :2] - keypoints_a[None, :, :2]) ** 2, axis=-1)
    mean_area = (float(area_a) + areas_b) / 2.0 + np.spacing(1)
    e = squared_distance / variances[None, :] / mean_area[:, None] / 2.0
    return np.mean(np.exp(-e), axis=-1)


def oks_nms(keypoints, scores, areas, sigmas, threshold: float = 0.9) -> np.ndarray:
    """Greedy OKS-NMS over the poses of one image (official HRNet `oks_nms`).

    Args:
        keypoints: float [N, K, 2] or [N, K, 3], (x, y[, score]) in pixels.
        scores: float [N], instance scores (after rescoring); higher is better.
        areas: float [N], instance areas in squared pixels (official: padded box area).
        sigmas: float [K], per-keypoint OKS constants.
        threshold: a pose is dropped when its OKS with a kept pose is above this value.

    Returns:
        int64 [M], indices of the kept poses, in the order they were kept (decreasing score).
        Ties in score are visited in index order (the official code's order among exact
        ties depends on numpy's unstable argsort). Empty for N = 0.
    """
    keypoints = np.asarray(keypoints, np.float64)
    scores = np.asarray(scores, np.float64).reshape(-1)
    areas = np.asarray(areas, np.float64).reshape(-1)
    if keypoints.shape[0] == 0:
        return np.zeros((0,), np.int64)
    if keypoints.ndim != 3 or not scores.shape[0] == areas.shape[0] == keypoints.shape[0]:
        raise ValueError(
            "oks_nms needs keypoints [N, K, 2|3], scores [N] and areas [N] with one N. "
            f"Received shapes {keypoints.shape}, {scores.shape}, {areas.shape}"
        )
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size > 0:
        best, rest = order[0], order[1:]
        keep.append(best)
        overlap = oks(keypoints[best], keypoints[rest], areas[best], areas[rest], sigmas)
        order = rest[overlap <= threshold]
    return np.asarray(keep, np.int64)
