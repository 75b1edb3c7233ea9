"""Training augmentation parameters: half body, scale, rotation, flip (official HRNet recipe).

`sample_augmentation` draws, for one person, the crop region, rotation and flip in the official
order (`JointsDataset.__getitem__` of leoxiaobin/deep-high-resolution-net.pytorch):

1. Half body, with probability `half_body_prob` when more than `half_body_min_keypoints`
   keypoints are labelled: the region becomes the box of the upper or the lower body's labelled
   keypoints (centre = their mean), enlarged `half_body_padding` times (and, when the crop is
   cut, to the input's aspect ratio: `crop_geometry.fix_aspect_ratio`, see `Augmentation`).
   The upper body is chosen when a *standard normal* draw is below
   `half_body_upper_threshold` (the official code draws `randn() < 0.5`, so the upper body is
   chosen with probability Phi(0.5) = 0.69, not 0.5; set the threshold to 0 for an even choice)
   and has more than 2 labelled keypoints; otherwise the lower body if it has more than 2, else
   the upper body; nothing changes when the chosen part has fewer than 2.
2. Scale: region size times clip(randn * sf + 1, 1 - sf, 1 + sf).
3. Rotation: with probability `rotation_prob`, clip(randn * rf, -2 rf, 2 rf) degrees, else 0.
4. Flip with probability `flip_prob` (mirror the crop, swap left/right keypoints).

There is no colour jitter, as in the official recipe. Defaults are COCO's (sf 0.35, rf 45,
half body 0.3); `AugmentConfig.mpii()` has MPII's (sf 0.25, rf 30, no half body).
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of the training augmentations (see the module docstring).

    Attributes:
        scale_factor: sf; the region size is multiplied by a factor in [1 - sf, 1 + sf].
        rotation_factor: rf in degrees; rotations are clipped to [-2 rf, 2 rf].
        rotation_prob: probability of rotating at all.
        flip_prob: probability of a horizontal flip.
        half_body_prob: probability of half-body cropping (0 turns it off).
        half_body_min_keypoints: half body needs more than this many labelled keypoints.
        half_body_padding: enlargement of the half-body box.
        half_body_upper_threshold: the upper body is chosen when randn() < this value.
    """

    scale_factor: float = 0.35
    rotation_factor: float = 45.0
    rotation_prob: float = 0.6
    flip_prob: float = 0.5
    half_body_prob: float = 0.3
    half_body_min_keypoints: int = 8
    half_body_padding: float = 1.5
    half_body_upper_threshold: float = 0.5

    def __post_init__(self):
        for name in ("rotation_prob", "flip_prob", "half_body_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(
                    f"AugmentConfig.{name} must be in [0, 1]. Received: {name}={value}")
        if not 0.0 <= self.scale_factor < 1.0:
            raise ValueError(
                f"AugmentConfig.scale_factor must be in [0, 1). Received: "
                f"scale_factor={self.scale_factor}"
            )
        if self.rotation_factor < 0:
            raise ValueError(
                f"AugmentConfig.rotation_factor must be >= 0. Received: "
                f"rotation_factor={self.rotation_factor}"
            )
        if self.half_body_padding <= 0:
            raise ValueError(
                f"AugmentConfig.half_body_padding must be positive. Received: "
                f"half_body_padding={self.half_body_padding}"
            )

    @classmethod
    def coco(cls) -> "AugmentConfig":
        """The official COCO recipe: sf 0.35, rf 45 (p 0.6), flip 0.5, half body 0.3."""
        return cls()

    @classmethod
    def mpii(cls) -> "AugmentConfig":
        """The official MPII recipe: sf 0.25, rf 30 (p 0.6), flip 0.5, no half body."""
        return cls(scale_factor=0.25, rotation_factor=30.0, half_body_prob=0.0)

    @classmethod
    def none(cls) -> "AugmentConfig":
        """No augmentation at all (the crop is the record's region)."""
        return cls(scale_factor=0.0, rotation_factor=0.0, rotation_prob=0.0, flip_prob=0.0,
                   half_body_prob=0.0)


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """The sampled crop of one person.

    Attributes:
        center: float32 [2], region centre in image pixels.
        scale: float32 [2], region (width, height) in image pixels, not yet at the input's
            aspect ratio when it is a half-body region: the crop is cut from
            `crop_geometry.fix_aspect_ratio(scale, aspect_ratio)` (the pipeline does this for
            every augmented region, in one batched call; a record's region, times the scale
            factor, already has the aspect ratio and stays as it is).
        rotation: degrees, counter-clockwise on screen.
        flip: whether the crop is mirrored (and left/right keypoints swapped).
    """

    center: np.ndarray
    scale: np.ndarray
    rotation: float
    flip: bool


