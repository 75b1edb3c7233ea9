"""COCO keypoint AP/AR from per-person predictions, as the official HRNet evaluation computes it.

The metric does not know how the predictions were made (model, decoder, flip test); it takes
per-person keypoints in **original-image pixels** (pixel centres at integers, as the COCO
annotations) and does what `lib/dataset/coco.py::evaluate` of the official HRNet code does:

1. Rescoring: instance score = box score x mean of the keypoint scores that are above 0.2
   (`IN_VIS_THRE`); 0 when no keypoint score is above it.
2. Greedy OKS-NMS per image at OKS 0.9 (`skelpose_tf.evaluation.nms.oks_nms`) with the keypoint
   set's sigmas and the instances' areas (official: the 1.25-padded box area in pixels, i.e.
   prod(scale x 200)). Greedy NMS always keeps the best instance, so the official "keep all if
   NMS returns nothing" fallback can never trigger.
3. The COCO results JSON: a list of {"image_id", "category_id", "keypoints": 3K floats
   (x, y, score per keypoint), "score"} plus "center" and "scale" when given.
4. pycocotools, after `coco_files` has checked the annotation file (duplicate ids refused) and
   the results (image ids, category, keypoint count, finite numbers), so that bad input is a
   one-line `ValueError` naming the file instead of a traceback or a wrong score:
   `COCOeval(coco_gt, coco_gt.loadRes(results), "keypoints")` with
   `params.useSegm = None`, `params.kpt_oks_sigmas` set to the keypoint set's sigmas (equal to
   pycocotools' default for COCO, needed for custom sets) and `params.catIds` set to the
   keypoint category, then evaluate / accumulate / summarize. pycocotools' printing is
   captured; its summary lines are kept in the result.

Every result names the person boxes the predictions came from (`box_source`): AP with
ground-truth boxes (paper Table I) and AP with detector boxes (HRNet README) differ by about
two points, and mixing them up is the most common evaluation question in the issue trackers.

Example:
    metric = CocoKeypointMetric("annotations/person_keypoints_val.json", get_keypoint_set("coco"),
                                box_source=GROUND_TRUTH_BOXES)
    metric.add(image_ids, keypoints, keypoint_scores, box_scores, areas)   # once per batch
    result = metric.evaluate("runs/eval/keypoints_val_results.json")
    print(result)                    # Table I layout, with the box source
    result.stats["AP"]               # 0.0 .. 1.0
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os

import numpy as np

from skelpose_tf.evaluation import coco_files
from skelpose_tf.evaluation import nms
from skelpose_tf.evaluation import report

GROUND_TRUTH_BOXES = "ground-truth boxes"

# Names of COCOeval.stats[0:10] for keypoints, in order (maxDets 20; no "small" range).
COCO_STAT_NAMES = (
    "AP", "AP .5", "AP .75", "AP (M)", "AP (L)", "AR", "AR .5", "AR .75", "AR (M)", "AR (L)",
)  # fmt: skip

# Official HRNet TEST.IN_VIS_THRE and TEST.OKS_THRE.
KEYPOINT_SCORE_THRESHOLD = 0.2
OKS_NMS_THRESHOLD = 0.9

def detector_box_source(path: str) -> str:
    """The `box_source` text for person boxes read from a detection file."""
    return f"detector boxes from {path}"


def rescore_instances(
    keypoint_scores, box_scores, keypoint_score_threshold: float = KEYPOINT_SCORE_THRESHOLD
) -> np.ndarray:
    """Instance scores as the official HRNet evaluation computes them.

    Args:
        keypoint_scores: float [N, K], per-keypoint confidences (heatmap peak values).
        box_scores: float [N], person box scores (1.0 for ground-truth boxes).
        keypoint_score_threshold: only keypoint scores strictly above it enter the mean.

    Returns:
        float64 [N]: box_score x mean(keypoint scores > threshold), 0 where none is above it.
    """
    keypoint_scores = np.asarray(keypoint_scores, np.float64)
    box_scores = np.asarray(box_scores, np.float64).reshape(-1)
    confident = keypoint_scores > keypoint_score_threshold
    count = confident.sum(axis=-1)
    total = np.where(confident, keypoint_scores, 0.0).sum(axis=-1)
    mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    return box_scores * mean


def load_coco_ground_truth(annotation_file: str):
    """A pycocotools `COCO` of an annotation file, checked first, with pycocotools' printing
    silenced.

    Raises:
        ValueError: a missing, unreadable or invalid file (`coco_files.check_ground_truth`:
            naming the file, the record and the field), or duplicate image / annotation ids
            (pycocotools would silently keep one of each).
    """
    data = coco_files.load_json(annotation_file, "COCO annotation file")
    coco_files.check_ground_truth(data, annotation_file)
    return _coco_of(data)


def _coco_of(dataset):
    """A pycocotools `COCO` indexing an already checked, parsed annotation file."""
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = dataset
        coco_gt.createIndex()
    return coco_gt


def keypoint_category(coco_gt, source: str):
    """(category id, number of keypoints) of the annotation file's keypoint category."""
    categories = coco_gt.dataset.get("categories", [])
    with_keypoints = [c for c in categories if c.get("keypoints")]
    if len(with_keypoints) == 1:
        category = with_keypoints[0]
        return int(category["id"]), len(category["keypoints"])
    if not with_keypoints:
        # No keypoint names declared: take the count from the annotations themselves.
        annotations = [a for a in coco_gt.dataset.get("annotations", []) if a.get("keypoints")]
        if annotations and len(categories) == 1:
            return int(categories[0]["id"]), len(annotations[0]["keypoints"]) // 3
    names = [f"{c.get('id')}:{c.get('name')}" for c in categories]
    raise ValueError(
        f"{source}: expected exactly one category with keypoints, found categories {names}: "
        "list the keypoint names ('keypoints') in the one category that holds the people."
    )


