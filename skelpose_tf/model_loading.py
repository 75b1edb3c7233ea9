"""Load a trained pose network for evaluation and prediction: a `.keras` file, a run directory or
a `.weights.h5` file plus the architecture.

- `.keras` (what training writes: `best.keras`, `last.keras`): the file holds the architecture;
  it is loaded with `keras.saving.load_model(path, safe_mode=True)`. Architecture arguments that
  are given must agree with the file (a clear error says which one differs).
- a run directory: its `best.keras`, else its `last.keras`.
- `.weights.h5` (e.g. converted published checkpoints): holds weights only, so the network is
  built from `width`, `input_size`, `keypoint_set` and `skeletal_attention` (official topology
  unless told otherwise) with the `PoseHRNet` codec defaults (`sigma` None: the official
  default for the input size; decoder "weighted", N 20; the "hrnet" pixel convention for
  converted published checkpoints), then `load_weights`; a file saved from another
  architecture (width, keypoint count, with or without the skeletal module) is refused with the
  architecture named. The input size is not stored in the weights (every layer is a convolution), so any
  multiple of 32 loads.

Example:
    network, source = load_pose_model("runs/demo")             # runs/demo/best.keras
    network, source = load_pose_model("hrnet_w32.weights.h5", width=32, input_size="256x192",
                                      keypoint_set="coco", skeletal_attention=False)
"""

from __future__ import annotations

import json
import os
import warnings
import zipfile

import keras

from skelpose_tf.atomic_files import check_keras_file
from skelpose_tf.codec import default_sigma
from skelpose_tf.convert_weights import converted_file_info
from skelpose_tf.keypoints import get_keypoint_set
from skelpose_tf.models.pose_model import (BLOCKS_PER_BRANCH, STAGE_MODULES, PoseHRNet,
                                           build_pose_model, parse_input_size)

RUN_DIR_CHECKPOINTS = ("best.keras", "last.keras")
_WEIGHTS_SUFFIX = ".weights.h5"
# Keras' own load errors can run to pages (whole tensors); keep this much of them.
_MAX_CAUSE_CHARS = 400


def resolve_checkpoint(weights: str) -> str:
    """The file to load for `weights`: the path itself, or a run directory's best/last.keras.

    Raises:
        ValueError: nothing at `weights`, or a directory without a checkpoint.
    """
    if os.path.isdir(weights):
        for name in RUN_DIR_CHECKPOINTS:
            path = os.path.join(weights, name)
            if os.path.isfile(path):
                return path
        found = sorted(os.listdir(weights))[:10]
        raise ValueError(
            f"The run directory {weights} holds no {' or '.join(RUN_DIR_CHECKPOINTS)} (it has: "
            f"{found or 'nothing'}). Train first (python train.py) or pass --weights=FILE."
        )
    if not os.path.isfile(weights):
        raise ValueError(
            f"No checkpoint at {weights}: pass --weights as a .keras file, a run directory "
            f"(its best.keras is used) or a {_WEIGHTS_SUFFIX} file with the architecture flags. "
            "A run directory appears after training (python train.py; see the README's demo)."
        )
    return weights


def _short(error: Exception) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= _MAX_CAUSE_CHARS else text[:_MAX_CAUSE_CHARS] + " ..."


def _topology(network):
    """(stage modules, blocks per branch), the official ones for models that do not say."""
    return (tuple(getattr(network, "stage_modules", STAGE_MODULES)),
            int(getattr(network, "blocks_per_branch", BLOCKS_PER_BRANCH)))


def describe_model(network) -> str:
    """A one-line description, e.g. "W32 256x192 coco, skeletal attention".

    A topology other than the official one is named, e.g. ", stages 1-1-1 x 1 block".
    """
    height, width = network.input_size
    module = "skeletal attention" if network.skeletal_attention else "HRNet baseline"
    text = f"W{network.width} {height}x{width} {network.keypoint_set.name}, {module}"
    modules, blocks = _topology(network)
    if (modules, blocks) != (tuple(STAGE_MODULES), BLOCKS_PER_BRANCH):
        text += f", stages {'-'.join(map(str, modules))} x {blocks} block{'s' * (blocks > 1)}"
    return text


def model_summary(network) -> dict:
    """JSON-ready architecture of a `PoseHRNet`: width, input size, keypoint set, module,
    topology, and its codec's decoding contract (`HeatmapCodec.describe_decoding`)."""
    return {
        "name": network.name,
        "width": int(network.width),
        "input_size": list(network.input_size),
        "keypoint_set": network.keypoint_set.name,
        "num_keypoints": network.keypoint_set.num_keypoints,
        "skeletal_attention": bool(network.skeletal_attention),
        "stage_modules": list(_topology(network)[0]),
        "blocks_per_branch": _topology(network)[1],
        "decoding": network.codec.describe_decoding(),
    }


def _architecture(config: dict) -> dict:
    """The checked architecture fields of a `PoseHRNet` config (and its training sigma)."""
    input_size = tuple(int(v) for v in config["input_size"])
    return {
        "width": int(config["width"]),
        "input_size": input_size,
        "keypoint_set": get_keypoint_set(config["keypoint_set"]).name,
        "skeletal_attention": bool(config["skeletal_attention"]),
        "sigma": float(config.get("sigma") or default_sigma(input_size)),
    }


