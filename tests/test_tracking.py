"""PoseTracker: OKS / IoU similarity, optimal assignment, kept and dropped tracks, and stable
ids through the synthetic video (people passing each other, a missed detection)."""

import math

import numpy as np
import pytest

from skelpose_tf.data.synthetic_video import render_video, write_video
from skelpose_tf.keypoints import COCO, KeypointSet
from skelpose_tf.person_pose import PersonPose
from skelpose_tf.tracking import PoseTracker, box_iou
from skelpose_tf.video_prediction import iterate_video
from video_fixtures import GroundTruthEstimator, identities

# Four keypoints, one sigma: OKS by hand is easy.
SQUARE = KeypointSet(name="square", keypoint_names=("a", "b", "c", "d"), flip_pairs=(),
                     links=(), oks_sigmas=(0.1, 0.1, 0.1, 0.1), upper_body=(0, 1))


def _pose(x, y, score=0.9, size=20.0):
    """A square of side `size` with its top-left keypoint at (x, y); box = the square."""
    points = np.array([[x, y], [x + size, y], [x, y + size], [x + size, y + size]], np.float32)
    keypoints = np.concatenate([points, np.full((4, 1), score, np.float32)], axis=1)
    return PersonPose(box=[x, y, size, size], score=score, keypoints=keypoints)


def test_box_iou_by_hand():
    # [0, 0, 10, 10] and [5, 0, 10, 10]: intersection 50, union 150.
    np.testing.assert_allclose(box_iou([0, 0, 10, 10], [[5, 0, 10, 10], [20, 20, 5, 5]]),
                               [1 / 3, 0.0])


def test_similarity_is_oks_of_confident_keypoints_or_box_iou():
    tracker = PoseTracker(SQUARE, min_keypoints=3)
    a, b = _pose(0, 0), _pose(2, 0)  # every keypoint 2 px apart, area 400 each
    value, kind = tracker.similarity(a.keypoints, a.box, b.keypoints, b.box)
    # e = d^2 / (2 sigma)^2 / area / 2 = 4 / 0.04 / 400 / 2 = 0.125 for each keypoint.
    assert kind == "oks" and value == pytest.approx(math.exp(-0.125))
    b.keypoints[3, :2] += 40.0  # a far-off keypoint that the model is unsure of is left out
    b.keypoints[3, 2] = 0.1
    value, kind = tracker.similarity(a.keypoints, a.box, b.keypoints, b.box)
    assert kind == "oks" and value == pytest.approx(math.exp(-0.125))
    b.keypoints[2, 2] = 0.1  # two shared confident keypoints < 3: box IoU 360 / 440
    value, kind = tracker.similarity(a.keypoints, a.box, b.keypoints, b.box)
    assert kind == "iou" and value == pytest.approx(360 / 440)


def test_ids_follow_people_whatever_their_order():
    tracker = PoseTracker(SQUARE)
    first = tracker.update([_pose(0, 0), _pose(100, 0), _pose(50, 60)])
    assert [p.track_id for p in first] == [1, 2, 3]
    second = tracker.update([_pose(52, 61), _pose(2, 1), _pose(98, 0)])  # shuffled, moved
    assert [p.track_id for p in second] == [3, 1, 2]


def test_a_newcomer_gets_a_new_id_and_ids_are_never_reused():
    tracker = PoseTracker(SQUARE, max_missed=0)
    tracker.update([_pose(0, 0)])
    assert [p.track_id for p in tracker.update([_pose(1, 0), _pose(200, 0)])] == [1, 2]
    tracker.update([_pose(2, 0)])  # track 2 missed: dropped at once (max_missed 0)
    assert tracker.active_ids == [1]
    assert [p.track_id for p in tracker.update([_pose(2, 0), _pose(200, 0)])] == [1, 3]


def test_a_track_survives_max_missed_frames():
    tracker = PoseTracker(SQUARE, max_missed=2)
    tracker.update([_pose(0, 0), _pose(100, 0)])
    tracker.update([_pose(1, 0)])
    tracker.update([_pose(2, 0)])
    assert [p.track_id for p in tracker.update([_pose(3, 0), _pose(101, 0)])] == [1, 2]
    for _ in range(3):
        tracker.update([_pose(3, 0)])
    assert [p.track_id for p in tracker.update([_pose(3, 0), _pose(101, 0)])] == [1, 3]


def test_a_pose_the_model_cannot_see_is_matched_by_its_box():
    tracker = PoseTracker(SQUARE)
    tracker.update([_pose(0, 0), _pose(30, 0)])
    lost = _pose(29, 1, score=0.05)  # no confident keypoint: box IoU with track 2 is 0.82
    assert [p.track_id for p in tracker.update([lost, _pose(1, 0)])] == [2, 1]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    video = render_video(seed=0, num_frames=24, image_size=(160, 120))
    path, _ = write_video(str(tmp_path_factory.mktemp("clip")), video)
    return video, path


def _ids_by_identity(est, path, video, **options):
    """{ground-truth person: set of track ids} and the people count per frame."""
    ids, counts = {}, []
    for index, _, persons in iterate_video(est, path, **options):
        counts.append(len(persons))
        for person, identity in zip(persons, identities(persons, video, index)):
            ids.setdefault(identity, set()).add(person.track_id)
    return ids, counts


@pytest.mark.parametrize("detect_every", [1, 4])
def test_track_ids_are_stable_through_the_synthetic_video(clip, detect_every):
    video, path = clip
    # Person 1 passes behind person 0 from frame ~12 on; the detector misses person 0 on
    # frame 8 and person 1 on frame 16 (detector frames for both settings).
    est = GroundTruthEstimator(video, noise_px=1.5, missed=[(8, 0), (16, 1)])
    ids, counts = _ids_by_identity(est, path, video, detect_every=detect_every)
    assert len(counts) == video.num_frames
    assert sorted(ids) == [0, 1, 2]
    assert all(len(v) == 1 for v in ids.values()) and len(set().union(*ids.values())) == 3
    if detect_every == 1:
        assert counts[8] == 2 and counts[16] == 2  # the misses were real
        assert est.detect_calls == list(range(video.num_frames))
    else:
        assert est.detect_calls == list(range(0, video.num_frames, 4))
        assert counts[8] == 2 and counts[9] == 2  # followed from frame 8: still missing
        assert counts[12] == 3  # found again by the next detector frame, with its old id
        # (the default tracker keeps tracks for max(3, detect_every) missed frames)


def test_without_kept_tracks_a_missed_person_comes_back_with_a_new_id(clip):
    video, path = clip
    est = GroundTruthEstimator(video, noise_px=1.5, missed=[(8, 0)])
    ids, _ = _ids_by_identity(est, path, video, tracker=PoseTracker(COCO, max_missed=0))
    assert len(ids[0]) == 2 and len(ids[1]) == 1 and len(ids[2]) == 1
