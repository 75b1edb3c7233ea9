"""Model report: parameters and multiply-accumulates, counted from the traced Keras graph.

```
python -m skelpose_tf.model_info --width 32 --input_size 256x192 [--no_skeletal_attention]
    [--keypoint_set mpii] [--json]
```

MACs are counted as HRNet's `get_model_summary` does: for every convolution,
`kernel_h * kernel_w * in_channels * out_channels * out_h * out_w` (biases, BatchNorm, ReLU,
additions and resampling are not counted), and `in * out` for every matrix product. They are read
from the TensorFlow graph of the model traced at batch 1, so every convolution is counted,
including those inside custom layers. "GFLOPs" in HRNet tables are MACs / 2**30; GMACs are
MACs / 1e9.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json  # noqa: E402

import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

_CONV_OPS = ("Conv2D", "DepthwiseConv2dNative")
_MATMUL_OPS = ("MatMul", "BatchMatMulV2", "BatchMatMulV3")


def count_parameters(model):
    """`(trainable, non_trainable)` parameter counts of a Keras model."""
    trainable = int(sum(np.prod(v.shape) for v in model.trainable_weights))
    non_trainable = int(sum(np.prod(v.shape) for v in model.non_trainable_weights))
    return trainable, non_trainable


def _is_weight(tensor):
    """True when `tensor` is read from a variable (possibly through a cast): a layer's weights."""
    op = tensor.op
    while op.type in ("Cast", "Identity"):
        op = op.inputs[0].op
    return op.type == "ReadVariableOp"


def count_macs(model):
    """Multiply-accumulates of the model's convolutions and dense layers for one image.

    Matrix products with a weight operand count as dense layers; products of two activations
    (e.g. the parameter-free link sums of the skeletal module) are not counted, as in HRNet.

    Args:
        model: a Keras model with a single image input of static height and width.

    Returns:
        int, MACs at batch size 1.
    """
    import tensorflow as tf

    height, width, channels = model.inputs[0].shape[1:]
    spec = tf.TensorSpec((1, height, width, channels), tf.float32)
    graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec).graph
    total = 0
    for op in graph.get_operations():
        if op.type in _CONV_OPS:
            out_h, out_w = op.outputs[0].shape[1:3]
            total += out_h * out_w * int(np.prod(op.inputs[1].shape))
        elif op.type in _MATMUL_OPS and _is_weight(op.inputs[1]):
            transposed = op.get_attr("transpose_b" if op.type == "MatMul" else "adj_y")
            reduction = op.inputs[1].shape[-1 if transposed else -2]
            total += int(np.prod(op.outputs[0].shape)) * int(reduction)
    return int(total)


def model_report(width, input_size, keypoint_set="coco", skeletal_attention=True):
    """Build the model and return its report as a dict (parameters, MACs, GMACs, GFLOPs)."""
    from skelpose_tf.models.pose_model import build_pose_model

    model = build_pose_model(width, input_size, keypoint_set, skeletal_attention)
    trainable, non_trainable = count_parameters(model)
    macs = count_macs(model)
    return {
        "model": model.name,
        "width": width,
        "input_size": f"{model.input_size[0]}x{model.input_size[1]}",
        "keypoint_set": model.keypoint_set.name,
        "num_keypoints": model.keypoint_set.num_keypoints,
        "skeletal_attention": skeletal_attention,
        "trainable_params": trainable,
        "non_trainable_params": non_trainable,
        "total_params": trainable + non_trainable,
        "macs": macs,
        "gmacs": macs / 1e9,
        "gflops_hrnet": macs / 2**30,
    }


def format_report(report):
    """Plain-text lines of a `model_report` dict."""
    return "\n".join([
        f"model                 {report['model']} ({report['keypoint_set']}, "
        f"{report['num_keypoints']} keypoints, input {report['input_size']}, "
        f"skeletal attention {'on' if report['skeletal_attention'] else 'off'})",
        f"trainable params      {report['trainable_params']:,}",
        f"non-trainable params  {report['non_trainable_params']:,} (BatchNorm moving statistics)",
        f"total params          {report['total_params']:,}",
        f"MACs                  {report['macs']:,}",
        f"GMACs (1e9)           {report['gmacs']:.3f}",
        f"GFLOPs (MACs / 2^30)  {report['gflops_hrnet']:.3f}  (HRNet tables' unit)",
    ])


def main(argv):
    del argv
    values = flags.FLAGS
    report = model_report(values.width, values.input_size, values.keypoint_set,
                          not values.no_skeletal_attention)
    print(json.dumps(report, indent=2) if values.json else format_report(report))


def define_flags():
    """The command's flags (defined only when run as a script, so importing adds none)."""
    flags.DEFINE_integer("width", 32, "HRNet width C (32 for W32, 48 for W48).")
    flags.DEFINE_string("input_size", "256x192", "Input height x width.")
    flags.DEFINE_string("keypoint_set", "coco", "coco, mpii or a JSON file.")
    flags.DEFINE_bool("no_skeletal_attention", False, "Report the HRNet baseline.")
    flags.DEFINE_bool("json", False, "Print JSON instead of text.")


if __name__ == "__main__":
    from skelpose_tf import cli

    define_flags()
    cli.run(main, "python -m skelpose_tf.model_info")
