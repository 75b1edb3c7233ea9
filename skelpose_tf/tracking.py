"""Track ids for the people of a video: match each frame's poses to the previous frame's.

`PoseTracker.update(persons)` gives every `PersonPose` of a frame a `track_id`, the way mmpose's
pose tracker does (`_track_by_oks` / `_track_by_iou`), with an optimal assignment instead of
its greedy one:

1. Similarity of every (track, person) pair. When both poses are reliable (at least
   `min_keypoints` keypoints score above `keypoint_threshold` in both), it is their OKS
   (`evaluation.nms.oks`: the keypoint set's OKS sigmas) over the keypoints confident in both,
   with each pose's area the area `w * h` of its box. Otherwise (a pose the model could not
   see, e.g. someone behind a pole) it is the IoU of the two boxes.
2. The assignment that maximises the summed similarity
   (`scipy.optimize.linear_sum_assignment`); a pair is only a match when its similarity is
   above the threshold of its kind (`oks_threshold` or `iou_threshold`).
3. A person without a match starts a new track (ids 1, 2, 3, ... never reused). A track
   without a match is kept for `max_missed` frames (a detector that misses someone for a frame
   or a person briefly hidden keeps the id), compared against its last pose, then dropped.

Coordinates: keypoints and boxes in image pixels (`person_pose` conventions).

Box-only trackers (ByteTrack in `trackers`, which `supervision` now points to) were declined:
they need a Kalman motion model tuned for detector boxes, ignore the keypoints that tell two
overlapping people apart, and add dependencies (the `trackers` wheel pulls in the full
`opencv-python`, which clashes with our headless OpenCV); this matching is ~100 lines.

Example:
    tracker = PoseTracker(COCO)
    for persons in frames:        # list[PersonPose] per frame
        tracker.update(persons)   # sets person.track_id
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.optimize import linear_sum_assignment

from skelpose_tf.evaluation.nms import oks
from skelpose_tf.keypoints import KeypointSet


def box_iou(box_a, boxes_b) -> np.ndarray:
    """IoU of one `[x, y, w, h]` box with each of N boxes `[N, 4]`; float64 [N]."""
    a = np.asarray(box_a, np.float64).reshape(4)
    b = np.asarray(boxes_b, np.float64).reshape(-1, 4)
    width = np.minimum(a[0] + a[2], b[:, 0] + b[:, 2]) - np.maximum(a[0], b[:, 0])
    height = np.minimum(a[1] + a[3], b[:, 1] + b[:, 3]) - np.maximum(a[1], b[:, 1])
    inter = np.clip(width, 0, None) * np.clip(height, 0, None)
    union = a[2] * a[3] + b[:, 2] * b[:, 3] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


@dataclasses.dataclass
class _Track:
    track_id: int
    keypoints: np.ndarray  # [K, 3] of the last matched pose
    box: np.ndarray  # [4]
    missed: int = 0


class PoseTracker:
    """Gives people track ids across consecutive frames (module docstring).

    Args:
        keypoint_set: its `oks_sigmas` weigh the keypoints.
        oks_threshold: a pair of reliable poses matches when their OKS is above this (mmpose's
            default tracking threshold, 0.3).
        iou_threshold: a pair with an unreliable pose matches when the box IoU is above this.
        keypoint_threshold: a keypoint counts for OKS when its score is above this in both poses.
        min_keypoints: fewer shared confident keypoints than this make the pair "unreliable",
            matched by box IoU.
        max_missed: frames a track survives without a match.
    """

    def __init__(self, keypoint_set: KeypointSet, *, oks_threshold: float = 0.3,
                 iou_threshold: float = 0.3, keypoint_threshold: float = 0.3,
                 min_keypoints: int = 4, max_missed: int = 3):
        for name, value in (("oks_threshold", oks_threshold), ("iou_threshold", iou_threshold)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1). Received: {name}={value}")
        if max_missed < 0:
            raise ValueError(f"max_missed must be >= 0. Received: max_missed={max_missed}")
        self.keypoint_set = keypoint_set
        self.sigmas = np.asarray(keypoint_set.oks_sigmas, np.float64)
        self.oks_threshold = float(oks_threshold)
        self.iou_threshold = float(iou_threshold)
        self.keypoint_threshold = float(keypoint_threshold)
        self.min_keypoints = int(min_keypoints)
        self.max_missed = int(max_missed)
        self.reset()

    def reset(self):
        """Forget every track (a new video); ids start again at 1."""
        self._tracks: list[_Track] = []
        self._next_id = 1

    @property
    def active_ids(self) -> list:
        """Ids of the tracks kept now (matched in the last `max_missed + 1` frames)."""
        return [track.track_id for track in self._tracks]

    def similarity(self, keypoints_a, box_a, keypoints_b, box_b) -> tuple:
        """(similarity, kind) of two poses: ("oks", OKS over shared confident keypoints) or
        ("iou", box IoU) when they share fewer than `min_keypoints` confident keypoints."""
        shared = ((keypoints_a[:, 2] > self.keypoint_threshold)
                  & (keypoints_b[:, 2] > self.keypoint_threshold))
        if shared.sum() < self.min_keypoints:
            return float(box_iou(box_a, box_b[None])[0]), "iou"
        area_a = float(box_a[2] * box_a[3])
        area_b = float(box_b[2] * box_b[3])
        value = oks(keypoints_a[shared, :2], keypoints_b[None, shared, :2], area_a, [area_b],
                    self.sigmas[shared])
        return float(value[0]), "oks"

    def update(self, persons: list) -> list:
        """Set `track_id` on each `PersonPose` of the next frame (in place); returns `persons`."""
        tracks = self._tracks
        gain = np.zeros((len(tracks), len(persons)))
        for t, track in enumerate(tracks):
            for p, person in enumerate(persons):
                value, kind = self.similarity(track.keypoints, track.box, person.keypoints,
                                              person.box)
                threshold = self.oks_threshold if kind == "oks" else self.iou_threshold
                gain[t, p] = value if value > threshold else 0.0
        matched_tracks, matched_persons = set(), set()
        if gain.size:
            rows, cols = linear_sum_assignment(gain, maximize=True)
            for t, p in zip(rows, cols):
                if gain[t, p] > 0.0:
                    persons[p].track_id = tracks[t].track_id
                    tracks[t].keypoints = persons[p].keypoints.copy()
                    tracks[t].box = persons[p].box.copy()
                    tracks[t].missed = 0
                    matched_tracks.add(t)
                    matched_persons.add(p)
        kept = []
        for t, track in enumerate(tracks):
            if t not in matched_tracks:
                track.missed += 1
            if track.missed <= self.max_missed:
                kept.append(track)
        for p, person in enumerate(persons):
            if p not in matched_persons:
                person.track_id = self._next_id
                kept.append(_Track(self._next_id, person.keypoints.copy(), person.box.copy()))
                self._next_id += 1
        self._tracks = kept
        return persons
