"""Builder functions for the repeated structures of HRNet (official topology, NHWC).

Every layer gets a stable name that mirrors the official PyTorch module path, so that published
checkpoints map onto the Keras model by name (see `skelpose_tf/convert_weights.py`):

| Keras name                                   | official PyTorch module                |
|----------------------------------------------|----------------------------------------|
| `stem_conv1_conv`, `stem_conv1_bn`          | `conv1`, `bn1`                         |
| `stage1_block{b}_conv{n}` / `_bn{n}`         | `layer1.{b}.conv{n}` / `bn{n}`         |
| `stage1_block0_downsample_conv` / `_bn`      | `layer1.0.downsample.0` / `.1`         |
| `transition{t}_branch{i}_conv` / `_bn`       | `transition{t}.{i}.0` / `.1` (or `.0.0` / `.0.1` for a new branch) |
| `stage{s}_module{m}_branch{i}_block{b}_conv{n}` / `_bn{n}` | `stage{s}.{m}.branches.{i}.{b}.conv{n}` / `bn{n}` |
| `stage{s}_module{m}_fuse{i}_from{j}_conv` / `_bn` (j > i) | `stage{s}.{m}.fuse_layers.{i}.{j}.0` / `.1` |
| `stage{s}_module{m}_fuse{i}_from{j}_down{k}_conv` / `_bn` (j < i) | `stage{s}.{m}.fuse_layers.{i}.{j}.{k}.0` / `.1` |

Conventions (docs/design.md section 2.1): convolutions have no bias, BatchNorm uses `momentum=0.9,
epsilon=1e-5` (PyTorch's 0.1 / 1e-5), 3x3 stride-2 convolutions pad one pixel on every side
(`ZeroPadding2D(1)` + `valid`, as PyTorch's `padding=1`), fuse layers upsample with nearest
neighbour. Feature maps are `[B, H, W, C]`. BatchNorm layers are `FusedBatchNormalization`
(`batch_norm.py`): Keras' layer, computed by TensorFlow's fused kernel.
"""

from __future__ import annotations

import keras
from keras import layers

from skelpose_tf.models.batch_norm import FusedBatchNormalization

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5
BOTTLENECK_EXPANSION = 4


def conv_bn(x, filters, kernel_size, strides, name, dtype=None, relu=True):
    """Conv (no bias) + BatchNorm (+ ReLU), with PyTorch-style symmetric padding.

    Args:
        x: features `[B, H, W, C_in]`.
        filters: output channels.
        kernel_size: 1 or 3.
        strides: 1 or 2. A 3x3 stride-2 conv pads one pixel on every side, so the output is
            `ceil(H / 2)` exactly as in PyTorch.
        name: prefix; the layers are `{name}_conv`, `{name}_bn` (and `{name}_relu`).
        dtype: dtype policy passed to every layer.
        relu: whether to end with a ReLU.

    Returns:
        Features `[B, H / strides, W / strides, filters]`.
    """
    return _conv_bn_named(x, filters, kernel_size, strides, f"{name}_conv", f"{name}_bn",
                          f"{name}_relu" if relu else None, dtype)


def _conv_bn_named(x, filters, kernel_size, strides, conv_name, bn_name, relu_name, dtype):
    padding = "same"
    if strides > 1 and kernel_size > 1:
        x = layers.ZeroPadding2D(kernel_size // 2, name=f"{conv_name}_pad", dtype=dtype)(x)
        padding = "valid"
    x = layers.Conv2D(
        filters, kernel_size, strides=strides, padding=padding, use_bias=False,
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.001),
        name=conv_name, dtype=dtype,
    )(x)
    x = FusedBatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=bn_name,
                                dtype=dtype)(x)
    if relu_name:
        x = layers.ReLU(name=relu_name, dtype=dtype)(x)
    return x


def basic_block(x, filters, name, dtype=None):
    """HRNet BASIC block: two 3x3 conv-BN pairs and an identity shortcut, then ReLU.

    Args:
        x: features `[B, H, W, filters]` (the official topology never changes channels here).
        filters: channels.
        name: prefix, e.g. `stage2_module0_branch1_block3`; layers `{name}_conv1`, `{name}_bn1`, ...

    Returns:
        Features `[B, H, W, filters]`.
    """
    y = _conv_bn_named(x, filters, 3, 1, f"{name}_conv1", f"{name}_bn1", f"{name}_relu1", dtype)
    y = _conv_bn_named(y, filters, 3, 1, f"{name}_conv2", f"{name}_bn2", None, dtype)
    y = layers.Add(name=f"{name}_add", dtype=dtype)([y, x])
    return layers.ReLU(name=f"{name}_out", dtype=dtype)(y)


