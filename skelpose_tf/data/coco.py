"""COCO-format readers: ground-truth person keypoints and detector boxes -> `PersonRecord`s.

Both follow the official HRNet code (`lib/dataset/coco.py`):
- person category only, crowd annotations left out;
- ground-truth boxes cleaned: x1 = max(0, x), x2 = min(width - 1, x1 + max(0, w - 1)), the same
  for y, box = (x1, y1, x2 - x1, y2 - y1), kept only if it has a positive area (and the
  annotation's `area` field, when present, is positive);
- instances without any labelled keypoint are left out (`require_keypoints=True`), for training
  *and* for evaluation with ground-truth boxes, as the official code does (6,352 of val2017's
  instances);
- centre/scale from the box (`crop_geometry.box_to_center_scale`: the input's aspect ratio,
  x1.25, in pixels), for all records of a file in one call;
- detector boxes from a `COCO_val2017_detections_AP_H_56_person.json`-style list of
  {image_id, category_id, bbox, score}, used as given, with an optional score threshold.

Any COCO-format keypoint file works with a custom `keypoint_set`; the keypoint count of the
category and of every annotation is checked against it.

Bad input: a file that is not valid JSON, a record with a missing field or a wrong type, or
two images, annotations or categories with one id, raises a `ValueError` naming the file and the
record (duplicate ids are refused, not renumbered: renumbering would silently change which image
an annotation belongs to). A zero-area box, a missing image file, a labelled keypoint outside the
image (made unlabelled), an image without people, crowd boxes and instances without labelled
keypoints are counted in the `SkipReport` and logged.
"""

from __future__ import annotations

import functools
import json
import logging
import os

import numpy as np

from skelpose_tf.crop_geometry import BOX_PADDING, box_to_center_scale, input_aspect_ratio
from skelpose_tf.data.records import (PersonRecord, SkipReport, as_float32,
                                      unlabel_outside_image)
from skelpose_tf.evaluation.coco_files import refuse_duplicates
from skelpose_tf.keypoints import get_keypoint_set


def read_coco_keypoints(annotation_file, image_dir, keypoint_set, input_size, *,
                        require_keypoints=True, padding=BOX_PADDING, category_id=None,
                        report: SkipReport | None = None) -> list:
    """Read person instances with ground-truth boxes from a COCO keypoint annotation file.

    Args:
        annotation_file: path of a `person_keypoints_*.json`-style file.
        image_dir: directory that the images' `file_name`s are relative to.
        keypoint_set: a `KeypointSet` or a name/path accepted by `get_keypoint_set`.
        input_size: (height, width) of the model input; sets the regions' aspect ratio.
        require_keypoints: leave out instances without a labelled keypoint (official HRNet, for
            training and for ground-truth-box evaluation).
        padding: region enlargement around the box (`BOX_PADDING`, 1.25 in HRNet).
        category_id: the category holding the people; by default the one named "person", or the
            only category that lists keypoints.
        report: a `SkipReport` that counts what was left out or repaired (a new one if None; the
            entries are logged either way).

    Returns:
        A list of `PersonRecord`s (`box_score` 1.0), in annotation-file order.

    Raises:
        ValueError: unreadable JSON, a missing field or a value of the wrong type (naming the
            file and the record), a keypoint count that differs from the keypoint set.
    """
    keypoint_set = get_keypoint_set(keypoint_set)
    report = SkipReport() if report is None else report
    aspect_ratio = input_aspect_ratio(input_size)
    data = _load_json(annotation_file)
    images = _read_images(data, annotation_file, image_dir)
    person_id = _person_category(data, annotation_file, keypoint_set, category_id)
    annotations = _field(data, "annotations", list, "the file", annotation_file)
    refuse_duplicates([a.get("id") for a in annotations
                       if isinstance(a, dict) and isinstance(a.get("id"), int)],
                      annotation_file, "annotation")
    num_keypoints = keypoint_set.num_keypoints
    fields = []
    images_with_people = set()
    file_exists = functools.lru_cache(maxsize=None)(os.path.isfile)  # one check per image
    for position, annotation in enumerate(annotations):
        where = f"{annotation_file} annotation #{position}"
        if not isinstance(annotation, dict):
            raise ValueError(f"{where} must be an object. Received: {annotation!r}")
        annotation_id = _field(annotation, "id", int, where, annotation_file)
        where = f"{annotation_file} annotation id {annotation_id}"
        image_id = _field(annotation, "image_id", int, where, annotation_file)
        if _field(annotation, "category_id", int, where, annotation_file) != person_id:
            continue
        if image_id not in images:
            raise ValueError(f"{where} refers to image_id {image_id}, which is not in 'images'.")
        image_path, (height, width) = images[image_id]
        images_with_people.add(image_id)
        iscrowd = annotation.get("iscrowd", 0)
        if iscrowd not in (0, 1):
            raise ValueError(f"{where} field 'iscrowd' must be 0 or 1. Received: {iscrowd!r}")
        if iscrowd:
            report.skip("crowd annotation", where, level=logging.INFO)
            continue
        box = _clean_box(as_float32(_field(annotation, "bbox", list, where, annotation_file),
                                    (4,), f"{where} field 'bbox'"), width, height)
        area = annotation.get("area", 1.0)
        if not isinstance(area, (int, float)) or isinstance(area, bool):
            raise ValueError(f"{where} field 'area' must be a number. Received: {area!r}")
        if box is None or area <= 0:
            report.skip("box of zero area", where)
            continue
        raw = as_float32(_field(annotation, "keypoints", list, where, annotation_file),
                         (3 * num_keypoints,),
                         f"{where} field 'keypoints' ({keypoint_set.name!r}: 3 x "
                         f"{num_keypoints} values)").reshape(num_keypoints, 3)
        keypoints, visibility = _checked_keypoints(raw, (height, width), keypoint_set, where,
                                                   report)
        if require_keypoints and not np.any(visibility > 0):
            report.skip("no labelled keypoints", where, level=logging.INFO)
            continue
        if not file_exists(image_path):
            report.skip("missing image file", f"{where} ({image_path})")
            continue
        fields.append(dict(
            image_path=image_path, image_id=image_id, image_size=(height, width), box=box,
            keypoints=keypoints, visibility=visibility, box_score=1.0,
            annotation_id=annotation_id,
        ))
    for image_id, (image_path, _) in images.items():
        if image_id not in images_with_people:
            report.skip("image without people", f"{annotation_file} image id {image_id} "
                        f"({image_path})", level=logging.INFO)
    return _with_regions(fields, aspect_ratio, padding)


