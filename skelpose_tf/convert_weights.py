"""Import published HRNet PyTorch checkpoints (pose or ImageNet) into the Keras pose model.

```
python -m skelpose_tf.convert_weights --checkpoint pose_hrnet_w32_256x192.pth \\
    --out pose_hrnet_w32_coco.weights.h5 [--width 32] [--keypoint_set coco]
    [--allow_missing] [--allow_unused] [--checkpoint_kind auto|pose|imagenet] [--reader auto]
```

Two kinds of checkpoint are recognised by their tensor names:
- **pose** (`pose_hrnet_w32_256x192.pth`, ...): maps onto the whole baseline model, head
  (`final_layer` -> `keypoint_head`) included. Every tensor must be accounted for: a tensor of
  the checkpoint that maps nowhere is *unused*, a model weight that the checkpoint lacks is
  *missing*; either fails the import unless `allow_unused` / `allow_missing` is given.
- **imagenet** (`hrnet_w32-36af842e.pth`, `hrnet_w48-8ef0771d.pth`): maps onto the backbone
  (stem, stage 1, transitions, stages 2-4). Its classification parts are ignored by name and
  listed: `incre_modules.*`, `downsamp_modules.*`, `final_layer.*` (here a 1x1 conv + BN to
  2048 channels), `classifier.*`, and the fuse layers of the last stage-4 module that produce
  branches 1-3 (classification keeps all four resolutions; the pose model only branch 0).
  The keypoint head keeps its own initialisation. `checkpoint_kind="imagenet"` also takes only
  the backbone of a pose checkpoint (its `final_layer` is then ignored), e.g. to start an MPII
  model from a COCO one.

The skeletal attention module (`skeletal_attention` Keras layer, here called
`skeletal_attention.weight` `[S, C, 1, 1]` / `.bias` `[S]` in PyTorch naming) keeps its own
initialisation when the checkpoint has no such tensors; published checkpoints never do.

Layouts: conv kernels `[out, in, kh, kw]` (PyTorch) <-> `[kh, kw, in, out]` (Keras); BatchNorm
`weight, bias, running_mean, running_var` <-> `gamma, beta, moving_mean, moving_variance`
(`num_batches_tracked` carries nothing and is skipped). Keras layer names follow the official
module paths (table in `skelpose_tf/models/hrnet_blocks.py`); `torch_module_path` holds the rules.

The converted file is the Keras `.weights.h5` of the baseline model
`build_pose_model(width, ..., keypoint_set, skeletal_attention=False)`: `model.load_weights`
reads it directly into that model. Its root attributes record the width, keypoint set, kind and
source, so that `load_backbone_weights` can also load it into the skeletal model, by name.

Example:
```python
from skelpose_tf.convert_weights import load_backbone_weights
model = build_pose_model(32, (256, 192), "coco")            # skeletal model
report = load_backbone_weights(model, "hrnet_w32-36af842e.pth")
print(report)  # what was loaded, ignored by name, and kept at its own initialisation
```
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import dataclasses  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from skelpose_tf.atomic_files import atomic_write  # noqa: E402
from skelpose_tf.keypoints import get_keypoint_set  # noqa: E402
from skelpose_tf.torch_checkpoint import READERS, read_state_dict  # noqa: E402

CHECKPOINT_KINDS = ("auto", "pose", "imagenet")
CONVERTED_FORMAT = "skelpose_tf.converted_hrnet_checkpoint"
CONVERTED_FORMAT_VERSION = 1
# Any multiple of 32 works: weights do not depend on the input size.
CONVERSION_INPUT_SIZE = (64, 64)

HEAD_LAYER = "keypoint_head"
HEAD_MODULE = "final_layer"
SKELETAL_LAYER = "skeletal_attention"
WIDTH_TENSOR = "transition1.0.0.weight"  # [C, 256, 3, 3]: first conv of branch 0
# (modules of stages 2-4, BASIC blocks per branch) of the published HRNet, which
# `convert_checkpoint` writes (models/pose_model.py: STAGE_MODULES, BLOCKS_PER_BRANCH; stated
# again so that conversion fails before TensorFlow is imported).
OFFICIAL_DEPTH = ((1, 4, 3), 4)
IMAGENET_ONLY_PREFIXES = ("incre_modules.", "downsamp_modules.", "classifier.")

# Keras variable name -> PyTorch parameter / buffer name.
VARIABLE_NAMES = {
    "kernel": "weight",
    "bias": "bias",
    "gamma": "weight",
    "beta": "bias",
    "moving_mean": "running_mean",
    "moving_variance": "running_var",
}

# (Keras layer name pattern, PyTorch module path template), tried in order (full matches).
_LAYER_RULES = [(re.compile(pattern), template) for pattern, template in (
    (r"stem_conv(\d)_conv", r"conv\1"),
    (r"stem_conv(\d)_bn", r"bn\1"),
    (r"stage1_block(\d+)_downsample_conv", r"layer1.\1.downsample.0"),
    (r"stage1_block(\d+)_downsample_bn", r"layer1.\1.downsample.1"),
    (r"stage1_block(\d+)_(conv|bn)(\d)", r"layer1.\1.\2\3"),
    (r"stage(\d)_module(\d+)_branch(\d+)_block(\d+)_(conv|bn)(\d)",
     r"stage\1.\2.branches.\3.\4.\5\6"),
    (r"stage(\d)_module(\d+)_fuse(\d+)_from(\d+)_down(\d+)_conv",
     r"stage\1.\2.fuse_layers.\3.\4.\5.0"),
    (r"stage(\d)_module(\d+)_fuse(\d+)_from(\d+)_down(\d+)_bn",
     r"stage\1.\2.fuse_layers.\3.\4.\5.1"),
    (r"stage(\d)_module(\d+)_fuse(\d+)_from(\d+)_conv", r"stage\1.\2.fuse_layers.\3.\4.0"),
    (r"stage(\d)_module(\d+)_fuse(\d+)_from(\d+)_bn", r"stage\1.\2.fuse_layers.\3.\4.1"),
    (HEAD_LAYER, HEAD_MODULE),
    (SKELETAL_LAYER, SKELETAL_LAYER),
)]
_TRANSITION_RULE = re.compile(r"transition(\d)_branch(\d+)_(conv|bn)")


def torch_module_path(layer_name):
    """Official PyTorch module path of a Keras layer with weights, or None if it has none.

    Transition `t` turns the `t` branches of stage `t` into the `t + 1` of stage `t + 1`: an
    existing branch `i < t` is `transition{t}.{i}` = Sequential(conv, BN, ReLU); the new branch
    `i == t` is `transition{t}.{t}.0` (a Sequential of one such Sequential).

    Example:
    ```python
    torch_module_path("stage3_module2_fuse2_from0_down1_bn")  # "stage3.2.fuse_layers.2.0.1.1"
    torch_module_path("transition2_branch2_conv")             # "transition2.2.0.0"
    ```
    """
    match = _TRANSITION_RULE.fullmatch(layer_name)
    if match:
        stage, branch, kind = int(match[1]), int(match[2]), match[3]
        new_branch = ".0" if branch == stage else ""
        return f"transition{stage}.{branch}{new_branch}.{0 if kind == 'conv' else 1}"
    for pattern, template in _LAYER_RULES:
        match = pattern.fullmatch(layer_name)
        if match:
            return match.expand(template)
    return None


@dataclasses.dataclass(frozen=True)
class _Binding:
    """One Keras variable and the PyTorch tensor name it corresponds to."""

    torch_name: str
    layer_name: str
    variable: object

    @property
    def is_kernel(self):
        return len(self.variable.shape) == 4

    def keras_value(self, torch_value):
        """PyTorch-layout array -> Keras layout (`[out, in, kh, kw]` -> `[kh, kw, in, out]`)."""
        value = np.asarray(torch_value)
        return value.transpose(2, 3, 1, 0) if self.is_kernel else value

    def torch_value(self):
        """The variable's value in PyTorch layout."""
        value = np.asarray(self.variable.numpy())
        return value.transpose(3, 2, 0, 1) if self.is_kernel else value

    def torch_shape(self):
        shape = tuple(self.variable.shape)
        return (shape[3], shape[2], shape[0], shape[1]) if self.is_kernel else shape