def bottleneck_block(x, planes, name, dtype=None):
    """Bottleneck block of stage 1: 1x1 -> 3x3 -> 1x1 (x4 expansion) with a shortcut.

    The shortcut is a 1x1 conv + BN (`{name}_downsample_*`) when the input does not have
    `4 * planes` channels, as in the official first block.

    Args:
        x: features `[B, H, W, C]`.
        planes: bottleneck width (64 in HRNet); the output has `4 * planes` channels.
        name: prefix, e.g. `stage1_block0`.

    Returns:
        Features `[B, H, W, 4 * planes]`.
    """
    out_channels = planes * BOTTLENECK_EXPANSION
    shortcut = x
    if x.shape[-1] != out_channels:
        shortcut = _conv_bn_named(x, out_channels, 1, 1, f"{name}_downsample_conv",
                                  f"{name}_downsample_bn", None, dtype)
    y = _conv_bn_named(x, planes, 1, 1, f"{name}_conv1", f"{name}_bn1", f"{name}_relu1", dtype)
    y = _conv_bn_named(y, planes, 3, 1, f"{name}_conv2", f"{name}_bn2", f"{name}_relu2", dtype)
    y = _conv_bn_named(y, out_channels, 1, 1, f"{name}_conv3", f"{name}_bn3", None, dtype)
    y = layers.Add(name=f"{name}_add", dtype=dtype)([y, shortcut])
    return layers.ReLU(name=f"{name}_out", dtype=dtype)(y)


def transition(branches, channels, name, dtype=None):
    """Adapt the branches of one stage to the next: change channels, add one lower branch.

    Args:
        branches: list of `n` feature maps (highest resolution first).
        channels: list of `n + 1` channel counts of the next stage.
        name: prefix, e.g. `transition2`.

    Returns:
        List of `n + 1` feature maps. An existing branch passes through unchanged when its
        channels already match (the official code's `None` entries), else through a 3x3 conv-BN-ReLU;
        the new branch is a 3x3 stride-2 conv-BN-ReLU of the last existing branch.
    """
    outputs = []
    for i, filters in enumerate(channels):
        if i < len(branches):
            x = branches[i]
            if x.shape[-1] != filters:
                x = conv_bn(x, filters, 3, 1, f"{name}_branch{i}", dtype)
        else:
            x = conv_bn(branches[-1], filters, 3, 2, f"{name}_branch{i}", dtype)
        outputs.append(x)
    return outputs


def fuse(branches, name, multi_scale_output=True, dtype=None):
    """HRNet exchange unit: every output branch sums all input branches, then ReLU.

    For output i and input j: j == i identity; j > i a 1x1 conv + BN and nearest upsampling by
    `2 ** (j - i)`; j < i a chain of `i - j` 3x3 stride-2 conv + BN, each but the last followed by
    ReLU, only the last changing the channels to those of branch i. Terms are summed in the order
    j = 0, 1, ... as the official code.

    Args:
        branches: list of feature maps `[B, H / 2**j, W / 2**j, C_j]`.
        name: prefix, e.g. `stage3_module2`.
        multi_scale_output: False keeps only output branch 0 (the last module of HRNet).

    Returns:
        List of fused feature maps (one, or as many as the inputs).
    """
    num_outputs = len(branches) if multi_scale_output else 1
    outputs = []
    for i in range(num_outputs):
        filters = branches[i].shape[-1]
        terms = []
        for j, x in enumerate(branches):
            prefix = f"{name}_fuse{i}_from{j}"
            if j > i:
                x = conv_bn(x, filters, 1, 1, prefix, dtype, relu=False)
                factor = 2 ** (j - i)
                x = layers.UpSampling2D(factor, interpolation="nearest", name=f"{prefix}_up",
                                        dtype=dtype)(x)
            elif j < i:
                for k in range(i - j):
                    last = k == i - j - 1
                    x = conv_bn(x, filters if last else x.shape[-1], 3, 2, f"{prefix}_down{k}",
                                dtype, relu=not last)
            terms.append(x)
        if len(terms) == 1:
            y = terms[0]
        else:
            y = layers.Add(name=f"{name}_fuse{i}_sum", dtype=dtype)(terms)
        outputs.append(layers.ReLU(name=f"{name}_fuse{i}_relu", dtype=dtype)(y))
    return outputs


def hr_module(branches, num_blocks, name, multi_scale_output=True, dtype=None):
    """One high-resolution module: `num_blocks` BASIC blocks per branch, then the fuse unit.

    Args:
        branches: list of feature maps, highest resolution first.
        num_blocks: BASIC blocks per branch (4 in HRNet).
        name: prefix, e.g. `stage3_module0`.
        multi_scale_output: see `fuse`.

    Returns:
        List of feature maps.
    """
    processed = []
    for i, x in enumerate(branches):
        for b in range(num_blocks):
            x = basic_block(x, x.shape[-1], f"{name}_branch{i}_block{b}", dtype)
        processed.append(x)
    if len(processed) == 1:
        return processed
    return fuse(processed, name, multi_scale_output, dtype)
