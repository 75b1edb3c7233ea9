"""Person detectors for top-down pose estimation, behind one small interface.

A detector is a callable

    detector(image_rgb uint8 [H, W, 3], image_path=None)
        -> (boxes float32 [N, 4], scores float32 [N])

returning **person** boxes only, as COCO bboxes `[x, y, w, h]` in image pixels (`(x, y)` the
top-left pixel edge, the convention of `person_pose.PersonPose.box`), scoring at least its
`det_score`, after box non-maximum suppression at IoU `nms_iou` (`cv2.dnn.NMSBoxes`), highest
score first. `detector.name` says where the boxes come from (the box source text of
`predict.py`). `open_detector(spec)` parses `predict.py --detector`:

- `hog` or `hog:SIDE` (the offline default, nothing to download): OpenCV's HOG + linear SVM
  people detector (`cv2.HOGDescriptor_getDefaultPeopleDetector`, Dalal & Triggs' upright
  pedestrians, a 64x128 window). The image is resized so its longer side is SIDE pixels
  (default `HOG_IMAGE_SIDE` = 128) inside a grey border of `HOG_BORDER` times that side, so
  that a person whom the photograph cuts off (a portrait) still fits a whole window; the window
  then finds people at least about three quarters of the image's height at 128 (a portrait, a
  single-person photo), and smaller ones at a larger SIDE (`hog:384`: a third of the height),
  with more false alarms. Its scores are SVM margins, not probabilities: they are mapped to
  `1 - exp(-margin)` in [0, 1) (0 at the decision boundary, 0.63 at margin 1; monotone, not
  calibrated), and the default `det_score` 0.25 keeps margins above 0.29.
- `saved_model:DIR`: a detector exported in the TF Object Detection API convention (TF Hub,
  Kaggle Models, TF Model Garden exports): `serving_default` takes uint8 `[1, H, W, 3]` and
  returns `detection_boxes` `[1, N, 4]` normalised `[y1, x1, y2, x2]`, `detection_scores`
  `[1, N]`, `detection_classes` `[1, N]` (COCO category ids, person = 1) and `num_detections`.
- `keras_hub:PRESET_OR_DIR`: a keras-hub `ObjectDetector` (RetinaNet, D-FINE), from a local
  preset directory or a preset name (downloaded when online); `pip install .[detectors]`.
  Its `predict` returns `boxes` in the detector's `bounding_box_format` (presets: "yxyx") in
  the pixels of its input, `labels`, `confidence` and `num_detections`; the image is resized
  here to the preprocessor's `image_size` (so its own resize, which may crop to an aspect
  ratio, does nothing) and the boxes scaled back. The person label is keras-hub's COCO id
  (`keras_hub.utils.coco_name_to_id("person")` = 1) for a 91-class head, 0 for an 80-class one
  (D-FINE's contiguous COCO labels); `person_class` overrides it.
- `boxes:FILE`: boxes given in a JSON file (`read_boxes_file`): `predict.py`'s boxes layout
  (file name -> boxes) or COCO detection results (a list of `{"image_id", "category_id",
  "bbox", "score"}`, the output of any COCO detector evaluation). Results are matched to
  images by the `images` table of a COCO annotation file when one is given
  (`annotations=`, its `file_name`s), else by `image_id` equal to the file's numeric stem
  (`000000000139.jpg` is image 139), as COCO's own files are named. Only person results
  (category 1) scoring at least `det_score` are kept (default 0: all); given boxes get no NMS.
  An image the file does not list is not covered (`covers`): `PoseEstimator` then takes the
  whole image as one person, and says so.
- `none`: no detector; every image is one person, the whole image.

A bad spec, a missing file or a SavedModel without the expected outputs raises `ValueError`
with one line naming the spec or the file.

Example:
    detector = open_detector("hog")
    boxes, scores = detector(image)          # [N, 4] xywh image pixels, [N]
"""

from __future__ import annotations

import json
import os

import cv2
import numpy as np

