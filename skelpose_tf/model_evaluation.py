"""Model + data -> metrics: COCO keypoint AP/AR and MPII PCKh of a pose model.

Used by `evaluate.py`, `ablation.py`, training's validation and final evaluation, and the AP of
the exports. The model is a Keras `PoseHRNet` or any runner (`skelpose_tf.inference`: an
exported SavedModel or TFLite model); it runs once per person through the one inference path
(`skelpose_tf.inference.predict_records`: crops, flip test, decoding, back to original-image
pixels), and one or several decoders read the same heatmaps. Each decoder is scored separately:

- COCO (`evaluate_coco_decoders`): person boxes from the ground truth (paper Table I) or from a
  detector file (`COCO_val2017_detections_AP_H_56_person.json` format); rescoring, OKS-NMS,
  the results JSON and pycocotools' COCOeval as the official HRNet evaluation
  (`skelpose_tf.evaluation.coco_metric.coco_evaluate`). Every result names its box source.
- MPII (`evaluate_mpii_decoders`): the annotation's person centres and scales, PCKh@0.5 per
  joint group and the @0.5 / @0.1 means with head size 0.6 x head-box diagonal (@0.1 both at
  the official code's threshold 0.11, as the paper, and at exactly 0.1). With a
  `gt_valid.mat`-style file the ground truth comes from it, as the official code; people
  without a prediction (an unreadable image) then count as misses.

Data come from a `skelpose_tf.data.sources.DataSource` (the synthetic data set by default).

Example:
    source = resolve_data_source("coco", data_dir="data/synthetic")
    evaluation = evaluate_model(network, source, out_dir="runs/x/eval")
    print(evaluation["weighted"].format_table(title="synthetic val", row_label="W32"))
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

import numpy as np
import scipy.io

from skelpose_tf.codec import DECODERS
from skelpose_tf.data.coco import read_coco_detections, read_coco_keypoints
from skelpose_tf.data.images import load_for_record
from skelpose_tf.data.mpii import read_mpii
from skelpose_tf.data.records import SkipReport
from skelpose_tf.data.sources import COCO, MPII, MPII_BOX_SOURCE, DataSource
from skelpose_tf.evaluation import report
from skelpose_tf.evaluation.coco_metric import (
    GROUND_TRUTH_BOXES,
    CocoKeypointMetric,
    CocoKeypointResult,
    coco_evaluate,
    detector_box_source,
    evaluate_results_file,
    keypoint_category,
    load_coco_ground_truth,
    load_coco_results,
)
from skelpose_tf.evaluation.mpii_pckh import (
    PckhResult,
    compute_pckh,
    lacking_pckh_joints,
    read_mpii_gt_mat,
)
from skelpose_tf.inference import predict_records


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """One network scored with one decoder.

    Attributes:
        dataset: "coco" or "mpii".
        decoder: the decoder whose keypoints were scored.
        flip_test: whether heatmaps were flip-averaged.
        box_source: which person boxes were used.
        metric: a `CocoKeypointResult` (COCO) or a `PckhResult` (MPII).
        num_people: person crops predicted.
        files: what was written: {"results": COCO results JSON} or {"predictions": MPII JSON,
            "pred_mat": official-layout pred.mat}.
        notes: extra facts for the report (skipped inputs, people without a prediction).
        seconds: inference time of the forward pass (shared by all decoders of one pass).
        decoding: the codec's decoding contract (`HeatmapCodec.describe_decoding`: decoder,
            top_n, sigma, stride, pixel convention).
    """

    dataset: str
    decoder: str
    flip_test: bool
    box_source: str
    metric: CocoKeypointResult | PckhResult
    num_people: int
    files: dict
    notes: tuple
    seconds: float
    decoding: dict = dataclasses.field(default_factory=dict)

    @property
    def table_row(self) -> dict:
        """The paper's columns as percentages: COCO mAP ... mAR, or MPII Head ... Mean,
        "Mean@0.1 (thr 0.11)" (official, as the paper), "Mean@0.1 (exact)"."""
        if self.dataset == COCO:
            return report.coco_table_row(self.metric.stats)
        return report.pckh_table_row(self.metric.table_values())

    def format_table(self, title: str, row_label: str = "result", style: str = "text") -> str:
        """The paper's table layout (COCO Table I with the box source, or MPII PCKh).

        The title gets the decoder and the flip-test setting appended.
        """
        title = f"{title} (decoder {self.decoder}, flip test {'on' if self.flip_test else 'off'})"
        if self.dataset == COCO:
            return report.format_coco_table(self.metric.stats, self.box_source, title, row_label,
                                            style)
        return report.format_pckh_table(self.metric.table_values(), title, row_label, style)

    def to_dict(self) -> dict:
        """JSON-ready: settings, the table row (percent), the raw metric (fractions), files."""
        fields = {
            "dataset": self.dataset,
            "decoder": self.decoder,
            "flip_test": self.flip_test,
            "box_source": self.box_source,
            "table": self.table_row,
            "num_people": self.num_people,
            "files": dict(self.files),
            "notes": list(self.notes),
            "inference_seconds": round(self.seconds, 2),
            "decoding": dict(self.decoding),
        }
        if self.dataset == COCO:
            fields.update({k: v for k, v in self.metric.to_dict().items() if k not in fields})
        else:
            fields["pckh"] = self.metric.to_dict()
        return fields


def _runner(model, flip_test):
    """The runner of `model`: a Keras network with its codec, or an exported model as it is."""
    from skelpose_tf.export.runtime import open_runner

    return open_runner(model, flip_test=flip_test)


def _check_decoders(decoders, runner) -> list:
    """The decoders to score: the runner's own when None, else the given names checked."""
    if decoders is None:
        return [runner.codec.decoder]
    decoders = [decoders] if isinstance(decoders, str) else list(decoders)
    unknown = [d for d in decoders if d not in DECODERS]
    if not decoders or unknown:
        raise ValueError(f"decoders must be a non-empty list of {DECODERS}. Received: {decoders!r}")
    return list(dict.fromkeys(decoders))


