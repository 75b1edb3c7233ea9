"""Poses on a video or a camera: detect, follow, track, smooth, draw, write.

Driven by an *estimator* with the interface of `skelpose_tf.estimator.PoseEstimator`:

    est.keypoint_set                                   a `KeypointSet`
    est.detect(image RGB uint8 [H, W, 3]) -> (boxes float32 [N, 4] xywh pixels, scores [N])
    est.estimate(image, boxes, box_scores=None) -> list[PersonPose]

For each frame (`iterate_video`):

1. Boxes. Every `detect_every`-th frame (0, N, 2N, ...) the detector finds the people. On the
   frames between, each person of the previous frame is followed: its box is the box around
   its (unsmoothed) pose, `person_pose.box_from_keypoints`, with its detector score carried
   over; a person whose pose has fewer than 3 confident keypoints is dropped (lost until the
   next detector frame). A frame with nobody to follow runs the detector anyway.
2. Poses: `est.estimate(frame, boxes, scores)`. On follow frames two followed boxes can
   converge on one person: poses whose OKS with a better-scored one is above 0.9 are dropped
   (`evaluation.nms.oks_nms`, areas from the boxes).
3. Track ids (`tracking.PoseTracker`) and, with `smooth`, One-Euro smoothing per track
   (`smoothing.PoseSmoother`, time from the video: `frame_index / fps`, or the camera clock).

`predict_video` also draws each person (skeleton coloured by side, `drawing.draw_pose`; box and
`#track_id` in a colour of the track, `drawing.draw_box`) and writes, under `out_dir`:

- `<stem>_poses.mp4`: the drawn frames (`video.VideoWriter`, mp4v, the source's frame rate);
- `<stem>_poses.jsonl`: one line per frame and person (`video.person_record`: frame, time,
  track_id, bbox, score, box_score, keypoints `[x1, y1, s1, ...]` in image pixels);
- `<stem>_summary.json`, written last: frames, people per frame, tracks, frames/s.

`<stem>` is the video's file name without extension, or `camera<N>`. Every file is atomic (see
`video`): a kill leaves the previous outputs (or none) under the final names. With a camera,
Ctrl-C is how a recording ends: the frames so far are written out completely; with a file it
aborts and removes the partial outputs.

Progress: a line on stderr, rewritten in place (`frame 120/300  14.2 frames/s`), without a
progress-bar dependency.

Example:
    summary = predict_video(est, "clip.mp4", "out", detect_every=5, smooth=True)
    for index, frame, persons in iterate_video(est, 0, max_frames=100):   # camera 0
        ...
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from skelpose_tf.atomic_files import write_json_atomic
from skelpose_tf.cli import UserError
from skelpose_tf.drawing import draw_box, draw_pose
from skelpose_tf.evaluation.nms import oks_nms
from skelpose_tf.person_pose import box_from_keypoints
from skelpose_tf.smoothing import PoseSmoother
from skelpose_tf.tracking import PoseTracker
from skelpose_tf.video import JsonLinesWriter, VideoReader, VideoWriter, person_record

FOLLOW_NMS_THRESHOLD = 0.9  # OKS above which a followed pose duplicates a better one
FOLLOW_KEYPOINT_THRESHOLD = 0.3  # keypoints above it span a followed person's box

# Track colours: distinct hues (RGB), repeated after 8 tracks.
TRACK_COLOURS = ((255, 255, 255), (255, 128, 0), (0, 200, 255), (160, 255, 60),
                 (255, 80, 80), (190, 120, 255), (255, 220, 120), (80, 255, 200))  # fmt: skip


def track_colour(track_id) -> tuple:
    """The RGB colour of a track's box and label (white for no track)."""
    return TRACK_COLOURS[0] if track_id is None else TRACK_COLOURS[1 + (track_id - 1) % 7]


