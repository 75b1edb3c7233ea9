"""Heatmap codec: keypoints -> training targets (encode) and heatmaps -> keypoints (decode).

One `HeatmapCodec`, built from one config, renders the keypoint and skeletal targets in
`train_step` and decodes the model's heatmaps at evaluation and in every export, so the two
sides can never disagree on sizes, sigma or coordinate conventions (docs/design.md sections 3-4).
Everything is written with `keras.ops`: it runs eagerly, inside `tf.function` and under XLA
(`jit_compile=True`), batched, and the decoders use only ops that TFLite has as builtins
(top_k, gathers, a depthwise convolution for `dark`, arithmetic).

Coordinates: continuous pixel coordinates with pixel centres at integers, in every space.
An input-crop point x_in lies at heatmap coordinate

    x_h = (x_in + 0.5) / stride - 0.5        (inverse: x_in = (x_h + 0.5) * stride - 0.5)

and the same for y. Heatmap pixel (row j, column i) has its centre at (x_h, y_h) = (i, j).
`pixel_convention="hrnet"` uses the official HRNet code's mapping instead, x_h = x_in / stride
(inverse x_in = x_h * stride), with which the published checkpoints were trained: their heatmaps
peak ~(stride - 1) / 2 input pixels away from where the centred convention reads them.

Targets (`encode`):
- Keypoint k: the unnormalised Gaussian exp(-((x - x_h)^2 + (y - y_h)^2) / (2 sigma^2)),
  peak 1 at the sub-pixel position, evaluated at every pixel centre and not truncated (the
  official HRNet code centres it on the rounded position and cuts it off at 3 sigma).
  Weight 1 when the keypoint is labelled (visibility > 0) and its 3-sigma square reaches a pixel
  centre of the map, i.e. -3 sigma <= x_h <= w - 1 + 3 sigma and -3 sigma <= y_h <= h - 1 +
  3 sigma (the continuous form of the official rule "zero when the 3-sigma patch lies wholly
  outside the heatmap"); else 0. With `use_joint_weights=True` the weight is multiplied by the
  keypoint set's joint weights.
- Skeletal link s = (a, b) of `keypoint_set.link_pairs`: exp(-d^2 / (2 skeletal_sigma^2)),
  d the distance from the pixel centre to the segment a-b in heatmap coordinates. This is the
  paper's "line blurred with a Gaussian of sigma 1 and clipped at 1" in closed form: it is at
  most 1, and exactly 1 wherever the segment passes through a pixel centre, so the clip is
  built in. A zero-length segment gives a round Gaussian. Weight 1 when both keypoints are
  labelled (visibility > 0), else 0.
- Maps whose weight is 0 are zeroed as well (not only their weight), so a target never shows
  a keypoint or link that is not supervised; the loss masks by the weights in any case.

Decoders (`decode`, `method=`), all returning heatmap peaks as scores:
- `weighted` (default; paper Eq. 4-5): the coordinates of the N largest values (pixel
  centres), averaged with weights w_n = (1/n) / sum_{h=1..N} 1/h in rank order (N = `top_n`,
  default 20). Equal values are ranked by flat index (row-major), as `top_k` orders them.
- `argmax`: the centre of the highest pixel.
- `quarter` (official HRNet): argmax, then +-0.25 px in x towards the higher of the left and
  right neighbours and in y towards the higher of the upper and lower neighbours (no move when
  they are equal), only when the peak is strictly inside 1 < px < w - 1 and 1 < py < h - 1.
- `dark` (distribution-aware refinement, Zhang et al. 2020): blur the heatmap with a Gaussian
  kernel (std = `sigma`, radius ceil(3 sigma) - 1, i.e. 11 taps for sigma 2 and 17 for sigma 3
  as in DARK and mmpose; separable, normalised to sum 1, zero padding), take the log (floored at
  1e-10), and move the argmax by the Newton step -H^-1 g of that log, with g and H from central
  differences on its 3x3 neighbourhood. Applied only when the neighbourhood lies in the map
  (1 <= px <= w - 2, 1 <= py <= h - 2) and H is negative definite (a true maximum); the step is
  clipped to +-1 heatmap pixel per axis so that a noisy map cannot throw a keypoint away. DARK's
  rescaling of the blurred map to the original peak is left out: it only adds a constant to
  the log, which cannot change the step.

Not-found keypoints: a keypoint whose heatmap maximum is <= 0 (or NaN) gets score 0 and the
coordinates of heatmap pixel (0, 0), mapped to the input crop like any other point ((1.5, 1.5)
at stride 4, (0, 0) with the "hrnet" convention), in every decoder. The official `get_max_preds`
zeroes the coordinates the same way (its `maxvals > 0` mask) but keeps the non-positive peak as
the score; 0 is used here so that scores are never negative. Score 0 is the marker: the COCO
rescoring (keypoint scores above 0.2) and the drawing skip such keypoints, and the coordinates
stay finite, so OKS-NMS, the results JSON and PCKh need no special case.

Round trip on clean targets (encode then decode; 256x192 input, stride 4, sigma 2; 19584
keypoints at uniform random sub-pixel positions, over the whole map and at least 6 heatmap
pixels = 3 sigma from its border; error = Euclidean distance in input-crop pixels; measured
with `python bench/codec.py --mode=round_trip --margin=0` and `--margin=6`):

    decoder    whole map: mean   max      interior: mean   max
    weighted             0.47    4.81               0.38    1.41
    argmax               1.52    2.82               1.53    2.81
    quarter              0.82    2.81               0.76    1.41
    dark                 0.30    4.13             0.0001  0.0002

argmax is off by at most half a heatmap pixel per axis (2 * sqrt(2) = 2.83 px at stride 4).
`dark` is exact on an untruncated Gaussian (the log of a blurred Gaussian is a quadratic); within
about 3 sigma of the border the blur's zero padding pulls it inwards (of zero, reflect, mirror
and edge padding, zero padding was the least biased there). `weighted` averages ranks, not
values; near the border its top-N set is cut off and it leans inwards, and it is designed for
real, less peaked heatmaps.

Flip test: `flip_heatmaps` mirrors the width axis and swaps the left/right channels. No
one-pixel shift is needed; see its docstring.

Example:
    >>> codec = HeatmapCodec(input_size=(256, 192), keypoint_set="coco")
    >>> targets = codec.encode(keypoints, visibility)     # [B, 17, 2], [B, 17]
    >>> keypoints, scores = codec.decode(targets["heatmaps"], method="dark")
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from keras import ops

from skelpose_tf.keypoints import BUILTIN_KEYPOINT_SETS, get_keypoint_set

DECODERS = ("weighted", "argmax", "quarter", "dark")
PIXEL_CONVENTIONS = ("centered", "hrnet")
# HRNet's heatmaps are at 1/4 of the input resolution.
HEATMAP_STRIDE = 4
DEFAULT_DECODER = "weighted"
# N of the weighted decoder (paper Eq. 4-5).
DEFAULT_TOP_N = 20
# Heatmap-to-input mapping x_in = x_h * stride + offset of each pixel convention, in input
# pixels per stride: 0.5 * stride - 0.5 ("centered") or 0 ("hrnet"); see the module docstring.
_CONVENTION_FORMULAS = {
    "centered": "x_crop = (x_heatmap + 0.5) * stride - 0.5, y likewise",
    "hrnet": "x_crop = x_heatmap * stride, y likewise",
}


def check_pixel_convention(pixel_convention, owner=""):
    """Raise a ValueError (prefixed with `owner`) unless it is one of `PIXEL_CONVENTIONS`."""
    if pixel_convention not in PIXEL_CONVENTIONS:
        raise ValueError(f"{owner}pixel_convention must be one of {PIXEL_CONVENTIONS}. "
                         f"Received: pixel_convention={pixel_convention!r}")



def default_sigma(input_size, stride: int = HEATMAP_STRIDE) -> float:
    """Official HRNet keypoint sigma in heatmap pixels: 2 for 64x48 / 64x64 heatmaps, 3 from
    96-pixel-high heatmaps on (384x288 inputs)."""
    return 3.0 if int(input_size[0]) // stride >= 96 else 2.0

# Below this squared length (heatmap pixels^2) a segment's projection parameter is computed
# against this value instead, which keeps zero-length links finite (they render as points).
_MIN_SQUARED_LINK_LENGTH = 1e-6
# Floor of the blurred heatmap before the log in the `dark` decoder.
_DARK_LOG_FLOOR = 1e-10


def _is_integer(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def weighted_decoding_weights(top_n: int) -> np.ndarray:
    """The rank weights of paper Eq. 5: w_n = (1/n) / sum_{h=1..N} 1/h, float32 [N]."""
    inverse_ranks = 1.0 / np.arange(1, top_n + 1, dtype=np.float64)
    return (inverse_ranks / inverse_ranks.sum()).astype(np.float32)


def gaussian_blur_kernel(sigma: float) -> np.ndarray:
    """The `dark` decoder's 1-D blur kernel: float32 [2r + 1], r = ceil(3 sigma) - 1, sum 1."""
    radius = max(1, math.ceil(3.0 * sigma) - 1)
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-(offsets**2) / (2.0 * sigma**2))
    return (kernel / kernel.sum()).astype(np.float32)


