"""HRNet pose model with the skeletal attention module: `build_pose_model` and `PoseHRNet`."""

from __future__ import annotations

import keras
from keras import layers

from skelpose_tf.codec import DEFAULT_DECODER, DEFAULT_TOP_N, HEATMAP_STRIDE, HeatmapCodec
from skelpose_tf.keypoints import BUILTIN_KEYPOINT_SETS, get_keypoint_set
from skelpose_tf.models import hrnet_blocks as blocks
from skelpose_tf.models.image_normalization import ImageNormalization
from skelpose_tf.models.skeletal_attention import SkeletalAttention

# Official HRNet layout: modules of stages 2, 3, 4; BASIC blocks per branch; stage-1 bottlenecks.
STAGE_MODULES = (1, 4, 3)
BLOCKS_PER_BRANCH = 4
# Named topologies, `build_pose_model(..., **TOPOLOGIES[name])`: "tiny" keeps the official
# structure (branches, fuse layers, heads) at one module and one block per stage, for quick CPU
# runs and tests (about a tenth of the graph).
TOPOLOGIES = {
    "official": {"stage_modules": STAGE_MODULES, "blocks_per_branch": BLOCKS_PER_BRANCH},
    "tiny": {"stage_modules": (1, 1, 1), "blocks_per_branch": 1},
}
STEM_CHANNELS = 64
INPUT_MULTIPLE = 32


def parse_input_size(input_size):
    """`(height, width)` from a pair or a `"HxW"` string such as `"256x192"`."""
    if isinstance(input_size, str):
        try:
            height, width = (int(v) for v in input_size.lower().split("x"))
        except ValueError:
            raise ValueError(
                f"input_size must look like '256x192' (height x width). Received: {input_size!r}"
            ) from None
    else:
        height, width = (int(v) for v in input_size)
    if height <= 0 or width <= 0 or height % INPUT_MULTIPLE or width % INPUT_MULTIPLE:
        raise ValueError(
            f"input_size must be positive multiples of {INPUT_MULTIPLE} (four branches at "
            f"1/4 ... 1/32 must line up in the fuse layers). Received: input_size=({height}, {width})"
        )
    return height, width


