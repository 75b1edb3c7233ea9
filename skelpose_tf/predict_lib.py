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
each person: (a) the input crop with its pose, (b) skeletal heatmaps (max over links),
(c-e) upper-, lower- and full-body attention maps, (f) keypoint heatmaps (max over keypoints),
all over the crop, from one forward pass (no flip test: the maps the network computes).

Example:
    predictions = predict_images(network, list_images("photos/"), flip_test=True)
    payload = write_outputs(predictions, network, "out/", weights="runs/demo")
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

import cv2
import numpy as np

from skelpose_tf.crop_geometry import (BOX_PADDING, affine_matrix, apply_affine,
                                       box_to_center_scale, input_aspect_ratio)
from skelpose_tf.data.images import (ImageDecodeError, decode_image, read_image_bytes,
                                     read_image_size)
from skelpose_tf.data.pipeline import make_eval_dataset
from skelpose_tf.data.records import PersonRecord, SkipReport, as_float32
from skelpose_tf.drawing import draw_box, draw_pose, tile_images
from skelpose_tf.evaluation.coco_metric import rescore_instances
from skelpose_tf.inference import PosePredictor, codec_for_model, run_inference

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
WHOLE_IMAGE_PADDING = 1.0
MIN_PANEL_CROP_WIDTH = 160
PANEL_CAPTION_HEIGHT = 20
COORDINATES = "original-image pixels (x, y), 0-based, pixel centres at integers"
PANEL_CAPTIONS = {
    "crop": "(a) crop, pose",
    "skeletal_heatmaps": "(b) skeletal",
    "keypoint_heatmaps": "(f) keypoints",
    "attention": "(c-e) body attention maps",
}


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
    try:
        return tuple(int(v) for v in read_image_size(path))
    except ImageDecodeError as error:
        raise ValueError(f"Cannot read image {path}: {error.reason}.") from None


def _record(path, image_id, size, box, center, scale, score, num_keypoints) -> PersonRecord:
    """A `PersonRecord` without ground truth (zero keypoints, all unlabelled)."""
    return PersonRecord(
        image_path=path, image_id=image_id, image_size=size, box=np.asarray(box, np.float32),
        center=np.asarray(center, np.float32), scale=np.asarray(scale, np.float32),
        keypoints=np.zeros((num_keypoints, 2), np.float32),
        visibility=np.zeros((num_keypoints,), np.float32), box_score=float(score))


def person_records(image_paths, boxes, boxes_file, input_size, num_keypoints):
    """One `PersonRecord` per person box, and each image's size and box source.

    Args:
        image_paths: image files.
        boxes: optional {image path: (boxes [P, 4], scores [P])}; other images use the whole
            image as one person box.
        boxes_file: the boxes file's name, for the box source text.
        input_size: the model's (height, width) (sets the crop's aspect ratio).
        num_keypoints: K of the records' (empty) keypoint arrays.

    Returns:
        (records, images): `images` is a list of (path, (height, width), box source text).

    Raises:
        ValueError: a missing or unreadable image.
    """
    boxes = boxes or {}
    aspect_ratio = input_aspect_ratio(input_size)
    records, images = [], []
    for image_id, path in enumerate(image_paths):
        size = _image_size(path)
        if path in boxes:
            image_boxes, scores = boxes[path]
            padding, source = BOX_PADDING, f"boxes from {boxes_file}"
        else:
            image_boxes, scores = whole_image_box(size)[None], np.ones((1,), np.float32)
            padding = WHOLE_IMAGE_PADDING
            source = (f"whole image (not listed in {boxes_file})" if boxes_file
                      else "whole image (no boxes given)")
        images.append((path, size, source))
        centers, scales = box_to_center_scale(np.reshape(image_boxes, (-1, 4)), aspect_ratio,
                                              padding)
        for box, center, scale, score in zip(image_boxes, np.asarray(centers),
                                             np.asarray(scales), scores):
            records.append(_record(path, image_id, size, box, center, scale, score,
                                   num_keypoints))
    return records, images


