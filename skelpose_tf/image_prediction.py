"""Top-down pose inference on the user's own images (`predict.py`): the image loop and outputs.

Each image is read once and handed to a `skelpose_tf.estimator.PoseEstimator`: person boxes
(its detector, a boxes file, else the whole image) become crops exactly as in evaluation, the
model predicts flip-averaged heatmaps, the decoder turns them into keypoints and the inverse
crop transform maps those back to **original-image pixels** (x, y), 0-based, pixel centres at
integers, in the image's stored pixel grid (EXIF orientation is ignored, as for COCO).

Boxes file (`detectors.read_boxes_file`), boxes as [x, y, w, h] in image pixels (COCO's bbox
layout):
- a JSON object mapping image file names (or the paths as given) to lists of boxes:
  `{"a.jpg": [[10, 20, 100, 240], {"bbox": [300, 40, 90, 200], "score": 0.9}]}`; images it
  does not list use the whole image;
- for a single image, just the list of boxes;
- COCO detection results (`detectors` module docstring).
Given and detected boxes are enlarged x1.25 to the model's aspect ratio (as detector boxes in
evaluation); the whole-image box is only enlarged to the aspect ratio.

Outputs (`write_outputs`): `predictions.json`, `coco_results.json` (COCO keypoint results,
`coco_results`, which `pycocotools` `loadRes` reads), `<image stem>_pose.png` (boxes and
skeletons drawn on the image) and, with `show_maps`, `<image stem>_person<i>_maps.png`: the
paper's Fig. 1-2 panel for each person (`drawing.maps_panel`): (a) the input crop with its pose,
(b) skeletal heatmaps (max over links), (c-e) upper-, lower- and full-body attention maps, (f)
keypoint heatmaps (max over keypoints, flip-averaged with the flip test), all over the crop.
They are drawn from the crops and maps of the prediction's own forward pass
(`predict_images(keep_maps=True)`): the network runs once.

Unreadable images: with `predict_images(skipped=[])` (what `predict.py` does for a folder) a
missing, truncated or corrupt image is left out and listed with its reason (the JSON's
`skipped` list); the other images are predicted and written. Without it, such an image is an
error (`ValueError`, one line), as for a single image given explicitly.

Example:
    predictions = predict_images(PoseEstimator.load("runs/demo"), list_images("photos/"))
    payload = write_outputs(predictions, estimator, "out/", weights="runs/demo")
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from skelpose_tf.atomic_files import write_png_atomic
from skelpose_tf.data.images import ImageDecodeError, decode_image, read_image_bytes
from skelpose_tf.detectors import read_boxes_file  # noqa: F401 - predict.py's boxes files
from skelpose_tf.drawing import draw_people, maps_panel
from skelpose_tf.export.runtime import open_runner
from skelpose_tf.person_pose import PersonPose

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
WHOLE_IMAGE_PADDING = 1.0
COCO_RESULTS_FILE = "coco_results.json"
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

    def people(self) -> list:
        """The people as `PersonPose`s (box, instance score, keypoints [K, 3], box score)."""
        return [PersonPose(box=self.boxes[p], score=float(self.scores[p]),
                           keypoints=np.concatenate([self.keypoints[p],
                                                     self.keypoint_scores[p][:, None]], -1),
                           box_score=float(self.box_scores[p]))
                for p in range(self.num_people)]

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


def predict_images(network, image_paths, boxes=None, boxes_file="", *, flip_test=True,
                   batch_size=16, keep_maps=False, skipped=None) -> list:
    """Predict every person of every image (one `PoseEstimator` pass per image).

    Args:
        network: a `PoseEstimator` (its detector finds the people), or a pose network /
            runner (`export.runtime.open_runner`; decoded with its own codec) with `boxes`.
        image_paths: image files (`list_images`).
        boxes: optional {image path: (boxes [P, 4], scores [P])} (`read_boxes_file`) for a
            network; images without an entry use the whole image as one person box.
        boxes_file: name of the boxes file (for the box source text).
        flip_test: average the heatmaps of each crop and its mirror image (a network).
        batch_size: crops per forward pass (a network).
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
    from skelpose_tf.detectors import BoxesDetector
    from skelpose_tf.estimator import PoseEstimator, read_image

    if isinstance(network, PoseEstimator):
        if boxes is not None:
            raise ValueError("predict_images: a PoseEstimator finds its own boxes; give it a "
                             "boxes detector (detectors.BoxesDetector) instead of `boxes`.")
        estimator = network
    else:
        detector = (None if boxes is None else
                    BoxesDetector(boxes, f"boxes from {boxes_file}", path=boxes_file))
        estimator = PoseEstimator(open_runner(network, flip_test=flip_test), detector,
                                  batch_size=batch_size)
    predictions = []
    for path in image_paths:
        try:
            image = read_image(path)
        except ImageDecodeError as error:
            if skipped is None:
                raise ValueError(f"Cannot read image {path}: {error.reason}.") from None
            skipped.append({"image": path, "reason": error.reason})
            continue
        predictions.append(estimator.predict_image(image, image_path=path, keep_maps=keep_maps))
    return predictions


