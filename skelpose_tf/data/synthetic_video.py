"""A short synthetic video with known identities: the tests' clip for tracking and smoothing.

Three procedural people (`synthetic_figures.make_figure`, the figures of the synthetic data
set) on one cluttered background (`synthetic._background`), each with its own body and clothes
in every frame (the same generator seed per person), walking (legs and arms swinging):

- person 0, the largest (nearest, drawn last), walks right across the left half;
- person 1, smaller and a little higher (farther away), walks left and passes behind person 0
  around the middle of the clip (their boxes overlap for several frames);
- person 2, the smallest, stands near the right edge waving one arm and drifting downwards.

Each frame gets fresh sensor noise (`synthetic._finish`). Every frame is annotated as the data
set is (`synthetic.annotate_person`): COCO keypoints (x, y, v) in image pixels with pixel
centres at integers (v = 0: unlabelled, x = y = 0), box `[x, y, w, h]` and visible area.

`render_video` returns the frames and ground truth in memory; `write_video` writes them as
`clip.mp4` (`video.VideoWriter`) and `ground_truth.json`:

    {"fps": 25.0, "image_size": [160, 120], "keypoint_set": "coco", "num_people": 3,
     "frames": [{"frame": 0, "people": [{"identity": 0, "keypoints": [x1, y1, v1, ...],
                                         "bbox": [x, y, w, h], "area": 1234}, ...]}, ...]}

Command line (a demo clip): `python -m skelpose_tf.data.synthetic_video --out clip_dir`.
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np

from skelpose_tf.atomic_files import write_json_atomic
from skelpose_tf.data import synthetic
from skelpose_tf.data import synthetic_figures as figures_lib
from skelpose_tf.keypoints import COCO

# Per person: height and start centre as fractions of the image height / size, velocity in
# image widths per second, walking stride frequency in Hz (0: standing), view yaw in degrees.
_PEOPLE = (
    {"height": 0.78, "start": (0.18, 0.56), "velocity": (0.28, 0.0), "stride_hz": 1.6,
     "yaw": 25.0, "waving": False},
    {"height": 0.6, "start": (0.66, 0.48), "velocity": (-0.3, 0.0), "stride_hz": 1.8,
     "yaw": -25.0, "waving": False},
    {"height": 0.5, "start": (0.9, 0.42), "velocity": (0.0, 0.06), "stride_hz": 0.0,
     "yaw": 0.0, "waving": True},
)  # fmt: skip
# Far people first (painter's order): person 2, person 1, person 0.
_DRAW_ORDER = (2, 1, 0)


@dataclasses.dataclass
class SyntheticVideo:
    """Frames and ground truth of `render_video`.

    Attributes:
        frames: uint8 [T, H, W, 3] RGB.
        keypoints: float32 [T, P, K, 3] COCO (x, y, v) per frame and person, image pixels.
        boxes: float32 [T, P, 4] `[x, y, w, h]`; areas: float32 [T, P] visible pixels.
        present: bool [T, P], False where a person is not annotated (practically invisible).
        fps: frames per second.
    """

    frames: np.ndarray
    keypoints: np.ndarray
    boxes: np.ndarray
    areas: np.ndarray
    present: np.ndarray
    fps: float

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def num_people(self) -> int:
        return int(self.keypoints.shape[1])


def _walking_pose(t: float, spec: dict) -> dict:
    """Joint angles (the layout of `synthetic_figures.sample_pose`) at time `t` seconds."""
    phase = 2.0 * math.pi * spec["stride_hz"] * t
    sides = {}
    for name, sign in (("left", 1.0), ("right", -1.0)):
        swing = sign * math.sin(phase) if spec["stride_hz"] else 0.0
        knee = 10.0 + (35.0 * max(0.0, sign * math.cos(phase)) if spec["stride_hz"] else 0.0)
        sides[name] = {"shoulder_flex": -30.0 * swing, "shoulder_abd": 10.0, "elbow": 20.0,
                       "hip_flex": 25.0 * swing, "hip_abd": 4.0, "knee": knee,
                       "humeral_twist": 15.0, "ankle": 5.0}  # fmt: skip
    if spec["waving"]:  # the left arm up, the forearm swinging at 1.5 Hz
        sides["left"].update(shoulder_flex=40.0, shoulder_abd=90.0,
                             elbow=90.0 + 30.0 * math.sin(2.0 * math.pi * 1.5 * t))
    return {"family": "walking", "lean_forward": 3.0, "lean_side": 0.0, "twist": 0.0,
            "head_yaw": 0.0, "head_pitch": 0.0, "head_roll": 0.0, **sides,
            "yaw": spec["yaw"], "pitch": 0.0, "roll": 0.0}  # fmt: skip


def render_video(seed: int = 0, num_frames: int = 24, image_size=(160, 120),
                 fps: float = 25.0) -> SyntheticVideo:
    """Draw the clip of the module docstring.

    Args:
        seed: background, bodies, clothes and noise.
        num_frames: T.
        image_size: (width, height) pixels.
        fps: frames per second (sets the motion per frame).
    """
    width, height = image_size
    base_rng = np.random.default_rng([seed, 7])
    light = np.array([-0.6, -0.8])
    background = synthetic._background(base_rng, width, height, light)
    num_people, k = len(_PEOPLE), COCO.num_keypoints
    frames = np.zeros((num_frames, height, width, 3), np.uint8)
    keypoints = np.zeros((num_frames, num_people, k, 3), np.float32)
    boxes = np.zeros((num_frames, num_people, 4), np.float32)
    areas = np.zeros((num_frames, num_people), np.float32)
    present = np.zeros((num_frames, num_people), bool)
    for index in range(num_frames):
        t = index / fps
        image = background.copy()
        id_map = np.zeros((height, width), np.uint16)
        silhouettes = [np.zeros((height, width), np.uint8) for _ in _PEOPLE]
        figures = []
        for p, spec in enumerate(_PEOPLE):
            centre = ((spec["start"][0] + spec["velocity"][0] * t) * width,
                      spec["start"][1] * height + spec["velocity"][1] * t * width)
            rng = np.random.default_rng([seed, 7, p])  # the same body and clothes each frame
            figures.append(figures_lib.make_figure(rng, spec["height"] * height, centre,
                                                   pose=_walking_pose(t, spec)))
        for p in _DRAW_ORDER:
            figures[p].draw(image, id_map, silhouettes[p],
                            synthetic.PERSON_ID_STRIDE * (p + 1), light)
        frames[index] = synthetic._finish(np.random.default_rng([seed, 7, 100 + index]), image)
        owners = np.bincount((id_map >> 6).ravel(), minlength=num_people + 1)
        for p, figure in enumerate(figures):
            person = synthetic.annotate_person(figure, p, id_map, silhouettes[p], owners[p + 1],
                                               width, height)
            if person is not None:
                keypoints[index, p] = person.keypoints
                boxes[index, p] = person.bbox
                areas[index, p] = person.area
                present[index, p] = True
    return SyntheticVideo(frames, keypoints, boxes, areas, present, float(fps))


def ground_truth_json(video: SyntheticVideo) -> dict:
    """The `ground_truth.json` payload of the module docstring."""
    frames = []
    for index in range(video.num_frames):
        people = []
        for p in np.flatnonzero(video.present[index]):
            points = video.keypoints[index, p]
            people.append({
                "identity": int(p),
                "keypoints": [round(float(v), 2) if c < 2 else int(v)
                              for row in points for c, v in enumerate(row)],
                "bbox": [round(float(v), 2) for v in video.boxes[index, p]],
                "area": int(video.areas[index, p]),
            })  # fmt: skip
        frames.append({"frame": index, "people": people})
    height, width = video.frames.shape[1:3]
    return {"fps": video.fps, "image_size": [int(width), int(height)], "keypoint_set": COCO.name,
            "num_people": video.num_people, "frames": frames}


def write_video(out_dir: str, video: SyntheticVideo) -> tuple:
    """Write `clip.mp4` and `ground_truth.json` under `out_dir`; returns their paths."""
    from skelpose_tf.video import VideoWriter

    os.makedirs(out_dir, exist_ok=True)
    clip = os.path.join(out_dir, "clip.mp4")
    truth = os.path.join(out_dir, "ground_truth.json")
    height, width = video.frames.shape[1:3]
    with VideoWriter(clip, video.fps, (width, height)) as writer:
        for frame in video.frames:
            writer.write(frame)
    write_json_atomic(truth, ground_truth_json(video), indent=None)
    return clip, truth


def _main(argv) -> None:
    from absl import flags

    del argv
    values = flags.FLAGS
    video = render_video(values.seed, values.frames,
                         synthetic.parse_image_size(values.image_size))
    clip, truth = write_video(values.out, video)
    print(f"Wrote {clip} ({video.num_frames} frames, {video.fps:g} frames/s) and {truth}.")


if __name__ == "__main__":
    from absl import flags

    from skelpose_tf import cli

    flags.DEFINE_string("out", "synthetic_clip", "Output folder.")
    flags.DEFINE_integer("seed", 0, "Random seed.")
    flags.DEFINE_integer("frames", 50, "Number of frames.")
    flags.DEFINE_string("image_size", "320x240", "WIDTHxHEIGHT.")
    cli.run(_main)