def _stored_architecture(path: str):
    """The architecture in a `.keras` file's config.json, read without building the model.

    Returns None when the file is not a readable `.keras` archive of a `PoseHRNet` (the full
    load then reports the problem).
    """
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
        if config.get("class_name") != PoseHRNet.__name__:
            return None
        return _architecture(config["config"])
    except (OSError, KeyError, TypeError, ValueError, zipfile.BadZipFile):
        return None


def _check_agrees(stored: dict, path, width, input_size, keypoint_set, skeletal_attention,
                  sigma=None):
    """Raise when a given architecture argument differs from the `.keras` file's."""
    given = {
        "width": None if width is None else int(width),
        "input_size": None if input_size is None else parse_input_size(input_size),
        "keypoint_set": None if keypoint_set is None else get_keypoint_set(keypoint_set).name,
        "skeletal_attention": None if skeletal_attention is None else bool(skeletal_attention),
        "sigma": None if sigma is None else float(sigma),
    }
    for name, value in given.items():
        if value is not None and value != stored[name]:
            raise ValueError(
                f"{path} holds a model with {name}={stored[name]!r}, but {name}={value!r} was "
                "requested. A .keras file carries its own architecture: drop the flag, or pass "
                "the checkpoint that matches it."
            )


def load_pose_model(weights: str, width=None, input_size=None, keypoint_set=None,
                    skeletal_attention=None, stage_modules=STAGE_MODULES,
                    blocks_per_branch=BLOCKS_PER_BRANCH, sigma=None):
    """Load a pose network from a `.keras` file, a run directory or a `.weights.h5` file.

    Args:
        weights: the checkpoint (see the module docstring).
        width, input_size, keypoint_set, skeletal_attention: the architecture. Required
            (width, input_size) or defaulted (keypoint_set "coco", skeletal_attention True)
            for `.weights.h5`; for `.keras` they are optional checks against the file.
        stage_modules, blocks_per_branch: `.weights.h5` only: the topology to build (official
            by default, as published checkpoints).
        sigma: the keypoint sigma the model was trained with (heatmap pixels; the `dark`
            decoder blurs with it): `.weights.h5` files do not store it (None: the official
            default for the input size); `.keras` files do, and a given value must agree.

    Returns:
        `(network, path)`: the `PoseHRNet` and the file it was loaded from.

    Raises:
        ValueError: a missing or unreadable checkpoint, a file that is not a pose network, or
            weights that do not fit the requested architecture.
    """
    path = resolve_checkpoint(weights)
    if path.endswith(_WEIGHTS_SUFFIX):
        network = _load_weights_file(path, width, input_size, keypoint_set, skeletal_attention,
                                     stage_modules, blocks_per_branch, sigma)
        return network, path
    if not path.endswith(".keras"):
        raise ValueError(
            f"Cannot tell the checkpoint format of {path}: expected a .keras file, a run "
            f"directory or a {_WEIGHTS_SUFFIX} file."
        )
    check_keras_file(path)  # a truncated file is reported as corrupt, not as missing
    stored = _stored_architecture(path)
    if stored is not None:  # refuse a mismatch before the (slow) full load
        _check_agrees(stored, path, width, input_size, keypoint_set, skeletal_attention, sigma)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            network = keras.saving.load_model(path, safe_mode=True)
    except (ValueError, TypeError, OSError, KeyError, zipfile.BadZipFile) as error:
        raise ValueError(f"Cannot load the pose network in {path}: {_short(error)}") from None
    if not isinstance(network, PoseHRNet):
        raise ValueError(
            f"{path} holds a {type(network).__name__}, not a skelpose_tf PoseHRNet (save the "
            "network, not the trainer: train.py writes best.keras / last.keras that way)."
        )
    _check_agrees(_architecture(network.get_config()), path, width, input_size, keypoint_set,
                  skeletal_attention, sigma)
    return network, path


def _load_weights_file(path, width, input_size, keypoint_set, skeletal_attention, stage_modules,
                       blocks_per_branch, sigma):
    if width is None or input_size is None:
        raise ValueError(
            f"{path} holds weights only: pass the architecture it was saved from, --width and "
            "--input_size (and --keypoint_set, --skeletal_attention when not coco / with the "
            "skeletal module)."
        )
    converted = converted_file_info(path)  # a published checkpoint: HRNet's heatmap pixels
    network = build_pose_model(
        int(width), input_size, keypoint_set or "coco",
        True if skeletal_attention is None else bool(skeletal_attention),
        stage_modules=stage_modules, blocks_per_branch=blocks_per_branch,
        pixel_convention=converted["pixel_convention"] if converted else "centered",
        sigma=sigma,
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            network.load_weights(path)
    except ValueError as error:
        raise ValueError(
            f"The weights in {path} do not fit a {describe_model(network)} model; check "
            "--width, --keypoint_set and --skeletal_attention against the model the file was "
            f"saved from. Keras says: {_short(error)}"
        ) from None
    return network
