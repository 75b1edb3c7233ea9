"""Seeded ablation runs: each (variant, seed) trained as an ordinary run directory, then scored.

A variant is the recipe plus a few `train.py` flags:

    baseline           HRNet alone (--skeletal_attention=false)
    skeletal           + the skeletal attention module (the paper's model)
    physical_links     the module with the 10 physical links only: the recipe's keypoint set
                       without its 6 virtual left-right links, written as a keypoint-set JSON
                       into <out_dir>/keypoint_sets/ (the module then predicts 10 maps)
    no_skeletal_loss   the module, skeletal loss weight 0 (its maps get no supervision)

Every run of one seed gets `--seed=<seed>` and `--deterministic_data=true`, so all variants of
a seed see the same batches in the same order with the same augmentation draws, and (through
`skelpose_tf.training.initial_weights`) the same initial weights in every layer they share.
`--export=false` is added (the ablation needs no export). Runs live in
`<out_dir>/runs/<variant>_seed<seed>/`; their training goes through `train.py` in a
subprocess (log: `<out_dir>/logs/<run>.log`), so an interrupted ablation resumes where it
stopped: a run with a `summary.json` is finished and skipped, an unfinished one resumes from
its newest checkpoint through train.py's own resume logic.

Scoring (`evaluate_run`): the run's final weights (`last.keras`, not the validation-selected
`best.keras`, which was chosen on the evaluation set) go through the evaluator
(`model_evaluation.evaluate_model`) once, read by every decoder; for COCO-format data the
results files also give the left/right swap rate and keypoint errors by joint group
(`evaluation.pose_errors`). The scores are cached in `<run>/ablation_eval.json` (with the data
and decoders they belong to), so a resumed ablation does not evaluate a run twice.

Example:
    spec = RunSpec("skeletal", 0, "abl/runs/skeletal_seed0", ("--skeletal_attention=true",))
    train_run(spec, "configs/ablation.cfg", "train.py", "abl/logs")
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

from absl import flags

from skelpose_tf.atomic_files import write_json_atomic
from skelpose_tf.cli import UserError
from skelpose_tf.keypoints import get_keypoint_set

VARIANTS = {
    "baseline": "HRNet baseline",
    "skeletal": "+ skeletal attention",
    "physical_links": "skeletal attention, physical links only",
    "no_skeletal_loss": "skeletal attention, skeletal loss weight 0",
}
DEFAULT_VARIANTS = ("baseline", "skeletal")
BASELINE = "baseline"
SKELETAL = "skeletal"
RUN_OVERRIDES = ("--deterministic_data=true", "--export=false")
SUMMARY = "summary.json"
EVAL_FILE = "ablation_eval.json"


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One training run of the ablation.

    Attributes:
        variant: a key of `VARIANTS`.
        seed: the run's `--seed`.
        run_dir: its run directory.
        flags: the `train.py` flags added to the recipe (variant, seed, run directory, ...).
    """

    variant: str
    seed: int
    run_dir: str
    flags: tuple

    @property
    def name(self) -> str:
        return f"{self.variant}_seed{self.seed}"

    @property
    def finished(self) -> bool:
        return os.path.exists(os.path.join(self.run_dir, SUMMARY))


def parse_variants(names) -> tuple:
    """Variant names in `VARIANTS` order ("all" for every one); ValueError naming a bad one."""
    names = [name.strip() for name in names if name.strip()]
    if "all" in names:
        return tuple(VARIANTS)
    unknown = [name for name in names if name not in VARIANTS]
    if unknown or not names:
        raise ValueError(f"--variants must name some of {', '.join(VARIANTS)} (or all). "
                         f"Received: {','.join(names) or '(none)'}")
    return tuple(name for name in VARIANTS if name in names)


def parse_seeds(texts) -> tuple:
    """Distinct integer seeds in the given order; ValueError naming a bad one."""
    seeds = []
    for text in texts:
        try:
            seed = int(str(text).strip())
        except ValueError:
            raise ValueError(f"--seeds must be integers. Received: {text!r}") from None
        if seed < 0:
            raise ValueError(f"--seeds must be >= 0. Received: {seed}")
        if seed not in seeds:
            seeds.append(seed)
    if not seeds:
        raise ValueError("--seeds must name at least one seed.")
    return tuple(seeds)


def recipe_values(recipe: str, extra=()) -> dict:
    """{flag name: value text} of a train.py flagfile (nested --flagfile read by absl; paths
    relative to the current directory, as train.py reads them); later flags win."""
    if not os.path.isfile(recipe):
        raise ValueError(f"--recipe file not found: {recipe}")
    arguments = flags.FLAGS.read_flags_from_files([f"--flagfile={recipe}", *extra],
                                                  force_gnu=True)
    values = {}
    for argument in arguments:
        name, _, value = argument.lstrip("-").partition("=")
        if name.startswith("no") and not value and name[2:]:
            name, value = name[2:], "false"
        values[name] = value if value or "=" in argument else "true"
    return values


def physical_links_set(keypoint_set):
    """The keypoint set without its virtual links, named `<name>_physical_links`."""
    links = tuple(link for link in keypoint_set.links if link.kind == "physical")
    return dataclasses.replace(keypoint_set, name=f"{keypoint_set.name}_physical_links",
                               links=links)


def write_physical_links_set(keypoint_set_spec: str, out_dir: str) -> str:
    """Write `physical_links_set` of the recipe's keypoint set as JSON; returns its path."""
    reduced = physical_links_set(get_keypoint_set(keypoint_set_spec))
    path = os.path.abspath(os.path.join(out_dir, "keypoint_sets", f"{reduced.name}.json"))
    write_json_atomic(path, reduced.to_config())
    return path


