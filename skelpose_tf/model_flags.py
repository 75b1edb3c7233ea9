"""The command-line flags that name a trained model and how to decode it, stated once for
`evaluate.py`, `predict.py`, `ablation.py` and `export_tflite.py` (`train.py` derives its flags
from `TrainConfig`).

- weights: `--weights` (or the names a script gives, e.g. ablation's two roles): a `.keras`
  file, a run directory (its best.keras) or a `.weights.h5` file.
- architecture, for `.weights.h5` files (which hold weights only) and as checks against a
  `.keras` file: `--width`, `--input_size`, `--keypoint_set`, `--skeletal_attention`,
  `--topology` and `--sigma` (the training sigma, which the `dark` decoder blurs with). A
  `.weights.h5` file gets the same defaults in every script: the `PoseHRNet` ones.
- decoding: `--decoder` and `--top_n` (default: the model's own, saved in its `.keras` file),
  `--flip_test`.

Example (in a script):
```python
from skelpose_tf import model_flags
_WEIGHTS = model_flags.define_weights_flag()
model_flags.define_architecture_flags()
model_flags.define_decoding_flags()
...
network, checkpoint = model_flags.load_model(_WEIGHTS.value)
```
"""

from __future__ import annotations

from absl import flags

from skelpose_tf.codec import DECODERS
from skelpose_tf.models.pose_model import TOPOLOGIES

WEIGHTS_HELP = ("A .keras file, a run directory (its best.keras) or a .weights.h5 file (then "
                "give the architecture flags).")
_ONLY_WEIGHTS_FILES = ".weights.h5 only (checked against a .keras file): "
_holders: dict = {}


def define_weights_flag(name="weights", default="runs/demo", help_text=WEIGHTS_HELP):
    """Define a weights flag; returns its `FlagHolder`."""
    return flags.DEFINE_string(name, default, help_text)


def define_architecture_flags(skeletal_attention=True) -> None:
    """Define the architecture flags (`skeletal_attention=False` leaves that one out, for a
    script whose roles fix it)."""
    _holders["width"] = flags.DEFINE_integer(
        "width", None, _ONLY_WEIGHTS_FILES + "HRNet width (32, 48, ...).", lower_bound=1)
    _holders["input_size"] = flags.DEFINE_string(
        "input_size", None, _ONLY_WEIGHTS_FILES + "input HxW, e.g. 256x192.")
    _holders["keypoint_set"] = flags.DEFINE_string(
        "keypoint_set", None, _ONLY_WEIGHTS_FILES + "keypoint set (coco, mpii or a JSON "
        "file; default coco).")
    if skeletal_attention:
        _holders["skeletal_attention"] = flags.DEFINE_boolean(
            "skeletal_attention", None, _ONLY_WEIGHTS_FILES + "with the skeletal attention "
            "module (default true).")
    _holders["topology"] = flags.DEFINE_enum(
        "topology", "official", list(TOPOLOGIES), ".weights.h5 only: stage depth (published "
        "checkpoints: official).")
    _holders["sigma"] = flags.DEFINE_float(
        "sigma", None, _ONLY_WEIGHTS_FILES + "keypoint sigma the model was trained with, in "
        "heatmap pixels (default: 2, or 3 from 384-pixel-high inputs, as HRNet).")


def define_decoding_flags(decoder=True,
                          flip_test_help="Average with the mirrored crop's heatmaps.") -> None:
    """Define `--decoder` (unless `decoder=False`, for a script that evaluates several),
    `--top_n` (default: the model's own) and `--flip_test`."""
    if decoder:
        _holders["decoder"] = flags.DEFINE_enum(
            "decoder", None, DECODERS, "Heatmap decoder (default: the model's own, 'weighted' "
            "unless it was trained with another --decoder).")
    _holders["top_n"] = flags.DEFINE_integer(
        "top_n", None, "N of the weighted decoder (paper Eq. 4-5; default: the model's, 20).",
        lower_bound=1)
    _holders["flip_test"] = flags.DEFINE_boolean("flip_test", True, flip_test_help)


def value(name):
    """The value of a shared flag (None when the script did not define it)."""
    holder = _holders.get(name)
    return None if holder is None else holder.value


def load_model(weights: str, skeletal_attention=None):
    """Load `weights` with the architecture flags, then apply the decoding flags.

    Args:
        weights: the checkpoint path.
        skeletal_attention: overrides `--skeletal_attention` (e.g. a script's role).

    Returns:
        `(network, checkpoint path)`; `network.codec` follows `--decoder` / `--top_n` when
        given.
    """
    from skelpose_tf.model_loading import load_pose_model

    network, path = load_pose_model(
        weights, value("width"), value("input_size"), value("keypoint_set"),
        value("skeletal_attention") if skeletal_attention is None else skeletal_attention,
        **TOPOLOGIES[value("topology") or "official"], sigma=value("sigma"))
    network.set_decoding(decoder=value("decoder"), top_n=value("top_n"))
    return network, path
