"""The paper's Table III ablation from checkpoints, on any data set (default: synthetic val).

    python ablation.py --baseline_weights runs/baseline --skeletal_weights runs/demo
    python ablation.py --dataset mpii --ann valid.json --images images --head_boxes gt_valid.mat \
        --baseline_weights runs/mpii_base --skeletal_weights runs/mpii_skel

Rows: HRNet baseline (quarter decoder), + skeletal attention (quarter), + weighted inference
(weighted decoder), then the other decoders of each model. Writes `ablation.md`,
`ablation.json` and each model's results files into --out_dir; prints the table.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json  # noqa: E402

from absl import app, flags, logging  # noqa: E402

from skelpose_tf import cli, ablation_table, model_flags  # noqa: E402
from skelpose_tf.codec import DECODERS  # noqa: E402
from skelpose_tf.data import sources  # noqa: E402
from skelpose_tf.model_loading import resolve_checkpoint  # noqa: E402

_BASELINE = model_flags.define_weights_flag(
    "baseline_weights", "", "HRNet baseline checkpoint (trained with --noskeletal_attention): "
    "a .keras file, a run directory or a .weights.h5 file.")
_SKELETAL = model_flags.define_weights_flag(
    "skeletal_weights", "", "Checkpoint of the model with the skeletal attention module.")
model_flags.define_architecture_flags(skeletal_attention=False)  # the roles fix it
model_flags.define_decoding_flags(decoder=False)  # --decoders below
_DATASET = flags.DEFINE_enum("dataset", "coco", sources.DATASETS,
                             "Annotation format and metric: coco (AP/AR) or mpii (PCKh).")
_DATA_DIR = flags.DEFINE_string("data_dir", sources.DEFAULT_DATA_DIR,
                                "Synthetic data set used when --ann is not given.")
_ANN = flags.DEFINE_string("ann", "", "COCO keypoint JSON, or HRNet-layout MPII JSON.")
_IMAGES = flags.DEFINE_string("images", "", "Folder of the annotation file's images.")
_DET_BOXES = flags.DEFINE_string("det_boxes_json", "",
                                 "COCO: detector person boxes instead of the ground-truth boxes.")
_HEAD_BOXES = flags.DEFINE_string("head_boxes", "", "MPII: gt_valid.mat-style ground truth.")
_DECODERS = flags.DEFINE_list("decoders", list(DECODERS),
                              f"Decoders to evaluate, among {', '.join(DECODERS)}.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Person crops per forward pass.",
                                   lower_bound=1)
_OUT_DIR = flags.DEFINE_string("out_dir", "runs/ablation", "Output folder.")
flags.register_validator("decoders", lambda names: bool(names) and set(names) <= set(DECODERS),
                         message=f"--decoders must name some of {', '.join(DECODERS)}.")


def _checkpoints() -> dict:
    given = {ablation_table.BASELINE: _BASELINE.value, ablation_table.SKELETAL: _SKELETAL.value}
    given = {role: weights for role, weights in given.items() if weights}
    if not given:
        raise app.UsageError("Give --baseline_weights and/or --skeletal_weights.")
    for weights in given.values():
        resolve_checkpoint(weights)
    return given


def _ablation():
    checkpoints = _checkpoints()
    source = sources.resolve_data_source(
        _DATASET.value, _DATA_DIR.value, _ANN.value, _IMAGES.value, _DET_BOXES.value,
        _HEAD_BOXES.value)
    models = {}
    for role, weights in checkpoints.items():
        # A .weights.h5 file is built in its role's architecture; a .keras file carries its
        # own, and run_ablation checks that it fits the role.
        weights_only = resolve_checkpoint(weights).endswith(".weights.h5")
        models[role] = model_flags.load_model(
            weights, skeletal_attention=(role == ablation_table.SKELETAL) if weights_only else None)
    result = ablation_table.run_ablation(
        models, source, _DECODERS.value, flip_test=model_flags.value("flip_test"),
        batch_size=_BATCH_SIZE.value, out_dir=_OUT_DIR.value)
    os.makedirs(_OUT_DIR.value, exist_ok=True)
    markdown_path = os.path.join(_OUT_DIR.value, "ablation.md")
    json_path = os.path.join(_OUT_DIR.value, "ablation.json")
    with open(markdown_path, "w") as f:
        f.write(result.format_table("markdown") + "\n")
    with open(json_path, "w") as f:
        json.dump(result.to_dict(), f, indent=2)
    print(result.format_table("text"))
    print(f"table: {markdown_path}\njson: {json_path}")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # skipped inputs are summarised in the report
    _ablation()


if __name__ == "__main__":
    cli.run(main)