def plan_runs(recipe: str, variants, seeds, out_dir: str) -> list:
    """The `RunSpec`s, seed by seed (every variant of seed 0 first, so each finished seed
    gives complete pairs).

    Raises:
        ValueError: the recipe is missing or has no usable keypoint set.
    """
    values = recipe_values(recipe)
    variant_flags = {
        "baseline": ("--skeletal_attention=false",),
        "skeletal": ("--skeletal_attention=true",),
        "no_skeletal_loss": ("--skeletal_attention=true", "--skeletal_loss_weight=0"),
    }
    if "physical_links" in variants:
        path = write_physical_links_set(values.get("keypoint_set", "coco"), out_dir)
        variant_flags["physical_links"] = ("--skeletal_attention=true",
                                           f"--keypoint_set={path}")
    specs = []
    for seed in seeds:
        for variant in variants:
            run_dir = os.path.abspath(os.path.join(out_dir, "runs", f"{variant}_seed{seed}"))
            specs.append(RunSpec(variant, seed, run_dir, (
                f"--run_dir={run_dir}", f"--seed={seed}", *RUN_OVERRIDES,
                *variant_flags[variant])))
    return specs


def train_command(spec: RunSpec, recipe: str, train_script: str) -> list:
    """The `train.py` command line of a run (recipe first, so the run's flags win)."""
    return [sys.executable, train_script, f"--flagfile={recipe}", *spec.flags]


def train_run(spec: RunSpec, recipe: str, train_script: str, log_dir: str,
              out=sys.stdout) -> str:
    """Train (or resume) one run through train.py; returns "skipped" or "trained".

    Raises:
        RuntimeError: train.py failed, with the last lines of its log.
    """
    if spec.finished:
        print(f"ablation: {spec.name} finished earlier, skipped", file=out, flush=True)
        return "skipped"
    os.makedirs(log_dir, exist_ok=True)
    log_path = os.path.join(log_dir, f"{spec.name}.log")
    resuming = os.path.isdir(os.path.join(spec.run_dir, "checkpoints"))
    print(f"ablation: {'resuming' if resuming else 'training'} {spec.name} (log {log_path})",
          file=out, flush=True)
    with open(log_path, "a") as log:
        log.write(f"\n$ {' '.join(train_command(spec, recipe, train_script))}\n")
        log.flush()
        returncode = subprocess.call(train_command(spec, recipe, train_script), stdout=log,
                                     stderr=subprocess.STDOUT)
    if returncode != 0 or not spec.finished:
        with open(log_path) as log:
            tail = "".join(log.readlines()[-6:]).strip()
        raise UserError(f"train.py failed for {spec.name} (exit code {returncode}); rerun "
                           f"the same ablation command to resume. End of {log_path}:\n{tail}")
    return "trained"


def final_weights(run_dir: str) -> str:
    """`last.keras` of a finished run (the final weights), else `best.keras`."""
    for name in ("last.keras", "best.keras"):
        path = os.path.join(run_dir, name)
        if os.path.exists(path):
            return path
    raise ValueError(f"{run_dir} holds neither last.keras nor best.keras.")


def run_scores(evaluations: dict, network, source) -> dict:
    """{decoder: numbers} of `evaluate_model`'s result: COCO: the 10 stats as "AP", "AP .5",
    ... (fractions), "swap" and "errors" (`pose_errors.pose_error_report`); MPII: "PCKh",
    "PCKh@0.1 (official, thr 0.11)", "PCKh@0.1 (exact)" (percent)."""
    from skelpose_tf.evaluation.pose_errors import pose_error_report
    from skelpose_tf.training.loop import headline_metrics

    scores = {}
    for decoder, evaluation in evaluations.items():
        numbers = {key: float(value) for key, value in headline_metrics(evaluation).items()}
        if source.dataset == "coco":
            numbers.update(pose_error_report(source.annotation_file,
                                             evaluation.files["results"],
                                             network.keypoint_set))
        scores[decoder] = numbers
    return scores


def evaluate_run(spec: RunSpec, source, decoders, *, flip_test=True, batch_size=32,
                 out=sys.stdout) -> dict:
    """The run's scores (`run_scores`), from its cache when it was scored on the same data
    with the same decoders and flip test; otherwise evaluated and cached atomically."""
    from skelpose_tf.model_evaluation import evaluate_model
    from skelpose_tf.model_loading import load_pose_model

    key = {"data": source.to_dict(), "decoders": list(decoders), "flip_test": bool(flip_test),
           "weights": final_weights(spec.run_dir)}
    cache = os.path.join(spec.run_dir, EVAL_FILE)
    if os.path.exists(cache):
        import json

        with open(cache) as f:
            cached = json.load(f)
        if cached.get("key") == key:
            return cached["scores"]
    print(f"ablation: evaluating {spec.name} ({os.path.basename(key['weights'])})", file=out,
          flush=True)
    network, _ = load_pose_model(key["weights"])
    evaluations = evaluate_model(network, source, list(decoders), flip_test=flip_test,
                                 batch_size=batch_size,
                                 out_dir=os.path.join(spec.run_dir, "ablation_eval"),
                                 log_every=0, out=out)
    scores = run_scores(evaluations, network, source)
    write_json_atomic(cache, {"key": key, "variant": spec.variant, "seed": spec.seed,
                              "scores": scores})
    return scores
