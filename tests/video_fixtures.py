"""Stand-in estimators and helpers for the video tests (test_tracking, test_smoothing,
test_video_prediction).

- `GroundTruthEstimator`: the estimator interface of `video_prediction` (keypoint_set, detect,
  estimate) answered from a `SyntheticVideo`'s ground truth: it recognises which frame it is
  shown (the nearest rendered frame, so decoded MP4 frames work too), "detects" the true boxes
  (minus chosen misses) in a shuffled order, and "estimates" the true keypoints of the person
  whose box overlaps most, plus Gaussian noise drawn from a generator seeded by (seed, frame,
  person): the same person in the same frame always gets the same noise, however it is asked.
  (The real estimator, `skelpose_tf.PoseEstimator`, is tested in test_video_prediction through
  `predict.py --video`.)
- `identities(persons, video, frame)`: which ground-truth person each pose is (nearest keypoints).
"""

from __future__ import annotations


import numpy as np

from skelpose_tf.data.synthetic_video import SyntheticVideo
from skelpose_tf.evaluation.coco_metric import rescore_instances
from skelpose_tf.keypoints import COCO
from skelpose_tf.person_pose import PersonPose
from skelpose_tf.tracking import box_iou

CONFIDENT, UNSURE = 0.9, 0.05  # keypoint scores of labelled / unlabelled ground truth


class GroundTruthEstimator:
    """Ground truth plus seeded noise, in the estimator interface (module docstring).

    Args:
        video: the clip's frames and ground truth.
        noise_px: standard deviation of the keypoint noise in pixels.
        seed: the noise's seed.
        missed: (frame, person) pairs the detector does not report.
    """

    keypoint_set = COCO

    def __init__(self, video: SyntheticVideo, noise_px=1.5, seed=0, missed=()):
        self.video, self.noise_px, self.seed = video, float(noise_px), seed
        self.missed = set(missed)
        self.detect_calls = []  # frame index of each detector call
        self._frames = video.frames.astype(np.int16)

    def frame_index(self, image) -> int:
        difference = np.abs(self._frames - np.asarray(image, np.int16)[None]).mean(axis=(1, 2, 3))
        return int(np.argmin(difference))

    def noisy_pose(self, frame, person) -> np.ndarray:
        """float32 [K, 3]: the true keypoints plus noise; scores CONFIDENT where labelled."""
        truth = self.video.keypoints[frame, person]
        rng = np.random.default_rng([self.seed, frame, person])
        keypoints = np.zeros_like(truth)
        keypoints[:, :2] = truth[:, :2] + rng.normal(0.0, self.noise_px, (len(truth), 2))
        keypoints[:, 2] = np.where(truth[:, 2] > 0, CONFIDENT, UNSURE)
        return keypoints.astype(np.float32)

    def detect(self, image):
        frame = self.frame_index(image)
        self.detect_calls.append(frame)
        people = [p for p in np.flatnonzero(self.video.present[frame])
                  if (frame, int(p)) not in self.missed]
        np.random.default_rng([self.seed, frame, 99]).shuffle(people)
        boxes = self.video.boxes[frame, people].reshape(-1, 4)
        return boxes.astype(np.float32), np.full((len(people),), 0.9, np.float32)

    def estimate(self, image, boxes, box_scores=None):
        frame = self.frame_index(image)
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        box_scores = np.ones(len(boxes)) if box_scores is None else np.asarray(box_scores)
        present = np.flatnonzero(self.video.present[frame])
        persons = []
        for box, box_score in zip(boxes, box_scores):
            overlap = box_iou(box, self.video.boxes[frame, present])
            if not len(overlap) or overlap.max() < 0.3:
                continue
            keypoints = self.noisy_pose(frame, int(present[np.argmax(overlap)]))
            score = rescore_instances(keypoints[None, :, 2], [box_score])[0]
            persons.append(PersonPose(box, score, keypoints, box_score=float(box_score)))
        return persons


def identities(persons, video: SyntheticVideo, frame: int) -> list:
    """The ground-truth person nearest to each pose (mean distance over labelled keypoints)."""
    truth = video.keypoints[frame]
    result = []
    for person in persons:
        labelled = truth[:, :, 2] > 0
        distance = np.linalg.norm(truth[:, :, :2] - person.keypoints[None, :, :2], axis=-1)
        mean = np.where(labelled, distance, 0).sum(1) / np.maximum(labelled.sum(1), 1)
        result.append(int(np.argmin(np.where(video.present[frame], mean, np.inf))))
    return result
