"""Every recipe in configs/ resolves, through train.py's flags, to a valid TrainConfig."""

import glob
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.cfg")))
CASES = [[f"--flagfile={path}"] for path in CONFIGS] + [
    ["--flagfile=configs/coco_w32.cfg", "--batch_size=8", "--width=48"],
    ["--flagfile=configs/demo.cfg", "--input_size=100x96"],
    ["--dataset=coco"],
]


@pytest.fixture(scope="module")
def resolved():
    output = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tests", "resolve_configs.py"), json.dumps(CASES)],
        capture_output=True, text=True, timeout=300, check=True)
    return json.loads(output.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("index", range(len(CONFIGS)),
                         ids=[os.path.basename(p) for p in CONFIGS])
def test_every_config_parses(resolved, index):
    config, name = resolved[index], os.path.basename(CONFIGS[index])
    assert "error" not in config, config
    assert config["skeletal_attention"] == ("baseline" not in name)
    if name.startswith(("coco_", "mpii_")):
        assert (config["lr"], config["lr_steps"], config["epochs"]) == (1e-3, [170.0, 200.0], 210)
        assert config["weight_decay"] == 0.0 and config["flip_prob"] == 0.5
    if name.startswith("mpii_"):
        assert config["keypoint_set"] == "mpii" and config["input_size"] == [256, 256]
        assert (config["rotation_factor"], config["scale_factor"], config["half_body_prob"]) == (
            30, 0.25, 0)
    if "384x288" in name:
        assert config["input_size"] == [384, 288]


def test_alias_and_overrides(resolved):
    config = resolved[len(CONFIGS)]
    assert (config["width"], config["input_size"], config["batch_size"]) == (48, [256, 192], 8)


def test_bad_values_are_rejected(resolved):
    assert "multiples of 32" in resolved[len(CONFIGS) + 1]["error"]
    assert "needs the paths" in resolved[len(CONFIGS) + 2]["error"]