def half_body_region(keypoints, labelled, upper_body, padding, prefer_upper):
    """The region around the upper or lower body's labelled keypoints, or None.

    Args:
        keypoints: float [K, 2], image pixels.
        labelled: bool [K], which keypoints are labelled.
        upper_body: indices of the upper-body keypoints (`KeypointSet.upper_body`).
        padding: enlargement factor of the keypoints' box.
        prefer_upper: take the upper body if it has more than 2 labelled keypoints.

    Returns:
        (center float32 [2], size float32 [2]): the keypoints' mean and their box's
        (width, height) times `padding`, before the aspect-ratio fix (`Augmentation`). None
        when the chosen part has fewer than 2 labelled keypoints or they all coincide (the box
        has neither width nor height, so no aspect-ratio fix can give it an area).
    """
    is_upper = np.zeros(len(labelled), bool)
    is_upper[list(upper_body)] = True
    upper = keypoints[labelled & is_upper]
    lower = keypoints[labelled & ~is_upper]
    if prefer_upper and len(upper) > 2:
        chosen = upper
    else:
        chosen = lower if len(lower) > 2 else upper
    if len(chosen) < 2:
        return None
    center = chosen.mean(axis=0)
    size = (chosen.max(axis=0) - chosen.min(axis=0)) * np.float32(padding)
    if not np.any(size > 0):
        return None
    return center.astype(np.float32), size.astype(np.float32)


def sample_augmentation(rng, center, scale, keypoints, visibility, upper_body,
                        config: AugmentConfig) -> Augmentation:
    """Draw one person's augmentation in the official order (module docstring).

    Args:
        rng: a `numpy.random.Generator`.
        center: float [2], the record's region centre (image pixels).
        scale: float [2], the record's region size (image pixels).
        keypoints: float [K, 2], image pixels.
        visibility: float [K], > 0 where labelled.
        upper_body: the keypoint set's upper-body indices.
        config: an `AugmentConfig`.

    Returns:
        An `Augmentation`.
    """
    center = np.asarray(center, np.float32)
    scale = np.asarray(scale, np.float32)
    labelled = np.asarray(visibility) > 0
    if labelled.sum() > config.half_body_min_keypoints and rng.random() < config.half_body_prob:
        region = half_body_region(
            np.asarray(keypoints, np.float32), labelled, upper_body, config.half_body_padding,
            prefer_upper=rng.standard_normal() < config.half_body_upper_threshold,
        )
        if region is not None:
            center, scale = region
    sf = config.scale_factor
    scale = scale * np.float32(_clip(rng.standard_normal() * sf + 1.0, 1.0 - sf, 1.0 + sf))
    rotation = 0.0
    if rng.random() < config.rotation_prob:
        rf = config.rotation_factor
        rotation = _clip(rng.standard_normal() * rf, -2.0 * rf, 2.0 * rf)
    flip = bool(rng.random() < config.flip_prob)
    return Augmentation(center=center, scale=scale, rotation=rotation, flip=flip)


def _clip(value, low, high) -> float:
    """min(max(value, low), high) for a Python scalar (np.clip costs microseconds per call)."""
    return float(min(max(value, low), high))