def read_coco_detections(detection_file, annotation_file, image_dir, keypoint_set, input_size,
                         *, score_threshold=0.0, category_id=1, padding=BOX_PADDING,
                         report: SkipReport | None = None) -> list:
    """Read detector person boxes (HRNet's `COCO_val2017_detections_AP_H_56_person.json` format).

    Args:
        detection_file: JSON list of {"image_id", "category_id", "bbox": [x, y, w, h], "score"}.
        annotation_file: the COCO file whose `images` table gives file names and sizes.
        image_dir: directory that the images' `file_name`s are relative to.
        keypoint_set: sets K of the (all-zero) keypoint arrays of the records.
        input_size: (height, width) of the model input.
        score_threshold: boxes scoring below this are left out (HRNet: 0.0, all kept).
        category_id: category of the person boxes (1 in COCO).
        padding: region enlargement around the box (`BOX_PADDING`, 1.25 in HRNet).
        report: a `SkipReport` (a new one if None).

    Returns:
        A list of `PersonRecord`s with `box_score` = the detection score, zero keypoints and
        visibility, in file order.

    Raises:
        ValueError: unreadable JSON, a missing field or wrong type, naming the file and entry.
    """
    keypoint_set = get_keypoint_set(keypoint_set)
    report = SkipReport() if report is None else report
    aspect_ratio = input_aspect_ratio(input_size)
    images = _read_images(_load_json(annotation_file), annotation_file, image_dir)
    detections = _load_json(detection_file)
    if not isinstance(detections, list):
        raise ValueError(f"{detection_file} must hold a JSON list of detections. Received a "
                         f"{type(detections).__name__}.")
    file_exists = functools.lru_cache(maxsize=None)(os.path.isfile)  # one check per image
    zeros_keypoints = np.zeros((keypoint_set.num_keypoints, 2), np.float32)
    zeros_visibility = np.zeros((keypoint_set.num_keypoints,), np.float32)
    fields = []
    for position, detection in enumerate(detections):
        where = f"{detection_file} detection #{position}"
        if not isinstance(detection, dict):
            raise ValueError(f"{where} must be an object. Received: {detection!r}")
        if _field(detection, "category_id", int, where, detection_file) != category_id:
            continue
        image_id = _field(detection, "image_id", int, where, detection_file)
        box = as_float32(_field(detection, "bbox", list, where, detection_file), (4,),
                         f"{where} field 'bbox'")
        score = _field(detection, "score", (int, float), where, detection_file)
        if score < score_threshold:
            report.skip(f"detection score below {score_threshold}", where, level=logging.INFO)
            continue
        if image_id not in images:
            report.skip("detection for an image not in the annotation file",
                        f"{where} (image_id {image_id})")
            continue
        if not (box[2] > 0 and box[3] > 0):
            report.skip("box of zero area", where)
            continue
        image_path, image_size = images[image_id]
        if not file_exists(image_path):
            report.skip("missing image file", f"{where} ({image_path})")
            continue
        fields.append(dict(
            image_path=image_path, image_id=image_id, image_size=image_size, box=box,
            keypoints=zeros_keypoints, visibility=zeros_visibility, box_score=float(score),
        ))
    return _with_regions(fields, aspect_ratio, padding)


