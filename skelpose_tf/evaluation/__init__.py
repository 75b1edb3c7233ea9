"""Evaluation metrics, independent of how the predictions were made (numpy + pycocotools).

- `nms`: OKS between poses and greedy OKS-NMS (official HRNet `oks_iou` / `oks_nms`).
- `coco_files`: COCO annotation and results JSON checked before pycocotools reads them (one-line
  errors naming the file, record and field; duplicate ids refused).
- `coco_metric`: rescoring, OKS-NMS, the COCO results JSON and pycocotools' keypoint AP/AR.
- `mpii_pckh`: MPII PCKh@0.5 / Mean@0.1 (official threshold 0.11, and exact 0.1) with the
  official head-size factor 0.6.
- `report`: tables in the paper's layout (text, markdown, JSON-ready dicts).

No TensorFlow is imported here.
"""

from skelpose_tf.evaluation.coco_metric import (
    COCO_STAT_NAMES,
    GROUND_TRUTH_BOXES,
    CocoKeypointMetric,
    CocoKeypointResult,
    coco_evaluate,
    detector_box_source,
    evaluate_results_file,
    load_coco_ground_truth,
    load_coco_results,
    rescore_instances,
)
from skelpose_tf.evaluation.mpii_pckh import (
    MpiiGroundTruth,
    PckhResult,
    compute_pckh,
    read_mpii_gt_mat,
)
from skelpose_tf.evaluation.nms import oks, oks_nms
from skelpose_tf.evaluation.report import (
    coco_table_row,
    format_coco_table,
    format_pckh_table,
    pckh_table_row,
)

__all__ = [
    "COCO_STAT_NAMES",
    "GROUND_TRUTH_BOXES",
    "CocoKeypointMetric",
    "CocoKeypointResult",
    "MpiiGroundTruth",
    "PckhResult",
    "coco_evaluate",
    "coco_table_row",
    "compute_pckh",
    "detector_box_source",
    "evaluate_results_file",
    "format_coco_table",
    "format_pckh_table",
    "load_coco_ground_truth",
    "load_coco_results",
    "oks",
    "oks_nms",
    "pckh_table_row",
    "read_mpii_gt_mat",
    "rescore_instances",
]
