"""Every recipe in configs/ resolves, through train.py's flags, to its published TrainConfig;
train.py's flags are TrainConfig's fields, and a run's flags.cfg reproduces its config."""

import dataclasses
import glob
import json
import os
import subprocess
import sys

import pytest

from skelpose_tf.training.config import TrainConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "configs", "*.cfg")))

# The published recipes, stated independently of the .cfg files (docs/design.md section 5; the
# official HRNet experiments/{coco,mpii}/hrnet/*_adam_lr1e-3.yaml). Unnamed fields: defaults.
OFFICIAL = dict(skeletal_attention=True, skeletal_loss_weight=0.2, batch_size=32, epochs=210,
                lr=1e-3, lr_decay="step", lr_steps=(170.0, 200.0), lr_factor=0.1,
                weight_decay=0.0, flip_prob=0.5, mixed_precision="auto", val_every_epochs=10,
                decoder="weighted", flip_test=True, verbose=2)
COCO = dict(OFFICIAL, dataset="coco", keypoint_set="coco",
            train_ann="data/coco/annotations/person_keypoints_train2017.json",
            train_images="data/coco/images/train2017",
            val_ann="data/coco/annotations/person_keypoints_val2017.json",
            val_images="data/coco/images/val2017",
            val_det_boxes="data/coco/person_detection_results/"
                          "COCO_val2017_detections_AP_H_56_person.json",
            rotation_factor=45.0, scale_factor=0.35, half_body_prob=0.3)
MPII = dict(OFFICIAL, dataset="mpii", keypoint_set="mpii",
            train_ann="data/mpii/annot/train.json", train_images="data/mpii/images",
            val_ann="data/mpii/annot/valid.json", val_images="data/mpii/images",
            val_head_boxes="data/mpii/annot/gt_valid.mat",
            rotation_factor=30.0, scale_factor=0.25, half_body_prob=0.0)


def _recipe(base, name, width, input_size, **changes):
    return dict(base, run_dir=f"runs/{name}", width=width, input_size=input_size,
                backbone_weights=f"pretrained/hrnet_w{width}-imagenet.weights.h5", **changes)


RECIPES = {
    "coco_base.cfg": COCO,
    "mpii_base.cfg": MPII,
    "coco_w32_256x192.cfg": _recipe(COCO, "coco_w32_256x192", 32, (256, 192)),
    "coco_w32_384x288.cfg": _recipe(COCO, "coco_w32_384x288", 32, (384, 288)),
    "coco_w48_256x192.cfg": _recipe(COCO, "coco_w48_256x192", 48, (256, 192)),
    "coco_w48_384x288.cfg": _recipe(COCO, "coco_w48_384x288", 48, (384, 288), batch_size=24),
    "mpii_w32_256x256.cfg": _recipe(MPII, "mpii_w32_256x256", 32, (256, 256)),
    "mpii_w48_256x256.cfg": _recipe(MPII, "mpii_w48_256x256", 48, (256, 256)),
    "demo.cfg": dict(run_dir="runs/demo", dataset="synthetic", data_dir="data/synthetic",
                     synthetic_train=2000, synthetic_val=200, keypoint_set="coco", width=16,
                     tiny_topology=True, input_size=(128, 96), batch_size=16, epochs=20, lr=2e-3,
                     lr_decay="cosine", warmup_steps=50, mixed_precision="mixed_bfloat16",
                     rotation_factor=15.0, scale_factor=0.25, half_body_prob=0.15,
                     val_max_people=200, backup_every_steps=50, export=True),
}
RECIPES["ablation.cfg"] = dict(  # the demo, shortened; ablation.py sets run_dir and seed
    RECIPES["demo.cfg"], run_dir="runs/ablation_recipe", epochs=4, val_every_epochs=4,
    image_every_epochs=4, export=False, deterministic_data=True)
RECIPES["ablation_same_sides.cfg"] = dict(
    RECIPES["ablation.cfg"], data_dir="data/synthetic_same_sides", synthetic_same_sides=True)
RECIPES["coco_w32.cfg"] = RECIPES["coco_w32_256x192.cfg"]  # the alias
for _name in [n for n in RECIPES if n.startswith(("coco_w", "mpii_w")) and n != "coco_w32.cfg"]:
    RECIPES[_name.replace(".cfg", "_baseline.cfg")] = dict(  # paper Tables I and II
        RECIPES[_name], run_dir=RECIPES[_name]["run_dir"] + "_baseline", skeletal_attention=False)

