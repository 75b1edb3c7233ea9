"""The paper's Table III ablation: from two checkpoints, or trained over several seeds.

    python ablation.py --train --recipe configs/ablation.cfg --seeds 0,1,2 [--variants all] \
        [--out_dir runs/ablation]
    python ablation.py --baseline_weights runs/baseline --skeletal_weights runs/demo
    python ablation.py --dataset mpii --ann valid.json --images images --head_boxes gt_valid.mat \
        --baseline_weights runs/mpii_base --skeletal_weights runs/mpii_skel

Rows: HRNet baseline (quarter decoder), + skeletal attention (quarter), + weighted inference
(weighted decoder), then the other decoders of each model. Writes `ablation.md`,
`ablation.json` and each model's results files into --out_dir; prints the table.

With --train, each (variant, seed) is trained through train.py as a run directory in
<out_dir>/runs/ (skelpose_tf/ablation_runs.py: same data order, augmentation and shared initial
weights for every variant of a seed; rerunning the command resumes an interrupted ablation),
evaluated on the recipe's validation set (or --ann/--images) with every decoder, and
summarised as mean +- sd over seeds and paired differences (skelpose_tf/ablation_stats.py):
`ablation.md`, `ablation.json` and `ablation_<metric>.png`, rewritten after each seed.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json  # noqa: E402
import time  # noqa: E402

from absl import app, flags, logging  # noqa: E402

from skelpose_tf import ablation_runs, ablation_stats, ablation_table, cli  # noqa: E402
from skelpose_tf import model_flags  # noqa: E402
from skelpose_tf.atomic_files import write_json_atomic, write_text_atomic  # noqa: E402
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
_TRAIN = flags.DEFINE_bool("train", False, "Train each (variant, seed) from --recipe, then "
                           "evaluate them all (instead of scoring two given checkpoints).")
_RECIPE = flags.DEFINE_string("recipe", "configs/ablation.cfg", "--train: the train.py "
                              "flagfile every run starts from.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "--train: the seeds.")
_VARIANTS = flags.DEFINE_list("variants", list(ablation_runs.DEFAULT_VARIANTS),
                              f"--train: some of {', '.join(ablation_runs.VARIANTS)}, or all.")
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


def _train_source(values: dict):
    """The evaluation data of --train: --ann/--images when given, else the recipe's
    validation set (the synthetic set's val split for --dataset=synthetic recipes)."""
    if _ANN.value:
        return sources.resolve_data_source(_DATASET.value, annotation_file=_ANN.value,
                                           image_dir=_IMAGES.value,
                                           det_boxes_json=_DET_BOXES.value,
                                           head_boxes=_HEAD_BOXES.value)
    if values.get("dataset", "coco") == "synthetic":
        return sources.resolve_data_source(
            _DATASET.value, data_dir=values.get("data_dir", sources.DEFAULT_DATA_DIR),
            det_boxes_json=_DET_BOXES.value, head_boxes=_HEAD_BOXES.value)
    dataset = values.get("dataset", "coco")
    if dataset != _DATASET.value:
        raise cli.UserError(f"--dataset={_DATASET.value} but the recipe {_RECIPE.value} trains "
                            f"on {dataset}; give --dataset={dataset} or --ann/--images.")
    return sources.resolve_data_source(
        dataset, annotation_file=values.get("val_ann", ""),
        image_dir=values.get("val_images", ""), det_boxes_json=_DET_BOXES.value,
        head_boxes=_HEAD_BOXES.value or values.get("val_head_boxes", ""))


def _write_seeded_results(summary, source, specs, recipe, seconds):
    out_dir = _OUT_DIR.value
    notes = [f"recipe {recipe}; runs in {os.path.join(out_dir, 'runs')}; final weights "
             "(last.keras) of each run",
             f"data: {source.describe()} | person boxes: {source.box_source} | flip test "
             f"{'on' if model_flags.value('flip_test') else 'off'}",
             "seeds: " + "; ".join(f"{v}: {', '.join(map(str, seeds)) or 'none yet'}"
                                   for v, seeds in summary["seeds"].items()),
             f"wall time of this invocation so far: {seconds / 60:.1f} min"]
    if summary["dataset"] != "mpii":
        notes.append("swap %: labelled people (or limb pairs) whose limb keypoints fit the "
                     "ground truth better with left and right exchanged; err: keypoint "
                     "error in % of sqrt(box area) (skelpose_tf/evaluation/pose_errors.py)")
    markdown = ablation_stats.format_markdown(summary, "Seeded ablation", notes)
    write_text_atomic(os.path.join(out_dir, "ablation.md"), markdown)
    write_json_atomic(os.path.join(out_dir, "ablation.json"), {
        "recipe": recipe, "data": source.to_dict(), "notes": notes,
        "runs": [{"variant": s.variant, "seed": s.seed, "run_dir": s.run_dir,
                  "flags": list(s.flags)} for s in specs],
        **summary})
    ablation_stats.plot_per_seed(summary, os.path.join(out_dir, "ablation_per_seed.png"))
    return markdown


def _seeded_ablation():
    started = time.time()
    if _BASELINE.value or _SKELETAL.value:
        raise app.UsageError("--train trains its own models; give either --train or "
                             "--baseline_weights/--skeletal_weights.")
    try:
        variants = ablation_runs.parse_variants(_VARIANTS.value)
        seeds = ablation_runs.parse_seeds(_SEEDS.value)
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    recipe = _RECIPE.value
    specs = ablation_runs.plan_runs(recipe, variants, seeds, _OUT_DIR.value)
    source = _train_source(ablation_runs.recipe_values(recipe))
    train_script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train.py")
    # Table III's decoders unless --decoders is given: HRNet's quarter, the paper's weighted,
    # and DARK.
    decoders = (_DECODERS.value if flags.FLAGS["decoders"].present
                else ["quarter", "weighted", "dark"])
    scores, markdown = {}, ""
    for seed in seeds:
        seed_specs = [spec for spec in specs if spec.seed == seed]
        for spec in seed_specs:
            ablation_runs.train_run(spec, recipe, train_script,
                                    os.path.join(_OUT_DIR.value, "logs"))
        for spec in seed_specs:
            scores[(spec.variant, spec.seed)] = ablation_runs.evaluate_run(
                spec, source, decoders, flip_test=model_flags.value("flip_test"),
                batch_size=_BATCH_SIZE.value)
        summary = ablation_stats.summarize(scores, variants, decoders, source.dataset)
        markdown = _write_seeded_results(summary, source, specs, recipe, time.time() - started)
        print(f"ablation: seed {seed} done ({(time.time() - started) / 60:.1f} min)", flush=True)
    print(markdown)
    print(f"table: {os.path.join(_OUT_DIR.value, 'ablation.md')}")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # skipped inputs are summarised in the report
    if _TRAIN.value:
        _seeded_ablation()
    else:
        _ablation()


if __name__ == "__main__":
    cli.run(main)
