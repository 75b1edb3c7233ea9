"""Crop geometry in numpy: box -> centre/scale, the affine crop matrix, its inverse.

Convention (docs/design.md section 3.1): continuous pixel coordinates with pixel centres at
integers, in the image and in the crop; an image of width W spans x in [-0.5, W - 0.5], its
centre is at (W - 1) / 2. `center` (x, y) and `scale` (width, height) are the region of the
image that the crop covers, in image pixels (HRNet's scale times pixel_std = 200).

The crop matrix M (2 x 3, image pixels -> crop pixels) is

    crop = diag(W / scale_w, H / scale_h) @ R(rotation) @ (p - center) + ((W - 1) / 2, (H - 1) / 2)

with W x H the crop size and R the rotation that turns the image content counter-clockwise on
screen by `rotation` degrees (as `cv2.getRotationMatrix2D`). So:
- the region's centre lands exactly on the crop's centre pixel position ((W - 1) / 2, (H - 1) / 2),
  and the region's edges on the crop's outer pixel edges (-0.5 and W - 0.5);
- `cv2.warpAffine(image, M, (W, H))` samples crop pixel (i, j) at M^-1 (i, j), which is this very
  convention, so keypoints mapped by M land where their pixels land;
- a horizontal flip of the crop is `x -> W - 1 - x`, exact, and is folded into M (`flip=True`),
  so the flipped crop equals the unflipped crop mirrored pixel for pixel.
HRNet maps the centre to (W / 2, H / 2) instead and flips with `x -> width - 1 - x` in the image
before the warp; with its convention the flip is off by about one pixel (its flip test shifts
heatmaps by one pixel to compensate). Flipping after the warp with rotation r equals HRNet's
flip-then-rotate with rotation -r, which has the same (symmetric) distribution.
"""

from __future__ import annotations

import numpy as np


def input_aspect_ratio(input_size) -> float:
    """width / height of a model input given as (height, width); ValueError if not positive ints."""
    try:
        height, width = (int(v) for v in input_size)
    except (TypeError, ValueError):
        raise ValueError(f"input_size must be (height, width). Received: {input_size!r}") from None
    if height <= 0 or width <= 0:
        raise ValueError(f"input_size must be positive. Received: input_size={input_size!r}")
    return width / height


def fix_aspect_ratio(size: np.ndarray, aspect_ratio: float) -> np.ndarray:
    """Enlarge (width, height) so that width / height == aspect_ratio (HRNet's rule).

    Args:
        size: float [..., 2], (width, height).
        aspect_ratio: target width / height (the model input's W / H).

    Returns:
        float32 [..., 2]: the wider side kept, the other enlarged.
    """
    size = np.asarray(size, np.float32)
    width, height = size[..., 0], size[..., 1]
    too_wide = width > aspect_ratio * height
    fixed_width = np.where(too_wide, width, height * aspect_ratio)
    fixed_height = np.where(too_wide, width / aspect_ratio, height)
    return np.stack([fixed_width, fixed_height], axis=-1).astype(np.float32)


def box_to_center_scale(boxes, aspect_ratio: float, padding: float = 1.25):
    """Box (x, y, w, h) -> centre and region size in pixels (HRNet `_xywh2cs` without the /200).

    centre = (x + w / 2, y + h / 2); size = (w, h) enlarged to `aspect_ratio`, times `padding`.

    Args:
        boxes: float [..., 4], (x, y, w, h) in image pixels.
        aspect_ratio: the model input's width / height.
        padding: region enlargement factor (1.25 in HRNet).

    Returns:
        (center float32 [..., 2], scale float32 [..., 2]) in image pixels.

    Example:
        >>> box_to_center_scale([10, 20, 30, 80], aspect_ratio=0.75)
        (array([25., 60.], dtype=float32), array([75., 100.], dtype=float32))
    """
    boxes = np.asarray(boxes, np.float32)
    center = boxes[..., 0:2] + 0.5 * boxes[..., 2:4]
    scale = fix_aspect_ratio(boxes[..., 2:4], aspect_ratio) * np.float32(padding)
    return center.astype(np.float32), scale


