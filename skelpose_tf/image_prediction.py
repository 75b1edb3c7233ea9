"""Top-down pose inference on the user's own images (`predict.py`).

Each person box (given in a boxes file, else the whole image) becomes a crop exactly as in
evaluation (`skelpose_tf.data.pipeline.make_eval_dataset`), the network predicts flip-averaged
heatmaps, the decoder turns them into keypoints and the inverse crop transform maps those back
to **original-image pixels** (x, y), 0-based, pixel centres at integers, in the image's stored
pixel grid (EXIF orientation is ignored, as for COCO).

Boxes file (`read_boxes_file`), boxes as [x, y, w, h] in image pixels (COCO's bbox layout):
- a JSON object mapping image file names (or the paths as given) to lists of boxes:
  `{"a.jpg": [[10, 20, 100, 240], {"bbox": [300, 40, 90, 200], "score": 0.9}]}`; images it
  does not list use the whole image;
- or, for a single image, just the list of boxes.
Given boxes are enlarged x1.25 to the model's aspect ratio (as detector boxes in evaluation);
the whole-image box is only enlarged to the aspect ratio.

Outputs (`write_outputs`): `predictions.json`, `<image stem>_pose.png` (skeletons drawn on the
image) and, with `show_maps`, `<image stem>_person<i>_maps.png`: the paper's Fig. 1-2 panel for
each person (`drawing.maps_panel`): (a) the input crop with its pose, (b) skeletal heatmaps
(max over links), (c-e) upper-, lower- and full-body attention maps, (f) keypoint heatmaps (max
over keypoints, flip-averaged with the flip test), all over the crop. They are drawn from the
crops and maps of the prediction's own forward pass (`predict_images(keep_maps=True)`): no
image is read twice and the network runs once.

Unreadable images: with `predict_images(skipped=[])` (what `predict.py` does for a folder) a
missing, truncated or corrupt image is left out and listed with its reason (the JSON's
`skipped` list); the other images are predicted and written. Without it, such an image is an
error (`ValueError`, one line), as for a single image given explicitly.

Example:
    predictions = predict_images(network, list_images("photos/"), keep_maps=True)
    payload = write_outputs(predictions, network, "out/", weights="runs/demo", show_maps=True)
"""

from __future__ import annotations

import dataclasses
import json
import os

import cv2
import numpy as np

from skelpose_tf.crop_geometry import BOX_PADDING, box_to_center_scale, input_aspect_ratio
from skelpose_tf.data.images import (ImageDecodeError, decode_image, load_for_record,
                                     read_image_bytes, read_image_size)
from skelpose_tf.data.records import PersonRecord, SkipReport, as_float32
from skelpose_tf.drawing import draw_box, draw_pose, maps_panel
from skelpose_tf.evaluation.coco_metric import rescore_instances
from skelpose_tf.export.runtime import open_runner
from skelpose_tf.inference import predict_records

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
WHOLE_IMAGE_PADDING = 1.0
COORDINATES = "original-image pixels (x, y), 0-based, pixel centres at integers"


def list_images(path: str) -> list:
    """The image files to predict: `path` itself, or the image files directly in a folder.

    Raises:
        ValueError: `path` does not exist, or the folder holds no image file.
    """
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise ValueError(f"Image not found: {path} (pass an image file or a folder of images).")
    images = sorted(os.path.join(path, name) for name in os.listdir(path)
                    if name.lower().endswith(IMAGE_EXTENSIONS)
                    and os.path.isfile(os.path.join(path, name)))
    if not images:
        raise ValueError(f"The folder {path} holds no image file ({', '.join(IMAGE_EXTENSIONS)}).")
    return images


def whole_image_box(image_size) -> np.ndarray:
    """The box [x, y, w, h] covering the whole image: pixel edges -0.5 ... W - 0.5."""
    height, width = image_size
    return np.asarray([-0.5, -0.5, width, height], np.float32)