OVERRIDES = ["--flagfile=configs/demo.cfg", "--backbone_weights=none", "--lr_steps=1.5,3",
             "--export_quantizations=float32,int8", "--input_size=96x64", "--decoder=dark",
             "--mixed_precision=float32", "--strategy=mirrored", "--restart"]
CASES = [[f"--flagfile=configs/{name}"] for name in CONFIGS] + [
    ["--flagfile=configs/coco_w32.cfg", "--batch_size=8", "--width=48"],
    ["--flagfile=configs/demo.cfg", "--input_size=100x96"],
    ["--dataset=coco"],
    [],
    ["--dataset=synthetic"],
    OVERRIDES,
]
ALIAS, BAD_SIZE, NO_PATHS, NO_ARGUMENTS, DEFAULTS, OVERRIDDEN = range(len(CONFIGS), len(CASES))


def resolve(cases):
    output = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tests", "resolve_configs.py"), json.dumps(cases)],
        capture_output=True, text=True, timeout=300, check=True)
    return json.loads(output.stdout.strip().splitlines()[-1])


def as_resolved(config):
    """A TrainConfig as resolve_configs.py prints it (JSON: tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


@pytest.fixture(scope="module")
def resolved():
    return resolve(CASES)


@pytest.fixture(scope="module")
def reloaded(resolved, tmp_path_factory):
    """Each successful case's flags.cfg text, parsed again with `--flagfile`."""
    folder = tmp_path_factory.mktemp("flags")
    cases, indices = [], []
    for index, result in enumerate(resolved["results"]):
        if "flags_text" in result:
            path = folder / f"{index}.cfg"
            path.write_text(result["flags_text"])
            cases.append([f"--flagfile={path}"])
            indices.append(index)
    return dict(zip(indices, resolve(cases)["results"]))


def test_every_config_has_a_stated_recipe():
    assert sorted(RECIPES) == CONFIGS


@pytest.mark.parametrize("index", range(len(CONFIGS)), ids=CONFIGS)
def test_every_config_resolves_to_its_published_recipe(resolved, index):
    result = resolved["results"][index]
    assert "error" not in result, result
    expected = as_resolved(TrainConfig(**RECIPES[CONFIGS[index]]))
    differences = {k: (v, expected[k]) for k, v in result["config"].items() if v != expected[k]}
    assert not differences, differences  # name: (resolved, published)


def test_alias_and_overrides(resolved):
    config = resolved["results"][ALIAS]["config"]
    assert (config["width"], config["input_size"], config["batch_size"]) == (48, [256, 192], 8)


def test_bad_values_are_rejected(resolved):
    assert "multiples of 32" in resolved["results"][BAD_SIZE]["error"]
    assert "needs the paths" in resolved["results"][NO_PATHS]["error"]
    assert "dataset='coco' needs the paths" in resolved["results"][NO_ARGUMENTS]["error"]


def test_one_flag_per_field_with_the_same_name(resolved):
    fields = [field.name for field in dataclasses.fields(TrainConfig)]
    assert resolved["flags"] == sorted(fields + ["restart"])


def test_flag_defaults_are_the_field_defaults(resolved):
    # TrainConfig() itself refuses dataset="coco" without paths; the rest are the defaults.
    assert resolved["results"][DEFAULTS]["config"] == as_resolved(TrainConfig(dataset="synthetic"))


def test_command_line_text_converts_to_field_values(resolved):
    config = resolved["results"][OVERRIDDEN]["config"]
    assert config["backbone_weights"] == "" and config["lr_steps"] == [1.5, 3.0]
    assert config["export_quantizations"] == ["float32", "int8"]
    assert (config["input_size"], config["decoder"], config["mixed_precision"]) == (
        [96, 64], "dark", "float32")


@pytest.mark.parametrize("index", [*range(len(CONFIGS)), ALIAS, DEFAULTS, OVERRIDDEN])
def test_run_flags_text_round_trips(resolved, reloaded, index):
    """flags.cfg (run_flags_text) holds every field once, no --restart, and reproduces the run."""
    text = resolved["results"][index]["flags_text"]
    names = [line.split("=")[0].removeprefix("--").removeprefix("no")
             for line in text.splitlines() if not line.startswith("#")]
    assert sorted(names) == sorted(field.name for field in dataclasses.fields(TrainConfig))
    assert reloaded[index] == {"config": resolved["results"][index]["config"], "flags_text": text}
