"""One person's pose in an image: what the Python API, the video runner and the tracker pass around.

Coordinates are **original-image pixels (x, y), 0-based, pixel centres at integers** (the
convention of every keypoint this package returns; `image_prediction.COORDINATES`). Boxes are
COCO bboxes `[x, y, w, h]` with `(x, y)` the top-left pixel edge.

Example:
    person = PersonPose(box=np.array([10, 20, 100, 240], np.float32), score=0.9,
                        keypoints=np.zeros((17, 3), np.float32))
    person.to_coco(image_id=7)  # {"image_id": 7, "category_id": 1, "keypoints": [...], ...}
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class PersonPose:
    """One person.

    Attributes:
        box: float32 [4], `[x, y, w, h]` in image pixels: the person box the pose was predicted
            in (a detector's box, a given box, or one derived from the previous frame's pose).
        score: the person's score: the box score times the mean of the keypoint scores above
            0.2 (`evaluation.coco_metric.rescore_instances`, the official COCO rescoring).
        keypoints: float32 [K, 3], `(x, y, score)` per keypoint, (x, y) in image pixels.
        track_id: the identity across video frames (`tracking`), None for a single image.
        box_score: the detector's score of `box` (1.0 for a given or whole-image box).
    """

    box: np.ndarray
    score: float
    keypoints: np.ndarray
    track_id: int | None = None
    box_score: float = 1.0

    def __post_init__(self):
        self.box = np.asarray(self.box, np.float32).reshape(4)
        self.keypoints = np.asarray(self.keypoints, np.float32)
        if self.keypoints.ndim != 2 or self.keypoints.shape[1] != 3:
            raise ValueError("keypoints must be [K, 3] (x, y, score). "
                             f"Received shape {self.keypoints.shape}.")
        self.score = float(self.score)
        self.box_score = float(self.box_score)

    def to_coco(self, image_id, category_id: int = 1) -> dict:
        """A COCO keypoint result (`pycocotools` `loadRes` layout): keypoints flattened as
        `[x1, y1, s1, ...]` with the keypoint scores in the third slot, as the official code."""
        result = {"image_id": image_id, "category_id": category_id,
                  "keypoints": [round(float(v), 3) for v in self.keypoints.reshape(-1)],
                  "score": round(self.score, 6),
                  "bbox": [round(float(v), 3) for v in self.box]}
        if self.track_id is not None:
            result["track_id"] = int(self.track_id)
        return result


def box_from_keypoints(keypoints, score_threshold: float = 0.3, min_keypoints: int = 3,
                       padding: float = 1.2):
    """The box `[x, y, w, h]` around a pose's confident keypoints, enlarged `padding` times about
    its centre, or None when fewer than `min_keypoints` score above `score_threshold`.

    This is how a video runner follows people between detector frames: the next frame's crop is
    cut around this frame's pose (the crop itself adds `crop_geometry.BOX_PADDING` on top).

    Args:
        keypoints: [K, 3] `(x, y, score)`, image pixels.
    """
    keypoints = np.asarray(keypoints, np.float32)
    confident = keypoints[keypoints[:, 2] > score_threshold, :2]
    if len(confident) < min_keypoints:
        return None
    low, high = confident.min(axis=0), confident.max(axis=0)
    center, size = (low + high) / 2, (high - low) * padding
    return np.asarray([*(center - size / 2), *size], np.float32)