def _bindings(model):
    """Every weight of `model` with its PyTorch name, in model order.

    Raises:
        ValueError: a layer with weights has a name outside the mapping table.
    """
    bindings = []
    for layer in model.layers:
        if not layer.weights:
            continue
        module = torch_module_path(layer.name)
        if module is None:
            raise ValueError(f"Layer {layer.name!r} has weights but no PyTorch counterpart in "
                             "the mapping table of skelpose_tf.convert_weights")
        for variable in layer.weights:
            if variable.name not in VARIABLE_NAMES:
                raise ValueError(f"Variable {variable.path!r} has no PyTorch counterpart")
            bindings.append(_Binding(f"{module}.{VARIABLE_NAMES[variable.name]}", layer.name,
                                     variable))
    return bindings


def model_to_state_dict(model, include_num_batches_tracked=True):
    """The model's weights as a PyTorch-style state dict (the reverse mapping).

    Args:
        model: a `PoseHRNet` (or any model whose weighted layers follow the naming table).
        include_num_batches_tracked: add `<bn>.num_batches_tracked` int64 scalars (0), which
            `torch.nn.Module.load_state_dict(strict=True)` expects.

    Returns:
        Dict name -> numpy array in PyTorch layouts (conv weights `[out, in, kh, kw]`).
    """
    state = {}
    for binding in _bindings(model):
        state[binding.torch_name] = binding.torch_value()
        if include_num_batches_tracked and binding.torch_name.endswith(".running_var"):
            prefix = binding.torch_name[: -len("running_var")]
            state[prefix + "num_batches_tracked"] = np.zeros((), np.int64)
    return state