def _skip_notes(skip_report: SkipReport) -> tuple:
    if not (skip_report.skipped or skip_report.repaired):
        return ()
    return (f"inputs left out or repaired: {skip_report.summary().replace(chr(10), '; ')}",)


def first_images(records, max_people: int, report: SkipReport | None = None) -> list:
    """The records of the first images that hold at least `max_people` people (0: all).

    Whole images are kept, so that COCO evaluation restricted to their ids stays fair. With a
    `report`, an image that cannot be used (missing, unreadable, corrupt or of another size
    than annotated: `images.load_for_record`) is passed over and counted in it, so that a few
    bad files at the start never empty the subset; each candidate image is then decoded once
    here (about `max_people` people's images).
    """
    if not max_people or len(records) <= max_people:
        return list(records)
    usable = {}
    chosen, subset = set(), []
    for record in records:
        if record.image_id not in chosen and len(subset) >= max_people:
            break
        path = record.image_path
        if report is not None and path not in usable:
            usable[path] = load_for_record(None, path, record.image_size,
                                           f"image id {record.image_id}", report,
                                           rgb=False) is not None
        if not usable.get(path, True):
            continue
        chosen.add(record.image_id)
        subset.append(record)
    return subset


def _check_coco_keypoints(keypoint_set, annotation_file) -> None:
    """Refuse a model of another keypoint set before any inference runs."""
    _, count = keypoint_category(load_coco_ground_truth(annotation_file), annotation_file)
    if count != keypoint_set.num_keypoints:
        raise ValueError(
            f"The model predicts {keypoint_set.num_keypoints} keypoints (keypoint set "
            f"{keypoint_set.name!r}) but {annotation_file} annotates {count} per person: the "
            "weights belong to another keypoint set."
        )