def _parse_boxes(entries, where: str):
    """A list of [x, y, w, h] or {"bbox": [...], "score": s} -> (boxes [P, 4], scores [P])."""
    if not isinstance(entries, list):
        raise ValueError(f"{where} must be a list of boxes. Received: {entries!r}")
    boxes, scores = [], []
    for i, entry in enumerate(entries):
        box_where = f"{where} box #{i}"
        if isinstance(entry, dict):
            if "bbox" not in entry:
                raise ValueError(f"{box_where} has no 'bbox' field. Received: {entry!r}")
            box, score = entry["bbox"], entry.get("score", 1.0)
        else:
            box, score = entry, 1.0
        box = as_float32(box, (4,), f"{box_where} ([x, y, w, h])")
        if not (box[2] > 0 and box[3] > 0):
            raise ValueError(f"{box_where} must have a positive width and height. "
                             f"Received: {box.tolist()}")
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise ValueError(f"{box_where} score must be a number. Received: {score!r}")
        boxes.append(box)
        scores.append(float(score))
    return (np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32))


def read_boxes_file(path: str, image_paths) -> dict:
    """Person boxes per image from a JSON file (layouts in the module docstring).

    Args:
        path: the boxes file.
        image_paths: the images being predicted (keys match a path as given or its file name).

    Returns:
        {image path: (boxes float32 [P, 4] as [x, y, w, h], scores float32 [P])} for the listed
        images.

    Raises:
        ValueError: unreadable JSON, a malformed box, a bare list for several images, or a key
            that names none of the images.
    """
    try:
        with open(path) as f:
            content = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"Cannot read the boxes file {path}: {error}") from None
    if isinstance(content, list):
        if len(image_paths) != 1:
            raise ValueError(f"{path} holds a bare list of boxes, which fits one image only; for "
                             f"{len(image_paths)} images map each file name to its boxes.")
        return {image_paths[0]: _parse_boxes(content, path)}
    if not isinstance(content, dict):
        raise ValueError(f"{path} must hold a JSON object (file name -> boxes) or a list of "
                         f"boxes. Received a {type(content).__name__}.")
    by_key = {}
    for image_path in image_paths:
        by_key.setdefault(image_path, image_path)
        by_key.setdefault(os.path.basename(image_path), image_path)
    unknown = [key for key in content if key not in by_key]
    if unknown:
        names = [os.path.basename(p) for p in image_paths[:5]]
        raise ValueError(f"{path} lists boxes for {len(unknown)} image(s) that are not being "
                         f"predicted, e.g. {unknown[:3]}; the images are {names}"
                         f"{' ...' if len(image_paths) > 5 else ''}.")
    return {by_key[key]: _parse_boxes(entries, f"{path} entry {key!r}")
            for key, entries in content.items()}


@dataclasses.dataclass(frozen=True)
class ImagePrediction:
    """The people predicted in one image.

    Attributes:
        image_path: the image file.
        image_size: (height, width) in pixels.
        box_source: where the boxes came from ("whole image ..." or the boxes file).
        boxes: float32 [P, 4], [x, y, w, h] person boxes in image pixels.
        box_scores: float32 [P], the boxes' scores (1.0 when not given).
        centers, scales: float32 [P, 2], the crop regions (image pixels).
        keypoints: float32 [P, K, 2], (x, y) in original-image pixels.
        keypoint_scores: float32 [P, K], heatmap peak values.
        scores: float32 [P], box score x mean keypoint score above 0.2 (as COCO rescoring).
        maps: with `predict_images(keep_maps=True)`: per person, what the network saw and
            computed: `crops` uint8 [P, H, W, 3], `crop_keypoints` [P, K, 2] (crop pixels),
            `heatmaps` [P, h, w, K], `skeletal_heatmaps` [P, h, w, S] (skeletal module only);
            else None.
    """

    image_path: str
    image_size: tuple
    box_source: str
    boxes: np.ndarray
    box_scores: np.ndarray
    centers: np.ndarray
    scales: np.ndarray
    keypoints: np.ndarray
    keypoint_scores: np.ndarray
    scores: np.ndarray
    maps: dict | None = None

    @property
    def num_people(self) -> int:
        return int(self.boxes.shape[0])

    def to_dict(self) -> dict:
        """JSON-ready: image, size, box source and one entry per person."""
        people = []
        for p in range(self.num_people):
            xys = np.concatenate([self.keypoints[p], self.keypoint_scores[p][:, None]],
                                 axis=-1).astype(np.float64)
            people.append({
                "box": np.round(self.boxes[p].astype(np.float64), 2).tolist(),
                "box_score": round(float(self.box_scores[p]), 4),
                "score": round(float(self.scores[p]), 4),
                "keypoints": np.round(xys, 3).tolist(),
            })
        return {"image": self.image_path, "height": int(self.image_size[0]),
                "width": int(self.image_size[1]), "box_source": self.box_source,
                "people": people}