def detect_checkpoint_kind(state_dict):
    """"imagenet" when classification-only tensors are present, else "pose"."""
    if any(name.startswith(IMAGENET_ONLY_PREFIXES) for name in state_dict):
        return "imagenet"
    return "pose"


def _resolve_kind(state_dict, checkpoint_kind):
    if checkpoint_kind not in CHECKPOINT_KINDS:
        raise ValueError(f"checkpoint_kind must be one of {CHECKPOINT_KINDS}. "
                         f"Received: checkpoint_kind={checkpoint_kind!r}")
    return detect_checkpoint_kind(state_dict) if checkpoint_kind == "auto" else checkpoint_kind


def checkpoint_width(state_dict, source="checkpoint"):
    """HRNet width C of a state dict, read from `transition1.0.0.weight` `[C, 256, 3, 3]`."""
    if WIDTH_TENSOR not in state_dict:
        raise ValueError(f"{source}: {WIDTH_TENSOR} is missing, so this is not an HRNet "
                         f"checkpoint (first names: {sorted(state_dict)[:5]})")
    return _conv_out_channels(state_dict, WIDTH_TENSOR, source)


def _conv_out_channels(state_dict, name, source):
    """Output channels of the conv weight `name` (`[out, in, kh, kw]`)."""
    shape = tuple(np.shape(state_dict[name]))
    if len(shape) != 4:
        raise ValueError(f"{source}: {name} has shape {shape}, not that of a conv weight "
                         "[out, in, kh, kw]; this is not an HRNet checkpoint")
    return int(shape[0])


