"""The synthetic people data set: COCO- and MPII-format annotations of procedural figures.

The project's offline default (docs/design.md section 6). Each image shows 0-4 procedural people
(`synthetic_figures`: a posed 3D skeleton drawn as shaded capsules, left limbs warm-coloured,
right limbs cool-coloured and banded) of varied sizes on a cluttered background, overlapping each
other, partly covered by random occluders and cut by the image border. Uses numpy and OpenCV
only (no TensorFlow), so it runs anywhere and in parallel.

Written under `out_dir`:

- `images/{train,val}/<12-digit image id>.jpg` (train ids 1.., val ids 1,000,001..; JPEG q90).
- `annotations/person_keypoints_{train,val}.json`: COCO keypoint format, keypoint names and
  skeleton from `skelpose_tf.keypoints.COCO` (skeleton 1-based as in COCO).
- `annotations/person_detections_val.json`: detector-style boxes in the format of
  `COCO_val2017_detections_AP_H_56_person.json`.
- `annotations/mpii_{train,val}.json` (HRNet's MPII JSON layout) and
  `annotations/mpii_gt_val.mat` (the layout of MPII's `gt_valid.mat`).

Conventions and rules:

- Keypoints are continuous pixel coordinates with pixel centres at integers (the project's
  convention). COCO visibility: v=0 unlabelled (outside the image, or a face feature turned away
  from the camera; then x=y=0), v=1 labelled but covered (by an occluder, another person or the
  person's own body, or a face feature hidden by the head), v=2 visible: the keypoint's own part is
  on top at its pixel. `num_keypoints` counts v>0.
- `bbox` = [x, y, w, h] over pixel indices (x..x+w-1 are the columns covered, as HRNet's box
  cleaning reads it) of the person's whole silhouette clipped to the image, grown if needed to
  include every labelled keypoint, so it lies inside the image and contains the keypoints.
- `area` = the number of pixels where the person's filled body silhouette is visible in the image
  (not covered by occluders or people in front), as COCO's segmentation area. COCO's OKS scales its
  tolerance with this area, so it must be a body area, not a stick figure's pixel count (which
  would make AP far stricter) nor the box (more lenient); with the thick, clothed figures it comes
  to roughly half the box (the summary prints the mean ratio), as for COCO persons.
- People whose visible silhouette is under `MIN_VISIBLE_AREA` pixels are not annotated (they are
  practically invisible); people with a visible silhouette but no labelled keypoint (e.g. a sliver
  at the border) are annotated with num_keypoints 0, as COCO does.
- MPII records (1-based MATLAB coordinates: x+1, y+1 of ours) exist only for people whose MPII
  joints are mostly labelled: at least `MPII_MIN_LABELLED_FRACTION` of them, with head_top and
  upper_neck among them (the head box normalises PCKh). A joint is labelled when its COCO
  counterpart has v>0; pelvis, thorax, upper_neck and head_top when they lie inside the image.
  Unlabelled joints are written as [-1, -1] with joints_vis 0 (jnt_missing 1 in the .mat).
  `center` is the centre of the whole (unclipped) silhouette's extent, `scale` its larger
  side / 200, `headbox` a square around the projected head.
- Deterministic: image i of a split is drawn from `numpy.random.default_rng([seed, split, i])`
  (its detections from `[seed, split, i, 1]`), so the same seed gives byte-identical files at any
  number of workers.

Command line:

    python -m skelpose_tf.data.synthetic --out data/synthetic [--train 2000] [--val 200]
        [--seed 0] [--image_size 320x240] [--workers 1] [--same_sides]

`--same_sides` draws the right limbs in the left side's colours without bands (the same
people, poses and scenes otherwise): only the pose and the face then tell left from right, so
left/right confusion can happen, and the virtual left-right links can be tested.
"""

from __future__ import annotations

import colorsys
import concurrent.futures
import dataclasses
import functools
import io
import json
import math
import os
import time

import cv2
import numpy as np
import scipy.io
from absl import app, flags

from skelpose_tf.data import synthetic_figures as figures_lib
from skelpose_tf.keypoints import COCO, MPII, MPII_MAT_JOINT_NAMES

