"""Where evaluation data come from: a `DataSource` (annotation file, images, person boxes), checked
once, or the synthetic data set, generated on first use so that everything runs offline.

Example:
    source = resolve_data_source("coco", data_dir="data/synthetic")   # generated if missing
    source = resolve_data_source("coco", annotation_file="person_keypoints_val2017.json",
                                 image_dir="val2017", det_boxes_json="detections.json")
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

from skelpose_tf.evaluation.coco_metric import GROUND_TRUTH_BOXES, detector_box_source

COCO = "coco"
MPII = "mpii"
DATASETS = (COCO, MPII)
DEFAULT_DATA_DIR = "data/synthetic"
MPII_BOX_SOURCE = "MPII annotated person centres and scales"


@dataclasses.dataclass(frozen=True)
class DataSource:
    """The people an evaluation runs on.

    Attributes:
        dataset: "coco" (COCO keypoint format, AP/AR) or "mpii" (HRNet's MPII JSON, PCKh).
        annotation_file: COCO keypoint JSON or MPII JSON.
        image_dir: folder the annotation's file names are relative to.
        det_boxes_json: COCO only: detector boxes ("" = ground-truth boxes).
        head_boxes: MPII only: `gt_valid.mat`-style ground truth ("" = the JSON `headbox`
            fields and joints).
        synthetic_dir: the synthetic data set's root when the files are its own, else "".
    """

    dataset: str
    annotation_file: str
    image_dir: str
    det_boxes_json: str = ""
    head_boxes: str = ""
    synthetic_dir: str = ""

    @property
    def box_source(self) -> str:
        """Which person boxes the predictions use, for every report."""
        if self.dataset == MPII:
            return MPII_BOX_SOURCE
        if self.det_boxes_json:
            return detector_box_source(self.det_boxes_json)
        return GROUND_TRUTH_BOXES

    def describe(self) -> str:
        """One line: data set, annotation file and, for the synthetic set, its root."""
        where = f"synthetic data set in {self.synthetic_dir}, " if self.synthetic_dir else ""
        return f"{self.dataset.upper()} format: {where}{self.annotation_file}"

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "box_source": self.box_source}


def ensure_synthetic_dataset(data_dir: str, num_train: int = 2000, num_val: int = 200,
                             out=sys.stdout, same_sides=None):
    """The synthetic data set's `DatasetPaths` in `data_dir`, generated first if missing.

    Generated with seed 0 (`num_train` + `num_val` images; the generator's defaults are the
    set that training's default makes), so `train.py` and `evaluate.py` find the same set.
    `same_sides` (True / False) generates with or without the generator's `same_sides` and
    checks that an existing set was made the same way (ValueError otherwise); None (the
    evaluation and export callers) accepts either.
    """
    from skelpose_tf.data.synthetic import dataset_paths, generate_dataset

    paths = dataset_paths(data_dir)
    if not paths.exists():
        print(f"data: generating the synthetic data set in {data_dir} ({num_train} + {num_val} "
              f"images{', same sides' if same_sides else ''}; first use, it is kept)", file=out,
              flush=True)
        paths = generate_dataset(data_dir, num_train, num_val, seed=0,
                                 workers=os.cpu_count() or 1, same_sides=bool(same_sides))
    elif same_sides is not None:
        with open(paths.val_annotations) as f:
            made = bool(json.load(f).get("info", {}).get("same_sides", False))
        if made != bool(same_sides):
            raise ValueError(
                f"{data_dir} holds a synthetic data set generated with same_sides={made}, but "
                f"synthetic_same_sides={bool(same_sides)} was asked for; choose another "
                "--data_dir (it is generated there on first use).")
    return paths


def _require_file(path: str, what: str) -> None:
    if not os.path.isfile(path):
        raise ValueError(f"{what} not found: {path}")


def resolve_data_source(dataset: str, data_dir: str = DEFAULT_DATA_DIR, annotation_file: str = "",
                        image_dir: str = "", det_boxes_json: str = "", head_boxes: str = "",
                        out=sys.stdout) -> DataSource:
    """Check the evaluation inputs; without an annotation file, use the synthetic data set.

    Args:
        dataset: "coco" or "mpii".
        data_dir: the synthetic data set's root, used (and generated if missing) when no
            `annotation_file` is given; its val split is evaluated (for MPII with its
            `mpii_gt_val.mat` head boxes unless `head_boxes` is given).
        annotation_file, image_dir: a COCO keypoint JSON or an MPII JSON and its image folder
            (both or neither).
        det_boxes_json: COCO only: detector boxes instead of the ground-truth boxes.
        head_boxes: MPII only: a `gt_valid.mat`-style file.
        out: stream for the generation message.

    Raises:
        ValueError: an unknown data set, a flag that does not apply to it, or a missing file.
    """
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}. Received: dataset={dataset!r}")
    if dataset == MPII and det_boxes_json:
        raise ValueError("Detector boxes (--det_boxes_json) apply to COCO only; MPII is evaluated "
                         "on its annotated person centres and scales, as the official code.")
    if dataset == COCO and head_boxes:
        raise ValueError("Head boxes (--head_boxes) apply to MPII only (--dataset=mpii).")
    if bool(annotation_file) != bool(image_dir):
        raise ValueError("Pass both the annotation file (--ann) and its image folder (--images), "
                         "or neither to use the synthetic data set. Received: "
                         f"ann={annotation_file!r}, images={image_dir!r}")
    synthetic_dir = ""
    if not annotation_file:
        paths = ensure_synthetic_dataset(data_dir, out=out)
        synthetic_dir = data_dir
        image_dir = paths.val_images
        if dataset == COCO:
            annotation_file = paths.val_annotations
        else:
            annotation_file = paths.mpii_val
            head_boxes = head_boxes or paths.mpii_gt_val
    _require_file(annotation_file, "Annotation file (--ann)")
    if not os.path.isdir(image_dir):
        raise ValueError(f"Image folder (--images) not found: {image_dir}")
    if det_boxes_json:
        _require_file(det_boxes_json, "Detector box file (--det_boxes_json)")
    if head_boxes:
        _require_file(head_boxes, "Head box file (--head_boxes)")
    return DataSource(dataset, annotation_file, image_dir, det_boxes_json, head_boxes,
                      synthetic_dir)