def flip_heatmaps(heatmaps, flip_index: Sequence[int]):
    """Heatmaps of a horizontally flipped image, brought back to the original image (flip test).

    Mirrors the width axis and permutes the channels: output channel i is the mirrored input
    channel `flip_index[i]` (the flipped image shows the left wrist as a right wrist).

    No one-pixel shift is needed: with pixel centres at integers in both spaces, the image flip
    x_in -> W - 1 - x_in maps the heatmap coordinate x_h = (x_in + 0.5) / stride - 0.5 to
    (W - x_in - 0.5) / stride - 0.5 = w - 1 - x_h, which is exactly the column reversal done
    here (W = stride * w). The official HRNet code shifts the flipped heatmap right by one pixel
    because its targets put x_in at x_h = x_in / stride (no half-pixel centring): there the image
    flip lands at w - 1/stride - x_h, and the column reversal leaves the peak 1 - 1/stride
    (0.75) px to the left, which its shift turns into 0.25 px to the right. A shift (of that
    size) is needed whenever the input-to-heatmap map is not centred like ours, or the image is
    flipped as x -> W - x.

    Args:
        heatmaps: float [B, h, w, K].
        flip_index: K ints, `KeypointSet.flip_index`.

    Returns:
        float [B, h, w, K], same dtype.

    Example:
        >>> averaged = 0.5 * (heatmaps + flip_heatmaps(model(flipped_images), COCO.flip_index))
    """
    flip_index = [int(i) for i in flip_index]
    channels = heatmaps.shape[-1]
    if channels is not None and channels != len(flip_index):
        raise ValueError(
            f"flip_heatmaps: flip_index has {len(flip_index)} entries for {channels} heatmap "
            f"channels. Received: flip_index={flip_index}"
        )
    return ops.take(ops.flip(heatmaps, axis=2), np.asarray(flip_index, np.int32), axis=3)


