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
  converted published checkpoints), then `load_weights`. A file saved from another
  architecture is refused before loading, with what differs and the flag to change, as read
  from the file's weight shapes (`architecture_differences`): the depth (`--topology`: its
  number of convolution layers), the width and keypoint count (the keypoint head's kernel
  `[1, 1, width, keypoints]`), the skeletal module (its presence, its skeleton). The input
  size is not stored in the weights (every layer is a convolution), so any multiple of 32
  loads.

Example:
    network, source = load_pose_model("runs/demo")             # runs/demo/best.keras
    network, source = load_pose_model("hrnet_w32.weights.h5", width=32, input_size="256x192",
                                      keypoint_set="coco", skeletal_attention=False)
"""

from __future__ import annotations

import json
import os
import re
import warnings
import zipfile

import keras

from skelpose_tf.atomic_files import check_keras_file
from skelpose_tf.codec import default_sigma
from skelpose_tf.convert_weights import converted_file_info
from skelpose_tf.keypoints import BUILTIN_KEYPOINT_SETS, get_keypoint_set
from skelpose_tf.models.pose_model import (BLOCKS_PER_BRANCH, STAGE_MODULES, TOPOLOGIES,
                                           PoseHRNet, build_pose_model, parse_input_size)
from skelpose_tf.models.skeletal_attention import SkeletalAttention

RUN_DIR_CHECKPOINTS = ("best.keras", "last.keras")
_WEIGHTS_SUFFIX = ".weights.h5"
# Keras' own load errors can run to pages (whole tensors); keep this much of them.
_MAX_CAUSE_CHARS = 400
_CHECK_FLAGS = ("check --width, --keypoint_set, --skeletal_attention and --topology against the "
                "model the file was saved from")


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
    differences = architecture_differences(path, network)
    if differences:
        raise ValueError(f"The weights in {path} do not fit a {describe_model(network)} model: "
                         f"{'; '.join(differences)}; {_CHECK_FLAGS}.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            network.load_weights(path)
    except ValueError as error:
        raise ValueError(
            f"The weights in {path} do not fit a {describe_model(network)} model; "
            f"{_CHECK_FLAGS}. Keras says: {_short(error)}"
        ) from None
    return network


def _snake_case(name: str) -> str:
    """A layer class name as Keras names its records in a `.weights.h5` file (`Conv2D` ->
    `conv2d`, `SkeletalAttention` -> `skeletal_attention`)."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", re.sub(r"\W+", "", name))
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


_CONV_RECORD = _snake_case(keras.layers.Conv2D.__name__)
_SKELETAL_RECORD = _snake_case(SkeletalAttention.__name__)


def _architecture_features(conv_weights, skeletal_weights) -> dict | None:
    """What a pose network's weight shapes tell about its architecture.

    Args:
        conv_weights: per `Conv2D` layer, in model order, the shapes of its weights.
        skeletal_weights: the shapes of the skeletal module's weights, or None without one.

    Returns:
        `{"conv_layers", "width", "keypoints", "skeletal"}`, read from the keypoint head (the
        one convolution with a bias: kernel `[1, 1, width, keypoints]`); None when the shapes
        are not those of a `PoseHRNet`.
    """
    heads = [shapes for shapes in conv_weights if len(shapes) == 2 and len(shapes[0]) == 4]
    if len(heads) != 1:
        return None
    kernel = heads[0][0]
    return {"conv_layers": len(conv_weights), "width": int(kernel[2]),
            "keypoints": int(kernel[3]),
            "skeletal": None if skeletal_weights is None else tuple(skeletal_weights)}


def _network_features(network) -> dict | None:
    conv_weights = [[tuple(v.shape) for v in layer.weights] for layer in network.layers
                    if isinstance(layer, keras.layers.Conv2D)]
    skeletal = [layer for layer in network.layers if isinstance(layer, SkeletalAttention)]
    return _architecture_features(
        conv_weights, [tuple(v.shape) for v in skeletal[0].weights] if skeletal else None)