def evaluate_coco_decoders(model, annotation_file, image_dir, det_boxes_json="", *,
                           decoders=None, flip_test=True, batch_size=32, out_dir="eval",
                           max_people=0, log_every=50, out=sys.stdout) -> dict:
    """COCO keypoint AP/AR of `model` for each decoder, from one forward pass.

    Args:
        model: a `PoseHRNet` (decoded with its own codec, `network.codec`), or a runner of an
            exported model (`skelpose_tf.export.runtime.open_runner`; its decoder and flip
            test are baked in).
        annotation_file: COCO keypoint JSON (the ground truth, and the image table).
        image_dir: folder of its images.
        det_boxes_json: detector boxes; "" uses the ground-truth boxes of people with labelled
            keypoints (paper Table I).
        decoders: decoder names (`skelpose_tf.codec.DECODERS`); None: the model's own.
        flip_test: Keras networks: average the heatmaps of each crop and its mirror image.
        batch_size: crops per forward pass.
        out_dir: where `keypoints_results_<decoder>.json` are written.
        max_people: evaluate only the first images holding this many people, scored on those
            images only (0: all; `first_images`), e.g. a quick validation during training.
        log_every: progress line every this many batches (0: never).
        out: stream for progress lines.

    Returns:
        {decoder: `Evaluation`} (metric: `CocoKeypointResult`).

    Raises:
        ValueError: a model of another keypoint set, or no person to evaluate (e.g. the
            image folder is wrong: the skipped inputs are listed).
    """
    runner = _runner(model, flip_test)
    decoders = _check_decoders(decoders, runner)
    keypoint_set = runner.codec.keypoint_set
    _check_coco_keypoints(keypoint_set, annotation_file)
    skip_report = SkipReport()
    if det_boxes_json:
        records = read_coco_detections(det_boxes_json, annotation_file, image_dir, keypoint_set,
                                       runner.input_size, report=skip_report)
        box_source = detector_box_source(det_boxes_json)
    else:
        records = read_coco_keypoints(annotation_file, image_dir, keypoint_set,
                                      runner.input_size, report=skip_report)
        box_source = GROUND_TRUTH_BOXES
    records = first_images(records, max_people, skip_report)
    image_ids = sorted({r.image_id for r in records}) if max_people else None
    if not records:
        raise ValueError(f"No person to evaluate in {det_boxes_json or annotation_file} with "
                         f"images in {image_dir}: {skip_report.summary()}")
    predictions = predict_records(runner, records, batch_size=batch_size, decoders=decoders,
                                  skip_report=skip_report, log_every=log_every, out=out)
    os.makedirs(out_dir, exist_ok=True)
    evaluations = {}
    for decoder in decoders:
        results_file = os.path.join(out_dir, f"keypoints_results_{decoder}.json")
        result = coco_evaluate(predictions, decoder, annotation_file, keypoint_set, box_source,
                               results_file, image_ids=image_ids)
        evaluations[decoder] = Evaluation(
            COCO, decoder, runner.flip_test, box_source, result, len(predictions["image_id"]),
            {"results": results_file}, _skip_notes(skip_report), predictions["seconds"],
            runner.codec.replace(decoder=decoder).describe_decoding())
    return evaluations


def score_coco_results(results_file, annotation_file, keypoint_set,
                       box_source="not known (an existing results file was scored)"):
    """Score an existing COCO keypoint results JSON with pycocotools (no model involved).

    Both files are read and checked before pycocotools sees them: the annotation file first
    (`load_coco_ground_truth`), then the results against it (`evaluate_results_file`).

    Raises:
        ValueError: an unreadable or invalid file (naming it, the record and the field),
            duplicate ids in the annotation file, results for images it does not have, of
            another category, or with a keypoint count other than the keypoint set's.
    """
    metric = CocoKeypointMetric(annotation_file, keypoint_set, box_source)
    results = load_coco_results(results_file)
    stats, summary = evaluate_results_file(metric.coco_gt, results_file, keypoint_set.oks_sigmas,
                                           metric.category_id, source=annotation_file,
                                           results=results)
    return CocoKeypointResult(stats, box_source, results_file, annotation_file, len(results),
                              len(results), len(metric.coco_gt.getImgIds()), summary)


def _check_mpii_keypoints(keypoint_set) -> None:
    lacking = lacking_pckh_joints(keypoint_set)
    if lacking:
        raise ValueError(
            f"MPII PCKh needs a model of the MPII keypoint set; this one predicts keypoint set "
            f"{keypoint_set.name!r} ({keypoint_set.num_keypoints} keypoints, without "
            f"{', '.join(lacking[:4])}{' ...' if len(lacking) > 4 else ''}): the weights belong "
            "to another keypoint set."
        )


def _mpii_ground_truth(records, predictions, head_boxes, keypoint_set):
    """(joints, missing, head boxes, row of each prediction, people without a prediction)."""
    if head_boxes:
        truth = read_mpii_gt_mat(head_boxes, keypoint_set)
        rows = np.asarray([records[int(i)].annotation_id for i in predictions["record_index"]])
        unpredicted = len(truth.joints) - len(np.unique(rows))
        return truth.joints, truth.missing, truth.head_boxes, rows, unpredicted
    predicted = [records[int(i)] for i in predictions["record_index"]]
    lacking = [r.annotation_id for r in predicted if r.head_box is None]
    if lacking:
        raise ValueError(
            f"MPII PCKh needs head boxes: {len(lacking)} annotation entries (e.g. #{lacking[0]}) "
            "have no 'headbox' field; pass a gt_valid.mat-style file (--head_boxes).")
    joints = np.stack([r.keypoints for r in predicted]).astype(np.float64)
    missing = np.stack([r.visibility <= 0 for r in predicted])
    boxes = np.stack([r.head_box for r in predicted]).astype(np.float64)
    return joints, missing, boxes, np.arange(len(predicted)), 0


