"""Video in and out: MP4 and JSON Lines round trips, atomic outputs, `predict_video` against
`iterate_video`, the flags, and one run with a real (tiny, untrained) pose network."""

import io
import json
import os

import numpy as np
import pytest
from absl import flags

from skelpose_tf.cli import UserError
from skelpose_tf.data.synthetic_video import ground_truth_json, render_video, write_video
from skelpose_tf.keypoints import COCO
from skelpose_tf.person_pose import PersonPose
from skelpose_tf.video import (JsonLinesWriter, VideoReader, VideoWriter, person_from_record,
                               person_record, read_json_lines)
from skelpose_tf.video_prediction import (define_video_flags, iterate_video, predict_video,
                                          video_options, video_source)
from pose_fixtures import run_script, save_tiny_model
from video_fixtures import GroundTruthEstimator

COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 40), (128, 128, 128),
           (10, 10, 10), (250, 250, 250)]  # fmt: skip


def test_mp4_round_trip(tmp_path):
    path = str(tmp_path / "solid.mp4")
    with VideoWriter(path, 12.5, (64, 48)) as writer:
        for colour in COLOURS:
            writer.write(np.full((48, 64, 3), colour, np.uint8))
    assert os.listdir(tmp_path) == ["solid.mp4"]  # no temporary left
    with VideoReader(path) as reader:
        info = reader.info
        frames = list(reader)
    assert (info.width, info.height, info.fps, info.frame_count) == (64, 48, 12.5, 7)
    assert [index for index, _, _ in frames] == list(range(7))
    np.testing.assert_allclose([t for _, t, _ in frames], np.arange(7) / 12.5)
    for (_, _, frame), colour in zip(frames, COLOURS):  # RGB order kept; mp4v is lossy
        assert frame.dtype == np.uint8 and frame.shape == (48, 64, 3)
        np.testing.assert_allclose(frame.reshape(-1, 3).mean(0), colour, atol=6)


def test_outputs_are_atomic(tmp_path):
    target = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError):
        with VideoWriter(str(target), 10, (32, 32)) as writer:
            writer.write(np.zeros((32, 32, 3), np.uint8))
            assert os.listdir(tmp_path) == [f".out.partial-{os.getpid()}.mp4"]
            raise RuntimeError("killed mid-run")
    assert os.listdir(tmp_path) == []
    (tmp_path / "lines.jsonl").write_text('{"old": 1}\n')
    lines = JsonLinesWriter(str(tmp_path / "lines.jsonl"))
    lines.write({"new": 1})
    # Line-buffered: what a kill would leave in the temporary file is whole lines.
    assert read_json_lines(lines.temporary) == [{"new": 1}]
    assert read_json_lines(str(tmp_path / "lines.jsonl")) == [{"old": 1}]
    lines.abort()
    assert sorted(os.listdir(tmp_path)) == ["lines.jsonl"]
    with pytest.raises(ValueError, match=r"RGB uint8 \[32, 32, 3\]"):
        with VideoWriter(str(target), 10, (32, 32)) as writer:
            writer.write(np.zeros((32, 30, 3), np.uint8))
    assert sorted(os.listdir(tmp_path)) == ["lines.jsonl"]


def test_person_record_round_trip():
    keypoints = np.array([[10.1234, 20.5, 0.91], [11.0, 21.0, 0.2]], np.float32)
    person = PersonPose([5, 6, 30.25, 40], 0.8, keypoints, track_id=4, box_score=0.75)
    record = person_record(7, 0.28, person)
    assert record["frame"] == record["image_id"] == 7 and record["time"] == 0.28
    assert record["track_id"] == 4 and record["bbox"] == [5, 6, 30.25, 40]
    assert record["keypoints"] == [10.123, 20.5, 0.91, 11.0, 21.0, 0.2]
    back = person_from_record(json.loads(json.dumps(record)))
    np.testing.assert_allclose(back.keypoints, keypoints, atol=5e-4)
    assert (back.track_id, back.box_score, back.score) == (4, 0.75, pytest.approx(0.8))


def test_unreadable_sources_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="nothing.mp4 does not exist"):
        VideoReader(str(tmp_path / "nothing.mp4"))
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 10)
    with pytest.raises(UserError, match="junk.mp4"):
        VideoReader(str(junk))


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    video = render_video(seed=1, num_frames=12, image_size=(160, 120))
    path, truth = write_video(str(tmp_path_factory.mktemp("clip")), video)
    return video, path, truth


def test_ground_truth_file(clip):
    video, _, truth = clip
    with open(truth) as file:
        payload = json.load(file)
    assert payload == json.loads(json.dumps(ground_truth_json(video)))
    assert len(payload["frames"]) == 12 and payload["image_size"] == [160, 120]
    first = payload["frames"][0]["people"][0]
    np.testing.assert_allclose(np.reshape(first["keypoints"], (17, 3)), video.keypoints[0, 0],
                               atol=0.006)


