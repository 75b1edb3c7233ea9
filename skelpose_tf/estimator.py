"""`PoseEstimator`: a photo in, every person's pose out (the Python API of `predict.py`).

    est = PoseEstimator.load("runs/demo")                 # detector "hog" (offline default)
    people = est("photo.jpg")                             # list of PersonPose, image pixels
    boxes, scores = est.detect(image)                     # person boxes [N, 4] xywh, [N]
    people = est.estimate(image, boxes, scores)           # poses in given boxes

One top-down path for every model and every caller (`predict.py`, the video runner): person
boxes (a detector, `skelpose_tf.detectors`, or given) -> crop regions
(`crop_geometry.box_to_center_scale`, boxes enlarged x`BOX_PADDING` to the model's aspect
ratio; the whole-image box only to the aspect ratio) -> crops cut with the data pipeline's
matrix and warp (`crop_geometry.affine_matrix`, `pipeline.source_window`, `cv2.warpAffine`
bilinear, black outside: the crops evaluation cuts) -> the model's runner (`open_runner`: a
Keras network with the flip test, an exported SavedModel's `serving_default` or a TFLite
model), in batches of `batch_size` -> `crop_geometry.crop_to_image`. Keypoints are
**original-image pixels (x, y), 0-based, pixel centres at integers**.

Why the crops signature of a SavedModel and not its `full_image` signature: the three model
kinds then share every step but the forward pass, so their keypoints differ only by the
export's own numeric tolerance (`export/verify.py`), and the maps panels of `--show_maps` get
the crops.

Images are cut in memory, one image at a time (a video frame is never written to disk); a
folder of photographs is one forward pass per image (`image_prediction.predict_images`).
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from skelpose_tf.crop_geometry import (BOX_PADDING, affine_matrix, box_to_center_scale,
                                       crop_corners, crop_to_image, input_aspect_ratio)
from skelpose_tf.detectors import DEFAULT_NMS_IOU, open_detector
from skelpose_tf.image_prediction import WHOLE_IMAGE_PADDING, ImagePrediction, whole_image_box

_EXPORT_SUFFIXES = (".tflite",)


def cut_crops(image, centers, scales, input_size) -> np.ndarray:
    """The model's input crops of P regions of one image, as the evaluation pipeline cuts them.

    Args:
        image: uint8 [H, W, 3] RGB.
        centers, scales: float [P, 2], the crop regions (image pixels).
        input_size: (height, width) of the crops.

    Returns:
        uint8 [P, height, width, 3] RGB (bilinear, black outside the image).
    """
    from skelpose_tf.data.pipeline import shift_source, source_window

    height, width = input_size
    count = len(centers)
    crops = np.zeros((count, height, width, 3), np.uint8)
    if count == 0:
        return crops
    matrices = np.asarray(affine_matrix(np.asarray(centers, np.float32),
                                        np.asarray(scales, np.float32), 0.0, input_size))
    corners = np.asarray(crop_corners(matrices, input_size))
    for i in range(count):
        window = source_window(corners[i], image.shape[:2])
        if window is None:
            continue
        x0, y0, x1, y1 = window
        crops[i] = cv2.warpAffine(np.ascontiguousarray(image[y0:y1 + 1, x0:x1 + 1]),
                                  shift_source(matrices[i], x0, y0), (width, height),
                                  flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                  borderValue=(0, 0, 0))
    return crops


def read_image(path) -> np.ndarray:
    """uint8 [H, W, 3] RGB of an image file (grey/CMYK/alpha converted as the data readers do).

    Raises:
        skelpose_tf.data.images.ImageDecodeError: missing, unreadable or undecodable.
    """
    from skelpose_tf.data.images import decode_image, read_image_bytes

    image, _ = decode_image(read_image_bytes(os.fspath(path)))
    return image


def is_export(path) -> bool:
    """Whether `path` is an exported model (a .tflite file or a SavedModel export directory)."""
    from skelpose_tf.export.saved_model import METADATA_FILE

    path = os.fspath(path)
    return path.endswith(_EXPORT_SUFFIXES) or (
        os.path.isdir(path) and os.path.isfile(os.path.join(path, METADATA_FILE)))


def open_pose_runner(path, *, flip_test=None, decoder=None, top_n=None, num_threads=2,
                     width=None, input_size=None, keypoint_set=None, skeletal_attention=None,
                     topology="official", sigma=None):
    """The runner (`skelpose_tf.inference`) of a pose model, whatever form it is saved in.

    Args:
        path: a `.keras` file, a run directory, a `.weights.h5` file (with the architecture
            keywords, as `model_loading.load_pose_model`), a SavedModel export directory or a
            `.tflite` export (`export.runtime.open_runner`); or a Keras pose network.
        flip_test, decoder, top_n: None: the model's own (Keras: flip test on, its codec's
            decoder; an export: what it was exported with). An export has them baked in, so a
            value that differs from its JSON is an error.
        num_threads: TFLite interpreter threads.
        width, input_size, keypoint_set, skeletal_attention, topology, sigma: the architecture
            of a `.weights.h5` file (checks against a `.keras` file).

    Raises:
        ValueError: a missing or unreadable model, or options an export cannot honour.
    """
    import keras

    from skelpose_tf.export.runtime import open_runner

    if isinstance(path, keras.Model):
        network = path
    elif is_export(path):
        runner = open_runner(os.fspath(path), num_threads=num_threads)
        asked = {"flip_test": flip_test, "decoder": decoder, "top_n": top_n}
        baked = {"flip_test": runner.flip_test, "decoder": runner.codec.decoder,
                 "top_n": runner.codec.top_n}
        differing = [f"{name}={asked[name]!r} (exported with {baked[name]!r})"
                     for name in asked if asked[name] is not None and asked[name] != baked[name]]
        if differing:
            raise ValueError(f"{path} is an export with its decoding baked in: "
                             f"{', '.join(differing)}; leave these options out or export again.")
        return runner
    else:
        from skelpose_tf.model_loading import load_pose_model
        from skelpose_tf.models.pose_model import TOPOLOGIES

        if topology not in TOPOLOGIES:
            raise ValueError(f"topology must be one of {sorted(TOPOLOGIES)}. Received "
                             f"{topology!r}.")
        network, _ = load_pose_model(os.fspath(path), width, input_size, keypoint_set,
                                     skeletal_attention, **TOPOLOGIES[topology], sigma=sigma)
    if decoder is not None or top_n is not None:
        network.set_decoding(decoder=decoder, top_n=top_n)
    return open_runner(network, flip_test=True if flip_test is None else bool(flip_test))


class PoseEstimator:
    """Top-down pose estimation on whole images (module docstring).

    Args:
        runner: a pose runner (`open_pose_runner`; `skelpose_tf.inference`'s interface).
        detector: a person detector (`skelpose_tf.detectors`), or None: every image is one
            person, the whole image.
        batch_size: crops per forward pass.

    Attributes:
        keypoint_set: the model's `KeypointSet` (keypoint names, flip pairs, skeleton).
        codec: the model's `HeatmapCodec`; input_size: (height, width) of its crops.
    """

    def __init__(self, runner, detector=None, *, batch_size=16):
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be positive. Received batch_size={batch_size}.")
        self.runner = runner
        self.detector = detector
        self.batch_size = int(batch_size)

    @classmethod
    def load(cls, path, detector="hog", *, det_score=None, nms_iou=DEFAULT_NMS_IOU,
             annotations=None, batch_size=16, **model_options) -> PoseEstimator:
        """A `PoseEstimator` for a saved model and a detector spec.

        Args:
            path: the model (`open_pose_runner`: .keras, run directory, .weights.h5 with the
                architecture keywords, SavedModel export, .tflite export).
            detector: a `detectors.open_detector` spec ("hog", "saved_model:DIR",
                "keras_hub:PRESET", "boxes:FILE", "none") or a detector callable.
            det_score, nms_iou, annotations: the detector's options (`open_detector`).
            batch_size: crops per forward pass.
            model_options: `open_pose_runner`'s keywords (flip_test, decoder, top_n, width,
                input_size, keypoint_set, skeletal_attention, topology, sigma, num_threads).
        """
        runner = open_pose_runner(path, **model_options)
        return cls(runner, open_detector(detector, det_score, nms_iou, annotations=annotations),
                   batch_size=batch_size)

    @property
    def codec(self):
        return self.runner.codec

    @property
    def keypoint_set(self):
        return self.runner.codec.keypoint_set

    @property
    def input_size(self) -> tuple:
        return tuple(self.runner.input_size)

    def __call__(self, image) -> list:
        """Every person in `image` (RGB uint8 [H, W, 3], or an image file): `PersonPose`s."""
        return self.estimate(image)

    def video(self, source, **options):
        """Poses frame by frame: yields `(frame_index, frame RGB uint8 [H, W, 3], persons)`
        with track ids, for a video file or an int camera index.

        `options` are `video_prediction.iterate_video`'s: detect_every (run the detector on
        every N-th frame, follow people from their last pose in between), smooth (One-Euro
        smoothing per track), tracker, smoother, max_frames.
        """
        from skelpose_tf.video_prediction import iterate_video

        return iterate_video(self, source, **options)

    def detect(self, image, image_path=None):
        """Person boxes of the detector: (float32 [N, 4] `[x, y, w, h]` image pixels,
        float32 [N]); the whole image (score 1) without a detector."""
        image, image_path = self._image(image, image_path)
        boxes, scores, _, _ = self._boxes(image, image_path)
        return boxes, scores

    def estimate(self, image, boxes=None, box_scores=None) -> list:
        """The poses in `boxes` (None: the detector's), a list of `PersonPose` in box order.

        Args:
            image: RGB uint8 [H, W, 3], or an image file.
            boxes: float [N, 4] `[x, y, w, h]` image pixels, or None.
            box_scores: float [N] (None: 1.0 each).
        """
        return self.predict_image(image, boxes, box_scores).people()

    def predict_image(self, image, boxes=None, box_scores=None, *, image_path=None,
                      keep_maps=False) -> ImagePrediction:
        """`estimate` with everything about it: an `image_prediction.ImagePrediction` (box
        source, crop regions and, with `keep_maps`, the crops and maps of the forward pass)."""
        image, image_path = self._image(image, image_path)
        size = tuple(int(v) for v in image.shape[:2])
        if boxes is None:
            boxes, box_scores, padding, source = self._boxes(image, image_path)
        else:
            boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
            box_scores = (np.ones(len(boxes), np.float32) if box_scores is None
                          else np.asarray(box_scores, np.float32).reshape(-1))
            if len(box_scores) != len(boxes):
                raise ValueError(f"box_scores must have one score per box: {len(boxes)} boxes, "
                                 f"{len(box_scores)} scores.")
            padding, source = BOX_PADDING, "given boxes"
        centers, scales = box_to_center_scale(boxes, input_aspect_ratio(self.input_size),
                                              padding)
        centers = np.asarray(centers, np.float32).reshape(-1, 2)
        scales = np.asarray(scales, np.float32).reshape(-1, 2)
        outputs = self._predict(cut_crops(image, centers, scales, self.input_size), keep_maps)
        keypoints = np.asarray(crop_to_image(outputs["keypoints"], centers, scales,
                                             self.input_size), np.float32)
        from skelpose_tf.evaluation.coco_metric import rescore_instances

        scores = outputs["keypoint_scores"]
        maps = None
        if keep_maps:
            if "heatmaps" not in outputs:
                raise ValueError("show_maps needs a model that returns its heatmaps; this export "
                                 "does not (export it with its heatmaps).")
            maps = {"crops": outputs["crops"], "crop_keypoints": outputs["keypoints"],
                    **{name: outputs[name] for name in ("heatmaps", "skeletal_heatmaps")
                       if name in outputs}}
        return ImagePrediction(
            image_path=image_path or "", image_size=size, box_source=source, boxes=boxes,
            box_scores=box_scores, centers=centers, scales=scales,
            keypoints=keypoints.reshape(-1, *scores.shape[1:], 2), keypoint_scores=scores,
            scores=rescore_instances(scores, box_scores).astype(np.float32), maps=maps)

    def _image(self, image, image_path):
        if isinstance(image, (str, os.PathLike)):
            from skelpose_tf.data.images import ImageDecodeError

            image_path = os.fspath(image)
            try:
                image = read_image(image_path)
            except ImageDecodeError as error:
                raise ValueError(f"Cannot read image {image_path}: {error.reason}.") from None
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError("The image must be RGB uint8 [H, W, 3] (or an image file). "
                             f"Received dtype {image.dtype}, shape {tuple(image.shape)}.")
        return image, image_path

    def _boxes(self, image, image_path):
        """(boxes [N, 4], scores [N], crop padding, box source text) for `image`."""
        detector = self.detector
        whole = whole_image_box(image.shape[:2])[None], np.ones((1,), np.float32)
        if detector is None:
            return (*whole, WHOLE_IMAGE_PADDING, "whole image (no boxes given)")
        if hasattr(detector, "covers") and not detector.covers(image_path):
            where = getattr(detector, "path", None) or detector.name
            return (*whole, WHOLE_IMAGE_PADDING, f"whole image (not listed in {where})")
        boxes, scores = detector(image, image_path=image_path)
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        return boxes, np.asarray(scores, np.float32).reshape(-1), BOX_PADDING, detector.name

    def _predict(self, crops, keep_maps) -> dict:
        """The runner's outputs for all crops, in batches of `batch_size` (numpy arrays)."""
        from skelpose_tf.inference import PosePredictor

        k = self.keypoint_set.num_keypoints
        if len(crops) == 0:
            empty = {"keypoints": np.zeros((0, k, 2), np.float32),
                     "keypoint_scores": np.zeros((0, k), np.float32)}
            if keep_maps:
                height, width = self.input_size
                stride = self.codec.stride
                empty.update(crops=crops, heatmaps=np.zeros(
                    (0, height // stride, width // stride, k), np.float32))
            return empty
        with_maps = keep_maps and isinstance(self.runner, PosePredictor)
        parts = []
        for start in range(0, len(crops), self.batch_size):
            batch = crops[start:start + self.batch_size]
            outputs = (self.runner.predict(batch, with_maps=True) if with_maps
                       else self.runner.predict(batch))
            parts.append({name: np.asarray(value) for name, value in outputs.items()})
        outputs = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
        outputs["keypoints"] = outputs["keypoints"].astype(np.float32)
        outputs["keypoint_scores"] = outputs["keypoint_scores"].astype(np.float32)
        if keep_maps:
            outputs["crops"] = crops
        return outputs