def _image_size(path: str) -> tuple:
    """(height, width) of `path`; raises `ImageDecodeError`."""
    return tuple(int(v) for v in read_image_size(path))


def _record(path, image_id, size, box, center, scale, score, num_keypoints) -> PersonRecord:
    """A `PersonRecord` without ground truth (zero keypoints, all unlabelled)."""
    return PersonRecord(
        image_path=path, image_id=image_id, image_size=size, box=np.asarray(box, np.float32),
        center=np.asarray(center, np.float32), scale=np.asarray(scale, np.float32),
        keypoints=np.zeros((num_keypoints, 2), np.float32),
        visibility=np.zeros((num_keypoints,), np.float32), box_score=float(score))


def person_records(image_paths, boxes, boxes_file, input_size, num_keypoints, skipped=None):
    """One `PersonRecord` per person box, and each image's size and box source.

    Args:
        image_paths: image files.
        boxes: optional {image path: (boxes [P, 4], scores [P])}; other images use the whole
            image as one person box.
        boxes_file: the boxes file's name, for the box source text.
        input_size: the model's (height, width) (sets the crop's aspect ratio).
        num_keypoints: K of the records' (empty) keypoint arrays.
        skipped: None, or a list: an image whose size cannot be read is then left out and
            appended as {"image": path, "reason": why} instead of raising.

    Returns:
        (records, images): `images` is a list of (path, (height, width), box source text);
        a record's `image_id` is its image's position in `images`.

    Raises:
        ValueError: a missing or unreadable image (without `skipped`).
    """
    boxes = boxes or {}
    aspect_ratio = input_aspect_ratio(input_size)
    records, images = [], []
    for path in image_paths:
        try:
            size = _image_size(path)
        except ImageDecodeError as error:
            if skipped is None:
                raise ValueError(f"Cannot read image {path}: {error.reason}.") from None
            skipped.append({"image": path, "reason": error.reason})
            continue
        if path in boxes:
            image_boxes, scores = boxes[path]
            padding, source = BOX_PADDING, f"boxes from {boxes_file}"
        else:
            image_boxes, scores = whole_image_box(size)[None], np.ones((1,), np.float32)
            padding = WHOLE_IMAGE_PADDING
            source = (f"whole image (not listed in {boxes_file})" if boxes_file
                      else "whole image (no boxes given)")
        image_id = len(images)
        images.append((path, size, source))
        centers, scales = box_to_center_scale(np.reshape(image_boxes, (-1, 4)), aspect_ratio,
                                              padding)
        for box, center, scale, score in zip(image_boxes, np.asarray(centers),
                                             np.asarray(scales), scores):
            records.append(_record(path, image_id, size, box, center, scale, score,
                                   num_keypoints))
    return records, images


def _failure_reason(path, size) -> str:
    """Why the pipeline could not crop `path` (decoded again, with the pipeline's rules)."""
    probe = SkipReport(log_limit=0)
    load_for_record(None, path, size, "image", probe, rgb=False)
    return next(iter(probe.skipped), "could not be cropped (see the log)")