def _weights_file_features(path: str) -> dict | None:
    """`_architecture_features` of a Keras `.weights.h5` file, from its layer records
    (`layers/conv2d_7/vars/0`, numbered in model order); None for another kind of file."""
    import h5py

    def shapes(group):
        variables = group.get("vars")
        if not isinstance(variables, h5py.Group):
            return []
        return [tuple(variables[key].shape) for key in sorted(variables, key=int)]

    try:
        f = h5py.File(path, "r")
    except OSError as error:
        raise ValueError(f"{path}: not a readable HDF5 weights file ({_short(error)}); pass "
                         "a .weights.h5 file written by model.save_weights or by python -m "
                         "skelpose_tf.convert_weights") from None
    with f:
        layers = f.get("layers")
        if not isinstance(layers, h5py.Group):
            return None
        convs, skeletal = {}, None
        try:
            for name, group in layers.items():
                match = re.fullmatch(rf"{_CONV_RECORD}(?:_(\d+))?", name)
                if match:
                    convs[int(match[1] or 0)] = shapes(group)
                elif name == _SKELETAL_RECORD:
                    skeletal = shapes(group)
        except (ValueError, KeyError, TypeError, AttributeError):
            return None  # records of another layout: Keras' own loading reports them
    return _architecture_features([convs[i] for i in sorted(convs)], skeletal)


def _topology_named(conv_layers: int, network) -> str | None:
    """The `TOPOLOGIES` name, other than `network`'s, whose network has `conv_layers`
    convolutions (None if none has).

    The count does not depend on width, keypoints or the skeletal module; each candidate is
    built at width 8 (on the error path only: a few seconds for the official depth).
    """
    for name, topology in TOPOLOGIES.items():
        if (tuple(topology["stage_modules"]), topology["blocks_per_branch"]) == _topology(network):
            continue
        candidate = build_pose_model(8, (64, 64), network.keypoint_set, skeletal_attention=False,
                                     **topology)
        count = sum(isinstance(layer, keras.layers.Conv2D) for layer in candidate.layers)
        if count == conv_layers:
            return name
    return None


def architecture_differences(path: str, network) -> list:
    """How the network a `.weights.h5` file was saved from differs from `network`, read from
    the file's weight shapes, each naming the flag to change (empty when nothing differing
    can be told from the file).

    Example:
        architecture_differences("tiny.weights.h5", official_w8)
        # ["the file has 41 convolution layers and the model 293: it was saved from a network
        #   of another depth, the 'tiny' topology (--topology=tiny)"]
    """
    stored = _weights_file_features(path)
    expected = _network_features(network)
    if stored is None or expected is None:
        return []
    differences = []
    if stored["conv_layers"] != expected["conv_layers"]:
        name = _topology_named(stored["conv_layers"], network)
        differences.append(
            f"the file has {stored['conv_layers']} convolution layers and the model "
            f"{expected['conv_layers']}: it was saved from a network of another depth"
            + (f", the '{name}' topology (--topology={name})" if name else " (--topology)"))
    if stored["width"] != expected["width"]:
        differences.append(f"the file is HRNet-W{stored['width']} and the model "
                           f"W{expected['width']} (--width={stored['width']})")
    if stored["keypoints"] != expected["keypoints"]:
        sets = [name for name, kset in BUILTIN_KEYPOINT_SETS.items()
                if kset.num_keypoints == stored["keypoints"]]
        differences.append(
            f"the file predicts {stored['keypoints']} keypoints and the model "
            f"{expected['keypoints']} ({network.keypoint_set.name}; --keypoint_set="
            + (sets[0] if sets else f"a set of {stored['keypoints']} keypoints") + ")")
    if (stored["skeletal"] is None) != (expected["skeletal"] is None):
        differences.append(
            "the file has the skeletal attention module and the model does not "
            "(--skeletal_attention=true)" if expected["skeletal"] is None else
            "the file has no skeletal attention module (an HRNet baseline; "
            "--skeletal_attention=false)")
    elif (stored["skeletal"] != expected["skeletal"] and not differences):
        differences.append(
            f"the file's skeletal attention module has weights {list(stored['skeletal'])} and "
            f"the model's {list(expected['skeletal'])} (another skeleton: --keypoint_set)")
    return differences
