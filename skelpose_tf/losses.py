"""Heatmap losses: HRNet's JointsMSELoss for keypoint and skeletal maps, and their sum.

For each of the M maps (K keypoint maps or S skeletal maps), with weights w[b, m] from
`HeatmapCodec.encode`:

    loss_m = 0.5 * mean over (b, y, x) of (w[b, m] * (pred[b, y, x, m] - target[b, y, x, m]))^2
    loss   = mean over m of loss_m

as the official HRNet `JointsMSELoss` with USE_TARGET_WEIGHT (docs/design.md section 3.3). A map
with weight 0 contributes nothing, whatever the prediction, but still counts in the mean over maps
and over the batch (the official normalisation). The total of paper Eq. 9 is

    l = l_k + lambda * l_s,   lambda = `skeletal_weight` (0.2 in the paper).

Everything is computed in float32 whatever the input dtype (mixed precision outputs are cast).

Example:
    >>> targets = codec.encode(keypoints, visibility)
    >>> total, keypoint_term, skeletal_term = pose_loss(model(images), targets)
"""

from __future__ import annotations

from typing import Mapping

from keras import ops


def _shapes_agree(shape_a, shape_b) -> bool:
    """Equal rank and equal dimensions wherever both are statically known."""
    return len(shape_a) == len(shape_b) and all(
        a is None or b is None or a == b for a, b in zip(shape_a, shape_b)
    )


def _weighted_heatmap_mse(pred, target, weights, name):
    pred = ops.cast(pred, "float32")
    target = ops.cast(target, "float32")
    weights = ops.cast(weights, "float32")
    if len(pred.shape) != 4 or not _shapes_agree(pred.shape, target.shape):
        raise ValueError(
            f"{name}: predictions and targets must both be [B, h, w, M] with equal shapes. "
            f"Received shapes {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    if not _shapes_agree(weights.shape, (pred.shape[0], pred.shape[-1])):
        raise ValueError(
            f"{name}: weights must be [B, {pred.shape[-1]}], one per map. Received shape "
            f"{tuple(weights.shape)}"
        )
    if pred.shape[-1] == 0:
        return ops.zeros((), "float32")
    # Every map has the same (B, h, w), so the mean over maps of the per-map means is the mean
    # over all elements.
    return 0.5 * ops.mean(ops.square(weights[:, None, None, :] * (pred - target)))


def keypoint_loss(pred, target, weights):
    """The keypoint term l_k: HRNet JointsMSELoss over the K keypoint maps.

    Args:
        pred: float [B, h, w, K] predicted heatmaps (any float dtype).
        target: float [B, h, w, K] target heatmaps (`encode(...)["heatmaps"]`).
        weights: float [B, K] target weights (`encode(...)["heatmap_weights"]`).

    Returns:
        float32 scalar.
    """
    return _weighted_heatmap_mse(pred, target, weights, "keypoint_loss")


def skeletal_loss(pred, target, weights):
    """The skeletal term l_s: the same maths as `keypoint_loss` over the S skeletal maps.

    Args:
        pred: float [B, h, w, S] predicted skeletal heatmaps.
        target: float [B, h, w, S] (`encode(...)["skeletal_heatmaps"]`).
        weights: float [B, S] (`encode(...)["skeletal_weights"]`).

    Returns:
        float32 scalar (0 for a keypoint set without links).
    """
    return _weighted_heatmap_mse(pred, target, weights, "skeletal_loss")


def pose_loss(outputs, targets: Mapping, skeletal_weight: float = 0.2):
    """Total loss l = l_k + skeletal_weight * l_s (paper Eq. 9).

    Args:
        outputs: the model's outputs, a dict with `heatmaps` [B, h, w, K] and, for a model with
            the skeletal attention module, `skeletal_heatmaps` [B, h, w, S]; or the heatmaps
            tensor alone. Without skeletal outputs (the HRNet baseline) l_s is 0.
        targets: `HeatmapCodec.encode` output (`heatmaps`, `heatmap_weights` and, when the
            outputs have skeletal maps, `skeletal_heatmaps`, `skeletal_weights`).
        skeletal_weight: lambda, the weight of the skeletal term.

    Returns:
        (total, keypoint_term, skeletal_term), float32 scalars.
    """
    if not isinstance(outputs, Mapping):
        outputs = {"heatmaps": outputs}
    if "heatmaps" not in outputs:
        raise ValueError(
            f"pose_loss: outputs need a 'heatmaps' entry. Received keys {sorted(outputs)}"
        )
    keypoint_term = keypoint_loss(
        outputs["heatmaps"], targets["heatmaps"], targets["heatmap_weights"]
    )
    if outputs.get("skeletal_heatmaps") is None:
        skeletal_term = ops.zeros((), "float32")
    else:
        missing = [k for k in ("skeletal_heatmaps", "skeletal_weights") if k not in targets]
        if missing:
            raise ValueError(
                f"pose_loss: the outputs have skeletal heatmaps but the targets lack {missing}."
            )
        skeletal_term = skeletal_loss(
            outputs["skeletal_heatmaps"], targets["skeletal_heatmaps"], targets["skeletal_weights"]
        )
    total = keypoint_term + float(skeletal_weight) * skeletal_term
    return total, keypoint_term, skeletal_term