@dataclasses.dataclass
class WeightImportReport:
    """What an import did with every tensor (PyTorch names).

    Attributes:
        source: the file (or "state dict").
        checkpoint_kind: "pose" or "imagenet".
        loaded: tensors copied into the model.
        ignored: tensors deliberately left out by name (ImageNet classification parts).
        unused: tensors that map onto nothing in the model.
        missing: model weights the checkpoint should have had but lacks.
        own_init_layers: Keras layers kept at their own initialisation by design.
        num_values: number of scalars loaded.
    """

    source: str
    checkpoint_kind: str
    loaded: list
    ignored: list
    unused: list
    missing: list
    own_init_layers: list
    num_values: int

    def summary(self, max_names=20):
        """Human-readable multi-line summary; lists are cut after `max_names` names."""
        def listing(title, names):
            if not names:
                return []
            shown = ", ".join(names[:max_names])
            more = f", ... ({len(names) - max_names} more)" if len(names) > max_names else ""
            return [f"  {title} ({len(names)}): {shown}{more}"]

        lines = [f"{self.source}: {self.checkpoint_kind} checkpoint, loaded {len(self.loaded)} "
                 f"tensors ({self.num_values:,} values)"]
        lines += listing("ignored by name", _group_names(self.ignored))
        lines += listing("unused (in the checkpoint, not in the model)", self.unused)
        lines += listing("missing (in the model, not in the checkpoint)", self.missing)
        lines += listing("kept their own initialisation", self.own_init_layers)
        return "\n".join(lines)

    def __str__(self):
        return self.summary()


def _group_names(names):
    """Collapse tensor names to their module prefixes for listing (`incre_modules.0.*`)."""
    groups = []
    for name in names:
        parts = name.split(".")
        if parts[0] == "stage4":
            key = ".".join(parts[:4]) + ".*"  # stage4.{m}.fuse_layers.{i}.*
        elif parts[0] in ("incre_modules", "downsamp_modules"):
            key = ".".join(parts[:2]) + ".*"
        else:
            key = parts[0] + ".*"
        if key not in groups:
            groups.append(key)
    return groups


class WeightImportError(ValueError):
    """Tensors left over or missing; the message holds the full report."""

    def __init__(self, message, report):
        super().__init__(message)
        self.report = report


def _last_stage4_module(bindings):
    modules = [int(m[1]) for b in bindings
               for m in [re.match(r"stage4\.(\d+)\.", b.torch_name)] if m]
    return max(modules) if modules else None


def _is_imagenet_extra(name, last_stage4_module):
    """True for the classification-only tensors of an ImageNet HRNet checkpoint."""
    if name.startswith(IMAGENET_ONLY_PREFIXES + (HEAD_MODULE + ".",)):
        return True
    match = re.match(r"stage4\.(\d+)\.fuse_layers\.(\d+)\.", name)
    return bool(match) and int(match[1]) == last_stage4_module and int(match[2]) > 0


def check_width_and_keypoints(state_dict, width, num_keypoints, checkpoint_kind,
                              source="checkpoint"):
    """Clear errors for a checkpoint of another HRNet width or keypoint count.

    Args:
        state_dict: name -> array (PyTorch names).
        width: the model's HRNet width.
        num_keypoints: the model's keypoint count (checked for pose checkpoints only).
        checkpoint_kind: "pose" or "imagenet".
        source: file name for messages.
    """
    if WIDTH_TENSOR in state_dict:
        found = checkpoint_width(state_dict, source)
        if found != width:
            raise ValueError(
                f"{source}: the checkpoint is HRNet-W{found} ({WIDTH_TENSOR} "
                f"{tuple(np.shape(state_dict[WIDTH_TENSOR]))}) but the model is W{width}; "
                f"build the model with width={found} (--width {found})"
            )
    head = f"{HEAD_MODULE}.weight"
    if checkpoint_kind == "pose" and head in state_dict:
        found = _conv_out_channels(state_dict, head, source)
        if found != num_keypoints:
            raise ValueError(
                f"{source}: the checkpoint predicts {found} keypoints ({head} "
                f"{tuple(np.shape(state_dict[head]))}) but the model has {num_keypoints}; "
                f"use a keypoint set with {found} keypoints (--keypoint_set), or load the "
                "backbone only with checkpoint_kind='imagenet' (--checkpoint_kind imagenet), "
                "which leaves the head at its own initialisation"
            )


def _check_values(value, name, source):
    """Refuse a weight that is not floating point or not finite (a damaged checkpoint)."""
    if value.dtype.kind != "f":
        raise ValueError(f"{source}: {name} holds {value.dtype} values, not floating point; "
                         "the checkpoint is damaged or not an HRNet state dict")
    bad = int(value.size - np.count_nonzero(np.isfinite(value)))
    if bad:
        raise ValueError(f"{source}: {name} holds {bad} non-finite values (NaN or inf) of "
                         f"{value.size}; the checkpoint is damaged (or its training diverged)")


