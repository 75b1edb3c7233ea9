"""Every recipe in configs/ parses into a valid TrainConfig with the published settings."""

import glob
import importlib.util
import os

import pytest
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_train_script():
    spec = importlib.util.spec_from_file_location("train_script", os.path.join(ROOT, "train.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TRAIN = _load_train_script()


def parse(*argv):
    flags.FLAGS.unparse_flags()
    cwd = os.getcwd()
    os.chdir(ROOT)  # nested --flagfile paths are relative to the repository root
    try:
        flags.FLAGS(["train.py", *argv])
        return TRAIN.build_config()
    finally:
        os.chdir(cwd)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "configs", "*.cfg"))))
def test_every_config_parses(path):
    config = parse(f"--flagfile={path}")
    name = os.path.basename(path)
    assert config.skeletal_attention == ("baseline" not in name)
    if name.startswith(("coco_", "mpii_")):
        assert (config.lr, config.lr_steps, config.epochs) == (1e-3, (170.0, 200.0), 210)
    if name.startswith("mpii_"):
        assert config.keypoint_set == "mpii" and config.input_size == (256, 256)
        assert (config.rotation_factor, config.scale_factor, config.half_body_prob) == (30, 0.25, 0)


def test_alias_and_overrides():
    config = parse("--flagfile=configs/coco_w32.cfg", "--batch_size=8", "--width=48")
    assert (config.width, config.input_size, config.batch_size) == (48, (256, 192), 8)


def test_bad_values_are_rejected():
    with pytest.raises(ValueError, match="multiples of 32"):
        parse("--flagfile=configs/demo.cfg", "--input_size=100x96")
    with pytest.raises(ValueError, match="needs the paths"):
        parse("--dataset=coco")