def _check_image_ids(image_ids, coco_gt, source: str, what: str = "Predictions for") -> None:
    known = set(coco_gt.getImgIds())
    unknown = sorted({int(i) for i in image_ids} - known)
    if unknown:
        raise ValueError(
            f"{what} {len(unknown)} image id(s) that are not in the annotation file "
            f"{source}: {coco_files.name_some(unknown)}. Are the predictions for another split "
            "or data set?"
        )


def load_coco_results(results_file: str) -> list:
    """The parsed results JSON (checked against the ground truth by `evaluate_results_file`).

    Raises:
        ValueError: a missing, unreadable or invalid JSON file, naming it.
    """
    return coco_files.load_json(results_file, "COCO results file")


def evaluate_results_file(
    coco_gt, results_file: str, oks_sigmas, category_id: int, image_ids=None, source: str = "",
    results=None,
):
    """Score a COCO keypoint results JSON with pycocotools, after checking it.

    The results are checked against the ground truth first (`coco_files.check_results`: image
    ids of the annotation file, the keypoint category, 3K finite keypoint values and a finite
    score per result), so that pycocotools neither fails with a bare traceback nor ignores
    results of another category without a word.

    Args:
        coco_gt: a pycocotools `COCO` of the ground truth.
        results_file: path of the results JSON (a list of per-person dicts).
        oks_sigmas: float [K], the keypoint set's OKS constants.
        category_id: the keypoint category to evaluate.
        image_ids: optional image ids to evaluate on; default every image of the annotation
            file (as the official code: images without predictions count their people as
            missed).
        source: the annotation file's name, for error messages.
        results: the file's parsed content when the caller has it (`load_coco_results`), to
            read it once; None reads `results_file`.

    Returns:
        (stats, summary_lines): a dict from `COCO_STAT_NAMES` to floats in [0, 1] (-1 where
        the annotation file has no person in that area range), and pycocotools' printed
        summary lines.
    """
    from pycocotools.cocoeval import COCOeval

    if results is None:
        results = load_coco_results(results_file)
    coco_files.check_results(results, results_file, set(coco_gt.getImgIds()), int(category_id),
                             len(oks_sigmas), source or "the annotation file")
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        # loadRes adds fields to each result: give it copies.
        coco_dt = coco_gt.loadRes([dict(result) for result in results])
        coco_eval = COCOeval(coco_gt, coco_dt, "keypoints")
        coco_eval.params.useSegm = None
        coco_eval.params.kpt_oks_sigmas = np.asarray(oks_sigmas, np.float64)
        coco_eval.params.catIds = [int(category_id)]
        if image_ids is not None:
            coco_eval.params.imgIds = sorted(int(i) for i in image_ids)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    stats = {name: float(value) for name, value in zip(COCO_STAT_NAMES, coco_eval.stats)}
    summary = tuple(line for line in log.getvalue().splitlines() if line.startswith(" Average"))
    return stats, summary


