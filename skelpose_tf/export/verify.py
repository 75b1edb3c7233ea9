"""Verification of exported models against the Keras model, and their COCO AP.

Every export ends with `verify_artifact`: the artifact is loaded back with its runtime
(`runtime.open_runner`), run on real crops from the data set, and compared with the Keras
network run by the evaluation code path (`KerasRunner`: `PosePredictor` + the codec, same
decoder and flip test, in float32). Reported, in crop pixels:

- keypoint error: Euclidean distance between exported and Keras keypoints, max and mean over
  all keypoints, and max and mean over the *confident* ones (Keras score >=
  `CONFIDENT_SCORE`). The tolerance applies to the confident ones: a keypoint the model itself
  scores near zero has a flat heatmap whose argmax any rounding can move across the crop, and
  it does not count in COCO's rescoring either (threshold 0.2);
- score error: max |exported - Keras| of the keypoint scores (heatmap peaks), divided by
  max(1, max |Keras score|): the absolute error for a trained model, whose peaks are <= ~1,
  and scale-free for random weights;
- heatmap error (when the artifact returns heatmaps): max |difference| / max |Keras heatmap|.

A comparison past its `Tolerance` is a failure; `raise_on_failure` raises
`ExportVerificationError` listing every failing artifact with its numbers.

`evaluate_exported_ap` scores any artifact (or the Keras network) with pycocotools on a COCO
-format set (the synthetic val set by default in the scripts), through the same crops, mapping
back and rescoring as `skelpose_tf.inference.coco_evaluate`, so the AP of each quantisation
sits next to the Keras model's AP.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from skelpose_tf.export.runtime import open_runner

# Keypoints whose Keras score reaches this are "confident" (MoveNet's recommended threshold).
CONFIDENT_SCORE = 0.3


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """How far an export may be from the Keras model.

    Attributes:
        keypoint_max_px: max keypoint error over confident keypoints, crop pixels. The
            `weighted` decoder averages the top-N pixels by rank, so two nearly equal heatmap
            values that swap ranks under float rounding move a keypoint by up to ~1 px even
            in float32; this bound catches outliers.
        keypoint_mean_px: mean keypoint error over confident keypoints; catches systematic
            errors (a shift, a wrong scale) that rank swaps never cause.
        score: max keypoint-score error (absolute for scores within [-1, 1]).
        heatmap: max absolute heatmap error relative to the Keras heatmaps' max magnitude.
    """

    keypoint_max_px: float
    keypoint_mean_px: float
    score: float
    heatmap: float


# Defaults for trained models (crop pixels; heatmap stride 4). Measured on the trained demo
# model (W16 128x96, 64 val crops, 200 calibration crops), confident max / mean keypoint error,
# score error, heatmap error: float32 2e-5 / 4e-6 px, 4e-7, 6e-7; float16 0.58 / 0.03 px, 6e-4,
# 8e-4; dynamic_int8 2.4 / 0.06 px, 0.012; int8 3.4 / 0.20 px, 0.029 (7.3 px max with only 32
# calibration crops). The max bounds allow ~3 heatmap pixels for int8, whose rounding can tip a
# bimodal heatmap; the mean bounds catch systematic errors. Random weights need looser ones.
DEFAULT_TOLERANCES = {
    "float32": Tolerance(keypoint_max_px=1.0, keypoint_mean_px=0.01, score=1e-4, heatmap=1e-4),
    "float16": Tolerance(keypoint_max_px=4.0, keypoint_mean_px=0.2, score=0.02, heatmap=0.02),
    "dynamic_int8": Tolerance(keypoint_max_px=12.0, keypoint_mean_px=1.0, score=0.1,
                              heatmap=0.1),
    "int8": Tolerance(keypoint_max_px=12.0, keypoint_mean_px=1.0, score=0.1, heatmap=0.1),
}


@dataclasses.dataclass(frozen=True)
class Comparison:
    """An exported model's outputs against the Keras model's on the same crops.

    Attributes:
        name: what was compared (the artifact's file name).
        num_crops: crops compared.
        num_confident: keypoints with a Keras score >= the confidence threshold.
        max_keypoint_error_px: max over all keypoints (crop pixels).
        mean_keypoint_error_px: mean over all keypoints.
        max_confident_keypoint_error_px: max over the confident keypoints (0 if none).
        mean_confident_keypoint_error_px: mean over the confident keypoints (0 if none).
        max_score_error: max |score difference| / max(1, max |Keras score|).
        heatmap_error: max |heatmap difference| / max |Keras heatmap|, or None when the
            artifact does not return heatmaps.
        tolerance: the `Tolerance` checked.
        failures: what exceeded the tolerance (empty when it passed).
    """

    name: str
    num_crops: int
    num_confident: int
    max_keypoint_error_px: float
    mean_keypoint_error_px: float
    max_confident_keypoint_error_px: float
    mean_confident_keypoint_error_px: float
    max_score_error: float
    heatmap_error: float | None
    tolerance: Tolerance
    failures: tuple

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        fields = dataclasses.asdict(self)
        fields["failures"] = list(self.failures)
        fields["passed"] = self.passed
        return fields

    def __str__(self) -> str:
        heatmaps = ("" if self.heatmap_error is None
                    else f" | heatmaps {100 * self.heatmap_error:.3g}% of range")
        verdict = "ok" if self.passed else "FAILED: " + "; ".join(self.failures)
        return (f"{self.name}: keypoint error max {self.max_keypoint_error_px:.3g} px "
                f"(mean {self.mean_keypoint_error_px:.3g} px; {self.num_confident} confident: "
                f"max {self.max_confident_keypoint_error_px:.3g} px, mean "
                f"{self.mean_confident_keypoint_error_px:.3g} px) | score "
                f"error max {self.max_score_error:.3g}{heatmaps} | {self.num_crops} crops | "
                f"{verdict}")


class ExportVerificationError(RuntimeError):
    """An exported model differs from the Keras model by more than its tolerance.

    Attributes:
        comparisons: the failing `Comparison`s.
    """

    def __init__(self, comparisons):
        self.comparisons = tuple(comparisons)
        super().__init__("Exported model(s) differ from the Keras model beyond tolerance:\n"
                         + "\n".join(f"  {c}" for c in self.comparisons))


def compare_outputs(reference: dict, outputs: dict, tolerance: Tolerance, name: str,
                    confident_score: float = CONFIDENT_SCORE) -> Comparison:
    """Compare a runner's outputs with the Keras reference (see the module docstring).

    Args:
        reference: Keras outputs, `keypoints` [N, K, 2], `keypoint_scores` [N, K] and
            `heatmaps` [N, h, w, K].
        outputs: the artifact's outputs (same keys; `heatmaps` optional).
        tolerance: the limits to check.
        name: label of the comparison.
        confident_score: Keras score from which a keypoint counts as confident.
    """
    errors = np.linalg.norm(np.asarray(outputs["keypoints"], np.float64)
                            - np.asarray(reference["keypoints"], np.float64), axis=-1)
    confident = np.asarray(reference["keypoint_scores"]) >= confident_score
    score_scale = max(1.0, float(np.max(np.abs(reference["keypoint_scores"]))))
    score_error = float(np.max(np.abs(np.asarray(outputs["keypoint_scores"], np.float64)
                                      - reference["keypoint_scores"]))) / score_scale
    heatmap_error = None
    if "heatmaps" in outputs:
        scale = max(float(np.max(np.abs(reference["heatmaps"]))), 1e-12)
        heatmap_error = float(np.max(np.abs(np.asarray(outputs["heatmaps"], np.float64)
                                            - reference["heatmaps"]))) / scale
    confident_error = float(errors[confident].max()) if confident.any() else 0.0
    confident_mean = float(errors[confident].mean()) if confident.any() else 0.0
    failures = []
    if not np.all(np.isfinite(outputs["keypoints"])) or not np.all(
            np.isfinite(outputs["keypoint_scores"])):
        failures.append("non-finite outputs")
    if confident_error > tolerance.keypoint_max_px:
        failures.append(f"confident keypoint error max {confident_error:.3g} px > "
                        f"{tolerance.keypoint_max_px:g} px")
    if confident_mean > tolerance.keypoint_mean_px:
        failures.append(f"confident keypoint error mean {confident_mean:.3g} px > "
                        f"{tolerance.keypoint_mean_px:g} px")
    if score_error > tolerance.score:
        failures.append(f"score error {score_error:.3g} > {tolerance.score:g}")
    if heatmap_error is not None and heatmap_error > tolerance.heatmap:
        failures.append(f"heatmap error {heatmap_error:.3g} > {tolerance.heatmap:g}")
    return Comparison(
        name=name, num_crops=int(errors.shape[0]), num_confident=int(confident.sum()),
        max_keypoint_error_px=float(errors.max()), mean_keypoint_error_px=float(errors.mean()),
        max_confident_keypoint_error_px=confident_error,
        mean_confident_keypoint_error_px=confident_mean, max_score_error=score_error,
        heatmap_error=heatmap_error, tolerance=tolerance, failures=tuple(failures))


def verify_artifact(artifact, reference: dict, crops, tolerance: Tolerance, num_threads=2,
                    confident_score: float = CONFIDENT_SCORE) -> Comparison:
    """Load an exported model back, run it on `crops` and compare with `reference`.

    Args:
        artifact: a .tflite path or a SavedModel directory (or a runner).
        reference: the Keras outputs for the same crops (`KerasRunner(...).predict(crops)`;
            for the heatmap-only TFLite variant, without the flip test).
        crops: uint8 [N, H, W, 3] real crops.
        tolerance: the `Tolerance` to check.
        num_threads: interpreter threads.
    """
    runner = open_runner(artifact, num_threads=num_threads)
    name = os.path.basename(os.path.normpath(os.fspath(artifact)))
    return compare_outputs(reference, runner.predict(crops), tolerance, name, confident_score)


def dataset_crops(annotation_file, image_dir, keypoint_set, input_size, max_crops,
                  batch_size=32) -> np.ndarray:
    """Real person crops from a COCO-format set (see `crops_from_records`).

    Args:
        annotation_file, image_dir: a COCO keypoint file and its images (ground-truth boxes).
        keypoint_set: the model's keypoint set.
        input_size: (H, W) of the model.
        max_crops: at most this many crops.

    Returns:
        uint8 [N, H, W, 3], N <= max_crops.
    """
    from skelpose_tf.data.coco import read_coco_keypoints

    records = read_coco_keypoints(annotation_file, image_dir, keypoint_set, input_size)
    if not records:
        raise ValueError(f"No usable person in {annotation_file} to cut crops from.")
    return crops_from_records(records, keypoint_set, input_size, max_crops, batch_size)


def crops_from_records(records, keypoint_set, input_size, max_crops,
                       batch_size=32) -> np.ndarray:
    """Real person crops through the evaluation pipeline, for calibration and verification.

    People are taken evenly spread over `records` (every n-th), without augmentation, as
    `make_eval_dataset` cuts them (the records' regions: box, aspect ratio, 1.25 padding).

    Args:
        records: `PersonRecord`s (e.g. `TrainingData.train_records`).
        keypoint_set: the model's keypoint set.
        input_size: (H, W) of the model.
        max_crops: at most this many crops.

    Returns:
        uint8 [N, H, W, 3], N <= max_crops.
    """
    from skelpose_tf.data.pipeline import make_eval_dataset

    if not records:
        raise ValueError("crops_from_records needs at least one PersonRecord. Received none.")
    step = max(1, len(records) // max(1, int(max_crops)))
    chosen = list(records)[::step][: int(max_crops)]
    dataset = make_eval_dataset(chosen, keypoint_set, input_size, batch_size)
    return np.concatenate([images.numpy() for images, _ in dataset])


def evaluate_exported_ap(artifact, annotation_file, image_dir, results_file, *,
                         max_images=None, box_source=None, batch_size=16, num_threads=2,
                         records=None, **keras_options):
    """COCO keypoint AP of an exported model (or of the Keras network) on a COCO-format set.

    Crops come from `make_eval_dataset` (ground-truth boxes unless `records` says otherwise),
    keypoints go back to image pixels with `crop_to_image`, and scoring is
    `skelpose_tf.inference.coco_evaluate` (rescoring, OKS-NMS, pycocotools).

    Args:
        artifact: a .tflite file, a SavedModel directory, or a Keras network (then
            `keras_options`: decoder, flip_test, top_n).
        annotation_file, image_dir: the COCO keypoint file and its images.
        results_file: where to write the COCO results JSON.
        max_images: evaluate only the first this many images of the annotation file, by
            image id (all when None).
        box_source: description of the boxes (default: ground-truth boxes).
        batch_size: crops per call of the model.
        num_threads: interpreter threads of a .tflite model.
        records: `PersonRecord`s to use instead of reading the annotation file (e.g.
            detector boxes from `read_coco_detections`).

    Returns:
        A `CocoKeypointResult` (`.stats["AP"]`; `str()` prints the table).
    """
    from skelpose_tf.data.coco import read_coco_keypoints
    from skelpose_tf.data.pipeline import make_eval_dataset
    from skelpose_tf.crop_geometry import crop_to_image
    from skelpose_tf.evaluation.coco_metric import GROUND_TRUTH_BOXES, load_coco_ground_truth
    from skelpose_tf.inference import coco_evaluate

    runner = open_runner(artifact, num_threads=num_threads, **keras_options)
    keypoint_set = _runner_keypoint_set(runner)
    if records is None:
        records = read_coco_keypoints(annotation_file, image_dir, keypoint_set,
                                      runner.input_size)
    image_ids = None  # every image of the annotation file, as the official evaluation
    if max_images is not None:
        image_ids = sorted(load_coco_ground_truth(annotation_file).getImgIds())[: int(max_images)]
        chosen = set(image_ids)
        records = [r for r in records if int(r.image_id) in chosen]
    if not records:
        raise ValueError(f"No person to evaluate in {annotation_file}.")
    parts = {key: [] for key in ("image_id", "center", "scale", "box_score", "keypoints",
                                 "scores")}
    for images, meta in make_eval_dataset(records, keypoint_set, runner.input_size, batch_size):
        predicted = runner.predict(images.numpy())
        center, scale = meta["center"].numpy(), meta["scale"].numpy()
        parts["keypoints"].append(np.asarray(crop_to_image(predicted["keypoints"], center,
                                                           scale, runner.input_size)))
        parts["scores"].append(predicted["keypoint_scores"])
        for key in ("image_id", "center", "scale", "box_score"):
            parts[key].append(meta[key].numpy())
    predictions = {key: np.concatenate(values) for key, values in parts.items()}
    predictions["keypoints"] = {"exported": predictions["keypoints"]}
    predictions["scores"] = {"exported": predictions["scores"]}
    os.makedirs(os.path.dirname(os.path.abspath(results_file)), exist_ok=True)
    return coco_evaluate(predictions, "exported", annotation_file, keypoint_set,
                         box_source or GROUND_TRUTH_BOXES, results_file, image_ids=image_ids)


def _runner_keypoint_set(runner):
    from skelpose_tf.keypoints import get_keypoint_set

    if hasattr(runner, "network"):
        return runner.network.keypoint_set
    return get_keypoint_set(runner.metadata["keypoint_set_config"])


def verify_full_image(saved_model_dir, reference: dict, crops, tolerance: Tolerance,
                      margin=(7, 5), confident_score: float = CONFIDENT_SCORE) -> Comparison:
    """Check the SavedModel's `full_image` signature (in-graph crop and mapping back).

    Each crop is pasted into a black canvas at offset `margin` (x, y), and the box whose crop
    region is exactly that pasted crop (region size = input size, so crop pixels fall on image
    pixels) goes in with it. The keypoints must come back as the Keras keypoints plus the
    offset, with the same scores.

    Args:
        saved_model_dir: the exported SavedModel.
        reference: Keras outputs for `crops` (with the export's flip test and decoder).
        crops: uint8 [N, H, W, 3].
        tolerance: the `Tolerance` to check (heatmaps are not compared).
        margin: (x, y) offset of the crop in the canvas, pixels.
    """
    from skelpose_tf.export.saved_model import (FULL_IMAGE_SIGNATURE, load_saved_model,
                                                read_metadata)

    metadata = read_metadata(saved_model_dir)
    padding = float(metadata["signatures"][FULL_IMAGE_SIGNATURE]["box_padding"])
    signature = load_saved_model(saved_model_dir).signatures[FULL_IMAGE_SIGNATURE]
    crops = np.asarray(crops)
    height, width = crops.shape[1:3]
    offset_x, offset_y = margin
    box_width, box_height = width / padding, height / padding
    box = np.asarray([[offset_x + (width - 1) / 2 - box_width / 2,
                       offset_y + (height - 1) / 2 - box_height / 2, box_width, box_height]],
                     np.float32)
    keypoints, scores = [], []
    for crop in crops:
        canvas = np.zeros((height + 2 * offset_y, width + 2 * offset_x, 3), np.uint8)
        canvas[offset_y:offset_y + height, offset_x:offset_x + width] = crop
        outputs = signature(image=canvas, boxes=box)
        keypoints.append(outputs["keypoints"].numpy()[0] - np.float32([offset_x, offset_y]))
        scores.append(outputs["keypoint_scores"].numpy()[0])
    directory = os.path.basename(os.path.normpath(os.fspath(saved_model_dir)))
    name = f"{directory}:{FULL_IMAGE_SIGNATURE}"
    return compare_outputs(
        {key: reference[key] for key in ("keypoints", "keypoint_scores")},
        {"keypoints": np.stack(keypoints), "keypoint_scores": np.stack(scores)},
        tolerance, name, confident_score)