def _depth(names):
    """`(stage_modules, blocks_per_branch)` of the HRNet that PyTorch names come from: modules of
    stages 2-4 and BASIC blocks per branch (None where the names do not tell)."""
    modules = {stage: 0 for stage in (2, 3, 4)}
    blocks = 0
    for name in names:
        match = re.match(r"stage([234])\.(\d+)\.(?:branches\.\d+\.(\d+)\.)?", name)
        if match:
            stage = int(match[1])
            modules[stage] = max(modules[stage], int(match[2]) + 1)
            if match[3] is not None:
                blocks = max(blocks, int(match[3]) + 1)
    if not all(modules.values()) or not blocks:
        return None
    return tuple(modules[stage] for stage in (2, 3, 4)), blocks


def _describe_depth(depth, named=True):
    """E.g. "stages 1-4-3 x 4 blocks (the 'official' topology)"; `named=False` leaves out the
    topology's name (which needs the model module, hence TensorFlow)."""
    modules, blocks = depth
    text = f"stages {'-'.join(map(str, modules))} x {blocks} block{'s' * (blocks > 1)}"
    if not named:
        return text
    from skelpose_tf.models.pose_model import TOPOLOGIES

    names = [name for name, topology in TOPOLOGIES.items()
             if (tuple(topology["stage_modules"]), topology["blocks_per_branch"]) == depth]
    return text + (f" (the '{names[0]}' topology)" if names else "")


def _depth_difference(state_dict, model_names):
    """A sentence saying how the depth of a checkpoint differs from the model's, or "".

    Args:
        state_dict: name -> array (PyTorch names).
        model_names: the model's PyTorch tensor names.
    """
    found, expected = _depth(state_dict), _depth(model_names)
    if found is None or expected is None or found == expected:
        return ""
    return (f"the checkpoint has {_describe_depth(found)}, the model "
            f"{_describe_depth(expected)}: build the model with the checkpoint's depth "
            "(--topology)")