@dataclasses.dataclass(frozen=True)
class CocoKeypointResult:
    """COCO keypoint metrics of one evaluation.

    Attributes:
        stats: `COCO_STAT_NAMES` -> float in [0, 1] (-1: no ground truth in that area range).
        box_source: which person boxes the predictions used.
        results_file: the COCO results JSON that was scored.
        annotation_file: the ground truth it was scored against.
        num_predictions: person instances before OKS-NMS.
        num_after_nms: person instances written to the results file.
        num_images: images evaluated.
        summary_lines: pycocotools' printed summary.
    """

    stats: dict
    box_source: str
    results_file: str
    annotation_file: str
    num_predictions: int
    num_after_nms: int
    num_images: int
    summary_lines: tuple

    def to_dict(self) -> dict:
        """A JSON-serialisable dict of every field."""
        fields = dataclasses.asdict(self)
        fields["summary_lines"] = list(self.summary_lines)
        return fields

    def __str__(self) -> str:
        return report.format_coco_table(self.stats, self.box_source, title="COCO keypoints")


class CocoKeypointMetric:
    """Accumulates per-person predictions, then writes and scores the COCO results JSON.

    Args:
        annotation_file: a COCO keypoint annotation JSON (path), or a loaded pycocotools
            `COCO` of one.
        keypoint_set: the `KeypointSet` of the predictions; its K must equal the annotation
            file's keypoint count, and its `oks_sigmas` are used by OKS-NMS and COCOeval.
        box_source: which person boxes the predictions used: `GROUND_TRUTH_BOXES` or
            `detector_box_source(path)`. It is stored in every result and printed report.
        oks_nms_threshold: OKS above which a lower-scored instance of the same image is dropped.
        keypoint_score_threshold: keypoint scores above it enter the instance rescoring.
    """

    def __init__(
        self,
        annotation_file,
        keypoint_set,
        box_source: str,
        oks_nms_threshold: float = OKS_NMS_THRESHOLD,
        keypoint_score_threshold: float = KEYPOINT_SCORE_THRESHOLD,
    ):
        if not isinstance(box_source, str) or not box_source.strip():
            raise ValueError(
                "box_source must say which person boxes were used, e.g. "
                f"{GROUND_TRUTH_BOXES!r} or {detector_box_source('FILE')!r}. "
                f"Received: box_source={box_source!r}"
            )
        if isinstance(annotation_file, str):
            self.annotation_file = annotation_file
            self.coco_gt = load_coco_ground_truth(annotation_file)
        else:
            self.annotation_file = "<COCO object>"
            self.coco_gt = annotation_file
            coco_files.check_ground_truth(self.coco_gt.dataset, self.annotation_file)
        self.keypoint_set = keypoint_set
        self.box_source = box_source
        self.oks_nms_threshold = float(oks_nms_threshold)
        self.keypoint_score_threshold = float(keypoint_score_threshold)
        self.category_id, num_keypoints = keypoint_category(self.coco_gt, self.annotation_file)
        if num_keypoints != keypoint_set.num_keypoints:
            raise ValueError(
                f"Keypoint set {keypoint_set.name!r} has {keypoint_set.num_keypoints} keypoints, "
                f"but the annotation file {self.annotation_file} has {num_keypoints}: pass the "
                "keypoint set of the annotations (a built-in name or a JSON file; evaluate.py "
                "--keypoint_set)."
            )
        self.reset()

    def reset(self) -> None:
        """Forget every prediction added so far."""
        self._batches = []

    @property
    def num_predictions(self) -> int:
        return sum(len(batch["image_ids"]) for batch in self._batches)

    def add(
        self, image_ids, keypoints, keypoint_scores, box_scores, areas, centers=None, scales=None
    ) -> None:
        """Add the predictions of N people (one batch).

        Args:
            image_ids: int [N], COCO image ids.
            keypoints: float [N, K, 2], (x, y) in original-image pixels, pixel centres at
                integers.
            keypoint_scores: float [N, K], per-keypoint confidences.
            box_scores: float [N], person box scores (1.0 for ground-truth boxes).
            areas: float [N], instance areas for OKS-NMS in squared original-image pixels
                (official: the padded box area, prod(scale x 200)).
            centers: optional float [N, 2], box centres, copied into the results JSON.
            scales: optional float [N, 2], box scales, copied into the results JSON.
        """
        num_keypoints = self.keypoint_set.num_keypoints
        image_ids = np.asarray(image_ids).reshape(-1)
        n = image_ids.shape[0]
        arrays = {
            "keypoints": (np.asarray(keypoints, np.float64), (n, num_keypoints, 2)),
            "keypoint_scores": (np.asarray(keypoint_scores, np.float64), (n, num_keypoints)),
            "box_scores": (np.asarray(box_scores, np.float64).reshape(-1), (n,)),
            "areas": (np.asarray(areas, np.float64).reshape(-1), (n,)),
        }
        for name, value in (("centers", centers), ("scales", scales)):
            if value is not None:
                arrays[name] = (np.asarray(value, np.float64), (n, 2))
        batch = {"image_ids": image_ids.astype(np.int64)}
        for name, (value, shape) in arrays.items():
            if value.shape != shape:
                raise ValueError(
                    f"{name} must have shape {shape} for {n} people and "
                    f"{num_keypoints} keypoints ({self.keypoint_set.name!r}). "
                    f"Received shape {value.shape}"
                )
            if not np.all(np.isfinite(value)):
                raise ValueError(f"{name} holds non-finite values (NaN or inf).")
            batch[name] = value
        optional = {"centers", "scales"}
        if self._batches and optional & set(batch) != optional & set(self._batches[0]):
            raise ValueError("Pass centers and scales for every batch or for none.")
        if n:
            _check_image_ids(image_ids, self.coco_gt, self.annotation_file)
            self._batches.append(batch)

    def select_instances(self) -> list:
        """Rescore, then OKS-NMS per image; returns the results JSON entries (a list of dicts)."""
        if not self._batches:
            raise ValueError("No predictions to evaluate: call add() with at least one person.")
        merged = {
            name: np.concatenate([batch[name] for batch in self._batches])
            for name in self._batches[0]
        }
        scores = rescore_instances(
            merged["keypoint_scores"], merged["box_scores"], self.keypoint_score_threshold
        )
        # Group the instances by image, keeping their order within each image.
        image_ids, inverse = np.unique(merged["image_ids"], return_inverse=True)
        by_image = np.argsort(inverse, kind="stable")
        groups = np.split(by_image, np.cumsum(np.bincount(inverse))[:-1])
        results = []
        for image_id, members in zip(image_ids, groups):
            kept = nms.oks_nms(
                merged["keypoints"][members],
                scores[members],
                merged["areas"][members],
                self.keypoint_set.oks_sigmas,
                self.oks_nms_threshold,
            )
            for index in members[kept]:
                triplets = np.concatenate(
                    [merged["keypoints"][index], merged["keypoint_scores"][index][:, None]], axis=1
                )
                entry = {
                    "image_id": int(image_id),
                    "category_id": self.category_id,
                    "keypoints": [float(v) for v in triplets.reshape(-1)],
                    "score": float(scores[index]),
                }
                for name, key in (("centers", "center"), ("scales", "scale")):
                    if name in merged:
                        entry[key] = [float(v) for v in merged[name][index]]
                results.append(entry)
        return results

    def evaluate(self, results_file: str, image_ids=None) -> CocoKeypointResult:
        """Rescore, OKS-NMS, write `results_file` and score it with pycocotools.

        Args:
            results_file: where to write the COCO results JSON (folders are created).
            image_ids: optional image ids to evaluate on (e.g. a quick run on the first few
                images); default every image of the annotation file, as the official code.

        Returns:
            A `CocoKeypointResult` (print it for the Table I layout).
        """
        if image_ids is not None:
            _check_image_ids(image_ids, self.coco_gt, self.annotation_file, "image_ids names")
        results = self.select_instances()
        folder = os.path.dirname(results_file)
        if folder:
            os.makedirs(folder, exist_ok=True)
        with open(results_file, "w") as f:
            json.dump(results, f)
        stats, summary = evaluate_results_file(
            self.coco_gt,
            results_file,
            self.keypoint_set.oks_sigmas,
            self.category_id,
            image_ids=image_ids,
            source=self.annotation_file,
            results=results,
        )
        num_images = len(self.coco_gt.getImgIds()) if image_ids is None else len(set(image_ids))
        return CocoKeypointResult(
            stats=stats,
            box_source=self.box_source,
            results_file=results_file,
            annotation_file=self.annotation_file,
            num_predictions=self.num_predictions,
            num_after_nms=len(results),
            num_images=num_images,
            summary_lines=summary,
        )