def _follow_boxes(persons) -> tuple:
    """Boxes [M, 4] and scores [M] around the previous frame's poses (module docstring)."""
    boxes, scores = [], []
    for person in persons:
        box = box_from_keypoints(person.keypoints, score_threshold=FOLLOW_KEYPOINT_THRESHOLD)
        if box is not None:
            boxes.append(box)
            scores.append(person.box_score)
    return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32)


def _drop_duplicates(persons, keypoint_set) -> list:
    if len(persons) < 2:
        return persons
    keep = oks_nms(np.stack([p.keypoints for p in persons]), [p.score for p in persons],
                   [float(p.box[2] * p.box[3]) for p in persons], keypoint_set.oks_sigmas,
                   FOLLOW_NMS_THRESHOLD)
    return [persons[i] for i in sorted(keep.tolist())]


def default_tracker(keypoint_set, detect_every: int = 1, max_missed=None) -> PoseTracker:
    """A `PoseTracker` that keeps tracks for `max_missed` frames, by default max(3,
    detect_every): a person the detector misses once is lost until its next run, `detect_every`
    frames later, and must find its track again."""
    if max_missed is None:
        max_missed = max(3, int(detect_every))
    return PoseTracker(keypoint_set, max_missed=max_missed)


class _VideoPoses:
    """The per-frame loop shared by `iterate_video` and `predict_video`: yields
    (frame_index, time_s, frame, persons) for the frames of an open `VideoReader`."""

    def __init__(self, est, reader, detect_every, smooth, tracker, smoother, max_frames):
        if int(detect_every) < 1:
            raise ValueError(f"detect_every must be >= 1. Received: detect_every={detect_every}")
        if max_frames is not None and max_frames < 0:
            raise ValueError(f"max_frames must be >= 0 or None. Received: {max_frames}")
        self.est, self.reader = est, reader
        self.detect_every, self.max_frames = int(detect_every), max_frames
        self.tracker = tracker if tracker is not None else default_tracker(est.keypoint_set,
                                                                           detect_every)
        self.smoother = (smoother if smoother is not None else PoseSmoother()) if smooth else None
        self.detector_frames = 0

    def __iter__(self):
        previous = []
        for index, stamp, frame in self.reader:
            if self.max_frames is not None and index >= self.max_frames:
                return
            boxes, scores = _follow_boxes(previous)
            following = index % self.detect_every != 0 and len(boxes) > 0
            if not following:
                boxes, scores = self.est.detect(frame)
                self.detector_frames += 1
            persons = list(self.est.estimate(frame, boxes, scores)) if len(boxes) else []
            if following:
                persons = _drop_duplicates(persons, self.est.keypoint_set)
            self.tracker.update(persons)
            previous = persons
            if self.smoother is not None:
                persons = self.smoother.update(persons, stamp)
            yield index, stamp, frame, persons


def iterate_video(est, source, *, detect_every: int = 1, smooth: bool = False, tracker=None,
                  smoother=None, max_frames=None):
    """Yield `(frame_index, frame, persons)` for each frame of a video file or camera.

    Args:
        est: the estimator (module docstring).
        source: a video file path, or an int camera index.
        detect_every: run the detector on every N-th frame, follow people in between.
        smooth: One-Euro smoothing of the keypoints per track.
        tracker: a `PoseTracker` (default: `default_tracker(est.keypoint_set, detect_every)`).
        smoother: a `PoseSmoother` (default settings when None), used with `smooth`.
        max_frames: stop after this many frames (None: the whole video / until Ctrl-C).

    Yields:
        frame_index (int, from 0), frame (RGB uint8 [H, W, 3]) and a list of `PersonPose`
        (image pixels, `track_id` set; smoothed keypoints with `smooth`).
    """
    with VideoReader(source) as reader:
        loop = _VideoPoses(est, reader, detect_every, smooth, tracker, smoother, max_frames)
        for index, _, frame, persons in loop:
            yield index, frame, persons