def _with_regions(fields, aspect_ratio, padding) -> list:
    """`PersonRecord`s from their fields but the region, which comes from the boxes: all
    records' regions in one `box_to_center_scale` call (an eager keras.ops call costs far more
    than the arithmetic, so not one per record)."""
    if not fields:
        return []
    centers, scales = (np.asarray(v, np.float32) for v in box_to_center_scale(
        np.stack([f["box"] for f in fields]), aspect_ratio, padding))
    return [PersonRecord(**f, center=center, scale=scale)
            for f, center, scale in zip(fields, centers, scales)]


def _load_json(path):
    try:
        with open(path) as file:
            return json.load(file)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"Cannot read JSON file {path}: {error}") from None


def _field(mapping, name, types, where, path):
    """mapping[name], checked to be of `types` (bools are not numbers), or a ValueError."""
    if name not in mapping:
        raise ValueError(f"{where} has no field {name!r} (file {path}).")
    value = mapping[name]
    types = types if isinstance(types, tuple) else (types,)
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        expected = " or ".join(t.__name__ for t in types)
        raise ValueError(f"{where} field {name!r} must be of type {expected}. "
                         f"Received {type(value).__name__}: {value!r} (file {path}).")
    return value


def _read_images(data, path, image_dir) -> dict:
    """{image_id: (image path, (height, width))} from the file's 'images' table."""
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object with 'images' and 'annotations'.")
    images = {}
    table = _field(data, "images", list, "the file", path)
    for position, image in enumerate(table):
        where = f"{path} image #{position}"
        if not isinstance(image, dict):
            raise ValueError(f"{where} must be an object. Received: {image!r}")
        image_id = _field(image, "id", int, where, path)
        where = f"{path} image id {image_id}"
        file_name = _field(image, "file_name", str, where, path)
        size = tuple(_field(image, key, int, where, path) for key in ("height", "width"))
        if min(size) <= 0:
            raise ValueError(f"{where} must have a positive height and width. Received: "
                             f"height={size[0]}, width={size[1]}")
        images[image_id] = (os.path.join(image_dir, file_name), size)
    refuse_duplicates([image["id"] for image in table], path, "image")
    return images


def _person_category(data, path, keypoint_set, category_id) -> int:
    """The id of the person category, after checking its keypoint list against the set."""
    categories = _field(data, "categories", list, "the file", path)
    for position, category in enumerate(categories):
        if not isinstance(category, dict):
            raise ValueError(f"{path} category #{position} must be an object. Received: "
                             f"{category!r}")
        _field(category, "id", int, f"{path} category #{position}", path)
    refuse_duplicates([c["id"] for c in categories], path, "category")
    if category_id is None:
        chosen = [c for c in categories if c.get("name") == "person"]
        if not chosen:
            chosen = [c for c in categories if "keypoints" in c]
        if len(chosen) != 1:
            names = [(c["id"], c.get("name")) for c in categories]
            raise ValueError(f"{path}: cannot tell which category holds the people among "
                             f"(id, name) {names}: name exactly one category 'person', or list "
                             "the keypoint names ('keypoints') in exactly one category.")
    else:
        chosen = [c for c in categories if c["id"] == category_id]
        if not chosen:
            raise ValueError(f"{path} has no category with id {category_id}.")
    category = chosen[0]
    names = category.get("keypoints")
    if names is not None and not isinstance(names, list):
        raise ValueError(f"{path} category id {category['id']} field 'keypoints' must be a list "
                         f"of keypoint names. Received: {names!r}")
    if names is not None and len(names) != keypoint_set.num_keypoints:
        raise ValueError(
            f"{path}: category {category.get('name')!r} lists {len(names)} keypoints, but the "
            f"keypoint set {keypoint_set.name!r} has {keypoint_set.num_keypoints}: use the "
            "keypoint set of the annotations (--keypoint_set: coco, mpii or a JSON file)."
        )
    return category["id"]


def _clean_box(box, width, height):
    """HRNet's ground-truth box cleaning; None when the cleaned box has no area."""
    x, y, w, h = (float(v) for v in box)
    x1, y1 = max(0.0, x), max(0.0, y)
    x2 = min(width - 1.0, x1 + max(0.0, w - 1.0))
    y2 = min(height - 1.0, y1 + max(0.0, h - 1.0))
    if x2 <= x1 or y2 <= y1:
        return None
    return np.asarray([x1, y1, x2 - x1, y2 - y1], np.float32)


def _checked_keypoints(raw, image_size, keypoint_set, where, report):
    """Split [K, 3] (x, y, v) into keypoints [K, 2] and v [K]; unlabel points outside the image."""
    visibility = raw[:, 2].copy()
    bad = ~np.isin(visibility, (0.0, 1.0, 2.0))
    if np.any(bad):
        raise ValueError(f"{where} field 'keypoints': visibility flags must be 0, 1 or 2. "
                         f"Received: {visibility[bad].tolist()}")
    return unlabel_outside_image(raw[:, :2], visibility, image_size, keypoint_set, where, report)
