"""Evaluate a trained pose network: COCO keypoint AP/AR or MPII PCKh, in the paper's layout.

    python evaluate.py --weights runs/demo                       # synthetic val set, GT boxes
    python evaluate.py --weights runs/w32 --ann person_keypoints_val2017.json \
        --images val2017 --det_boxes_json COCO_val2017_detections_AP_H_56_person.json
    python evaluate.py --dataset mpii --weights runs/mpii --ann valid.json --images images \
        --head_boxes gt_valid.mat
    python evaluate.py --results_json results.json --ann person_keypoints_val2017.json

Writes into --out_dir (default: the run directory's `evaluate/` folder) the COCO results JSON
(`keypoints_results_<decoder>.json`) or the MPII predictions (`mpii_predictions_<decoder>.json`,
`pred_<decoder>.mat`), and the metrics JSON (--metrics_json); prints the table. Without --ann
the synthetic data set in --data_dir is used (generated if missing).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json  # noqa: E402

from absl import app, flags, logging  # noqa: E402

from skelpose_tf import cli, model_evaluation, model_flags  # noqa: E402
from skelpose_tf.data import sources  # noqa: E402
from skelpose_tf.keypoints import get_keypoint_set  # noqa: E402
from skelpose_tf.evaluation.report import format_coco_table  # noqa: E402
from skelpose_tf.model_loading import (describe_model, model_summary,  # noqa: E402
                                       resolve_checkpoint)

_WEIGHTS = model_flags.define_weights_flag()
model_flags.define_architecture_flags()
model_flags.define_decoding_flags()
_DATASET = flags.DEFINE_enum("dataset", "coco", sources.DATASETS,
                             "Annotation format and metric: coco (AP/AR) or mpii (PCKh).")
_DATA_DIR = flags.DEFINE_string("data_dir", sources.DEFAULT_DATA_DIR,
                                "Synthetic data set used when --ann is not given.")
_ANN = flags.DEFINE_string("ann", "", "COCO keypoint JSON, or HRNet-layout MPII JSON.")
_IMAGES = flags.DEFINE_string("images", "", "Folder of the annotation file's images.")
_USE_GT_BOXES = flags.DEFINE_boolean(
    "use_gt_boxes", True, "COCO: ground-truth person boxes (paper Table I). Off needs "
    "--det_boxes_json.")
_DET_BOXES = flags.DEFINE_string(
    "det_boxes_json", "", "COCO: detector person boxes (COCO_val2017_detections_AP_H_56_person"
    ".json format) instead of the ground-truth boxes.")
_HEAD_BOXES = flags.DEFINE_string(
    "head_boxes", "", "MPII: gt_valid.mat-style ground truth with head boxes (default: the "
    "JSON 'headbox' fields; the synthetic set's mpii_gt_val.mat).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Person crops per forward pass.",
                                   lower_bound=1)
_MAX_PEOPLE = flags.DEFINE_integer(
    "max_people", 0, "Quick check: evaluate only the first images holding this many people "
    "(scored on those images only); 0 = all.", lower_bound=0)
_OUT_DIR = flags.DEFINE_string("out_dir", "", "Output folder (default: <run dir>/evaluate).")
_METRICS_JSON = flags.DEFINE_string("metrics_json", "",
                                    "Metrics JSON path (default: <out_dir>/metrics.json).")
_RESULTS_JSON = flags.DEFINE_string(
    "results_json", "", "Score this existing COCO results JSON against --ann instead of "
    "running a model (--keypoint_set: the predictions' keypoint set, default coco).")


def _output_paths():
    weights = _WEIGHTS.value
    run_dir = weights if os.path.isdir(weights) else os.path.dirname(weights)
    out_dir = _OUT_DIR.value or os.path.join(run_dir or ".", "evaluate")
    return out_dir, _METRICS_JSON.value or os.path.join(out_dir, "metrics.json")


def _write_json(path, payload):
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)


def _check_box_flags():
    if _DET_BOXES.value and _USE_GT_BOXES.present and _USE_GT_BOXES.value:
        raise app.UsageError("--use_gt_boxes and --det_boxes_json exclude each other.")
    if not _USE_GT_BOXES.value and not _DET_BOXES.value:
        raise app.UsageError("--nouse_gt_boxes needs the detector boxes: --det_boxes_json=FILE.")


def _score_results_file():
    if not _ANN.value or _DATASET.value != sources.COCO:
        raise app.UsageError("--results_json scores a COCO results file: give --ann (the ground "
                             "truth it is scored against) and, for a keypoint set other than "
                             "coco, --keypoint_set.")
    keypoint_set = get_keypoint_set(model_flags.value("keypoint_set") or "coco")
    result = model_evaluation.score_coco_results(_RESULTS_JSON.value, _ANN.value, keypoint_set)
    print(format_coco_table(result.stats, result.box_source, title=f"COCO keypoints: "
                            f"{_RESULTS_JSON.value} on {_ANN.value}", row_label="results file"))
    metrics_json = _METRICS_JSON.value or os.path.splitext(_RESULTS_JSON.value)[0] + "_metrics.json"
    _write_json(metrics_json, {"dataset": "coco", **result.to_dict()})
    print(f"metrics: {metrics_json}")


def _evaluate():
    _check_box_flags()
    resolve_checkpoint(_WEIGHTS.value)  # fail fast, before data generation or model loading
    source = sources.resolve_data_source(
        _DATASET.value, _DATA_DIR.value, _ANN.value, _IMAGES.value, _DET_BOXES.value,
        _HEAD_BOXES.value)
    network, checkpoint = model_flags.load_model(_WEIGHTS.value)
    out_dir, metrics_json = _output_paths()
    print(f"model: {describe_model(network)} from {checkpoint}")
    print(f"data: {source.describe()} | person boxes: {source.box_source}", flush=True)
    decoder = network.codec.decoder
    evaluation = model_evaluation.evaluate_model(
        network, source, [decoder], flip_test=model_flags.value("flip_test"),
        batch_size=_BATCH_SIZE.value, out_dir=out_dir, max_people=_MAX_PEOPLE.value)[decoder]
    for note in evaluation.notes:
        print(f"note: {note}")
    title = f"{source.dataset.upper()} {os.path.basename(source.annotation_file)}"
    print(evaluation.format_table(title=title, row_label=describe_model(network)))
    metrics = {"weights": checkpoint, "model": model_summary(network),
               "data": source.to_dict(), "batch_size": _BATCH_SIZE.value,
               "max_people": _MAX_PEOPLE.value, **evaluation.to_dict()}
    _write_json(metrics_json, metrics)
    for name, path in evaluation.files.items():
        print(f"{name}: {path}")
    print(f"metrics: {metrics_json}")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # skipped inputs are summarised in the report
    if _RESULTS_JSON.value:
        _score_results_file()
    else:
        _evaluate()


if __name__ == "__main__":
    cli.run(main)