def load_state_dict_into_model(model, state_dict, checkpoint_kind="auto", allow_missing=False,
                               allow_unused=False, source="state dict", ignored=()):
    """Copy a PyTorch-named state dict into a Keras pose model.

    Nothing is assigned unless every check passes.

    Args:
        model: `PoseHRNet` (baseline or skeletal, any input size).
        state_dict: name -> array in PyTorch layouts (see `read_state_dict`).
        checkpoint_kind: "pose", "imagenet" or "auto" (`detect_checkpoint_kind`).
        allow_missing: keep the model's own values for weights the checkpoint lacks.
        allow_unused: let tensors that map onto nothing pass.
        source: name for messages.
        ignored: names already ignored upstream (a converted file's record), for the report.

    Returns:
        `WeightImportReport`.

    Raises:
        ValueError: another width or keypoint count, or a tensor of the wrong shape.
        WeightImportError: unused or missing tensors that were not allowed.
    """
    kind = _resolve_kind(state_dict, checkpoint_kind)
    bindings = _bindings(model)
    shapes = {b.torch_name: b.torch_shape() for b in bindings}
    check_width_and_keypoints(state_dict, shapes[WIDTH_TENSOR][0],
                              shapes[f"{HEAD_MODULE}.weight"][0], kind, source)

    own_init = {SKELETAL_LAYER} | ({HEAD_LAYER} if kind == "imagenet" else set())
    last_stage4 = _last_stage4_module(bindings)
    loaded, missing, assignments = [], [], []
    for binding in bindings:
        if binding.layer_name in own_init and (
            kind == "imagenet" or binding.torch_name not in state_dict
        ):
            continue
        if binding.torch_name not in state_dict:
            missing.append(binding.torch_name)
            continue
        torch_value = np.asarray(state_dict[binding.torch_name])
        if tuple(torch_value.shape) != tuple(binding.torch_shape()):
            raise ValueError(
                f"{source}: {binding.torch_name} has shape {tuple(torch_value.shape)}, but "
                f"Keras {binding.variable.path} {tuple(binding.variable.shape)} needs "
                f"{binding.torch_shape()} in PyTorch layout"
            )
        _check_values(torch_value, binding.torch_name, source)
        value = binding.keras_value(torch_value)
        loaded.append(binding.torch_name)
        assignments.append((binding.variable, value))

    loaded_set = set(loaded)
    extra_ignored, unused = [], []
    for name in state_dict:
        if name in loaded_set or name.endswith(".num_batches_tracked"):
            continue
        if kind == "imagenet" and _is_imagenet_extra(name, last_stage4):
            extra_ignored.append(name)
        else:
            unused.append(name)
    keras_layers = {b.layer_name for b in bindings}
    report = WeightImportReport(
        source=str(source), checkpoint_kind=kind, loaded=loaded,
        ignored=list(ignored) + extra_ignored, unused=unused, missing=missing,
        own_init_layers=sorted(
            layer for layer in own_init & keras_layers
            if not any(b.layer_name == layer and b.torch_name in loaded_set for b in bindings)
        ),
        num_values=int(sum(np.size(v) for _, v in assignments)),
    )
    problems = []
    if unused and not allow_unused:
        problems.append(f"{len(unused)} unused tensors (allow_unused / --allow_unused to "
                        "ignore them)")
    if missing and not allow_missing:
        problems.append(f"{len(missing)} missing tensors (allow_missing / --allow_missing "
                        "to keep the model's own values)")
    if problems:
        depth = _depth_difference(state_dict, [b.torch_name for b in bindings])
        if depth:
            problems.append(depth)
        raise WeightImportError(
            f"{source}: nothing was loaded: " + "; ".join(problems) + "\n"
            + report.summary(max_names=50), report)
    for variable, value in assignments:
        variable.assign(value.astype(variable.dtype, copy=False))
    return report


def _write_converted_attributes(path, model, report):
    import h5py

    keypoint_set = model.keypoint_set
    with h5py.File(path, "a") as f:
        f.attrs["skelpose_format"] = CONVERTED_FORMAT
        f.attrs["skelpose_format_version"] = CONVERTED_FORMAT_VERSION
        f.attrs["skelpose_width"] = model.width
        f.attrs["skelpose_keypoint_set"] = json.dumps(keypoint_set.to_config())
        f.attrs["skelpose_checkpoint_kind"] = report.checkpoint_kind
        f.attrs["skelpose_pixel_convention"] = model.pixel_convention
        f.attrs["skelpose_source"] = os.path.basename(report.source)
        string = h5py.string_dtype()
        f.attrs["skelpose_loaded"] = np.array(report.loaded, dtype=string)
        f.attrs["skelpose_ignored"] = np.array(report.ignored, dtype=string)


def converted_file_info(path):
    """Metadata of a `.weights.h5` written by `convert_checkpoint`, or None for other files.

    Cheap (reads the file's root attributes only), e.g. for refusing to evaluate a converted
    ImageNet checkpoint, whose keypoint head was never trained.

    Returns:
        None, or a dict with `width`, `keypoint_set` (config dict), `checkpoint_kind`
        ("pose" / "imagenet"), `source` (checkpoint file name), `loaded` and `ignored`
        (PyTorch tensor names), `pixel_convention` ("hrnet": the published models' heatmap
        coordinates).
    """
    import h5py

    try:
        with h5py.File(path, "r") as f:
            attrs = dict(f.attrs)
    except OSError as error:
        raise ValueError(f"{path}: not a readable HDF5 weights file ({error}); pass a "
                         ".weights.h5 file written by model.save_weights or by python -m "
                         "skelpose_tf.convert_weights") from None
    if attrs.get("skelpose_format") != CONVERTED_FORMAT:
        return None
    try:
        version = int(attrs["skelpose_format_version"])
        if version != CONVERTED_FORMAT_VERSION:
            raise ValueError(f"{path}: converted-file version {version} is not "
                             f"{CONVERTED_FORMAT_VERSION}; convert the checkpoint again")
        return {
            "width": int(attrs["skelpose_width"]),
            "keypoint_set": json.loads(attrs["skelpose_keypoint_set"]),
            "checkpoint_kind": str(attrs["skelpose_checkpoint_kind"]),
            "pixel_convention": str(attrs.get("skelpose_pixel_convention", "hrnet")),
            "source": str(attrs["skelpose_source"]),
            "loaded": [str(n) for n in attrs["skelpose_loaded"]],
            "ignored": [str(n) for n in attrs["skelpose_ignored"]],
        }
    except (KeyError, TypeError) as error:
        raise ValueError(f"{path}: the converted-file record lacks or garbles {error}; convert "
                         "the checkpoint again") from None