def draw_persons(frame, persons, keypoint_set, threshold: float = 0.3):
    """The frame with each person's skeleton (keypoints scoring above `threshold`), box and
    `#track_id` label drawn; RGB uint8 [H, W, 3] (the input is not modified)."""
    canvas = frame
    for person in persons:
        colour = track_colour(person.track_id)
        label = "" if person.track_id is None else f"#{person.track_id}"
        canvas = draw_box(canvas, person.box, color=colour, label=label)
        canvas = draw_pose(canvas, person.keypoints[:, :2], person.keypoints[:, 2],
                           keypoint_set, threshold=threshold)
    return canvas


class _Progress:
    """One line on `stream`, rewritten at most every `interval` seconds."""

    def __init__(self, total, stream, interval=0.5):
        self.total, self.stream, self.interval = total, stream, interval
        self.start = self.last = time.monotonic()
        self.shown = False

    def rate(self, frames) -> float:
        return frames / max(time.monotonic() - self.start, 1e-9)

    def update(self, frames, force=False):
        now = time.monotonic()
        if not force and now - self.last < self.interval:
            return
        self.last = now
        total = f"/{self.total}" if self.total else ""
        self.stream.write(f"\rframe {frames}{total}  {self.rate(frames):.1f} frames/s ")
        self.stream.flush()
        self.shown = True

    def close(self, frames):
        self.update(frames, force=True)
        self.stream.write("\n")
        self.stream.flush()


def output_paths(source, out_dir) -> dict:
    """{"video", "predictions", "summary"}: where `predict_video` writes for `source`."""
    if isinstance(source, (int, np.integer)) and not isinstance(source, bool):
        stem = f"camera{int(source)}"
    else:
        stem = os.path.splitext(os.path.basename(os.fspath(source)))[0] or "video"
    return {"video": os.path.join(out_dir, f"{stem}_poses.mp4"),
            "predictions": os.path.join(out_dir, f"{stem}_poses.jsonl"),
            "summary": os.path.join(out_dir, f"{stem}_summary.json")}


def predict_video(est, source, out_dir, *, detect_every: int = 1, smooth: bool = False,
                  tracker=None, smoother=None, draw_threshold: float = 0.3, max_frames=None,
                  progress: bool = True, progress_stream=None) -> dict:
    """Poses on every frame of `source`, drawn into an MP4 and listed in a JSON Lines file.

    Args:
        est, source, detect_every, smooth, tracker, smoother, max_frames: as `iterate_video`.
        out_dir: output folder (created); the files are named by `output_paths`.
        draw_threshold: keypoints scoring above it are drawn.
        progress: show the progress line (on `progress_stream`, default stderr).

    Returns:
        The summary (also written as `<stem>_summary.json`): source, frames, fps of the video
        and of the processing, detector frames, people per frame (mean, max), track ids,
        whether a camera recording was stopped by Ctrl-C, and the output paths.

    Raises:
        UserError: the source cannot be opened or has no decodable frame.
    """
    paths = output_paths(source, out_dir)  # never the source's own name (a "_poses" suffix)
    stream = progress_stream or sys.stderr
    counts, track_ids, interrupted = [], set(), False
    with VideoReader(source) as reader:
        info = reader.info
        total = info.frame_count if max_frames is None or info.frame_count is None else min(
            info.frame_count, max_frames)
        bar = _Progress(total, stream) if progress else None
        start = time.monotonic()
        loop = _VideoPoses(est, reader, detect_every, smooth, tracker, smoother, max_frames)
        with VideoWriter(paths["video"], info.fps, info.size) as video_out, \
                JsonLinesWriter(paths["predictions"]) as lines_out:
            try:
                for index, stamp, frame, persons in loop:
                    video_out.write(draw_persons(frame, persons, est.keypoint_set,
                                                 draw_threshold))
                    for person in persons:
                        lines_out.write(person_record(index, stamp, person))
                        track_ids.add(person.track_id)
                    counts.append(len(persons))
                    if bar:
                        bar.update(len(counts))
            except KeyboardInterrupt:
                if not info.is_camera:
                    raise
                interrupted = True  # a camera recording ends with Ctrl-C: keep what we have
            finally:
                if bar:
                    bar.close(len(counts))
            if not counts and max_frames != 0 and not interrupted:
                raise UserError(f"No frame could be decoded from {info.name}.")
        seconds = time.monotonic() - start
    summary = {
        "source": info.name, "frames": len(counts), "video_fps": info.fps,
        "video_fps_reported": info.fps_reported, "size": list(info.size),
        "frames_in_file": info.frame_count, "detect_every": int(detect_every),
        "detector_frames": loop.detector_frames, "smooth": bool(smooth),
        "people_per_frame": {"mean": round(float(np.mean(counts)), 3) if counts else 0.0,
                             "max": int(max(counts, default=0))},
        "people": int(sum(counts)),
        "track_ids": sorted(t for t in track_ids if t is not None),
        "processing_fps": round(len(counts) / max(seconds, 1e-9), 2),
        "interrupted": interrupted, "outputs": paths,
    }
    write_json_atomic(paths["summary"], summary)
    return summary