SPLITS = ("train", "val")
_SPLIT_CODE = {"train": 0, "val": 1}
VAL_IMAGE_ID_OFFSET = 1_000_000
MIN_VISIBLE_AREA = 16
MPII_MIN_LABELLED_FRACTION = 0.75
JPEG_QUALITY = 90
OCCLUDER_ID = 1
PERSON_ID_STRIDE = 64  # part-id map: person p's parts hold 64 * (p + 1) + part


@dataclasses.dataclass(frozen=True)
class DatasetPaths:
    """Where `generate_dataset` writes each file (all under `root`)."""

    root: str
    train_images: str
    val_images: str
    train_annotations: str
    val_annotations: str
    val_detections: str
    mpii_train: str
    mpii_val: str
    mpii_gt_val: str

    def exists(self) -> bool:
        """True when every annotation file is present (the images are not checked one by one)."""
        files = (self.train_annotations, self.val_annotations, self.val_detections,
                 self.mpii_train, self.mpii_val, self.mpii_gt_val)  # fmt: skip
        return all(os.path.isfile(path) for path in files)


def dataset_paths(out_dir: str) -> DatasetPaths:
    """The file layout of a synthetic data set rooted at `out_dir` (nothing is written)."""
    annotations = os.path.join(out_dir, "annotations")
    return DatasetPaths(
        root=out_dir,
        train_images=os.path.join(out_dir, "images", "train"),
        val_images=os.path.join(out_dir, "images", "val"),
        train_annotations=os.path.join(annotations, "person_keypoints_train.json"),
        val_annotations=os.path.join(annotations, "person_keypoints_val.json"),
        val_detections=os.path.join(annotations, "person_detections_val.json"),
        mpii_train=os.path.join(annotations, "mpii_train.json"),
        mpii_val=os.path.join(annotations, "mpii_val.json"),
        mpii_gt_val=os.path.join(annotations, "mpii_gt_val.mat"),
    )


def image_id_for(split: str, index: int) -> int:
    """COCO image id of image `index` (0-based) of `split`; train and val ids never collide."""
    return index + 1 + (VAL_IMAGE_ID_OFFSET if split == "val" else 0)


@dataclasses.dataclass
class PersonAnnotation:
    """One annotated person of a rendered scene (0-based pixel coordinates, pixel centres at ints).

    Attributes:
        keypoints: float [K, 3] in COCO order (x, y, v); x = y = 0 where v = 0.
        bbox: [x, y, w, h] over pixel indices, inside the image.
        area: visible silhouette pixels.
        mpii_joints: float [16, 2] in MPII order (0-based); -1 where unlabelled.
        mpii_labelled: int [16], 1 where the joint is labelled.
        mpii_eligible: whether the person gets an MPII record (see the module docstring).
        center: (x, y) centre of the silhouette's whole extent; scale: its larger side / 200.
        head_box: (x1, y1, x2, y2) square around the head (0-based, not clipped).
    """

    keypoints: np.ndarray
    bbox: list
    area: int
    mpii_joints: np.ndarray
    mpii_labelled: np.ndarray
    mpii_eligible: bool
    center: tuple
    scale: float
    head_box: tuple


def _random_colour(rng: np.random.Generator) -> tuple:
    """Any hue, mostly muted: RGB floats 0-255."""
    hue, saturation = rng.uniform(0, 1), rng.uniform(0, 1) ** 1.5 * 0.85
    value = rng.uniform(0.12, 0.95)
    return tuple(255.0 * c for c in colorsys.hsv_to_rgb(hue, saturation, value))