def read_converted_weights(path):
    """State dict (PyTorch names and layouts) and metadata of a `convert_checkpoint` file.

    The file is Keras' positional `.weights.h5` of the baseline model, so that model is built
    from the recorded width and keypoint set, loaded, and read back by layer name.

    Returns:
        `(state_dict, info)`, `info` as `converted_file_info`.
    """
    from skelpose_tf.models.pose_model import build_pose_model

    info = converted_file_info(path)
    if info is None:
        raise ValueError(
            f"{path}: not a file written by `python -m skelpose_tf.convert_weights` (no "
            f"'skelpose_format' attribute). Load Keras weights of the same model with "
            "model.load_weights, or pass the PyTorch .pth file"
        )
    baseline = build_pose_model(info["width"], CONVERSION_INPUT_SIZE, info["keypoint_set"],
                                skeletal_attention=False)
    try:
        baseline.load_weights(path)
    except ValueError as error:
        cause = " ".join(str(error).split())[:300]
        raise ValueError(f"{path}: its weights do not fit the W{info['width']} baseline its "
                         f"record describes ({cause} ...); convert the checkpoint again") from None
    loaded = set(info["loaded"])
    state = {name: value for name, value in
             model_to_state_dict(baseline, include_num_batches_tracked=False).items()
             if name in loaded}
    return state, info


