"""PersonPose and box_from_keypoints against hand-computed values."""

import numpy as np
import pytest

from skelpose_tf.person_pose import PersonPose, box_from_keypoints


def test_to_coco_flattens_keypoints_with_their_scores():
    person = PersonPose(box=[10, 20, 30, 40], score=0.5, track_id=3,
                        keypoints=[[1, 2, 0.9], [3.25, 4.5, 0.1]])
    assert person.to_coco(image_id=7) == {
        "image_id": 7, "category_id": 1, "keypoints": [1.0, 2.0, 0.9, 3.25, 4.5, 0.1],
        "score": 0.5, "bbox": [10.0, 20.0, 30.0, 40.0], "track_id": 3}
    assert "track_id" not in PersonPose([0, 0, 1, 1], 1.0, np.zeros((2, 3))).to_coco(1)
    with pytest.raises(ValueError, match=r"\[K, 3\]"):
        PersonPose([0, 0, 1, 1], 1.0, np.zeros((2, 2)))


def test_box_from_keypoints_frames_the_confident_keypoints():
    keypoints = np.array([[10, 20, 0.9], [30, 60, 0.8], [20, 40, 0.5], [500, 500, 0.1]])
    # Confident extent x 10..30, y 20..60: centre (20, 40), size (20, 40) x 1.2 = (24, 48).
    np.testing.assert_allclose(box_from_keypoints(keypoints), [8, 16, 24, 48])
    assert box_from_keypoints(keypoints, score_threshold=0.6) is None  # two keypoints left
