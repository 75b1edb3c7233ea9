"""Frames in and out: reading a video file or a camera, writing an MP4 and a JSON Lines file.

- `VideoReader(source)`: a file path or a camera index (`cv2.VideoCapture`), yielding
  `(frame_index, time_s, frame)` with frames RGB uint8 [H, W, 3]; `info` gives the frame rate,
  size and (for files) the frame count. A file's time is `frame_index / fps` (the container's
  nominal rate; `CAP_PROP_POS_MSEC` is unreliable across backends); a camera's is the time
  since its first frame, so the smoothing sees the real frame spacing.
- `VideoWriter(path, fps, (width, height))`: an MP4 with OpenCV's `mp4v` (MPEG-4 Part 2)
  encoder. The `opencv-python-headless` wheel's FFmpeg has no H.264 encoder (`avc1` and `H264`
  fail to open: no libx264, for licence reasons), `mp4v` is the MP4 codec it can write; every
  player and OpenCV itself read it back. Re-encode with ffmpeg for browsers that want H.264.
- `JsonLinesWriter(path)`: one JSON object per line (`person_record`: one per frame and person).

Both writers are atomic (`atomic_files.atomic_write`): frames and lines go to a temporary
sibling `.<stem>.partial-<pid>.<ext>` and `close()` syncs and renames it to `path`, so the
final name always holds a complete file. After a kill mid-run (SIGKILL, power loss) the final
names keep their previous content (or stay absent) and the temporary files remain: the JSON
Lines one is written line-buffered, so it holds every line finished before the kill and can be
read as is; the MP4 one is unplayable (its index is written at the end). An exception or
Ctrl-C (`abort()`, or leaving the `with` block by an exception) removes them;
`atomic_files.remove_stale_partials(directory)` removes the ones a killed process left.

Example:
    with VideoReader("clip.mp4") as reader, VideoWriter("out.mp4", reader.info.fps,
                                                         reader.info.size) as writer:
        for index, t, frame in reader:
            writer.write(frame)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time

import cv2
import numpy as np

from skelpose_tf.atomic_files import atomic_write
from skelpose_tf.cli import UserError
from skelpose_tf.person_pose import PersonPose

FOURCC = "mp4v"
DEFAULT_FPS = 30.0  # when a file or camera reports no frame rate


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """What a `VideoReader` knows about its source.

    Attributes:
        name: the file path, or "camera N".
        fps: frames per second (the container's or camera's rate; DEFAULT_FPS when it
            reports none, then `fps_reported` is False).
        width, height: frame size in pixels.
        frame_count: the file's frame count as its container states it (None for a camera or
            when unknown; the frames actually decoded can be fewer).
        is_camera: True for a camera index.
    """

    name: str
    fps: float
    width: int
    height: int
    frame_count: int | None
    is_camera: bool
    fps_reported: bool = True

    @property
    def size(self) -> tuple:
        """(width, height), the order of `cv2.VideoWriter`."""
        return (self.width, self.height)


class VideoReader:
    """Frames of a video file or a camera (module docstring).

    Args:
        source: a file path, or an int camera index (0 is the default camera).

    Raises:
        UserError: the file does not exist or OpenCV cannot open it or the camera.
    """

    def __init__(self, source):
        self.source = source
        is_camera = isinstance(source, (int, np.integer)) and not isinstance(source, bool)
        if is_camera:
            name = f"camera {int(source)}"
            self._capture = cv2.VideoCapture(int(source))
        else:
            name = os.fspath(source)
            if not os.path.isfile(name):
                raise UserError(f"{name} does not exist (or is not a file).")
            self._capture = cv2.VideoCapture(name)
        if not self._capture.isOpened():
            self._capture.release()
            what = "camera" if is_camera else "video file"
            raise UserError(f"Cannot open {what} {name!r} with OpenCV "
                            f"{cv2.__version__} (not a video, or no backend for it).")
        fps = float(self._capture.get(cv2.CAP_PROP_FPS) or 0.0)
        reported = math.isfinite(fps) and 0.5 <= fps <= 1000.0
        count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.info = VideoInfo(
            name=name, fps=fps if reported else DEFAULT_FPS,
            width=int(self._capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
            height=int(self._capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            frame_count=None if is_camera or count <= 0 else count,
            is_camera=is_camera, fps_reported=reported)
        self.frames_read = 0

    def __iter__(self):
        """Yields (frame_index, time_s, frame RGB uint8 [H, W, 3]) until the source ends."""
        start = None
        while True:
            ok, frame = self._capture.read()
            if not ok or frame is None:
                return
            if self.info.is_camera:
                now = time.monotonic()
                start = now if start is None else start
                stamp = now - start
            else:
                stamp = self.frames_read / self.info.fps
            index = self.frames_read
            self.frames_read += 1
            yield index, stamp, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

    def close(self):
        self._capture.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _AtomicOutput:
    """A file written under a temporary name and renamed into place by `close()`."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self._stack = contextlib.ExitStack()
        self.temporary = self._stack.enter_context(atomic_write(self.path))
        self.closed = False

    def _finish(self):
        """Flush and close the temporary file (subclasses)."""

    def close(self):
        """Complete the file: it appears under `path`."""
        if not self.closed:
            self.closed = True
            try:
                self._finish()
            except BaseException as error:
                self._stack.__exit__(type(error), error, error.__traceback__)
                raise
            self._stack.close()

    def abort(self):
        """Drop the temporary file; `path` keeps its previous content (or stays absent)."""
        if not self.closed:
            self.closed = True
            with contextlib.suppress(Exception):
                self._finish()
            error = RuntimeError("aborted")
            with contextlib.suppress(RuntimeError):
                self._stack.__exit__(RuntimeError, error, None)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback):
        if exc_type is None:
            self.close()
        else:
            self.abort()