def predict_images(network, image_paths, boxes=None, boxes_file="", *, decoder="weighted",
                   flip_test=True, batch_size=16, top_n=20) -> list:
    """Predict every person of every image.

    Args:
        network: a `PoseHRNet`.
        image_paths: image files (`list_images`).
        boxes: optional {image path: (boxes [P, 4], scores [P])} (`read_boxes_file`); images
            without an entry use the whole image as one person box.
        boxes_file: name of the boxes file (for the box source text).
        decoder: one of `skelpose_tf.codec.DECODERS`.
        flip_test: average the heatmaps of each crop and its mirror image.
        batch_size: crops per forward pass.
        top_n: N of the weighted decoder.

    Returns:
        A list of `ImagePrediction`, in the order of `image_paths`.

    Raises:
        ValueError: a missing, unreadable or undecodable image.
    """
    keypoint_set = network.keypoint_set
    k = keypoint_set.num_keypoints
    records, images = person_records(image_paths, boxes, boxes_file, network.input_size, k)
    keypoints = np.zeros((len(records), k, 2), np.float32)
    keypoint_scores = np.zeros((len(records), k), np.float32)
    if records:
        report = SkipReport()
        predictor = PosePredictor(network, codec_for_model(network, decoder, top_n=top_n),
                                  flip_test=flip_test)
        dataset = make_eval_dataset(records, keypoint_set, network.input_size, batch_size,
                                    report=report)
        try:
            result = run_inference(predictor, dataset, decoders=[decoder], log_every=0)
        except ValueError as error:  # every image failed to decode
            if "no person crops" not in str(error):
                raise
            result = {"record_index": np.zeros((0,), np.int64)}
        done = set(result["record_index"].tolist())
        failed = sorted({records[i].image_path for i in range(len(records)) if i not in done})
        if failed:
            raise ValueError(f"Cannot decode {len(failed)} image(s), e.g. {failed[0]}: "
                             f"{report.summary()}")
        keypoints[result["record_index"]] = result["keypoints"][decoder]
        keypoint_scores[result["record_index"]] = result["scores"][decoder]
    predictions = []
    for image_id, (path, size, source) in enumerate(images):
        rows = [i for i, r in enumerate(records) if r.image_id == image_id]
        box_scores = np.asarray([records[i].box_score for i in rows], np.float32)
        predictions.append(ImagePrediction(
            image_path=path, image_size=size, box_source=source,
            boxes=np.asarray([records[i].box for i in rows], np.float32).reshape(-1, 4),
            box_scores=box_scores,
            centers=np.asarray([records[i].center for i in rows], np.float32).reshape(-1, 2),
            scales=np.asarray([records[i].scale for i in rows], np.float32).reshape(-1, 2),
            keypoints=keypoints[rows], keypoint_scores=keypoint_scores[rows],
            scores=rescore_instances(keypoint_scores[rows], box_scores).astype(np.float32)))
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


def maps_panel(network, codec, crop, crop_keypoints, keypoint_scores, threshold=0.3):
    """The Fig. 1-2 style panel of one person crop, RGB uint8.

    Top row: (a) the crop with its pose, (b) skeletal heatmaps, (f) keypoint heatmaps; bottom
    row, for a model with the skeletal module: (c-e) the upper-, lower- and full-body attention
    maps. The maps come from `skelpose_tf.training.callbacks.pose_panels` (one forward pass);
    crops narrower than `MIN_PANEL_CROP_WIDTH` are shown enlarged by an integer factor.

    Args:
        network: the pose network.
        codec: its `HeatmapCodec`.
        crop: uint8 [H, W, 3], the person's input crop.
        crop_keypoints: float [K, 2], the predicted keypoints in crop pixels.
        keypoint_scores: float [K].
        threshold: keypoints scoring above it are drawn.
    """
    from skelpose_tf.training.callbacks import pose_panels

    panels = pose_panels(network, codec, np.asarray(crop)[None], max_images=1)
    drawn = draw_pose(np.asarray(crop), crop_keypoints, keypoint_scores, codec.keypoint_set,
                      threshold=threshold)
    panels["crop"] = tile_images([drawn], cols=1)
    # Small crops (e.g. 96x64) are enlarged so that the maps and captions stay readable.
    factor = max(1, math.ceil(MIN_PANEL_CROP_WIDTH / crop.shape[1]))
    panels = {name: cv2.resize(panel, None, fx=factor, fy=factor, interpolation=cv2.INTER_LINEAR)
              for name, panel in panels.items()}
    top = {name: panels[name] for name in ("crop", "skeletal_heatmaps", "keypoint_heatmaps")
           if name in panels}
    caption_height = PANEL_CAPTION_HEIGHT
    rows = [tile_images(list(top.values()), cols=len(top),
                        captions=[PANEL_CAPTIONS[name] for name in top],
                        caption_height=caption_height)]
    captions = [""]
    if "attention" in panels:
        rows.append(panels["attention"])
        captions.append(PANEL_CAPTIONS["attention"])
    return tile_images(rows, cols=1, captions=captions, caption_height=caption_height)