def define_video_flags(flag_values=None) -> dict:
    """The flags `predict.py` needs for video, as {name: FlagHolder}.

    `--video FILE | --camera N`, `--detect_every N`, `--smooth`, `--max_frames N` and the
    tracker / smoother settings. `predict.py` keeps its own `--out_dir` and `--draw_threshold`.
    Pass the holders to `video_options(holders)` for `predict_video`'s keyword arguments.
    """
    from absl import flags

    values = flag_values if flag_values is not None else flags.FLAGS
    return {
        "video": flags.DEFINE_string("video", None, "A video file to predict poses on.",
                                     flag_values=values),
        "camera": flags.DEFINE_integer("camera", None, "A camera index (0: the default camera) "
                                       "to predict poses on; Ctrl-C ends the recording.",
                                       flag_values=values),
        "detect_every": flags.DEFINE_integer(
            "detect_every", 1, "Video: run the person detector on every N-th frame and follow "
            "people from their previous pose in between.", lower_bound=1, flag_values=values),
        "smooth": flags.DEFINE_boolean("smooth", False, "Video: One-Euro smoothing of the "
                                       "keypoints of each tracked person.", flag_values=values),
        "max_frames": flags.DEFINE_integer("max_frames", None, "Video: stop after N frames.",
                                           lower_bound=0, flag_values=values),
        "smooth_min_cutoff": flags.DEFINE_float(
            "smooth_min_cutoff", 1.0, "One-Euro min_cutoff in Hz (lower: smoother, more lag).",
            lower_bound=1e-3, flag_values=values),
        "smooth_beta": flags.DEFINE_float(
            "smooth_beta", 0.1, "One-Euro beta (higher: less lag on fast motion).",
            lower_bound=0.0, flag_values=values),
        "track_max_missed": flags.DEFINE_integer(
            "track_max_missed", None, "Frames a person may be missing and keep their track id "
            "(default: max(3, --detect_every)).", lower_bound=0, flag_values=values),
    }


def video_source(holders: dict):
    """The `source` of the flags: the --video path or the --camera index (exactly one)."""
    video, camera = holders["video"].value, holders["camera"].value
    if (video is None) == (camera is None):
        raise UserError("Give exactly one of --video FILE and --camera N.")
    return video if video is not None else camera


def video_options(holders: dict, keypoint_set) -> dict:
    """`predict_video` keyword arguments from the flags of `define_video_flags`."""
    return {
        "detect_every": holders["detect_every"].value,
        "smooth": holders["smooth"].value,
        "max_frames": holders["max_frames"].value,
        "tracker": default_tracker(keypoint_set, holders["detect_every"].value,
                                   holders["track_max_missed"].value),
        "smoother": PoseSmoother(min_cutoff=holders["smooth_min_cutoff"].value,
                                 beta=holders["smooth_beta"].value),
    }