class HeatmapCodec:
    """Encodes keypoints to heatmap targets and decodes heatmaps to keypoints.

    See the module docstring for the exact definitions of the targets, weights and decoders.

    Args:
        input_size: (H, W) of the input crop in pixels; both divisible by `stride`.
        keypoint_set: a `KeypointSet`, a built-in name ("coco", "mpii"), a JSON path or a
            config dict (see `skelpose_tf.keypoints.get_keypoint_set`).
        stride: input pixels per heatmap pixel (4 for HRNet).
        sigma: keypoint Gaussian std in heatmap pixels (None: `default_sigma`, 2 for 64x48
            maps, 3 for 96x72).
        skeletal_sigma: skeletal line Gaussian std in heatmap pixels (1 in the paper).
        decoder: default decoding method, one of `DECODERS`.
        top_n: default N of the `weighted` decoder (20 in the paper).
        use_joint_weights: multiply the keypoint weights by `keypoint_set.weights`.
        pixel_convention: "centered" (the project's, module docstring) or "hrnet" (x_h =
            x_in / stride, the official code's; for converted published checkpoints).

    Attributes:
        heatmap_size: (h, w) = (H / stride, W / stride).

    Example:
        >>> codec = HeatmapCodec(input_size=(256, 192), keypoint_set="coco", sigma=2.0)
        >>> codec.heatmap_size
        (64, 48)
    """

    def __init__(
        self,
        input_size: Sequence[int],
        keypoint_set="coco",
        stride: int = HEATMAP_STRIDE,
        sigma: float | None = None,
        skeletal_sigma: float = 1.0,
        decoder: str = DEFAULT_DECODER,
        top_n: int = DEFAULT_TOP_N,
        use_joint_weights: bool = False,
        pixel_convention: str = "centered",
    ):
        if not _is_integer(stride) or stride < 1:
            raise ValueError(
                f"HeatmapCodec: stride must be a positive integer. Received: stride={stride!r}"
            )
        input_size = tuple(input_size)
        if len(input_size) != 2 or any(
            not _is_integer(s) or s < 1 or s % stride for s in input_size
        ):
            raise ValueError(
                "HeatmapCodec: input_size must be (H, W), two positive integers divisible by "
                f"stride={stride}. Received: input_size={input_size!r}"
            )
        if sigma is None:
            sigma = default_sigma(input_size, stride)
        if not sigma > 0:
            raise ValueError(f"HeatmapCodec: sigma must be positive. Received: sigma={sigma!r}")
        if not skeletal_sigma > 0:
            raise ValueError(
                "HeatmapCodec: skeletal_sigma must be positive. "
                f"Received: skeletal_sigma={skeletal_sigma!r}"
            )
        check_pixel_convention(pixel_convention, "HeatmapCodec: ")
        if decoder not in DECODERS:
            raise ValueError(
                f"HeatmapCodec: decoder must be one of {DECODERS}. Received: decoder={decoder!r}"
            )
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.keypoint_set = get_keypoint_set(keypoint_set)
        self.stride = int(stride)
        self.sigma = float(sigma)
        self.skeletal_sigma = float(skeletal_sigma)
        self.decoder = decoder
        self.heatmap_size = (self.input_size[0] // self.stride, self.input_size[1] // self.stride)
        self.top_n = self._check_top_n(top_n)
        self.use_joint_weights = bool(use_joint_weights)
        self.pixel_convention = pixel_convention

    def _check_top_n(self, top_n) -> int:
        num_pixels = self.heatmap_size[0] * self.heatmap_size[1]
        if not _is_integer(top_n) or not 1 <= top_n <= num_pixels:
            raise ValueError(
                f"HeatmapCodec: top_n must be an integer in [1, {num_pixels}] (the heatmap's pixel "
                f"count). Received: top_n={top_n!r}"
            )
        return int(top_n)

    # Serialisation ---------------------------------------------------------------------------
    def get_config(self) -> dict:
        """The constructor arguments, JSON-serialisable; `from_config` inverts it.

        A built-in keypoint set is stored by name, any other as its full config dict.
        """
        builtin = BUILTIN_KEYPOINT_SETS.get(self.keypoint_set.name)
        return {
            "input_size": list(self.input_size),
            "keypoint_set": (
                self.keypoint_set.name
                if builtin == self.keypoint_set
                else self.keypoint_set.to_config()
            ),
            "stride": self.stride,
            "sigma": self.sigma,
            "skeletal_sigma": self.skeletal_sigma,
            "decoder": self.decoder,
            "top_n": self.top_n,
            "use_joint_weights": self.use_joint_weights,
            "pixel_convention": self.pixel_convention,
        }

    @classmethod
    def from_config(cls, config: dict) -> "HeatmapCodec":
        return cls(**config)

    def replace(self, **changes) -> "HeatmapCodec":
        """A codec with some constructor arguments changed (e.g. `decoder="dark"`); None values
        keep the current setting."""
        config = self.get_config()
        config.update({name: value for name, value in changes.items() if value is not None})
        return HeatmapCodec.from_config(config)

    def describe_decoding(self) -> dict:
        """JSON-ready decoding contract (export metadata, run summaries): the decoder, its N,
        sigma, stride, pixel convention, and the heatmap-to-crop mapping both as a formula and
        as `x_crop = x_heatmap * scale + offset` numbers a client can apply."""
        offset = 0.0 if self.pixel_convention == "hrnet" else 0.5 * self.stride - 0.5
        return {
            "method": self.decoder, "top_n": self.top_n, "sigma": self.sigma,
            "stride": self.stride, "pixel_convention": self.pixel_convention,
            "heatmap_to_crop": {"formula": _CONVENTION_FORMULAS[self.pixel_convention],
                                "scale": float(self.stride), "offset": offset},
            "score": "the heatmap's peak value (0: keypoint not found)",
        }

    # Coordinates -----------------------------------------------------------------------------
    def to_heatmap_coordinates(self, points):
        """Input-crop pixels -> heatmap pixels: (p + 0.5) / stride - 0.5, or p / stride with
        the "hrnet" convention (any shape, float32)."""
        points = ops.cast(points, "float32")
        if self.pixel_convention == "hrnet":
            return points / self.stride
        return (points + 0.5) / self.stride - 0.5

    def to_input_coordinates(self, points):
        """Heatmap pixels -> input-crop pixels: (p + 0.5) * stride - 0.5, or p * stride with
        the "hrnet" convention (any shape, float32)."""
        points = ops.cast(points, "float32")
        if self.pixel_convention == "hrnet":
            return points * self.stride
        return (points + 0.5) * self.stride - 0.5

    def unflip(self, flipped_heatmaps):
        """Heatmaps of mirrored crops `[B, h, w, K]` -> heatmaps of the original crops.

        `flip_heatmaps` (mirror, swap left/right channels); with the "hrnet" convention the
        result is also shifted right by one pixel, as the official flip test does (its mirror
        lands 1 - 1 / stride pixels left of the original; see `flip_heatmaps`).
        """
        mirrored = flip_heatmaps(flipped_heatmaps, self.keypoint_set.flip_index)
        if self.pixel_convention == "hrnet":
            mirrored = ops.concatenate([mirrored[:, :, :1], mirrored[:, :, :-1]], axis=2)
        return mirrored

    # Encoding --------------------------------------------------------------------------------
    def encode(self, keypoints, visibility) -> dict:
        """Render the keypoint and skeletal targets and their weights for a batch.

        Args:
            keypoints: float [B, K, 2], (x, y) in input-crop pixels, pixel centres at integers.
                Coordinates of unlabelled keypoints are ignored (NaN is fine there).
            visibility: float [B, K], > 0 for labelled keypoints (COCO v = 1 or 2).

        Returns:
            A dict of float32 tensors:
            `heatmaps` [B, h, w, K], `heatmap_weights` [B, K],
            `skeletal_heatmaps` [B, h, w, S], `skeletal_weights` [B, S],
            with (h, w) = `heatmap_size` and S = `keypoint_set.num_links`.
        """
        keypoints = ops.cast(keypoints, "float32")
        visibility = ops.cast(visibility, "float32")
        self._check_keypoint_shapes(keypoints, visibility)
        labelled = visibility > 0
        # Unlabelled keypoints go to the origin so that NaN or huge placeholders stay harmless.
        points = ops.where(labelled[..., None], self.to_heatmap_coordinates(keypoints), 0.0)
        height, width = self.heatmap_size
        columns = ops.arange(width, dtype="float32")
        rows = ops.arange(height, dtype="float32")
        heatmaps, heatmap_weights = self._render_keypoints(points, labelled, rows, columns)
        skeletal_heatmaps, skeletal_weights = self._render_links(points, labelled, rows, columns)
        return {
            "heatmaps": heatmaps,
            "heatmap_weights": heatmap_weights,
            "skeletal_heatmaps": skeletal_heatmaps,
            "skeletal_weights": skeletal_weights,
        }

    def _check_keypoint_shapes(self, keypoints, visibility):
        num_keypoints = self.keypoint_set.num_keypoints
        if len(keypoints.shape) != 3 or tuple(keypoints.shape[1:]) != (num_keypoints, 2):
            raise ValueError(
                f"HeatmapCodec.encode: keypoints must be [B, {num_keypoints}, 2] for keypoint set "
                f"{self.keypoint_set.name!r}. Received shape {tuple(keypoints.shape)}"
            )
        if len(visibility.shape) != 2 or visibility.shape[1] != num_keypoints:
            raise ValueError(
                f"HeatmapCodec.encode: visibility must be [B, {num_keypoints}]. Received shape "
                f"{tuple(visibility.shape)}"
            )

    def _render_keypoints(self, points, labelled, rows, columns):
        """Separable Gaussians: [B, h, 1, K] * [B, 1, w, K]; weights [B, K]."""
        height, width = self.heatmap_size
        x, y = points[..., 0], points[..., 1]
        reach = 3.0 * self.sigma
        supervised = (
            labelled
            & (x >= -reach)
            & (x <= width - 1 + reach)
            & (y >= -reach)
            & (y <= height - 1 + reach)
        )
        scale = -0.5 / self.sigma**2
        along_x = ops.exp(scale * ops.square(columns[None, :, None] - x[:, None, :]))  # [B, w, K]
        along_y = ops.exp(scale * ops.square(rows[None, :, None] - y[:, None, :]))  # [B, h, K]
        gaussians = along_y[:, :, None, :] * along_x[:, None, :, :]
        heatmaps = ops.where(supervised[:, None, None, :], gaussians, 0.0)
        weights = ops.cast(supervised, "float32")
        if self.use_joint_weights:
            weights = weights * np.asarray(self.keypoint_set.weights, np.float32)
        return heatmaps, weights

    def _render_links(self, points, labelled, rows, columns):
        """Distance-to-segment Gaussians, [B, h, w, S]; weights [B, S]."""
        pairs = self.keypoint_set.link_pairs
        start = ops.take(points, pairs[:, 0], axis=1)  # [B, S, 2]
        end = ops.take(points, pairs[:, 1], axis=1)
        both_labelled = ops.take(labelled, pairs[:, 0], axis=1) & ops.take(
            labelled, pairs[:, 1], axis=1
        )
        start_x = start[:, None, None, :, 0]  # [B, 1, 1, S]
        start_y = start[:, None, None, :, 1]
        direction_x = end[:, None, None, :, 0] - start_x
        direction_y = end[:, None, None, :, 1] - start_y
        squared_length = ops.maximum(direction_x**2 + direction_y**2, _MIN_SQUARED_LINK_LENGTH)
        from_start_x = columns[None, None, :, None] - start_x  # [B, 1, w, S]
        from_start_y = rows[None, :, None, None] - start_y  # [B, h, 1, S]
        along = ops.clip(
            (from_start_x * direction_x + from_start_y * direction_y) / squared_length, 0.0, 1.0
        )  # [B, h, w, S], position of the nearest segment point (0 = start, 1 = end)
        squared_distance = (from_start_x - along * direction_x) ** 2 + (
            from_start_y - along * direction_y
        ) ** 2
        lines = ops.exp(-0.5 / self.skeletal_sigma**2 * squared_distance)
        heatmaps = ops.where(both_labelled[:, None, None, :], lines, 0.0)
        return heatmaps, ops.cast(both_labelled, "float32")

    # Decoding --------------------------------------------------------------------------------
    def decode(self, heatmaps, method: str | None = None, top_n: int | None = None):
        """Keypoints and scores from heatmaps, in-graph and batched.

        Args:
            heatmaps: float [B, h, w, K] with (h, w) = `heatmap_size` (any float dtype; decoded
                in float32).
            method: one of `DECODERS`; defaults to the codec's `decoder`.
            top_n: N of the `weighted` decoder; defaults to the codec's `top_n`.

        Returns:
            (keypoints float32 [B, K, 2], (x, y) in input-crop pixels, pixel centres at
            integers; scores float32 [B, K], each heatmap's peak value). A keypoint whose
            peak is <= 0 is not found: score 0, coordinates those of heatmap pixel (0, 0).
        """
        method = self.decoder if method is None else method
        if method not in DECODERS:
            raise ValueError(
                f"HeatmapCodec.decode: method must be one of {DECODERS}. "
                f"Received: method={method!r}"
            )
        top_n = self.top_n if top_n is None else self._check_top_n(top_n)
        heatmaps = ops.cast(heatmaps, "float32")
        height, width = self.heatmap_size
        if len(heatmaps.shape) != 4 or tuple(heatmaps.shape[1:3]) != (height, width):
            raise ValueError(
                f"HeatmapCodec.decode: heatmaps must be [B, {height}, {width}, K] for input_size="
                f"{self.input_size} and stride={self.stride}. "
                f"Received shape {tuple(heatmaps.shape)}"
            )
        flat = self._flatten(heatmaps)  # [B, K, h * w]
        if method == "weighted":
            values, indices = ops.top_k(flat, top_n)
            columns, rows = self._pixel_of(indices)
            rank_weights = weighted_decoding_weights(top_n)
            x = ops.sum(columns * rank_weights, axis=-1)
            y = ops.sum(rows * rank_weights, axis=-1)
            scores = values[..., 0]
        else:
            values, indices = ops.top_k(flat, 1)
            scores = values[..., 0]
            indices = indices[..., 0]
            columns, rows = self._pixel_of(indices)
            if method == "argmax":
                x, y = columns, rows
            elif method == "quarter":
                x, y = self._quarter_offset(flat, indices, columns, rows)
            else:
                x, y = self._dark_refinement(heatmaps, indices, columns, rows)
        found = scores > 0  # official get_max_preds: pred_mask = maxvals > 0
        x = ops.where(found, x, 0.0)
        y = ops.where(found, y, 0.0)
        scores = ops.where(found, scores, 0.0)
        keypoints = self.to_input_coordinates(ops.stack([x, y], axis=-1))
        return keypoints, scores

    def _flatten(self, heatmaps):
        """[B, h, w, K] -> [B, K, h * w], row-major pixels."""
        height, width = self.heatmap_size
        channels = heatmaps.shape[-1]
        if channels is None:
            raise ValueError("HeatmapCodec.decode: the number of heatmap channels must be known.")
        return ops.reshape(ops.transpose(heatmaps, (0, 3, 1, 2)), (-1, channels, height * width))

    def _pixel_of(self, flat_indices):
        """Flat row-major indices -> (column, row) as float32."""
        width = self.heatmap_size[1]
        columns = ops.cast(ops.mod(flat_indices, width), "float32")
        rows = ops.cast(ops.floor_divide(flat_indices, width), "float32")
        return columns, rows

    def _neighbours(self, flat, indices, offsets):
        """Values of `flat` [B, K, h*w] at the peaks `indices` [B, K] moved by (dx, dy) offsets.

        Positions are clamped into the map; callers only use them where they lie inside.
        Returns float32 [B, K, len(offsets)].
        """
        height, width = self.heatmap_size
        column = ops.mod(indices, width)[..., None]
        row = ops.floor_divide(indices, width)[..., None]
        offset_x = np.asarray([dx for dx, _ in offsets], np.int32)
        offset_y = np.asarray([dy for _, dy in offsets], np.int32)
        neighbour_columns = ops.clip(column + offset_x, 0, width - 1)
        neighbour_rows = ops.clip(row + offset_y, 0, height - 1)
        return ops.take_along_axis(flat, neighbour_rows * width + neighbour_columns, axis=-1)

    def _quarter_offset(self, flat, indices, columns, rows):
        height, width = self.heatmap_size
        left, right, up, down = ops.unstack(
            self._neighbours(flat, indices, ((-1, 0), (1, 0), (0, -1), (0, 1))), axis=-1
        )
        inside = (columns > 1) & (columns < width - 1) & (rows > 1) & (rows < height - 1)
        x = columns + ops.where(inside, 0.25 * ops.sign(right - left), 0.0)
        y = rows + ops.where(inside, 0.25 * ops.sign(down - up), 0.0)
        return x, y

    def _blur(self, heatmaps):
        """Separable Gaussian blur of [B, h, w, K] (zero padding), kernel `gaussian_blur_kernel`."""
        kernel = gaussian_blur_kernel(self.sigma)
        channels = heatmaps.shape[-1]
        vertical = np.tile(kernel[:, None, None, None], (1, 1, channels, 1))
        horizontal = np.tile(kernel[None, :, None, None], (1, 1, channels, 1))
        blurred = ops.depthwise_conv(heatmaps, vertical, padding="same")
        return ops.depthwise_conv(blurred, horizontal, padding="same")

    def _dark_refinement(self, heatmaps, indices, columns, rows):
        height, width = self.heatmap_size
        log_heatmaps = ops.log(ops.maximum(self._flatten(self._blur(heatmaps)), _DARK_LOG_FLOOR))
        offsets = tuple((dx, dy) for dy in (-1, 0, 1) for dx in (-1, 0, 1))
        patch = ops.unstack(self._neighbours(log_heatmaps, indices, offsets), axis=-1)
        up_left, up, up_right, left, centre, right, down_left, down, down_right = patch
        gradient_x = 0.5 * (right - left)
        gradient_y = 0.5 * (down - up)
        hessian_xx = right - 2.0 * centre + left
        hessian_yy = down - 2.0 * centre + up
        hessian_xy = 0.25 * (down_right - up_right - down_left + up_left)
        determinant = hessian_xx * hessian_yy - hessian_xy**2
        refine = (
            (columns >= 1)
            & (columns <= width - 2)
            & (rows >= 1)
            & (rows <= height - 2)
            & (hessian_xx < 0)
            & (determinant > 0)
        )
        safe_determinant = ops.where(refine, determinant, 1.0)
        # Newton step -H^-1 g with H^-1 = [[H_yy, -H_xy], [-H_xy, H_xx]] / det.
        step_x = -(hessian_yy * gradient_x - hessian_xy * gradient_y) / safe_determinant
        step_y = -(hessian_xx * gradient_y - hessian_xy * gradient_x) / safe_determinant
        x = columns + ops.where(refine, ops.clip(step_x, -1.0, 1.0), 0.0)
        y = rows + ops.where(refine, ops.clip(step_y, -1.0, 1.0), 0.0)
        return x, y
