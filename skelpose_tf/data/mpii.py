"""MPII reader: HRNet's `mpii_{train,valid}.json` layout -> `PersonRecord`s.

Each JSON entry is {"image": file name, "center": [x, y], "scale": s, "joints": [[x, y]] * K,
"joints_vis": [K]} in MATLAB 1-based pixels, optionally with "headbox": [[x1, y1], [x2, y2]].
Conversion as the official code (`lib/dataset/mpii.py`):

    if center_x != -1: center_y += 15 * s; s *= 1.25
    center -= 1; joints -= 1                      # 1-based -> 0-based

The region is a square of side 200 * s pixels (s after the x1.25), enlarged to the model input's
aspect ratio; it is stored in pixels (`PersonRecord.scale`), not in units of 200.

Head boxes (for PCKh) come from a `gt_valid.mat`-style file (`headboxes_src`, 2 x 2 x N, in the
order of the JSON entries) when `gt_mat_file` is given, else from the entries' "headbox" field;
they are converted to 0-based.

Ids: `image_id` numbers the distinct image names in order of first appearance;
`annotation_id` is the entry's position in the JSON file (the column of `gt_valid.mat`).

Bad input: unreadable JSON/.mat files, a missing field or wrong type raise a `ValueError` naming
the file and the entry. A missing or undecodable image, a person without a centre, a zero scale
and labelled joints outside the image (made unlabelled) are counted in the `SkipReport`.
"""

from __future__ import annotations

import json
import os

import numpy as np
import scipy.io

from skelpose_tf.crop_geometry import BOX_PADDING, fix_aspect_ratio, input_aspect_ratio
from skelpose_tf.data.images import ImageDecodeError, read_image_size
from skelpose_tf.data.records import (PersonRecord, SkipReport, as_float32,
                                      unlabel_outside_image)
from skelpose_tf.keypoints import get_keypoint_set

PIXEL_STD = 200.0