class VideoWriter(_AtomicOutput):
    """An MP4 (`mp4v`) written atomically (module docstring).

    Args:
        path: the `.mp4` file.
        fps: frames per second.
        size: (width, height) of every frame.

    Call arguments (`write`):
        frame: RGB uint8 [height, width, 3].
    """

    def __init__(self, path, fps: float, size):
        super().__init__(path)
        self.size = (int(size[0]), int(size[1]))
        self.frames_written = 0
        self._writer = cv2.VideoWriter(self.temporary, cv2.VideoWriter_fourcc(*FOURCC),
                                       float(fps), self.size)
        if not self._writer.isOpened():
            self.abort()
            raise OSError(f"Cannot write {self.path}: OpenCV {cv2.__version__} cannot open an "
                          f"'{FOURCC}' video writer there (size {self.size}, {fps} frames/s).")

    def write(self, frame):
        frame = np.asarray(frame)
        width, height = self.size
        if frame.dtype != np.uint8 or frame.shape != (height, width, 3):
            raise ValueError(f"{self.path}: frames must be RGB uint8 [{height}, {width}, 3]. "
                             f"Received dtype={frame.dtype}, shape={frame.shape}")
        self._writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        self.frames_written += 1

    def _finish(self):
        self._writer.release()


class JsonLinesWriter(_AtomicOutput):
    """One JSON object per line, written line-buffered under a temporary name and renamed into
    place by `close()` (module docstring)."""

    def __init__(self, path):
        super().__init__(path)
        self._file = open(self.temporary, "w", buffering=1, encoding="utf-8")
        self.lines_written = 0

    def write(self, record: dict):
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self.lines_written += 1

    def _finish(self):
        self._file.close()


def person_record(frame_index: int, time_s: float, person: PersonPose) -> dict:
    """The JSON Lines record of one person in one frame: a COCO keypoint result
    (`PersonPose.to_coco`, `image_id` = the frame index, keypoints flattened `[x1, y1, s1, ...]`
    in image pixels) plus `frame`, `time` (seconds), `track_id` and `box_score`."""
    record = {"frame": int(frame_index), "time": round(float(time_s), 4)}
    record.update(person.to_coco(image_id=int(frame_index)))
    record["track_id"] = None if person.track_id is None else int(person.track_id)
    record["box_score"] = round(person.box_score, 6)
    return record


def person_from_record(record: dict) -> PersonPose:
    """The `PersonPose` of a `person_record` (values as rounded in the file)."""
    return PersonPose(box=record["bbox"], score=record["score"],
                      keypoints=np.asarray(record["keypoints"], np.float32).reshape(-1, 3),
                      track_id=record.get("track_id"), box_score=record.get("box_score", 1.0))


def read_json_lines(path) -> list:
    """The records of a JSON Lines file; a line that is not JSON raises a `UserError` naming the
    file and the line (a kill can leave half a last line in a `.partial-*` file)."""
    records = []
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise UserError(f"{path}: line {number} is not JSON ({error.msg}).") from None
    return records