def affine_matrix(center, scale, rotation, output_size, flip=False) -> np.ndarray:
    """The 2 x 3 matrix(es) mapping image pixels to crop pixels (see the module docstring).

    Args:
        center: float [..., 2], (x, y) region centre in image pixels.
        scale: float [..., 2], (width, height) region size in image pixels.
        rotation: float [...], degrees; positive turns the content counter-clockwise on screen.
        output_size: (height, width) of the crop.
        flip: bool [...]: mirror the crop horizontally (x -> W - 1 - x).

    Returns:
        float64 [..., 2, 3].
    """
    out_h, out_w = output_size
    center = np.asarray(center, np.float64)
    scale = np.asarray(scale, np.float64)
    theta = np.deg2rad(np.asarray(rotation, np.float64))
    cos, sin = np.cos(theta), np.sin(theta)
    sx = out_w / scale[..., 0]
    sy = out_h / scale[..., 1]
    mirror = np.where(np.asarray(flip, bool), -1.0, 1.0)
    # Linear part: mirror * diag(sx, sy) @ [[cos, sin], [-sin, cos]].
    a = mirror * sx * cos
    b = mirror * sx * sin
    c = -sy * sin
    d = sy * cos
    tx = (out_w - 1) / 2.0 - (a * center[..., 0] + b * center[..., 1])
    ty = (out_h - 1) / 2.0 - (c * center[..., 0] + d * center[..., 1])
    matrix = np.empty(np.broadcast_shapes(a.shape, b.shape, c.shape, tx.shape) + (2, 3))
    matrix[..., 0, 0], matrix[..., 0, 1], matrix[..., 0, 2] = a, b, tx
    matrix[..., 1, 0], matrix[..., 1, 1], matrix[..., 1, 2] = c, d, ty
    return matrix


def invert_affine(matrix) -> np.ndarray:
    """Inverse of 2 x 3 affine matrices: float [..., 2, 3] -> float64 [..., 2, 3]."""
    matrix = np.asarray(matrix, np.float64)
    a, b, tx = matrix[..., 0, 0], matrix[..., 0, 1], matrix[..., 0, 2]
    c, d, ty = matrix[..., 1, 0], matrix[..., 1, 1], matrix[..., 1, 2]
    det = a * d - b * c
    inverse = np.empty(matrix.shape)
    inverse[..., 0, 0], inverse[..., 0, 1] = d / det, -b / det
    inverse[..., 1, 0], inverse[..., 1, 1] = -c / det, a / det
    inverse[..., 0, 2] = -(inverse[..., 0, 0] * tx + inverse[..., 0, 1] * ty)
    inverse[..., 1, 2] = -(inverse[..., 1, 0] * tx + inverse[..., 1, 1] * ty)
    return inverse


def apply_affine(points, matrix) -> np.ndarray:
    """Map points through affine matrices.

    Args:
        points: float [..., K, 2], (x, y).
        matrix: float [..., 2, 3], broadcast against the points' leading dimensions.

    Returns:
        float32 [..., K, 2].
    """
    points = np.asarray(points, np.float64)
    matrix = np.asarray(matrix, np.float64)
    mapped = np.einsum("...ij,...kj->...ki", matrix[..., :, :2], points) + matrix[..., None, :, 2]
    return mapped.astype(np.float32)


def source_window(matrix, output_size, image_size):
    """The part of the image that a crop samples: the pixel box needed by bilinear warping.

    Args:
        matrix: float [2, 3], image pixels -> crop pixels (`affine_matrix`).
        output_size: (height, width) of the crop.
        image_size: (height, width) of the image.

    Returns:
        (x0, y0, x1, y1) inclusive integer pixel bounds inside the image, or None when the crop
        lies entirely outside the image. Warping `image[y0:y1 + 1, x0:x1 + 1]` with the matrix
        shifted by (x0, y0) (`shift_source`) gives the same crop as warping the whole image.
    """
    out_h, out_w = output_size
    corners = np.asarray([[-0.5, -0.5], [out_w - 0.5, -0.5], [-0.5, out_h - 0.5],
                          [out_w - 0.5, out_h - 0.5]])
    source = apply_affine(corners, invert_affine(matrix)).astype(np.float64)
    height, width = image_size
    x0, y0 = np.maximum(np.floor(source.min(axis=0)) - 1, 0).astype(int)
    x1 = int(min(np.ceil(source[:, 0].max()) + 1, width - 1))
    y1 = int(min(np.ceil(source[:, 1].max()) + 1, height - 1))
    if x0 > x1 or y0 > y1:
        return None
    return int(x0), int(y0), x1, y1


def shift_source(matrix, x0, y0) -> np.ndarray:
    """The matrix for a source image cut at (x0, y0): p_window = p_image - (x0, y0)."""
    matrix = np.array(matrix, np.float64)
    matrix[:, 2] += matrix[:, :2] @ np.asarray([x0, y0], np.float64)
    return matrix


def crop_to_image(points, center, scale, input_size) -> np.ndarray:
    """Map predictions from crop pixels back to original-image pixels (inverse of the crop).

    Args:
        points: float [N, K, 2], (x, y) in input-crop pixels (pixel centres at integers).
        center: float [N, 2], the crop regions' centres in image pixels.
        scale: float [N, 2], the crop regions' (width, height) in image pixels.
        input_size: (height, width) of the crop.

    Returns:
        float32 [N, K, 2], (x, y) in image pixels, 0-based.
    """
    center = np.asarray(center, np.float64)
    matrix = affine_matrix(center, scale, np.zeros(center.shape[:-1]), input_size)
    return apply_affine(points, invert_affine(matrix))