def read_mpii(annotation_file, image_dir, input_size, *, keypoint_set="mpii",
              gt_mat_file=None, require_joints=True, padding=BOX_PADDING,
              report: SkipReport | None = None) -> list:
    """Read MPII person annotations.

    Args:
        annotation_file: path of an HRNet-layout MPII JSON file.
        image_dir: directory that the entries' "image" names are relative to.
        input_size: (height, width) of the model input; sets the regions' aspect ratio.
        keypoint_set: the keypoint set (MPII's 16 joints by default); the joint count of every
            entry is checked against it.
        gt_mat_file: optional `gt_valid.mat`-style file with `headboxes_src` [2, 2, N].
        require_joints: entries must have "joints" and "joints_vis" (False for a test-set file
            without them: the records then have no labelled keypoints).
        padding: region enlargement (`BOX_PADDING`, HRNet: 1.25).
        report: a `SkipReport` (a new one if None).

    Returns:
        A list of `PersonRecord`s with `head_box` set where a head box is known.

    Raises:
        ValueError: unreadable files, a missing field or a wrong type (naming file and entry),
            a joint count that differs from the keypoint set, or a .mat file whose number of
            head boxes differs from the number of JSON entries.
    """
    keypoint_set = get_keypoint_set(keypoint_set)
    report = SkipReport() if report is None else report
    aspect_ratio = input_aspect_ratio(input_size)
    entries = _load_entries(annotation_file)
    head_boxes = None if gt_mat_file is None else _load_head_boxes(gt_mat_file, len(entries))
    num_joints = keypoint_set.num_keypoints
    image_ids = {}
    image_sizes = {}
    fields, padded_sides = [], []
    for position, entry in enumerate(entries):
        where = f"{annotation_file} entry #{position}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where} must be an object. Received: {entry!r}")
        image_name = _required(entry, "image", where)
        if not isinstance(image_name, str):
            raise ValueError(f"{where} field 'image' must be a string. Received: {image_name!r}")
        where = f"{where} ({image_name})"
        center = as_float32(_required(entry, "center", where), (2,), f"{where} field 'center'")
        scale = as_float32(_required(entry, "scale", where), (), f"{where} field 'scale'")
        if require_joints or "joints" in entry:
            joints = as_float32(_required(entry, "joints", where), (num_joints, 2),
                                f"{where} field 'joints' ({keypoint_set.name!r})")
            visibility = as_float32(_required(entry, "joints_vis", where), (num_joints,),
                                    f"{where} field 'joints_vis'")
            if not np.all(np.isin(visibility, (0.0, 1.0))):
                raise ValueError(f"{where} field 'joints_vis' must hold 0 or 1. Received: "
                                 f"{visibility.tolist()}")
        else:
            joints = np.zeros((num_joints, 2), np.float32)
            visibility = np.zeros((num_joints,), np.float32)
        if head_boxes is not None:
            head_box = head_boxes[position]
        elif "headbox" in entry:
            head_box = as_float32(entry["headbox"], (2, 2), f"{where} field 'headbox'") - 1.0
        else:
            head_box = None

        if center[0] == -1:
            report.skip("person without a centre (center_x = -1)", where)
            continue
        if scale <= 0:
            report.skip("box of zero area", f"{where} (scale {float(scale):g})")
            continue
        image_path = os.path.join(image_dir, image_name)
        if image_path not in image_sizes:
            try:
                image_sizes[image_path] = read_image_size(image_path)
            except ImageDecodeError as error:
                image_sizes[image_path] = error.reason
        if isinstance(image_sizes[image_path], str):
            report.skip(image_sizes[image_path], f"{where} ({image_path})")
            continue
        image_size = tuple(int(v) for v in image_sizes[image_path])

        side = PIXEL_STD * float(scale)  # the unpadded square around the person
        padded_sides.append(side * padding)
        center = center + np.asarray([0.0, 15.0 * float(scale)], np.float32) - 1.0
        keypoints, visibility = unlabel_outside_image(joints - 1.0, visibility, image_size,
                                                      keypoint_set, where, report)
        fields.append(dict(
            image_path=image_path,
            image_id=image_ids.setdefault(image_name, len(image_ids)),
            image_size=image_size,
            box=np.asarray([center[0] - side / 2, center[1] - side / 2, side, side], np.float32),
            center=center.astype(np.float32), keypoints=keypoints,
            visibility=visibility, box_score=1.0, annotation_id=position, head_box=head_box,
        ))
    if not fields:
        return []
    # The padded square around each person, at the input's aspect ratio: one call for all.
    sides = np.asarray(padded_sides, np.float32)
    regions = np.asarray(fix_aspect_ratio(np.stack([sides, sides], axis=-1), aspect_ratio))
    return [PersonRecord(**f, scale=region) for f, region in zip(fields, regions)]


def _load_entries(path) -> list:
    try:
        with open(path) as file:
            entries = json.load(file)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"Cannot read JSON file {path}: {error}") from None
    if not isinstance(entries, list):
        raise ValueError(f"{path} must hold a JSON list of person entries. Received a "
                         f"{type(entries).__name__}.")
    return entries


def _required(entry, name, where):
    if name not in entry:
        raise ValueError(f"{where} has no field {name!r}.")
    return entry[name]


def _load_head_boxes(path, num_entries) -> np.ndarray:
    """float32 [N, 2, 2] 0-based ((x1, y1), (x2, y2)) from `headboxes_src` [2, 2, N] (1-based)."""
    try:
        mat = scipy.io.loadmat(path)
    except (OSError, ValueError, TypeError) as error:
        raise ValueError(f"Cannot read .mat file {path}: {error}") from None
    if "headboxes_src" not in mat:
        raise ValueError(f"{path} has no variable 'headboxes_src'. Found: "
                         f"{sorted(k for k in mat if not k.startswith('__'))}")
    boxes = mat["headboxes_src"]
    if boxes.ndim != 3 or boxes.shape[:2] != (2, 2) or not np.issubdtype(boxes.dtype, np.number):
        raise ValueError(f"{path} variable 'headboxes_src' must be numbers of shape (2, 2, N). "
                         f"Received shape {boxes.shape}, dtype {boxes.dtype}.")
    if boxes.shape[2] != num_entries:
        raise ValueError(f"{path} holds {boxes.shape[2]} head boxes but the annotation file "
                         f"has {num_entries} entries; they must be in the same order.")
    return np.transpose(boxes, (2, 0, 1)).astype(np.float32) - 1.0