DEFAULT_NMS_IOU = 0.5
HOG_IMAGE_SIDE = 128
HOG_BORDER = 0.5
HOG_BORDER_VALUE = (128, 128, 128)
# Default det_score per kind: HOG's is a margin of 0.29 (module docstring); the learned
# detectors' scores are probabilities (0.5, as Ultralytics' and TF Hub demos keep); given
# boxes are all kept.
DEFAULT_DET_SCORES = {"hog": 0.25, "saved_model": 0.5, "keras_hub": 0.5, "boxes": 0.0}
KINDS = ("hog", "saved_model", "keras_hub", "boxes", "none")
COCO_PERSON = 1
_MISSING = object()
OD_API_OUTPUTS = ("detection_boxes", "detection_scores", "detection_classes")


def _empty():
    return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)


def _check_image(image, where) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{where}: the image must be RGB uint8 [H, W, 3]. Received dtype "
                         f"{image.dtype}, shape {tuple(image.shape)}.")
    return image


def select_boxes(boxes, scores, det_score, nms_iou):
    """Boxes scoring at least `det_score`, after NMS at `nms_iou`, best first.

    Args:
        boxes: float [N, 4] `[x, y, w, h]`; scores: float [N].

    Returns:
        (boxes float32 [M, 4], scores float32 [M]).
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.asarray(scores, np.float32).reshape(-1)
    keep = (scores >= det_score) & (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
    boxes, scores = boxes[keep], scores[keep]
    if len(boxes) == 0:
        return _empty()
    kept = np.asarray(cv2.dnn.NMSBoxes(boxes.tolist(), scores.tolist(), float(det_score),
                                       float(nms_iou)), np.int64).reshape(-1)
    kept = kept[np.argsort(-scores[kept], kind="stable")]
    return boxes[kept], scores[kept]


def edges_to_pixels(boxes):
    """Boxes whose coordinates put 0 on the image's left/top edge (OpenCV rectangles,
    normalised coordinates times the size, keras-hub) -> this package's convention, pixel
    centres at integers: the image's edges at -0.5 and W - 0.5 (`image_prediction
    .whole_image_box`)."""
    return np.asarray(boxes, np.float32).reshape(-1, 4) - np.float32([0.5, 0.5, 0.0, 0.0])


def clip_boxes(boxes, image_size):
    """`[x, y, w, h]` boxes cut to the image: its pixel edges -0.5 ... W - 0.5."""
    height, width = image_size
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    x1 = np.clip(boxes[:, 0], -0.5, width - 0.5)
    y1 = np.clip(boxes[:, 1], -0.5, height - 0.5)
    x2 = np.clip(boxes[:, 0] + boxes[:, 2], -0.5, width - 0.5)
    y2 = np.clip(boxes[:, 1] + boxes[:, 3], -0.5, height - 0.5)
    return np.stack([x1, y1, x2 - x1, y2 - y1], axis=-1).astype(np.float32)


def hog_score(margin):
    """A HOG SVM margin mapped to [0, 1): `1 - exp(-max(margin, 0))` (monotone, not a
    probability)."""
    return (1.0 - np.exp(-np.maximum(np.asarray(margin, np.float64), 0.0))).astype(np.float32)


class HogDetector:
    """OpenCV's HOG people detector (module docstring).

    Args:
        image_side: the longer side, in pixels, the image is resized to before detection.
        det_score: minimum `hog_score`; nms_iou: NMS IoU threshold.
    """

    def __init__(self, image_side=HOG_IMAGE_SIDE, det_score=DEFAULT_DET_SCORES["hog"],
                 nms_iou=DEFAULT_NMS_IOU):
        if not hasattr(cv2, "HOGDescriptor"):
            raise ValueError(
                f"This OpenCV ({cv2.__version__}) has no HOGDescriptor: OpenCV 5's "
                "opencv-python-headless wheel dropped it; install opencv-contrib-python-headless "
                "(pip install -r requirements.txt) in place of opencv-python-headless.")
        if image_side < 64:
            raise ValueError(f"hog: the image side must be at least 64 pixels. Received "
                             f"{image_side}.")
        self.image_side = int(image_side)
        self.det_score = float(det_score)
        self.nms_iou = float(nms_iou)
        self.name = f"hog detector (image side {self.image_side})"
        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())

    def __call__(self, image, image_path=None):
        image = _check_image(image, "hog detector")
        height, width = image.shape[:2]
        factor = self.image_side / max(height, width)
        small = cv2.resize(image, (max(1, round(width * factor)), max(1, round(height * factor))),
                           interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)
        border = int(round(HOG_BORDER * self.image_side))
        canvas = cv2.copyMakeBorder(small, border, border, border, border, cv2.BORDER_CONSTANT,
                                    value=HOG_BORDER_VALUE)
        # groupThreshold=0: every window is returned with its margin; NMS below merges them.
        rects, margins = self._hog.detectMultiScale(canvas, winStride=(4, 4), padding=(8, 8),
                                                    scale=1.05, groupThreshold=0)
        if len(rects) == 0:
            return _empty()
        boxes = (np.asarray(rects, np.float32).reshape(-1, 4) - [border, border, 0, 0]) / factor
        boxes = clip_boxes(edges_to_pixels(boxes), (height, width))
        return select_boxes(boxes, hog_score(np.ravel(margins)), self.det_score, self.nms_iou)


def od_api_boxes(outputs, image_size, person_class=COCO_PERSON):
    """Person boxes and scores from TF Object Detection API outputs of one image.

    Args:
        outputs: numpy `detection_boxes` [1, N, 4] normalised `[y1, x1, y2, x2]`,
            `detection_scores` [1, N], `detection_classes` [1, N], optional `num_detections`.
        image_size: (height, width) of the image.

    Returns:
        (boxes float32 [P, 4] `[x, y, w, h]` image pixels (`edges_to_pixels`), scores
        float32 [P]).
    """
    height, width = image_size
    count = int(np.ravel(outputs["num_detections"])[0]) if "num_detections" in outputs else None
    normalised = np.asarray(outputs["detection_boxes"], np.float32).reshape(-1, 4)[:count]
    scores = np.asarray(outputs["detection_scores"], np.float32).reshape(-1)[:count]
    classes = np.rint(np.asarray(outputs["detection_classes"], np.float32).reshape(-1)[:count])
    person = classes == person_class
    y1, x1, y2, x2 = (normalised[person, i] for i in range(4))
    boxes = np.stack([x1 * width, y1 * height, (x2 - x1) * width, (y2 - y1) * height], axis=-1)
    return edges_to_pixels(boxes), scores[person]


class SavedModelDetector:
    """A TF Object Detection API SavedModel (module docstring).

    Args:
        path: the SavedModel directory.
        det_score, nms_iou: as `select_boxes`; person_class: the person's class id (COCO: 1).
    """

    def __init__(self, path, det_score=DEFAULT_DET_SCORES["saved_model"],
                 nms_iou=DEFAULT_NMS_IOU, person_class=COCO_PERSON):
        import tensorflow as tf

        self.path = os.fspath(path)
        if not os.path.isfile(os.path.join(self.path, "saved_model.pb")):
            raise ValueError(f"--detector=saved_model:{self.path}: no SavedModel there "
                             "(saved_model.pb is missing).")
        self.model = tf.saved_model.load(self.path)
        signature = self.model.signatures.get("serving_default")
        if signature is None:
            raise ValueError(f"--detector=saved_model:{self.path}: the SavedModel has no "
                             "serving_default signature.")
        missing = [name for name in OD_API_OUTPUTS if name not in signature.structured_outputs]
        if missing:
            raise ValueError(
                f"--detector=saved_model:{self.path}: serving_default lacks the Object "
                f"Detection API outputs {missing} (it has {sorted(signature.structured_outputs)})")
        inputs = signature.structured_input_signature[1]
        if len(inputs) != 1:
            raise ValueError(f"--detector=saved_model:{self.path}: serving_default must take "
                             f"one uint8 image tensor. It takes {sorted(inputs)}.")
        (self._input_name, spec), = inputs.items()
        if spec.dtype != tf.uint8:
            raise ValueError(f"--detector=saved_model:{self.path}: serving_default takes "
                             f"{spec.dtype.name}, not the uint8 images of the Object Detection "
                             "API convention.")
        self._signature = signature
        self.det_score = float(det_score)
        self.nms_iou = float(nms_iou)
        self.person_class = int(person_class)
        self.name = f"detector {self.path}"

    def __call__(self, image, image_path=None):
        image = _check_image(image, f"detector {self.path}")
        outputs = self._signature(**{self._input_name: image[None]})
        outputs = {name: value.numpy() for name, value in outputs.items()}
        boxes, scores = od_api_boxes(outputs, image.shape[:2], self.person_class)
        return select_boxes(clip_boxes(boxes, image.shape[:2]), scores, self.det_score,
                            self.nms_iou)


def _keras_hub_person_class(detector) -> int:
    """keras-hub's COCO person id for a 91-class head (1), else the contiguous 80-class one (0)."""
    import keras_hub

    num_classes = int(getattr(detector, "num_classes", 0) or 0)
    return keras_hub.utils.coco_name_to_id("person") if num_classes > 80 else 0


class KerasHubDetector:
    """A keras-hub `ObjectDetector` (module docstring).

    Args:
        detector: a `keras_hub.models.ObjectDetector` (or a preset name / directory, loaded with
            `ObjectDetector.from_preset`).
        det_score, nms_iou: as `select_boxes`; person_class: None for keras-hub's COCO person
            id (`_keras_hub_person_class`).
    """

    def __init__(self, detector, det_score=DEFAULT_DET_SCORES["keras_hub"],
                 nms_iou=DEFAULT_NMS_IOU, person_class=None):
        try:
            import keras_hub
        except ImportError:
            raise ValueError("--detector=keras_hub:... needs keras-hub: pip install "
                             "'skelpose_tf[detectors]' (or pip install keras-hub).") from None
        if isinstance(detector, (str, os.PathLike)):
            preset = os.fspath(detector)
            try:
                detector = keras_hub.models.ObjectDetector.from_preset(preset)
            except Exception as error:  # noqa: BLE001 - keras-hub raises many kinds
                message = " ".join(str(error).split())[:300]
                raise ValueError(f"--detector=keras_hub:{preset}: cannot load the preset "
                                 f"({type(error).__name__}: {message})") from None
            self.name = f"keras-hub detector {preset}"
        else:
            self.name = f"keras-hub detector {type(detector).__name__}"
        self.detector = detector
        self.det_score = float(det_score)
        self.nms_iou = float(nms_iou)
        self.person_class = (_keras_hub_person_class(detector) if person_class is None
                             else int(person_class))

    def _input_size(self):
        """(height, width) the detector's preprocessor resizes to, or None (any size)."""
        converter = getattr(getattr(self.detector, "preprocessor", None), "image_converter", None)
        size = getattr(converter, "image_size", None)
        return None if size is None or None in tuple(size) else tuple(int(v) for v in size)

    def __call__(self, image, image_path=None):
        import keras

        image = _check_image(image, self.name)
        height, width = image.shape[:2]
        # Resized here, not by the preprocessor (which may crop to its aspect ratio): the
        # boxes then scale back to the image by the two size ratios alone.
        size = self._input_size() or (height, width)
        if size != (height, width):
            image = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        outputs = self.detector.predict(image[None].astype(np.float32), verbose=0)
        count = int(np.ravel(outputs["num_detections"])[0])
        raw = np.asarray(outputs["boxes"], np.float32)[0, :count]
        labels = np.asarray(outputs["labels"])[0, :count]
        scores = np.asarray(outputs["confidence"], np.float32)[0, :count]
        xyxy = np.asarray(keras.utils.bounding_boxes.convert_format(
            raw, source=self.detector.bounding_box_format, target="xyxy",
            height=size[0], width=size[1]), np.float32).reshape(-1, 4)
        xyxy = xyxy * np.float32([width / size[1], height / size[0]] * 2)
        person = labels == self.person_class
        boxes = np.concatenate([xyxy[person, :2], xyxy[person, 2:] - xyxy[person, :2]], axis=-1)
        return select_boxes(clip_boxes(edges_to_pixels(boxes), (height, width)), scores[person],
                            self.det_score, self.nms_iou)


# Boxes files ---------------------------------------------------------------------------------
def parse_boxes(entries, where: str):
    """A list of [x, y, w, h] or {"bbox": [...], "score": s} -> (boxes [P, 4], scores [P])."""
    from skelpose_tf.data.records import as_float32

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


def _read_json(path, what):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"Cannot read the {what} {path}: {error}") from None


def image_ids_by_name(annotation_file) -> dict:
    """{file name: COCO image id} from a COCO annotation file's `images` table."""
    content = _read_json(annotation_file, "COCO annotation file")
    images = content.get("images") if isinstance(content, dict) else None
    if not isinstance(images, list):
        raise ValueError(f"{annotation_file} has no COCO 'images' list.")
    try:
        return {os.path.basename(entry["file_name"]): entry["id"] for entry in images}
    except (KeyError, TypeError):
        raise ValueError(f"{annotation_file}: every 'images' entry needs 'id' and "
                         "'file_name'.") from None


def image_id_of(image_path, ids_by_name=None):
    """The COCO image id of `image_path`: from `ids_by_name` (`image_ids_by_name`), else its
    numeric file stem as an int, else None."""
    name = os.path.basename(image_path)
    if ids_by_name is not None:
        return ids_by_name.get(name)
    stem = os.path.splitext(name)[0]
    return int(stem) if stem.isdigit() else None


def _is_coco_results(content) -> bool:
    return (isinstance(content, list) and bool(content) and isinstance(content[0], dict)
            and "image_id" in content[0])


def read_boxes_file(path: str, image_paths=None, annotations=None, det_score=0.0) -> dict:
    """Person boxes per image from a JSON file (the layouts of the module docstring).

    Args:
        path: the boxes file.
        image_paths: the images being predicted, or None (any image: keys are then matched by
            `BoxesDetector` when it is called). With them, a key that names none of them is an
            error, and a bare list of boxes needs exactly one image.
        annotations: a COCO annotation file that names the images of COCO detection results.
        det_score: COCO detection results scoring below it are left out.

    Returns:
        {key: (boxes float32 [P, 4] as [x, y, w, h], scores float32 [P])}; keys are file names
        or paths as the file gives them (the `image_paths` entry when those are given), or the
        image id (int) of COCO detection results; the key None holds a bare list.

    Raises:
        ValueError: unreadable JSON, a malformed box, a bare list for several images, or a key
            that names none of the images.
    """
    content = _read_json(path, "boxes file")
    if _is_coco_results(content):
        return _coco_results(content, path, image_paths, annotations, det_score)
    if isinstance(content, list):
        if image_paths is not None and len(image_paths) != 1:
            raise ValueError(f"{path} holds a bare list of boxes, which fits one image only; for "
                             f"{len(image_paths)} images map each file name to its boxes.")
        boxes = parse_boxes(content, path)
        return {None: boxes} if image_paths is None else {image_paths[0]: boxes}
    if not isinstance(content, dict):
        raise ValueError(f"{path} must hold a JSON object (file name -> boxes), a list of "
                         f"boxes or COCO detection results. Received a {type(content).__name__}.")
    if image_paths is None:
        return {key: parse_boxes(entries, f"{path} entry {key!r}")
                for key, entries in content.items()}
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
    return {by_key[key]: parse_boxes(entries, f"{path} entry {key!r}")
            for key, entries in content.items()}


def _coco_results(content, path, image_paths, annotations, det_score) -> dict:
    """COCO detection results -> {image id: (boxes, scores)} of category 1 above det_score
    (keys are the `image_paths` entries when those are given and can be matched)."""
    grouped = {}
    for i, result in enumerate(content):
        where = f"{path} result #{i}"
        if not isinstance(result, dict) or not {"image_id", "bbox"} <= set(result):
            raise ValueError(f"{where} needs 'image_id' and 'bbox'. Received: {result!r}")
        if result.get("category_id", COCO_PERSON) != COCO_PERSON:
            continue
        if float(result.get("score", 1.0)) < det_score:
            continue
        grouped.setdefault(result["image_id"], []).append(
            {"bbox": result["bbox"], "score": result.get("score", 1.0)})
    boxes = {image_id: parse_boxes(entries, f"{path} image_id {image_id!r}")
             for image_id, entries in grouped.items()}
    if image_paths is None:
        return boxes
    ids = None if annotations is None else image_ids_by_name(annotations)
    return {p: boxes[image_id_of(p, ids)] for p in image_paths if image_id_of(p, ids) in boxes}


class BoxesDetector:
    """Boxes from a file, or from a dict (`read_boxes_file`'s layout), looked up by image path.

    Args:
        boxes: {key: (boxes [P, 4], scores [P])}: keys are image paths, file names, COCO image
            ids (with `annotations`, or numeric file stems) or None (a bare list: every image).
        name: where the boxes come from ("boxes from FILE").
        annotations: a COCO annotation file naming the images of image-id keys.
        path: the boxes file (named for the images it does not list).
    """

    def __init__(self, boxes: dict, name: str, annotations=None, path=None):
        self.boxes = dict(boxes)
        self.name = name
        self.path = path
        self._ids = None if annotations is None else image_ids_by_name(annotations)

    @classmethod
    def from_file(cls, path, annotations=None, det_score=DEFAULT_DET_SCORES["boxes"],
                  image_paths=None):
        if not os.path.isfile(path):
            raise ValueError(f"--detector=boxes:{path}: no such file.")
        return cls(read_boxes_file(path, image_paths, annotations, det_score),
                   f"boxes from {path}", annotations, path)

    def _key(self, image_path):
        if None in self.boxes:
            return None
        if image_path is None:
            return _MISSING
        for key in (image_path, os.path.basename(image_path), image_id_of(image_path, self._ids)):
            if key is not None and key in self.boxes:
                return key
        return _MISSING

    def covers(self, image_path) -> bool:
        """Whether the boxes list `image_path` (else the whole image is the person box)."""
        return self._key(image_path) is not _MISSING

    def __call__(self, image=None, image_path=None):
        key = self._key(image_path)
        if key is _MISSING:
            return _empty()
        boxes, scores = self.boxes[key]
        return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32)


def open_detector(spec, det_score=None, nms_iou=DEFAULT_NMS_IOU, *, annotations=None,
                  person_class=None):
    """The detector a `--detector` spec names (module docstring), or None for `none`.

    Args:
        spec: "hog", "hog:SIDE", "saved_model:DIR", "keras_hub:PRESET_OR_DIR", "boxes:FILE",
            "none"; or a detector (any callable), returned as it is.
        det_score: minimum box score (None: `DEFAULT_DET_SCORES` of the kind).
        nms_iou: NMS IoU threshold of the box NMS.
        annotations: a COCO annotation file for `boxes:` COCO detection results.
        person_class: the person's class id for `saved_model:` (default 1) and `keras_hub:`.

    Raises:
        ValueError: a bad spec or a missing file (one line naming them).
    """
    if spec is None or callable(spec):
        return spec
    if not isinstance(spec, str):
        raise ValueError(f"--detector must be a string such as 'hog'. Received {spec!r}.")
    kind, _, argument = spec.partition(":")
    if kind not in KINDS:
        raise ValueError(f"--detector={spec}: unknown detector {kind!r}; expected one of "
                         f"hog, hog:SIDE, saved_model:DIR, keras_hub:PRESET_OR_DIR, "
                         f"boxes:FILE, none.")
    if kind == "none":
        return None
    score = DEFAULT_DET_SCORES[kind] if det_score is None else float(det_score)
    if not 0.0 <= score <= 1.0 or not 0.0 < float(nms_iou) <= 1.0:
        raise ValueError(f"--det_score must lie in [0, 1] and --nms_iou in (0, 1]. Received "
                         f"{score} and {nms_iou}.")
    if kind == "hog":
        if argument and not argument.isdigit():
            raise ValueError(f"--detector={spec}: the HOG image side must be a number of "
                             "pixels, e.g. hog:384.")
        return HogDetector(int(argument) if argument else HOG_IMAGE_SIDE, score, nms_iou)
    if not argument:
        raise ValueError(f"--detector={spec}: {kind} needs a path, e.g. {kind}:PATH.")
    if kind == "boxes":
        return BoxesDetector.from_file(argument, annotations, score)
    if kind == "saved_model":
        if not os.path.isdir(argument):
            raise ValueError(f"--detector={spec}: no such directory.")
        return SavedModelDetector(argument, score, nms_iou,
                                  COCO_PERSON if person_class is None else person_class)
    return KerasHubDetector(argument, score, nms_iou, person_class)