def coco_evaluate(predictions: dict, decoder: str, annotation_file, keypoint_set, box_source: str,
                  results_file: str, image_ids=None) -> CocoKeypointResult:
    """COCO keypoint metrics of one decoder's predictions (`skelpose_tf.inference` output).

    Rescoring, OKS-NMS (area = the padded box area, `prod(scale)`), the results JSON and
    pycocotools' COCOeval, as `CocoKeypointMetric` (the official HRNet evaluation).

    Args:
        predictions: {"image_id" [N], "center" [N, 2], "scale" [N, 2] (image pixels),
            "box_score" [N], "keypoints": {decoder: [N, K, 2] original-image pixels},
            "scores": {decoder: [N, K]}} (`skelpose_tf.inference.run_inference`).
        decoder: which decoder's keypoints to score.
        annotation_file: the COCO ground-truth file (or a loaded `COCO` object).
        keypoint_set: the model's `KeypointSet`.
        box_source: description of the person boxes (`GROUND_TRUTH_BOXES` or
            `detector_box_source(path)`), carried into the report.
        results_file: where to write the COCO results JSON.
        image_ids: evaluate only these images (default: all annotated images).

    Returns:
        A `CocoKeypointResult` (`.stats`, `str()` prints the paper's table layout).
    """
    metric = CocoKeypointMetric(annotation_file, keypoint_set, box_source)
    metric.add(
        image_ids=predictions["image_id"],
        keypoints=predictions["keypoints"][decoder],
        keypoint_scores=predictions["scores"][decoder],
        box_scores=predictions["box_score"],
        areas=np.prod(predictions["scale"], axis=-1),
        centers=predictions["center"],
        scales=predictions["scale"],
    )
    return metric.evaluate(results_file, image_ids=image_ids)