def predict_images(network, image_paths, boxes=None, boxes_file="", *, flip_test=True,
                   batch_size=16, keep_maps=False, skipped=None) -> list:
    """Predict every person of every image.

    Args:
        network: a `PoseHRNet`, decoded with its own codec (`network.codec`; another decoder:
            `network.set_decoding(decoder=...)` first).
        image_paths: image files (`list_images`).
        boxes: optional {image path: (boxes [P, 4], scores [P])} (`read_boxes_file`); images
            without an entry use the whole image as one person box.
        boxes_file: name of the boxes file (for the box source text).
        flip_test: average the heatmaps of each crop and its mirror image.
        batch_size: crops per forward pass.
        keep_maps: keep each person's crop and maps (`ImagePrediction.maps`) for pictures.
        skipped: None: an image that cannot be read or decoded is an error. A list (a folder
            of the user's images, where one bad file must not stop the others): such an image
            is left out of the result and appended as {"image": path, "reason": why}, in
            the order of `image_paths`; the result may then be empty.

    Returns:
        A list of `ImagePrediction`, in the order of `image_paths` (without skipped images).

    Raises:
        ValueError: a missing, unreadable or undecodable image (without `skipped`).
    """
    runner = open_runner(network, flip_test=flip_test)
    keypoint_set = runner.codec.keypoint_set
    k = keypoint_set.num_keypoints
    read_failures = [] if skipped is not None else None
    records, images = person_records(image_paths, boxes, boxes_file, runner.input_size, k,
                                     read_failures)
    keypoints = np.zeros((0, k, 2), np.float32)
    keypoint_scores = np.zeros((0, k), np.float32)
    kept, row_of, failed = {}, {}, {}
    if records:
        report = SkipReport()
        try:
            result = predict_records(runner, records, batch_size=batch_size,
                                     skip_report=report, keep_crops=keep_maps)
        except ValueError as error:  # every image failed to decode
            if "no person crops" not in str(error):
                raise
            result = {"record_index": np.zeros((0,), np.int64)}
        done = set(result["record_index"].tolist())
        failed = {images[r.image_id][0]: images[r.image_id][1]
                  for i, r in enumerate(records) if i not in done}
        if failed and skipped is None:
            raise ValueError(f"Cannot decode {len(failed)} image(s), e.g. {next(iter(failed))}: "
                             f"{report.summary()}")
        if done:
            order = np.argsort(result["record_index"])  # rows in record order
            row_of = {int(i): row for row, i in enumerate(result["record_index"][order])}
            keypoints = result["keypoints"][runner.codec.decoder][order]
            keypoint_scores = result["scores"][runner.codec.decoder][order]
            kept = {name: result[name][order] for name in
                    ("crops", "crop_keypoints", "heatmaps", "skeletal_heatmaps")
                    if name in result}
    if skipped is not None:
        reasons = {entry["image"]: entry["reason"] for entry in read_failures}
        reasons.update({path: _failure_reason(path, size) for path, size in failed.items()})
        skipped.extend({"image": path, "reason": reasons[path]} for path in image_paths
                       if path in reasons)
    predictions = []
    for image_id, (path, size, source) in enumerate(images):
        if path in failed:
            continue
        people = [i for i, r in enumerate(records) if r.image_id == image_id]
        rows = [row_of[i] for i in people]
        box_scores = np.asarray([records[i].box_score for i in people], np.float32)
        predictions.append(ImagePrediction(
            image_path=path, image_size=size, box_source=source,
            boxes=np.asarray([records[i].box for i in people], np.float32).reshape(-1, 4),
            box_scores=box_scores,
            centers=np.asarray([records[i].center for i in people], np.float32).reshape(-1, 2),
            scales=np.asarray([records[i].scale for i in people], np.float32).reshape(-1, 2),
            keypoints=keypoints[rows], keypoint_scores=keypoint_scores[rows],
            scores=rescore_instances(keypoint_scores[rows], box_scores).astype(np.float32),
            maps={name: value[rows] for name, value in kept.items()} if keep_maps else None))
    return predictions


def draw_prediction(image, prediction: ImagePrediction, keypoint_set, threshold=0.3):
    """The image with every person's skeleton (keypoints scoring above `threshold`) and, for
    given boxes, the box labelled with the instance score. RGB uint8 [H, W, 3]."""
    canvas = image
    whole_image = prediction.box_source.startswith("whole image")
    for p in range(prediction.num_people):
        canvas = draw_pose(canvas, prediction.keypoints[p], prediction.keypoint_scores[p],
                           keypoint_set, threshold=threshold)
        if not whole_image:
            canvas = draw_box(canvas, prediction.boxes[p], label=f"{prediction.scores[p]:.2f}")
    return canvas