def test_predict_video_writes_what_iterate_video_yields(clip, tmp_path):
    video, path, _ = clip
    options = {"detect_every": 3, "smooth": True}
    expected = [(index, [person_record(index, index / video.fps, p) for p in persons])
                for index, _, persons in iterate_video(GroundTruthEstimator(video), path,
                                                       **options)]
    stream = io.StringIO()
    est = GroundTruthEstimator(video)
    summary = predict_video(est, path, str(tmp_path), progress_stream=stream, **options)
    assert sorted(os.listdir(tmp_path)) == ["clip_poses.jsonl", "clip_poses.mp4",
                                            "clip_summary.json"]
    records = read_json_lines(tmp_path / "clip_poses.jsonl")
    assert records == [record for _, frame_records in expected for record in frame_records]
    assert len(records) == 36 and {r["track_id"] for r in records} == {1, 2, 3}
    assert summary["frames"] == 12 and summary["detector_frames"] == 4
    assert summary["people_per_frame"] == {"mean": 3.0, "max": 3}
    assert summary["track_ids"] == [1, 2, 3] and not summary["interrupted"]
    with open(tmp_path / "clip_summary.json") as file:
        assert json.load(file) == json.loads(json.dumps(summary))
    assert "frame 12/12" in stream.getvalue() and "frames/s" in stream.getvalue()
    with VideoReader(str(tmp_path / "clip_poses.mp4")) as reader:
        drawn = list(reader)
        assert (reader.info.size, reader.info.fps) == ((160, 120), video.fps)
    assert len(drawn) == 12
    # The drawings differ from the input (skeletons and boxes), the rest of the frame does not.
    changed = np.abs(drawn[5][2].astype(int) - video.frames[5].astype(int)).max(-1) > 60
    assert 0.01 < changed.mean() < 0.5


def test_max_frames(clip, tmp_path):
    video, path, _ = clip
    summary = predict_video(GroundTruthEstimator(video), path, str(tmp_path), max_frames=4,
                            progress=False)
    assert summary["frames"] == 4 and summary["processing_fps"] > 0
    assert len(read_json_lines(summary["outputs"]["predictions"])) == 12
    with VideoReader(summary["outputs"]["video"]) as reader:
        assert len(list(reader)) == 4


def test_video_flags():
    values = flags.FlagValues()
    holders = define_video_flags(values)
    values(["predict.py", "--video=clip.mp4", "--smooth", "--detect_every=5",
            "--smooth_beta=0.2"])
    assert video_source(holders) == "clip.mp4"
    options = video_options(holders, COCO)
    assert options["detect_every"] == 5 and options["smooth"] and options["max_frames"] is None
    assert options["tracker"].max_missed == 5 and options["smoother"].settings["beta"] == 0.2
    values["camera"].value = 0
    with pytest.raises(UserError, match="exactly one of --video FILE and --camera N"):
        video_source(holders)


class _Interrupting(GroundTruthEstimator):
    """Ctrl-C while frame `at` is being estimated."""

    def __init__(self, video, at):
        super().__init__(video)
        self.at = at

    def estimate(self, image, boxes, box_scores=None):
        if self.frame_index(image) == self.at:
            raise KeyboardInterrupt
        return super().estimate(image, boxes, box_scores)


def test_ctrl_c_aborts_a_file_but_ends_a_camera_recording(clip, tmp_path, monkeypatch):
    import dataclasses

    from skelpose_tf import video_prediction

    video, path, _ = clip
    with pytest.raises(KeyboardInterrupt):
        predict_video(_Interrupting(video, 5), path, str(tmp_path), progress=False)
    assert os.listdir(tmp_path) == []  # no partial outputs, no final ones

    class FileAsCamera(VideoReader):  # the clip, read as if it came from a camera
        def __init__(self, source):
            super().__init__(path)
            self.info = dataclasses.replace(self.info, is_camera=True, frame_count=None)

    monkeypatch.setattr(video_prediction, "VideoReader", FileAsCamera)
    summary = predict_video(_Interrupting(video, 5), 0, str(tmp_path), progress=False)
    assert summary["interrupted"] and summary["frames"] == 5
    assert sorted(os.listdir(tmp_path)) == ["camera0_poses.jsonl", "camera0_poses.mp4",
                                            "camera0_summary.json"]
    assert {r["frame"] for r in read_json_lines(tmp_path / "camera0_poses.jsonl")} == set(
        range(5))


def test_predict_py_on_a_video_equals_the_python_api(clip, tmp_path):
    """`predict.py --video` end to end on a saved tiny model, against
    `PoseEstimator.load(...).video(...)` in this process: the same track ids and keypoints."""
    from skelpose_tf.estimator import PoseEstimator

    _, path, _ = clip
    run_dir = str(tmp_path / "run")
    save_tiny_model(run_dir)
    result = run_script("predict.py", f"--weights={run_dir}", f"--video={path}",
                        "--detector=none", "--max_frames=3", f"--out_dir={tmp_path / 'out'}")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "frames: 3" in result.stdout and "frames/s" in result.stdout
    records = read_json_lines(tmp_path / "out" / "clip_poses.jsonl")
    estimator = PoseEstimator.load(run_dir, detector="none")
    expected = [(index, person) for index, _, persons in estimator.video(path, max_frames=3)
                for person in persons]
    assert [(r["frame"], r["track_id"]) for r in records] == [
        (index, person.track_id) for index, person in expected] == [(0, 1), (1, 1), (2, 1)]
    for record, (_, person) in zip(records, expected):
        np.testing.assert_allclose(np.reshape(record["keypoints"], (-1, 3)), person.keypoints,
                                   atol=2e-3)

    # A boxes file names images, not frames: refused in one line.
    refused = run_script("predict.py", f"--weights={run_dir}", f"--video={path}",
                         "--detector=boxes:boxes.json", f"--out_dir={tmp_path / 'out2'}")
    assert refused.returncode == 1 and "boxes file names images" in refused.stderr
    assert "Traceback" not in refused.stderr