def _write_mpii_predictions(path, mat_path, keypoints, scores, rows, num_people, records,
                            predictions):
    """0-based JSON per predicted person, and the official 1-based `preds` [N, K, 2] .mat."""
    people = []
    for n, record_index in enumerate(predictions["record_index"]):
        record = records[int(record_index)]
        people.append({
            "annotation_index": int(record.annotation_id),
            "image": os.path.basename(record.image_path),
            "keypoints": np.concatenate([keypoints[n], scores[n][:, None]], -1).round(3).tolist(),
        })
    with open(path, "w") as f:
        json.dump({"coordinates": "0-based image pixels (x, y, score), pixel centres at integers",
                   "people": people}, f)
    preds = np.full((num_people, keypoints.shape[1], 2), np.nan)
    preds[rows] = keypoints + 1.0
    scipy.io.savemat(mat_path, {"preds": preds})


def evaluate_mpii_decoders(model, annotation_file, image_dir, head_boxes="", *,
                           decoders=None, flip_test=True, batch_size=32, out_dir="eval",
                           max_people=0, log_every=50, out=sys.stdout) -> dict:
    """MPII PCKh@0.5 (per joint group, mean) and mean PCKh@0.1 (official threshold 0.11, and
    exact 0.1) for each decoder, one pass.

    Args:
        model: a pose network of the MPII keypoint set, or a runner (`evaluate_coco_decoders`).
        annotation_file: HRNet-layout MPII JSON (`valid.json`).
        image_dir: folder of its images.
        head_boxes: a `gt_valid.mat`-style file: the ground truth (joints, missing flags, head
            boxes) then comes from it, in the JSON's order, as the official evaluation; people
            without a prediction count as misses. "" uses the JSON joints and `headbox` fields
            of the predicted people.
        decoders, flip_test, batch_size, log_every, out: as `evaluate_coco_decoders`.
        max_people: evaluate only the first images holding this many people (0: all); only
            their people are scored.
        out_dir: where `mpii_predictions_<decoder>.json` (0-based) and `pred_<decoder>.mat`
            (official 1-based `preds` [N, K, 2]) are written.

    Returns:
        {decoder: `Evaluation`} (metric: `PckhResult`).
    """
    runner = _runner(model, flip_test)
    decoders = _check_decoders(decoders, runner)
    keypoint_set = runner.codec.keypoint_set
    _check_mpii_keypoints(keypoint_set)
    skip_report = SkipReport()
    records = read_mpii(annotation_file, image_dir, runner.input_size,
                        keypoint_set=keypoint_set, gt_mat_file=head_boxes or None,
                        report=skip_report)
    records = first_images(records, max_people, skip_report)
    if not records:
        raise ValueError(f"No person to evaluate in {annotation_file} with images in "
                         f"{image_dir}: {skip_report.summary()}")
    predictions = predict_records(runner, records, batch_size=batch_size, decoders=decoders,
                                  skip_report=skip_report, log_every=log_every, out=out)
    joints, missing, boxes, rows, unpredicted = _mpii_ground_truth(
        records, predictions, head_boxes if not max_people else "", keypoint_set)
    notes = _skip_notes(skip_report)
    if unpredicted:
        notes += (f"{unpredicted} annotated people have no prediction (unreadable images or "
                  "no person centre) and count as misses",)
    os.makedirs(out_dir, exist_ok=True)
    evaluations = {}
    for decoder in decoders:
        keypoints = predictions["keypoints"][decoder]
        full = np.full(joints.shape, np.nan)
        full[rows] = keypoints
        result = compute_pckh(full, joints, missing, boxes, keypoint_set)
        files = {"predictions": os.path.join(out_dir, f"mpii_predictions_{decoder}.json"),
                 "pred_mat": os.path.join(out_dir, f"pred_{decoder}.mat")}
        _write_mpii_predictions(files["predictions"], files["pred_mat"], keypoints,
                                predictions["scores"][decoder], rows, len(joints), records,
                                predictions)
        evaluations[decoder] = Evaluation(
            MPII, decoder, runner.flip_test, MPII_BOX_SOURCE, result, len(rows), files, notes,
            predictions["seconds"], runner.codec.replace(decoder=decoder).describe_decoding())
    return evaluations


def evaluate_model(model, source: DataSource, decoders=None, **options) -> dict:
    """{decoder: `Evaluation`} of a network or runner on a `DataSource`: `evaluate_coco_decoders`
    or `evaluate_mpii_decoders`, whose keyword arguments `options` are."""
    if source.dataset == COCO:
        return evaluate_coco_decoders(model, source.annotation_file, source.image_dir,
                                      source.det_boxes_json, decoders=decoders, **options)
    return evaluate_mpii_decoders(model, source.annotation_file, source.image_dir,
                                  source.head_boxes, decoders=decoders, **options)
