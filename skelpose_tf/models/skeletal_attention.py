"""The skeletal attention module of the paper (Section II-C), as a Keras layer.

Maths (docs/design.md section 2.2), for stage-3 branches with T0, T1, T2 channels at 1/4, 1/8,
1/16 of the input:

1. `H_s = Conv1x1(branch0)`: S skeletal heatmaps at 1/4 resolution (supervised by `l_s`).
2. `H_u = sum of H_s over the upper links U`, `H_l = sum over the lower links L`,
   `H_f = H_u + H_l`.
3. `H_u`, `H_l` are average-pooled 2x2 and `H_f` 4x4 to the branch resolutions.
4. Channel replication by tiling: branch 0 receives `H_s` repeated as
   `[s_0 .. s_{S-1}, s_0 .. s_{S-1}, ...]` (channel c gets `H_s[..., c % S]`), branch 1
   receives `[H_u, H_l, H_u, H_l, ...]` (even channels `H_u`, odd `H_l`), branch 2 receives `H_f`
   in every channel. When a branch's channels are not a multiple of the map count (custom sets,
   tiny widths) the tiling is rounded up and sliced to the branch's channels.
5. The replicated maps are added elementwise to the three branches.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops


def link_membership(num_links, upper_links, lower_links):
    """float32 [S, 2] matrix M with M[s, 0] = 1 if link s is in U, M[s, 1] = 1 if in L."""
    membership = np.zeros((num_links, 2), np.float32)
    membership[list(upper_links), 0] = 1.0
    membership[list(lower_links), 1] = 1.0
    return membership


def body_attention_maps(skeletal_heatmaps, upper_links, lower_links):
    """Upper-, lower- and full-body attention maps summed from skeletal heatmaps (paper Eq. 2-3).

    Args:
        skeletal_heatmaps: `[B, h, w, S]` skeletal heatmaps.
        upper_links: indices of the links in U (`KeypointSet.upper_link_indices`).
        lower_links: indices of the links in L (`KeypointSet.lower_link_indices`).

    Returns:
        `(upper [B, h, w, 1], lower [B, h, w, 1], full [B, h, w, 1])` at the input's resolution.
    """
    num_links = skeletal_heatmaps.shape[-1]
    membership = ops.convert_to_tensor(
        link_membership(num_links, upper_links, lower_links), dtype=skeletal_heatmaps.dtype
    )
    halves = ops.matmul(skeletal_heatmaps, membership)
    upper, lower = halves[..., :1], halves[..., 1:]
    return upper, lower, upper + lower


def _tile_channels(maps, channels):
    """Tile `maps [B, h, w, n]` along channels to exactly `channels` channels."""
    repeats = math.ceil(channels / maps.shape[-1])
    return ops.tile(maps, (1, 1, 1, repeats))[..., :channels]


@keras.saving.register_keras_serializable(package="skelpose_tf")
class SkeletalAttention(keras.layers.Layer):
    """Predicts skeletal heatmaps and adds body attention to the three stage-3 branches.

    Args:
        num_links: S, the number of skeletal links (16 for COCO and MPII).
        upper_links: indices of the links summed into the upper-body map (U).
        lower_links: indices of the links summed into the lower-body map (L).
        **kwargs: standard layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: list `[branch0, branch1, branch2]` of features `[B, h, w, T0]`,
            `[B, h/2, w/2, T1]`, `[B, h/4, w/4, T2]` (h, w = 1/4 of the input size).

    Returns:
        Dict with `branch0`, `branch1`, `branch2` (the inputs plus replicated attention, same
        shapes) and `skeletal_heatmaps [B, h, w, S]` (pixel grid of branch 0, i.e. the heatmap
        grid), all in the layer's compute dtype.

    Example:
    ```python
    from skelpose_tf.keypoints import COCO
    layer = SkeletalAttention(COCO.num_links, COCO.upper_link_indices, COCO.lower_link_indices)
    out = layer([b0, b1, b2])
    out["skeletal_heatmaps"].shape  # (B, h, w, 16)
    ```

    References:
        Jun, Lee, Kim, "Human Pose Estimation Using Skeletal Heatmaps", Section II-C.
    """

    def __init__(self, num_links, upper_links, lower_links, **kwargs):
        super().__init__(**kwargs)
        if num_links <= 0:
            raise ValueError(f"num_links must be positive. Received: num_links={num_links}")
        for index in (*upper_links, *lower_links):
            if not 0 <= index < num_links:
                raise ValueError(
                    f"Link index {index} is out of range for num_links={num_links}. "
                    f"Received: upper_links={upper_links}, lower_links={lower_links}"
                )
        self.num_links = int(num_links)
        self.upper_links = tuple(int(i) for i in upper_links)
        self.lower_links = tuple(int(i) for i in lower_links)

    def build(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(
                f"SkeletalAttention expects 3 branches. Received: {len(input_shape)} inputs"
            )
        (_, h0, w0, c0), (_, h1, w1, _), (_, h2, w2, _) = input_shape
        if None not in (h0, w0, h1, w1, h2, w2) and (
            (h1 * 2, w1 * 2) != (h0, w0) or (h2 * 4, w2 * 4) != (h0, w0)
        ):
            raise ValueError(
                "Branches 1 and 2 must be exactly 1/2 and 1/4 of branch 0. "
                f"Received shapes: {input_shape}"
            )
        # Kept as an attribute: training redraws it per layer name (initial_weights.py).
        self.kernel_initializer = keras.initializers.RandomNormal(stddev=0.001)
        self.kernel = self.add_weight(
            name="kernel",
            shape=(1, 1, c0, self.num_links),
            initializer=self.kernel_initializer,
        )
        self.bias = self.add_weight(name="bias", shape=(self.num_links,), initializer="zeros")

    def call(self, inputs):
        branch0, branch1, branch2 = inputs
        skeletal = ops.conv(branch0, self.kernel, strides=1, padding="valid") + self.bias
        upper, lower, full = body_attention_maps(skeletal, self.upper_links, self.lower_links)
        halves = ops.average_pool(ops.concatenate([upper, lower], axis=-1), 2, 2, "valid")
        full = ops.average_pool(full, 4, 4, "valid")
        return {
            "branch0": branch0 + _tile_channels(skeletal, branch0.shape[-1]),
            "branch1": branch1 + _tile_channels(halves, branch1.shape[-1]),
            "branch2": branch2 + _tile_channels(full, branch2.shape[-1]),
            "skeletal_heatmaps": skeletal,
        }

    def compute_output_shape(self, input_shape):
        shape0, shape1, shape2 = (tuple(s) for s in input_shape)
        return {
            "branch0": shape0,
            "branch1": shape1,
            "branch2": shape2,
            "skeletal_heatmaps": shape0[:3] + (self.num_links,),
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            num_links=self.num_links,
            upper_links=list(self.upper_links),
            lower_links=list(self.lower_links),
        )
        return config