@keras.saving.register_keras_serializable(package="skelpose_tf")
class PoseHRNet(keras.Model):
    """Top-down pose network: HRNet with the skeletal attention module after stage 3.

    A functional model wired in `__init__`; `get_config` returns exactly the constructor arguments.

    Args:
        width: HRNet width C (32 for W32, 48 for W48; any positive value, e.g. 8 for tests).
            Branches have C, 2C, 4C, 8C channels.
        input_size: `(height, width)` of the person crop, multiples of 32, or `"256x192"`.
        keypoint_set: "coco", "mpii", a JSON path, a `KeypointSet` or its config dict.
        skeletal_attention: False builds the plain HRNet baseline (no skeletal output).
        dtype: dtype policy for every layer (None: the global policy). Outputs are float32.
        stage_modules: modules of stages 2, 3 and 4 (official: (1, 4, 3)). Smaller values make
            a shallower network with the same structure (fast tests, small demos).
        blocks_per_branch: BASIC blocks per branch in every module (official: 4); also the
            number of stage-1 bottlenecks.
        pixel_convention: how its heatmaps map to input pixels: "centered" (below) or
            "hrnet" (pixel (i, j) at `(4 j, 4 i)`, the official code's; set for converted
            published checkpoints).
        sigma: keypoint Gaussian std of its training targets, in heatmap pixels (None: the
            official default, `codec.default_sigma`: 2, or 3 from 384-pixel-high inputs).
            The `dark` decoder blurs with it.
        decoder: its default heatmap decoder (`codec.DECODERS`).
        top_n: N of the `weighted` decoder.
        heatmap_stride: input pixels per heatmap pixel; HRNet's is 4 (the only value built).

    The codec settings (`pixel_convention`, `sigma`, `decoder`, `top_n`, `heatmap_stride`)
    are part of the config, so a `.keras` file carries them; `model.codec` is the
    `HeatmapCodec` that every consumer (training targets, evaluation, prediction, export)
    uses.
        **kwargs: `name`, `trainable`.

    Call arguments:
        images: `[B, H, W, 3]` raw RGB pixels in [0, 255], uint8 or float; normalised inside.

    Returns:
        Dict with `heatmaps` float32 `[B, H/4, W/4, K]` and, with the module,
        `skeletal_heatmaps` float32 `[B, H/4, W/4, S]`. Heatmap pixel (i, j) has its centre at
        input-crop pixel `(4 j + 1.5, 4 i + 1.5)` (docs/design.md section 3.1).

    Example:
    ```python
    model = PoseHRNet(width=32, input_size=(256, 192), keypoint_set="coco")
    model(np.zeros((1, 256, 192, 3), np.uint8))["heatmaps"].shape  # (1, 64, 48, 17)
    ```
    """

    def __init__(self, width=32, input_size=(256, 192), keypoint_set="coco",
                 skeletal_attention=True, dtype=None, stage_modules=STAGE_MODULES,
                 blocks_per_branch=BLOCKS_PER_BRANCH, pixel_convention="centered", sigma=None,
                 decoder=DEFAULT_DECODER, top_n=DEFAULT_TOP_N, heatmap_stride=HEATMAP_STRIDE,
                 **kwargs):
        if heatmap_stride != HEATMAP_STRIDE:
            raise ValueError(f"HRNet's heatmaps have stride {HEATMAP_STRIDE}. Received: "
                             f"heatmap_stride={heatmap_stride!r}")
        if int(width) != width or width <= 0:
            raise ValueError(f"width must be a positive integer. Received: width={width}")
        width = int(width)
        height, image_width = parse_input_size(input_size)
        keypoints = get_keypoint_set(keypoint_set)
        # Checks the codec settings before the (slow) graph is built.
        codec = HeatmapCodec((height, image_width), keypoints, stride=HEATMAP_STRIDE,
                             sigma=sigma, decoder=decoder, top_n=top_n,
                             pixel_convention=pixel_convention)
        if skeletal_attention and keypoints.num_links == 0:
            raise ValueError(
                f"skeletal_attention needs skeletal links, but keypoint set {keypoints.name!r} "
                "defines none. Received: skeletal_attention=True"
            )
        stage_modules = tuple(int(m) for m in stage_modules)
        if len(stage_modules) != 3 or min(stage_modules) < 1 or blocks_per_branch < 1:
            raise ValueError(
                "stage_modules must be 3 positive counts and blocks_per_branch positive. "
                f"Received: stage_modules={stage_modules}, blocks_per_branch={blocks_per_branch}")
        kwargs.setdefault("name", f"pose_hrnet_w{width}")

        # === Functional Model ===
        images = keras.Input((height, image_width, 3), name="images")
        x = ImageNormalization(name="image_normalization", dtype=dtype)(images)
        x = blocks.conv_bn(x, STEM_CHANNELS, 3, 2, "stem_conv1", dtype)
        x = blocks.conv_bn(x, STEM_CHANNELS, 3, 2, "stem_conv2", dtype)
        for b in range(blocks_per_branch):
            x = blocks.bottleneck_block(x, STEM_CHANNELS, f"stage1_block{b}", dtype)
        branches = [x]
        outputs = {}
        for stage, num_modules in enumerate(stage_modules, start=2):
            channels = [width * 2**i for i in range(stage)]
            branches = blocks.transition(branches, channels, f"transition{stage - 1}", dtype)
            for m in range(num_modules):
                last = stage == 4 and m == num_modules - 1
                branches = blocks.hr_module(
                    branches, blocks_per_branch, f"stage{stage}_module{m}",
                    multi_scale_output=not last, dtype=dtype,
                )
            if stage == 3 and skeletal_attention:
                attended = SkeletalAttention(
                    keypoints.num_links, keypoints.upper_link_indices,
                    keypoints.lower_link_indices, name="skeletal_attention", dtype=dtype,
                )(branches)
                branches = [attended[f"branch{i}"] for i in range(len(branches))]
                outputs["skeletal_heatmaps"] = layers.Activation(
                    "linear", dtype="float32", name="skeletal_heatmaps"
                )(attended["skeletal_heatmaps"])
        heatmaps = layers.Conv2D(
            keypoints.num_keypoints, 1, use_bias=True,
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.001),
            dtype="float32", name="keypoint_head",
        )(branches[0])
        outputs["heatmaps"] = layers.Activation("linear", dtype="float32", name="heatmaps")(
            heatmaps
        )
        super().__init__(inputs=images, outputs=outputs, dtype=dtype, **kwargs)

        # === Config ===
        self.width = width
        self.input_size = (height, image_width)
        self.keypoint_set = keypoints
        self.skeletal_attention = bool(skeletal_attention)
        self.dtype_argument = dtype
        self.stage_modules = stage_modules
        self.blocks_per_branch = int(blocks_per_branch)
        self._codec = codec

    @property
    def codec(self) -> HeatmapCodec:
        """The model's `HeatmapCodec`: input size, stride, keypoint set, sigma, decoder, top_n
        and pixel convention (use `codec.replace(decoder=...)` for another decoder)."""
        return self._codec

    def set_decoding(self, decoder=None, top_n=None) -> None:
        """Change how the heatmaps are decoded from now on (None keeps a setting).

        The decoder and its N are inference choices; `sigma` and the pixel convention are
        facts of the training and stay. The change is part of the config (a later save keeps
        it) and of every export.
        """
        self._codec = self._codec.replace(decoder=decoder, top_n=top_n)

    @property
    def pixel_convention(self) -> str:
        return self._codec.pixel_convention

    @property
    def heatmap_size(self):
        """`(h, w)` of the output heatmaps."""
        return self._codec.heatmap_size

    def get_config(self):
        keypoint_set = self.keypoint_set
        is_builtin = BUILTIN_KEYPOINT_SETS.get(keypoint_set.name) == keypoint_set
        return {
            "name": self.name,
            "trainable": self.trainable,
            "width": self.width,
            "input_size": list(self.input_size),
            "keypoint_set": keypoint_set.name if is_builtin else keypoint_set.to_config(),
            "skeletal_attention": self.skeletal_attention,
            "stage_modules": list(self.stage_modules),
            "blocks_per_branch": self.blocks_per_branch,
            "pixel_convention": self._codec.pixel_convention,
            "sigma": self._codec.sigma,
            "decoder": self._codec.decoder,
            "top_n": self._codec.top_n,
            "heatmap_stride": self._codec.stride,
            "dtype": (
                self.dtype_argument
                if self.dtype_argument is None or isinstance(self.dtype_argument, str)
                else keras.dtype_policies.serialize(self.dtype_argument)
            ),
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)


def build_pose_model(width=32, input_size=(256, 192), keypoint_set="coco",
                     skeletal_attention=True, dtype=None, name=None,
                     stage_modules=STAGE_MODULES, blocks_per_branch=BLOCKS_PER_BRANCH,
                     pixel_convention="centered", sigma=None, decoder=DEFAULT_DECODER,
                     top_n=DEFAULT_TOP_N):
    """Build the skeletal-heatmap pose model (see `PoseHRNet` for arguments and outputs).

    Example:
    ```python
    import skelpose_tf
    model = skelpose_tf.build_pose_model(32, "256x192")           # paper's W32 model
    baseline = skelpose_tf.build_pose_model(32, "256x192", skeletal_attention=False)
    tiny = skelpose_tf.build_pose_model(8, (64, 64), keypoint_set="mpii")
    ```
    """
    kwargs = {} if name is None else {"name": name}
    return PoseHRNet(width=width, input_size=input_size, keypoint_set=keypoint_set,
                     skeletal_attention=skeletal_attention, dtype=dtype,
                     stage_modules=stage_modules, blocks_per_branch=blocks_per_branch,
                     pixel_convention=pixel_convention, sigma=sigma, decoder=decoder,
                     top_n=top_n, **kwargs)