def draw_prediction(image, prediction: ImagePrediction, keypoint_set, threshold=0.3):
    """The image with every person's skeleton (keypoints scoring above `threshold`) and, for
    detected or given boxes, the box labelled with the instance score. RGB uint8 [H, W, 3]."""
    return draw_people(image, prediction.people(), keypoint_set, threshold=threshold,
                       boxes=not prediction.box_source.startswith("whole image"))


def _output_stems(image_paths) -> dict:
    """A unique file stem per image: its name without extension (with it, when two collide)."""
    stems = [os.path.splitext(os.path.basename(p))[0] for p in image_paths]
    return {path: (stem if stems.count(stem) == 1 else os.path.basename(path).replace(".", "_"))
            for path, stem in zip(image_paths, stems)}


def _write_png(path, image_rgb):
    write_png_atomic(path, image_rgb)


def coco_image_id(image_path, ids_by_name=None):
    """The `image_id` of an image's COCO results: its id in a COCO annotation file's `images`
    table (`ids_by_name`, `detectors.image_ids_by_name`), else its numeric file stem as an int
    (COCO's own file names), else the file stem as a string."""
    from skelpose_tf.detectors import image_id_of

    image_id = image_id_of(image_path, ids_by_name)
    return os.path.splitext(os.path.basename(image_path))[0] if image_id is None else image_id


def coco_results(predictions, ids_by_name=None) -> list:
    """COCO keypoint results of every person (`PersonPose.to_coco`, category 1), the list
    `pycocotools.COCO.loadRes` reads; `image_id` from `coco_image_id`."""
    return [person.to_coco(coco_image_id(prediction.image_path, ids_by_name))
            for prediction in predictions for person in prediction.people()]


def write_outputs(predictions, network, out_dir, *, weights="", flip_test=True,
                  show_maps=False, threshold=0.3, skipped=(), ids_by_name=None) -> dict:
    """Write `predictions.json`, `coco_results.json`, the skeleton PNGs and (with `show_maps`)
    the maps panels.

    Args:
        predictions: `ImagePrediction`s of `network` (with `keep_maps=True` for `show_maps`).
        network: the model that predicted them: anything with its `keypoint_set` and `codec`
            (a pose network, a runner, a `PoseEstimator`); both are recorded.
        out_dir: output folder.
        weights: the checkpoint's name, recorded in the JSON.
        flip_test: whether the predictions used the flip test (recorded).
        show_maps: write each person's maps panel (`drawing.maps_panel`).
        threshold: keypoints scoring above it are drawn.
        skipped: the images `predict_images` left out ({"image", "reason"} each), listed
            under "skipped".
        ids_by_name: {file name: COCO image id} for `coco_results.json` (`coco_results`).

    Returns:
        The JSON payload, whose image entries name their `drawing` (and `maps`) files; the
        COCO results file is `payload["coco_results"]`.
    """
    from skelpose_tf.atomic_files import write_json_atomic, write_text_atomic

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
    coco_path = os.path.join(out_dir, COCO_RESULTS_FILE)
    write_json_atomic(coco_path, coco_results(predictions, ids_by_name))
    payload = {
        "weights": weights,
        "decoder": network.codec.decoder,
        "decoding": network.codec.describe_decoding(),
        "flip_test": bool(flip_test),
        "coordinates": COORDINATES,
        "keypoint_names": list(keypoint_set.keypoint_names),
        "coco_results": coco_path,
        "skipped": [dict(entry) for entry in skipped],
        "images": entries,
    }
    header = json.dumps({k: v for k, v in payload.items() if k != "images"}, indent=1)
    lines = ",\n".join("  " + json.dumps(entry) for entry in entries)
    # One line per image keeps the file readable; it is ordinary JSON.
    write_text_atomic(os.path.join(out_dir, "predictions.json"),
                      f'{header[:-2]},\n "images": [\n{lines}\n ]\n}}\n')
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