def load_backbone_weights(model, path, allow_missing=False, allow_unused=False,
                          checkpoint_kind="auto", reader="auto"):
    """Initialise `model` from a PyTorch HRNet checkpoint or a converted `.weights.h5` file.

    Pose checkpoints fill the whole baseline (head included); ImageNet checkpoints fill the
    backbone and list what they ignored; the skeletal module and, for ImageNet, the keypoint
    head keep their own initialisation. See the module docstring.

    Args:
        model: `PoseHRNet` with or without the skeletal module, any input size.
        path: `.pth`/`.pt` (PyTorch `torch.save`, zip or legacy layout) or `.h5` written by
            `python -m skelpose_tf.convert_weights`.
        allow_missing: accept a checkpoint that lacks some of the weights it should have.
        allow_unused: accept tensors that map onto nothing.
        checkpoint_kind: "auto", "pose" or "imagenet".
        reader: how `.pth` files are read: "auto", "torch" or "numpy" (see `torch_checkpoint`).

    Returns:
        `WeightImportReport` (`print(report)` shows its summary).

    Raises:
        ValueError: width or keypoint count differ, wrong shapes, unreadable or unsafe file.
        WeightImportError: unused or missing tensors that were not allowed.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"Checkpoint file not found. Received: path={path!r}")
    if path.endswith(".h5"):
        state, info = read_converted_weights(path)
        if checkpoint_kind == "auto":
            checkpoint_kind = info["checkpoint_kind"]
        return load_state_dict_into_model(
            model, state, checkpoint_kind, allow_missing, allow_unused,
            source=f"{path} (converted from {info['source']})", ignored=info["ignored"],
        )
    state = read_state_dict(path, reader)
    return load_state_dict_into_model(model, state, checkpoint_kind, allow_missing,
                                      allow_unused, source=path)


def convert_checkpoint(checkpoint, out, width=None, keypoint_set="coco", checkpoint_kind="auto",
                       allow_missing=False, allow_unused=False, reader="auto"):
    """Convert a PyTorch HRNet checkpoint to the Keras `.weights.h5` of the baseline model.

    Args:
        checkpoint: `.pth` file.
        out: output path; must end in `.weights.h5` (Keras' rule for weight files).
        width: HRNet width; None reads it from the checkpoint. A given width that differs
            from the checkpoint's is an error.
        keypoint_set: keypoint set of the model (its keypoint count must match a pose
            checkpoint's head).
        checkpoint_kind, allow_missing, allow_unused, reader: see `load_backbone_weights`.

    Returns:
        `WeightImportReport`.
    """
    if not str(out).endswith(".weights.h5"):
        raise ValueError(f"The output file must end in '.weights.h5'. Received: out={out!r}")
    state = read_state_dict(checkpoint, reader)
    if width is None:
        width = checkpoint_width(state, checkpoint)
    kind = _resolve_kind(state, checkpoint_kind)
    # Fail before TensorFlow is loaded and the model built.
    check_width_and_keypoints(state, width, get_keypoint_set(keypoint_set).num_keypoints, kind,
                              str(checkpoint))
    depth = _depth(state)
    if depth is not None and depth != OFFICIAL_DEPTH and not (allow_missing or allow_unused):
        raise ValueError(
            f"{checkpoint}: the checkpoint has {_describe_depth(depth, named=False)}, but "
            "convert_weights writes the official HRNet depth "
            f"({_describe_depth(OFFICIAL_DEPTH, named=False)}); load this checkpoint with "
            "load_backbone_weights into a model of its own depth instead"
        )

    from skelpose_tf.models.pose_model import build_pose_model

    # The published models were trained with HRNet's heatmap coordinates (x_h = x_in / 4).
    model = build_pose_model(width, CONVERSION_INPUT_SIZE, keypoint_set,
                             skeletal_attention=False, pixel_convention="hrnet")
    report = load_state_dict_into_model(model, state, kind, allow_missing,
                                        allow_unused, source=str(checkpoint))
    # Complete or absent: a file without its record would be refused later as foreign.
    with atomic_write(out) as temporary:
        model.save_weights(temporary)
        _write_converted_attributes(temporary, model, report)
    return report


def _define_flags():
    """Command-line flags (defined only when run as a script, so importing stays flag-free)."""
    from absl import flags

    return {
        "checkpoint": flags.DEFINE_string("checkpoint", None, "PyTorch .pth file to convert."),
        "out": flags.DEFINE_string("out", None, "Output Keras weights file (.weights.h5)."),
        "width": flags.DEFINE_integer("width", None, "HRNet width; default: the checkpoint's."),
        "keypoint_set": flags.DEFINE_string("keypoint_set", "coco",
                                            "coco, mpii or a keypoint-set JSON file."),
        "checkpoint_kind": flags.DEFINE_enum("checkpoint_kind", "auto", CHECKPOINT_KINDS,
                                             "pose, imagenet, or auto (from tensor names)."),
        "allow_missing": flags.DEFINE_bool("allow_missing", False,
                                           "Accept model weights missing from the checkpoint."),
        "allow_unused": flags.DEFINE_bool("allow_unused", False,
                                          "Accept checkpoint tensors that map onto nothing."),
        "reader": flags.DEFINE_enum("reader", "auto", READERS,
                                    "torch.load(weights_only=True), the restricted numpy "
                                    "reader, or auto (torch when installed)."),
    }


def main(flag_holders):
    """Convert, print the report and the time taken."""
    values = {name: holder.value for name, holder in flag_holders.items()}
    for required in ("checkpoint", "out"):
        if not values[required]:
            from absl import app

            raise app.UsageError(f"--{required} is required.")
    start = time.perf_counter()
    report = convert_checkpoint(**values)
    print(report.summary())
    print(f"wrote {values['out']} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    from skelpose_tf import cli

    _FLAG_HOLDERS = _define_flags()
    cli.run(lambda argv: main(_FLAG_HOLDERS), "python -m skelpose_tf.convert_weights")