def _output_stems(image_paths) -> dict:
    """A unique file stem per image: its name without extension (with it, when two collide)."""
    stems = [os.path.splitext(os.path.basename(p))[0] for p in image_paths]
    return {path: (stem if stems.count(stem) == 1 else os.path.basename(path).replace(".", "_"))
            for path, stem in zip(image_paths, stems)}


def _write_png(path, image_rgb):
    if not cv2.imwrite(path, np.ascontiguousarray(image_rgb[..., ::-1])):
        raise ValueError(f"Cannot write {path}.")


def write_outputs(predictions, network, out_dir, *, weights="", flip_test=True,
                  show_maps=False, threshold=0.3, skipped=()) -> dict:
    """Write `predictions.json`, the skeleton PNGs and (with `show_maps`) the maps panels.

    Args:
        predictions: `ImagePrediction`s of `network` (with `keep_maps=True` for `show_maps`).
        network: the network that predicted them (its keypoint set and codec are recorded).
        out_dir: output folder.
        weights: the checkpoint's name, recorded in the JSON.
        flip_test: whether the predictions used the flip test (recorded).
        show_maps: write each person's maps panel (`drawing.maps_panel`).
        threshold: keypoints scoring above it are drawn.
        skipped: the images `predict_images` left out ({"image", "reason"} each), listed
            under "skipped".

    Returns:
        The JSON payload, whose image entries name their `drawing` (and `maps`) files.
    """
    os.makedirs(out_dir, exist_ok=True)
    keypoint_set = network.keypoint_set
    stems = _output_stems([p.image_path for p in predictions])
    entries = []
    for prediction in predictions:
        image, _ = decode_image(read_image_bytes(prediction.image_path))
        entry = prediction.to_dict()
        entry["drawing"] = os.path.join(out_dir, f"{stems[prediction.image_path]}_pose.png")
        _write_png(entry["drawing"], draw_prediction(image, prediction, keypoint_set, threshold))
        if show_maps and prediction.num_people:
            entry["maps"] = _write_maps(prediction, keypoint_set, out_dir,
                                        stems[prediction.image_path], threshold)
        entries.append(entry)
    payload = {
        "weights": weights,
        "decoder": network.codec.decoder,
        "decoding": network.codec.describe_decoding(),
        "flip_test": bool(flip_test),
        "coordinates": COORDINATES,
        "keypoint_names": list(keypoint_set.keypoint_names),
        "skipped": [dict(entry) for entry in skipped],
        "images": entries,
    }
    header = json.dumps({k: v for k, v in payload.items() if k != "images"}, indent=1)
    lines = ",\n".join("  " + json.dumps(entry) for entry in entries)
    with open(os.path.join(out_dir, "predictions.json"), "w") as f:
        # One line per image keeps the file readable; it is ordinary JSON.
        f.write(f'{header[:-2]},\n "images": [\n{lines}\n ]\n}}\n')
    return payload


def _write_maps(prediction, keypoint_set, out_dir, stem, threshold) -> list:
    """One maps panel per person of `prediction`, from the crops and maps it kept."""
    if prediction.maps is None:
        raise ValueError("show_maps needs the crops and maps of the prediction: call "
                         "predict_images(..., keep_maps=True).")
    maps = prediction.maps
    paths = []
    for p in range(prediction.num_people):
        path = os.path.join(out_dir, f"{stem}_person{p}_maps.png")
        skeletal = maps["skeletal_heatmaps"][p] if "skeletal_heatmaps" in maps else None
        _write_png(path, maps_panel(maps["crops"][p], maps["crop_keypoints"][p],
                                    prediction.keypoint_scores[p], maps["heatmaps"][p],
                                    keypoint_set, skeletal, threshold=threshold))
        paths.append(path)
    return paths