def _background(rng: np.random.Generator, width: int, height: int, light) -> np.ndarray:
    """Cluttered RGB uint8 background: gradient, blotchy texture, random shapes, stray capsules."""
    angle = rng.uniform(0, 2 * math.pi)
    xs = np.arange(width, dtype=np.float32)[None, :] * math.cos(angle)
    ys = np.arange(height, dtype=np.float32)[:, None] * math.sin(angle)
    ramp = xs + ys
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1.0)
    c0, c1 = (np.asarray(_random_colour(rng), np.float32) for _ in range(2))
    image = c0 + ramp[..., None] * (c1 - c0)
    cell = int(rng.integers(6, 24))
    blotches = rng.normal(0, 1, size=(height // cell + 2, width // cell + 2, 3)).astype(np.float32)
    blotches = cv2.resize(blotches, (width, height), interpolation=cv2.INTER_CUBIC)
    image += blotches * rng.uniform(3, 14)
    image = np.clip(image, 0, 255).astype(np.uint8)

    scale = min(width, height)
    for _ in range(int(rng.integers(4, 16))):
        colour = _random_colour(rng)
        kind = rng.integers(5)
        fill = -1 if rng.uniform() < 0.7 else int(rng.integers(1, 4))
        x, y = int(rng.uniform(-0.1, 1.1) * width), int(rng.uniform(-0.1, 1.1) * height)
        size = int(rng.uniform(0.03, 0.35) * scale)
        if kind == 0:
            corner = (x + size, y + int(size * rng.uniform(0.3, 2)))
            cv2.rectangle(image, (x, y), corner, colour, fill)
        elif kind == 1:
            cv2.circle(image, (x, y), max(1, size // 2), colour, fill, cv2.LINE_AA)
        elif kind == 2:
            axes = (max(1, size // 2), max(1, int(size * rng.uniform(0.1, 0.5))))
            cv2.ellipse(image, (x, y), axes, rng.uniform(0, 180), 0, 360, colour, fill, cv2.LINE_AA)
        elif kind == 3:
            end = (x + int(rng.normal(0, size)), y + int(rng.normal(0, size)))
            cv2.line(image, (x, y), end, colour, int(rng.integers(1, 6)), cv2.LINE_AA)
        else:
            points = np.array([x, y]) + rng.normal(0, size / 2, size=(int(rng.integers(3, 7)), 2))
            cv2.fillPoly(image, [points.astype(np.int32)], colour, cv2.LINE_AA)
    for _ in range(int(rng.integers(0, 4))):  # limb-like distractors
        p0 = rng.uniform(0, 1, size=2) * (width, height)
        p1 = p0 + rng.normal(0, 0.12 * scale, size=2)
        figures_lib.draw_capsule(image, p0, p1, rng.uniform(1.5, 0.04 * scale), _random_colour(rng),
                                 light, banded=bool(rng.uniform() < 0.3))  # fmt: skip
    return image


def _draw_occluder(rng, image, id_map, centre, size):
    """A random textured shape (box, ellipse, polygon or bar) around `centre`, `size` pixels across,
    written into `image` and as OCCLUDER_ID into `id_map`."""
    height, width = id_map.shape
    mask = np.zeros((height, width), np.uint8)
    cx, cy = centre
    kind = rng.integers(4)
    if kind == 0:
        w, h = size * rng.uniform(0.4, 1.0), size * rng.uniform(0.4, 1.0)
        box = cv2.boxPoints(((cx, cy), (w, h), rng.uniform(0, 90)))
        cv2.fillConvexPoly(mask, np.round(box).astype(np.int32), 1)
    elif kind == 1:
        axes = tuple(max(1, int(size * rng.uniform(0.2, 0.5))) for _ in range(2))
        cv2.ellipse(mask, (int(cx), int(cy)), axes, rng.uniform(0, 180), 0, 360, 1, -1)
    elif kind == 2:
        points = np.array([cx, cy]) + rng.normal(0, size * 0.3, size=(int(rng.integers(4, 8)), 2))
        hull = cv2.convexHull(np.round(points).astype(np.int32))
        cv2.fillConvexPoly(mask, hull, 1)
    else:  # a pole or branch crossing the person
        direction = rng.normal(size=2)
        direction = direction / max(float(np.linalg.norm(direction)), 1e-6) * size * 1.5
        p0, p1 = np.array(centre) - direction, np.array(centre) + direction
        thickness = max(2, int(size * rng.uniform(0.08, 0.2)))
        ends = [tuple(int(v) for v in np.round(p)) for p in (p0, p1)]
        cv2.line(mask, *ends, 1, thickness)
    x, y, w, h = cv2.boundingRect(mask)
    if w == 0 or h == 0:
        return
    region = mask[y:y + h, x:x + w].astype(bool)
    c0 = np.asarray(_random_colour(rng), np.float32)
    c1 = np.asarray(_random_colour(rng), np.float32)
    style = rng.integers(3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if style == 0:  # flat with a little shading
        t = (xx / max(w, 1) + yy / max(h, 1)) * 0.25
        texture = c0 * (1.0 - t[..., None])
    elif style == 1:  # stripes
        angle = rng.uniform(0, math.pi)
        period = rng.uniform(3, 10)
        stripes = np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / period) > 0
        texture = np.where(stripes[..., None], c0, c1)
    else:  # gradient
        t = xx / max(w - 1, 1)
        texture = c0 + t[..., None] * (c1 - c0)
    patch = image[y:y + h, x:x + w]
    patch[region] = np.clip(texture, 0, 255).astype(np.uint8)[region]
    id_map[y:y + h, x:x + w][region] = OCCLUDER_ID


def _finish(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Camera effects: brightness/contrast jitter, sensor noise, sometimes a slight blur."""
    gain, bias, sigma = rng.uniform(0.85, 1.12), rng.uniform(-12, 12), rng.uniform(1.5, 6.0)
    noisy = image.astype(np.float32) * gain + bias
    noisy += rng.normal(0, sigma, size=image.shape).astype(np.float32)
    image = np.clip(noisy, 0, 255).astype(np.uint8)
    if rng.uniform() < 0.3:
        image = cv2.GaussianBlur(image, (3, 3), rng.uniform(0.4, 0.9))
    return image


def _in_image(point, width, height) -> bool:
    return 0.0 <= point[0] <= width - 1 and 0.0 <= point[1] <= height - 1


def annotate_person(figure, person_index, id_map, silhouette, visible_area, width, height):
    """COCO and MPII annotation of one drawn figure (see the module docstring for the rules).

    Args:
        figure: a drawn `synthetic_figures.Figure`.
        person_index: p, whose parts hold 64 * (p + 1) + part in `id_map`.
        id_map: uint16 [H, W] part-id map of the finished scene (OCCLUDER_ID for occluders).
        silhouette: uint8 [H, W], 1 where the figure's own silhouette was drawn.
        visible_area: number of `id_map` pixels that belong to the figure.
        width, height: image size.

    Returns:
        PersonAnnotation, or None when the figure is practically invisible.
    """
    if visible_area < MIN_VISIBLE_AREA:
        return None
    base = PERSON_ID_STRIDE * (person_index + 1)
    keypoints = np.zeros((COCO.num_keypoints, 3))
    labelled_by_name = {}
    for k, name in enumerate(COCO.keypoint_names):
        point = figure.keypoints[name]
        labelled = figure.labelled[name] and _in_image(point, width, height)
        labelled_by_name[name] = labelled
        if not labelled:
            continue
        column, row = (int(math.floor(v + 0.5)) for v in point)
        on_top = int(id_map[row, column]) - base
        owners = figures_lib.KEYPOINT_OWNERS[name]
        visible = figure.painted[name] and 0 <= on_top < len(figures_lib.PART_NAMES) and (
            figures_lib.PART_NAMES[on_top] in owners)
        keypoints[k] = (round(float(point[0]), 2), round(float(point[1]), 2), 2 if visible else 1)

    x, y, w, h = cv2.boundingRect(silhouette)
    x0, y0, x1, y1 = x, y, x + w - 1, y + h - 1
    labelled_points = keypoints[keypoints[:, 2] > 0, :2]
    if len(labelled_points):
        x0 = min(x0, int(math.floor(labelled_points[:, 0].min())))
        y0 = min(y0, int(math.floor(labelled_points[:, 1].min())))
        x1 = max(x1, int(math.ceil(labelled_points[:, 0].max())))
        y1 = max(y1, int(math.ceil(labelled_points[:, 1].max())))
    bbox = [x0, y0, x1 - x0 + 1, y1 - y0 + 1]

    mpii_joints = np.full((MPII.num_keypoints, 2), -1.0)
    mpii_labelled = np.zeros(MPII.num_keypoints, np.int64)
    for j, name in enumerate(MPII.keypoint_names):
        if name in labelled_by_name:
            labelled = labelled_by_name[name]
        else:
            labelled = _in_image(figure.keypoints[name], width, height)
        if labelled:
            x, y = figure.keypoints[name]
            mpii_joints[j] = (round(float(x), 2), round(float(y), 2))  # rounded as the COCO ones
            mpii_labelled[j] = 1
    eligible = bool(
        mpii_labelled.sum() >= math.ceil(MPII_MIN_LABELLED_FRACTION * MPII.num_keypoints)
        and mpii_labelled[MPII.index("head_top")]
        and mpii_labelled[MPII.index("upper_neck")]
    )
    ex0, ey0, ex1, ey1 = figure.extent
    return PersonAnnotation(
        keypoints=keypoints,
        bbox=bbox,
        area=int(visible_area),
        mpii_joints=mpii_joints,
        mpii_labelled=mpii_labelled,
        mpii_eligible=eligible,
        center=(round(0.5 * (ex0 + ex1), 2), round(0.5 * (ey0 + ey1), 2)),
        scale=round(max(ex1 - ex0, ey1 - ey0) / 200.0, 4),
        head_box=tuple(round(float(v), 2) for v in figure.head_box),
    )


def render_scene(seed: int, split: str, index: int, image_size=(320, 240),
                 same_sides: bool = False):
    """Draw image `index` of `split` and annotate its people.

    Args:
        seed: data set seed.
        split: "train" or "val".
        index: 0-based image index within the split.
        image_size: (width, height) in pixels.
        same_sides: both sides of every person in the left side's colours, unbanded
            (`synthetic_figures.make_figure`); the same scenes and annotations otherwise.

    Returns:
        (image, people): RGB uint8 [height, width, 3] and a list of PersonAnnotation.
    """
    if split not in _SPLIT_CODE:
        raise ValueError(f"split must be one of {SPLITS}. Received: split={split!r}")
    width, height = image_size
    rng = np.random.default_rng([seed, _SPLIT_CODE[split], index])
    light = np.array([-0.6, -0.8]) + rng.normal(0, 0.3, size=2)
    light /= np.linalg.norm(light)
    image = _background(rng, width, height, light)
    id_map = np.zeros((height, width), np.uint16)

    num_people = int(rng.choice(5, p=[0.02, 0.3, 0.3, 0.23, 0.15]))
    shrink = 1.0 - 0.08 * max(0, num_people - 1)
    figures = []
    for _ in range(num_people):
        height_px = height * math.exp(rng.uniform(math.log(0.22), math.log(1.25))) * shrink
        centre = (rng.uniform(-0.05, 1.05) * width, rng.uniform(0.25, 0.75) * height)
        figures.append(figures_lib.make_figure(rng, height_px, centre, same_sides=same_sides))
    # Smaller people are usually farther away: draw them first.
    order = np.argsort([f.height_px * rng.uniform(0.8, 1.25) for f in figures], kind="stable")
    occluder_targets = []
    if figures:
        num_occluders = int(rng.choice(4, p=[0.45, 0.35, 0.15, 0.05]))
        occluder_targets = [int(rng.integers(len(figures))) for _ in range(num_occluders)]

    silhouettes = [np.zeros((height, width), np.uint8) for _ in figures]
    for p in order:
        figure = figures[p]
        figure.draw(image, id_map, silhouettes[p], PERSON_ID_STRIDE * (int(p) + 1), light)
        for target in occluder_targets:
            if target == p:
                names = figures_lib.FIGURE_KEYPOINTS
                anchor = figure.keypoints[names[int(rng.integers(len(names)))]]
                centre = anchor + rng.normal(0, 0.08 * figure.height_px, size=2)
                size = figure.height_px * rng.uniform(0.12, 0.4)
                _draw_occluder(rng, image, id_map, centre, size)
    image = _finish(rng, image)

    owners = np.bincount((id_map >> 6).ravel(), minlength=len(figures) + 1)
    people = []
    for p, figure in enumerate(figures):
        person = annotate_person(figure, p, id_map, silhouettes[p], owners[p + 1], width, height)
        if person is not None:
            people.append(person)
    return image, people


def _detections(seed, index, image_id, people, width, height):
    """Detector-style boxes for one val image: jittered true boxes (a few missed or doubled) and
    low-scored false positives, each {"image_id", "category_id", "bbox", "score"}."""
    rng = np.random.default_rng([seed, _SPLIT_CODE["val"], index, 1])

    def jittered(box, spread):
        x, y, w, h = box
        x0, x1 = x + rng.normal(0, spread * w), x + w + rng.normal(0, spread * w)
        y0, y1 = y + rng.normal(0, spread * h), y + h + rng.normal(0, spread * h)
        x0, x1 = np.clip(sorted((x0, x1)), 0, width)
        y0, y1 = np.clip(sorted((y0, y1)), 0, height)
        return [round(float(x0), 2), round(float(y0), 2), round(float(max(x1 - x0, 1.0)), 2),
                round(float(max(y1 - y0, 1.0)), 2)]  # fmt: skip

    boxes = []
    for person in people:
        if rng.uniform() < 0.04:
            continue  # missed
        size_factor = min(1.0, 0.55 + person.bbox[3] / 120.0)
        score = (0.3 + 0.7 * rng.beta(6.0, 1.3)) * size_factor
        boxes.append((jittered(person.bbox, 0.05), score))
        if rng.uniform() < 0.08:  # a duplicate, lower-scored
            boxes.append((jittered(person.bbox, 0.12), score * rng.uniform(0.3, 0.7)))
    for _ in range(int(rng.poisson(0.8))):
        h = rng.uniform(0.15, 0.8) * height
        w = h * rng.uniform(0.3, 0.8)
        x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
        boxes.append((jittered([x, y, w, h], 0.0), rng.uniform(0.02, 0.45)))
    return [{"image_id": image_id, "category_id": 1, "bbox": box, "score": round(float(s), 5)}
            for box, s in boxes]  # fmt: skip


def _render_and_write(task):
    """Worker: render one image, write its JPEG, return its annotation records."""
    seed, split, index, image_size, image_dir, same_sides = task
    image, people = render_scene(seed, split, index, image_size, same_sides)
    image_id = image_id_for(split, index)
    file_name = f"{image_id:012d}.jpg"
    path = os.path.join(image_dir, file_name)
    if not cv2.imwrite(path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                       [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):  # fmt: skip
        raise OSError(f"Could not write image {path}")
    width, height = image_size
    annotations, mpii = [], []
    for n, person in enumerate(people):
        keypoints = person.keypoints
        annotations.append({
            "id": image_id * 100 + n + 1,
            "image_id": image_id,
            "category_id": 1,
            "keypoints": [v if c < 2 else int(v) for row in keypoints.tolist()
                          for c, v in enumerate(row)],
            "num_keypoints": int((keypoints[:, 2] > 0).sum()),
            "bbox": [int(v) for v in person.bbox],
            "area": person.area,
            "iscrowd": 0,
        })  # fmt: skip
        if person.mpii_eligible:
            record = {
                "image": file_name,
                "center": [round(person.center[0] + 1, 2), round(person.center[1] + 1, 2)],
                "scale": person.scale,
                "joints": [[round(x + 1, 2), round(y + 1, 2)] if v else [-1.0, -1.0]
                           for (x, y), v in zip(person.mpii_joints.tolist(), person.mpii_labelled)],
                "joints_vis": [int(v) for v in person.mpii_labelled],
            }  # fmt: skip
            if split == "val":
                x1, y1, x2, y2 = person.head_box
                record["headbox"] = [[round(x1 + 1, 2), round(y1 + 1, 2)],
                                     [round(x2 + 1, 2), round(y2 + 1, 2)]]  # fmt: skip
            mpii.append(record)
    detections = _detections(seed, index, image_id, people, width, height) if split == "val" else []
    image_entry = {"id": image_id, "file_name": file_name, "width": width, "height": height}
    return image_entry, annotations, mpii, detections


def _write_json(path, payload):
    with open(path, "w") as f:
        json.dump(payload, f, separators=(",", ":"))


_MAT_HEADER = "MATLAB 5.0 MAT-file, written by skelpose_tf.data.synthetic"
_MAT_HEADER_BYTES = 116


def _write_mpii_mat(path, records):
    """MPII gt_valid.mat layout: dataset_joints, jnt_missing [16,N], pos_gt_src [16,2,N] and
    headboxes_src [2,2,N], all 1-based, in the order of `records`."""
    count = len(records)
    k = MPII.num_keypoints
    joints = np.array([r["joints"] for r in records], np.float64).reshape(count, k, 2)
    visible = np.array([r["joints_vis"] for r in records], np.float64).reshape(count, k)
    headboxes = np.array([r["headbox"] for r in records], np.float64).reshape(count, 2, 2)
    names = np.empty((1, MPII.num_keypoints), dtype=object)
    for j, name in enumerate(MPII.keypoint_names):
        names[0, j] = MPII_MAT_JOINT_NAMES[name]
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {
        "dataset_joints": names,
        "jnt_missing": (1.0 - visible).T,
        "pos_gt_src": np.transpose(joints, (1, 2, 0)),
        "headboxes_src": np.transpose(headboxes, (1, 2, 0)),
    })  # fmt: skip
    # The 116-byte text header holds a creation time; a fixed text keeps the file reproducible.
    data = bytearray(buffer.getvalue())
    data[:_MAT_HEADER_BYTES] = _MAT_HEADER.ljust(_MAT_HEADER_BYTES).encode("ascii")
    with open(path, "wb") as f:
        f.write(bytes(data))


def parse_image_size(text: str) -> tuple:
    """'320x240' -> (320, 240); raises ValueError naming the bad value."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(
            f"image_size must look like WIDTHxHEIGHT, e.g. 320x240. Received: {text!r}"
        ) from None
    return _checked_image_size((width, height))


def _checked_image_size(image_size) -> tuple:
    width, height = (int(v) for v in image_size)
    if width < 32 or height < 32:
        raise ValueError(f"image_size must be at least 32x32. Received: {width}x{height}")
    return width, height


def generate_dataset(out_dir: str, num_train: int = 2000, num_val: int = 200, seed: int = 0,
                     image_size=(320, 240), workers: int = 1,
                     same_sides: bool = False) -> DatasetPaths:  # fmt: skip
    """Render and write the synthetic data set (see the module docstring for the layout).

    Args:
        out_dir: root directory (created if needed; existing files are overwritten).
        num_train: number of train images (0 <= num_train < VAL_IMAGE_ID_OFFSET).
        num_val: number of val images.
        seed: data set seed; the same seed gives byte-identical files.
        image_size: (width, height) in pixels.
        workers: processes rendering in parallel (1 = in this process). More than 1 forks the
            calling process: from a process that already runs TensorFlow, prefer 1 (or run the
            command line in a subprocess).
        same_sides: left and right limbs drawn alike (`render_scene`), recorded as
            `"same_sides": true` in the COCO files' `info`.

    Returns:
        DatasetPaths of the written files (`summarize(paths)` gives statistics).
    """
    if not 0 <= num_train < VAL_IMAGE_ID_OFFSET:
        raise ValueError(
            f"num_train must be in [0, {VAL_IMAGE_ID_OFFSET}). Received: num_train={num_train}"
        )
    if num_val < 0:
        raise ValueError(f"num_val must be >= 0. Received: num_val={num_val}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1. Received: workers={workers}")
    width, height = _checked_image_size(image_size)
    paths = dataset_paths(out_dir)
    os.makedirs(os.path.dirname(paths.train_annotations), exist_ok=True)
    categories = [{
        "id": 1, "name": "person", "supercategory": "person",
        "keypoints": list(COCO.keypoint_names),
        "skeleton": [[int(a) + 1, int(b) + 1] for a, b in COCO.edges],
    }]  # fmt: skip
    pool = concurrent.futures.ProcessPoolExecutor(workers) if workers > 1 else None
    try:
        for split, count, image_dir in (("train", num_train, paths.train_images),
                                        ("val", num_val, paths.val_images)):  # fmt: skip
            os.makedirs(image_dir, exist_ok=True)
            tasks = [(seed, split, i, (width, height), image_dir, same_sides)
                     for i in range(count)]
            results = (pool.map(_render_and_write, tasks, chunksize=16) if pool
                       else map(_render_and_write, tasks))  # fmt: skip
            images, annotations, mpii, detections = [], [], [], []
            for image_entry, image_annotations, image_mpii, image_detections in results:
                images.append(image_entry)
                annotations.extend(image_annotations)
                mpii.extend(image_mpii)
                detections.extend(image_detections)
            coco = {
                "info": {"description": "skelpose_tf synthetic people", "seed": seed,
                         "image_size": [width, height], "split": split,
                         **({"same_sides": True} if same_sides else {})},
                "images": images, "annotations": annotations, "categories": categories,
            }  # fmt: skip
            train = split == "train"
            _write_json(paths.train_annotations if train else paths.val_annotations, coco)
            _write_json(paths.mpii_train if train else paths.mpii_val, mpii)
            if split == "val":
                _write_json(paths.val_detections, detections)
                _write_mpii_mat(paths.mpii_gt_val, mpii)
    finally:
        if pool:
            pool.shutdown()
    return paths


def summarize(paths: DatasetPaths) -> dict:
    """Statistics of a written data set, per split: images, people, keypoints and more.

    Returns:
        {split: {"images", "people", "people_with_keypoints", "keypoints_labelled",
        "keypoints_visible", "keypoints_occluded", "area_over_box" (mean), "mpii_records"}},
        plus "detections" for val.
    """
    summary = {}
    for split in SPLITS:
        coco_file, mpii_file = ((paths.train_annotations, paths.mpii_train) if split == "train"
                                else (paths.val_annotations, paths.mpii_val))  # fmt: skip
        with open(coco_file) as f:
            coco = json.load(f)
        with open(mpii_file) as f:
            mpii = json.load(f)
        annotations = coco["annotations"]
        visibility = np.array([a["keypoints"][2::3] for a in annotations]).reshape(-1)
        ratios = [a["area"] / float(a["bbox"][2] * a["bbox"][3]) for a in annotations]
        summary[split] = {
            "images": len(coco["images"]),
            "people": len(annotations),
            "people_with_keypoints": sum(a["num_keypoints"] > 0 for a in annotations),
            "keypoints_labelled": int((visibility > 0).sum()),
            "keypoints_visible": int((visibility == 2).sum()),
            "keypoints_occluded": int((visibility == 1).sum()),
            "area_over_box": float(np.mean(ratios)) if ratios else 0.0,
            "mpii_records": len(mpii),
        }
    with open(paths.val_detections) as f:
        summary["val"]["detections"] = len(json.load(f))
    return summary


def _define_flags() -> dict:
    """The command-line flags, defined only when this module runs as a script: train.py imports
    the library, and its own flags (e.g. --seed) must not clash with these."""
    return {
        "out": flags.DEFINE_string("out", None, "Output directory (created if missing)."),
        "train": flags.DEFINE_integer("train", 2000, "Number of train images."),
        "val": flags.DEFINE_integer("val", 200, "Number of val images."),
        "seed": flags.DEFINE_integer("seed", 0, "Data set seed (same seed, same bytes)."),
        "image_size": flags.DEFINE_string("image_size", "320x240", "Image size as WIDTHxHEIGHT."),
        "workers": flags.DEFINE_integer("workers", 1, "Rendering processes."),
        "same_sides": flags.DEFINE_bool("same_sides", False, "Left and right limbs in the "
                                        "same colours, unbanded: only pose and face tell the "
                                        "sides apart (tests left/right confusion)."),
    }


def _main(flag_holders: dict, argv) -> None:
    del argv
    values = {name: holder.value for name, holder in flag_holders.items()}
    if not values["out"]:
        raise app.UsageError("--out is required.")
    try:
        image_size = parse_image_size(values["image_size"])
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    start = time.perf_counter()
    paths = generate_dataset(values["out"], values["train"], values["val"], values["seed"],
                             image_size, values["workers"], values["same_sides"])  # fmt: skip
    seconds = time.perf_counter() - start
    summary = summarize(paths)
    total = summary["train"]["images"] + summary["val"]["images"]
    print(f"Synthetic people data set in {paths.root} (seed {values['seed']}, "
          f"{image_size[0]}x{image_size[1]}, {values['workers']} worker(s))")  # fmt: skip
    for split in SPLITS:
        s = summary[split]
        print(f"  {split}: {s['images']} images, {s['people']} people "
              f"({s['people_with_keypoints']} with keypoints), {s['keypoints_labelled']} keypoints "
              f"labelled ({s['keypoints_visible']} visible, {s['keypoints_occluded']} occluded), "
              f"mean area/box {s['area_over_box']:.2f}, "
              f"{s['mpii_records']} MPII records")  # fmt: skip
    print(f"  val detections: {summary['val']['detections']}")
    print(f"  time: {seconds:.1f} s ({total / max(seconds, 1e-9):.0f} images/s)")


if __name__ == "__main__":
    from skelpose_tf import cli

    cli.run(functools.partial(_main, _define_flags()), "python -m skelpose_tf.data.synthetic")