def _output_stems(image_paths) -> dict:
    """A unique file stem per image: its name without extension (with it, when two collide)."""
    stems = [os.path.splitext(os.path.basename(p))[0] for p in image_paths]
    return {path: (stem if stems.count(stem) == 1 else os.path.basename(path).replace(".", "_"))
            for path, stem in zip(image_paths, stems)}


def _write_png(path, image_rgb):
    if not cv2.imwrite(path, np.ascontiguousarray(image_rgb[..., ::-1])):
        raise ValueError(f"Cannot write {path}.")


def write_outputs(predictions, network, out_dir, *, weights="", decoder="weighted",
                  flip_test=True, show_maps=False, threshold=0.3, top_n=20) -> dict:
    """Write `predictions.json`, the skeleton PNGs and (with `show_maps`) the maps panels.

    Returns:
        The JSON payload, whose image entries name their `drawing` (and `maps`) files.
    """
    os.makedirs(out_dir, exist_ok=True)
    keypoint_set = network.keypoint_set
    codec = codec_for_model(network, decoder, top_n=top_n)
    stems = _output_stems([p.image_path for p in predictions])
    entries = []
    for prediction in predictions:
        image, _ = decode_image(read_image_bytes(prediction.image_path))
        entry = prediction.to_dict()
        entry["drawing"] = os.path.join(out_dir, f"{stems[prediction.image_path]}_pose.png")
        _write_png(entry["drawing"], draw_prediction(image, prediction, keypoint_set, threshold))
        if show_maps and prediction.num_people:
            entry["maps"] = _write_maps(network, codec, prediction, out_dir,
                                        stems[prediction.image_path], threshold)
        entries.append(entry)
    payload = {
        "weights": weights,
        "decoder": decoder,
        "flip_test": bool(flip_test),
        "coordinates": COORDINATES,
        "keypoint_names": list(keypoint_set.keypoint_names),
        "images": entries,
    }
    header = json.dumps({k: v for k, v in payload.items() if k != "images"}, indent=1)
    lines = ",\n".join("  " + json.dumps(entry) for entry in entries)
    with open(os.path.join(out_dir, "predictions.json"), "w") as f:
        # One line per image keeps the file readable; it is ordinary JSON.
        f.write(f'{header[:-2]},\n "images": [\n{lines}\n ]\n}}\n')
    return payload


def _write_maps(network, codec, prediction, out_dir, stem, threshold) -> list:
    """One maps panel per person of `prediction`, from the crops of its own regions."""
    k = codec.keypoint_set.num_keypoints
    records = [_record(prediction.image_path, 0, prediction.image_size, box, center, scale, 1.0, k)
               for box, center, scale in zip(prediction.boxes, prediction.centers,
                                             prediction.scales)]
    crops = np.concatenate([images.numpy() for images, _ in make_eval_dataset(
        records, codec.keypoint_set, network.input_size, batch_size=len(records))])
    paths = []
    for p, crop in enumerate(crops):
        matrix = affine_matrix(prediction.centers[p], prediction.scales[p], 0.0,
                               network.input_size)
        crop_keypoints = np.asarray(apply_affine(prediction.keypoints[p], matrix))
        path = os.path.join(out_dir, f"{stem}_person{p}_maps.png")
        _write_png(path, maps_panel(network, codec, crop, crop_keypoints,
                                    prediction.keypoint_scores[p], threshold))
        paths.append(path)
    return paths
