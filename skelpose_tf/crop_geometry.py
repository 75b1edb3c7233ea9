"""The crop geometry, once: box -> region, the affine crop matrix, cutting crops, mapping points.

Every user takes its geometry from here: the readers (box -> region), the data pipeline (the
matrix its OpenCV warp cuts with, the crop keypoints), the exported serving graph (regions,
crops and the way back, in-graph), `predict.py` and the inference loop (crop -> image), and the
TFLite MoveNet-style helpers (crop pixels <-> normalised coordinates).

Written with `keras.ops` only, so one function serves numpy inputs eagerly (it then returns
backend tensors: `np.asarray` them) and symbolic tensors inside a `tf.function` or a `tf.data`
map. Everything computes in float32 (the rotation's cosine and sine in float64), element by
element, so a region's result does not depend on the other regions of the call. An eager
`keras.ops` call costs far more than numpy (milliseconds for `affine_matrix` on the TensorFlow
backend, bench/pipeline.py), so hot loops call these functions once per batch, or inside the
graph (the data pipeline does both).

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
  convention, and so does `cut_crops`; keypoints mapped by M land where their pixels land;
- a horizontal flip of the crop is `x -> W - 1 - x`, exact, and is folded into M (`flip=True`),
  so the flipped crop equals the unflipped crop mirrored pixel for pixel.
HRNet maps the centre to (W / 2, H / 2) instead and flips with `x -> width - 1 - x` in the image
before the warp; with its convention the flip is off by about one pixel (its flip test shifts
heatmaps by one pixel to compensate). Flipping after the warp with rotation r equals HRNet's
flip-then-rotate with rotation -r, which has the same (symmetric) distribution.

Normalised coordinates (the TFLite MoveNet-style output): `x = (x_px + 0.5) / W`,
`y = (y_px + 0.5) / H`, so [0, 1] spans the crop's outer pixel edges; back: `x_px = x * W - 0.5`.

Example:
    center, scale = box_to_center_scale([[10, 20, 30, 80]], aspect_ratio=192 / 256)
    matrix = affine_matrix(center, scale, 0.0, (256, 192))        # [1, 2, 3]
    crops = cut_crops(image, matrix, (256, 192))                   # uint8 [1, 256, 192, 3]
    image_points = crop_to_image(crop_points, center, scale, (256, 192))
"""

from __future__ import annotations

import math

from keras import ops

# Region enlargement around a person box (HRNet's 1.25): readers, predict.py, the serving graph.
BOX_PADDING = 1.25


def input_aspect_ratio(input_size) -> float:
    """width / height of a model input given as (height, width); ValueError if not positive ints."""
    try:
        height, width = (int(v) for v in input_size)
    except (TypeError, ValueError):
        raise ValueError(f"input_size must be (height, width). Received: {input_size!r}") from None
    if height <= 0 or width <= 0:
        raise ValueError(f"input_size must be positive. Received: input_size={input_size!r}")
    return width / height


def _float(x):
    return ops.cast(x, "float32")


def fix_aspect_ratio(size, aspect_ratio: float):
    """Enlarge (width, height) so that width / height == aspect_ratio (HRNet's rule).

    Args:
        size: float [..., 2], (width, height).
        aspect_ratio: target width / height (the model input's W / H).

    Returns:
        float32 [..., 2]: the relatively wider side kept, the other enlarged. Sizes already at
        the aspect ratio come back unchanged (to float32 rounding).
    """
    size = _float(size)
    width, height = size[..., 0], size[..., 1]
    too_wide = width > aspect_ratio * height
    fixed_width = ops.where(too_wide, width, height * aspect_ratio)
    fixed_height = ops.where(too_wide, width / aspect_ratio, height)
    return ops.stack([fixed_width, fixed_height], axis=-1)


def box_to_center_scale(boxes, aspect_ratio: float, padding: float = BOX_PADDING):
    """Box (x, y, w, h) -> the crop region (HRNet `_xywh2cs` without the /200).

    centre = (x + w / 2, y + h / 2); size = (w, h) enlarged to `aspect_ratio`, times `padding`.

    Args:
        boxes: float [..., 4], (x, y, w, h) in image pixels.
        aspect_ratio: the model input's width / height.
        padding: region enlargement factor (`BOX_PADDING` = 1.25 in HRNet).

    Returns:
        (center float32 [..., 2], scale float32 [..., 2]) in image pixels.

    Example:
        >>> center, scale = box_to_center_scale([10, 20, 30, 80], aspect_ratio=0.75)
        >>> np.asarray(center), np.asarray(scale)
        (array([25., 60.], dtype=float32), array([75., 100.], dtype=float32))
    """
    boxes = _float(boxes)
    center = boxes[..., 0:2] + 0.5 * boxes[..., 2:4]
    scale = fix_aspect_ratio(boxes[..., 2:4], aspect_ratio) * padding
    return center, scale


def affine_matrix(center, scale, rotation, output_size, flip=False):
    """The 2 x 3 matrices mapping image pixels to crop pixels (see the module docstring).

    Args:
        center: float [..., 2], (x, y) region centre in image pixels.
        scale: float [..., 2], (width, height) region size in image pixels.
        rotation: float [...] (or a scalar), degrees; positive turns the content
            counter-clockwise on screen.
        output_size: (height, width) of the crop, Python ints.
        flip: bool [...] (or a scalar): mirror the crop horizontally (x -> W - 1 - x).

    Returns:
        float32 [..., 2, 3], the arguments' leading dimensions broadcast.
    """
    out_h, out_w = output_size
    center, scale = _float(center), _float(scale)
    # cos and sin in float64: TensorFlow's float32 ones round differently in vectorised and
    # scalar code, which would make a region's matrix depend on how many share the call.
    theta = ops.cast(rotation, "float64") * (math.pi / 180.0)
    cos, sin = _float(ops.cos(theta)), _float(ops.sin(theta))
    mirror = ops.where(ops.convert_to_tensor(flip, "bool"), -1.0, 1.0)
    sx = out_w / scale[..., 0]
    sy = out_h / scale[..., 1]
    # Linear part: mirror * diag(sx, sy) @ [[cos, sin], [-sin, cos]].
    a = mirror * sx * cos
    b = mirror * sx * sin
    c = -sy * sin
    d = sy * cos
    tx = (out_w - 1) / 2.0 - (a * center[..., 0] + b * center[..., 1])
    ty = (out_h - 1) / 2.0 - (c * center[..., 0] + d * center[..., 1])
    zero = ops.zeros_like(tx + ty)  # tx, ty hold every argument: their shape is the result's
    rows = [ops.stack([a + zero, b + zero, tx + zero], axis=-1),
            ops.stack([c + zero, d + zero, ty + zero], axis=-1)]
    return ops.stack(rows, axis=-2)


def invert_affine(matrix):
    """Inverse of 2 x 3 affine matrices: float [..., 2, 3] -> float32 [..., 2, 3]."""
    matrix = _float(matrix)
    a, b, tx = matrix[..., 0, 0], matrix[..., 0, 1], matrix[..., 0, 2]
    c, d, ty = matrix[..., 1, 0], matrix[..., 1, 1], matrix[..., 1, 2]
    det = a * d - b * c
    ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det
    rows = [ops.stack([ia, ib, -(ia * tx + ib * ty)], axis=-1),
            ops.stack([ic, id_, -(ic * tx + id_ * ty)], axis=-1)]
    return ops.stack(rows, axis=-2)


def apply_affine(points, matrix):
    """Map points through affine matrices.

    Args:
        points: float [..., K, 2], (x, y).
        matrix: float [..., 2, 3]; its leading dimensions broadcast against the points'.

    Returns:
        float32 [..., K, 2].
    """
    points, matrix = _float(points), _float(matrix)
    x, y = points[..., 0], points[..., 1]
    m = ops.expand_dims(matrix, -3)  # [..., 1, 2, 3]: one matrix for the K points
    mapped_x = m[..., 0, 0] * x + m[..., 0, 1] * y + m[..., 0, 2]
    mapped_y = m[..., 1, 0] * x + m[..., 1, 1] * y + m[..., 1, 2]
    return ops.stack([mapped_x, mapped_y], axis=-1)


def image_to_crop(points, center, scale, input_size):
    """Map image pixels into the (unrotated, unflipped) crops of the regions.

    Args:
        points: float [N, K, 2], (x, y) in image pixels.
        center, scale: float [N, 2], the crop regions in image pixels.
        input_size: (height, width) of the crop.

    Returns:
        float32 [N, K, 2], (x, y) in crop pixels (pixel centres at integers).
    """
    return apply_affine(points, affine_matrix(center, scale, 0.0, input_size))


def crop_to_image(points, center, scale, input_size):
    """Map predictions from crop pixels back to image pixels (inverse of `image_to_crop`).

    Args:
        points: float [N, K, 2], (x, y) in input-crop pixels (pixel centres at integers).
        center: float [N, 2], the crop regions' centres in image pixels.
        scale: float [N, 2], the crop regions' (width, height) in image pixels.
        input_size: (height, width) of the crop.

    Returns:
        float32 [N, K, 2], (x, y) in image pixels, 0-based.
    """
    return apply_affine(points, invert_affine(affine_matrix(center, scale, 0.0, input_size)))


def crop_corners(matrix, output_size):
    """Where the crop's four outer corners lie in the image: the area a crop samples.

    Args:
        matrix: float [..., 2, 3], image pixels -> crop pixels.
        output_size: (height, width) of the crop.

    Returns:
        float32 [..., 4, 2], (x, y) image pixels of the crop points (-0.5, -0.5),
        (W - 0.5, -0.5), (-0.5, H - 0.5), (W - 0.5, H - 0.5). Bilinear sampling reads at most
        one pixel beyond their bounding box.
    """
    out_h, out_w = output_size
    corners = [[-0.5, -0.5], [out_w - 0.5, -0.5], [-0.5, out_h - 0.5], [out_w - 0.5, out_h - 0.5]]
    return apply_affine(ops.convert_to_tensor(corners, "float32"), invert_affine(matrix))


def cut_crops(image, matrices, output_size):
    """Cut M crops out of one image: bilinear, zero outside the image, rounded to uint8.

    Crop pixel (i, j) (column, row) takes the image's value at `M^-1 (i, j)`, bilinearly
    interpolated between the four nearest pixel centres, pixels outside the image counting as 0
    (`cv2.warpAffine` with `INTER_LINEAR` and a black `BORDER_CONSTANT` does the same, with
    1/32-pixel fixed-point weights, so the two agree to one grey level). Values are rounded
    half to even, as `tf.round`.

    Why not `keras.ops.image`: `affine_transform` returns the input's size, and
    `map_coordinates` (which can return another size) needs the image's height and width
    statically on the TensorFlow backend, which a serving signature for any image size
    lacks. This is the same bilinear rule written with `take` on the flattened image.

    Args:
        image: uint8 [h, w, C], any size (may be dynamic in a graph); C static.
        matrices: float [M, 2, 3], image pixels -> crop pixels (`affine_matrix`).
        output_size: (height, width) of the crops, Python ints.

    Returns:
        uint8 [M, height, width, C].
    """
    out_h, out_w = output_size
    pixels = _float(image)
    inverse = invert_affine(matrices)
    columns = ops.reshape(ops.arange(out_w, dtype="float32"), (1, 1, out_w))
    rows = ops.reshape(ops.arange(out_h, dtype="float32"), (1, out_h, 1))

    def coefficient(i, j):
        return ops.reshape(inverse[:, i, j], (-1, 1, 1))

    x = coefficient(0, 0) * columns + coefficient(0, 1) * rows + coefficient(0, 2)
    y = coefficient(1, 0) * columns + coefficient(1, 1) * rows + coefficient(1, 2)
    return ops.cast(ops.clip(ops.round(_bilinear_zero_outside(pixels, x, y)), 0.0, 255.0),
                    "uint8")


def _bilinear_zero_outside(pixels, x, y):
    """float [h, w, C] sampled at (x, y) [...] -> [..., C]; pixels outside the image are 0."""
    height, width, channels = ops.shape(pixels)
    # Row h * w of `flat` is the zero that every outside neighbour reads.
    flat = ops.concatenate([ops.reshape(pixels, (-1, channels)),
                            ops.zeros((1, channels), "float32")], axis=0)
    outside_index = height * width
    # Far-away positions are clipped to just beyond the border: they stay outside (all four
    # neighbours read 0) and their integer parts cannot overflow.
    x = ops.clip(x, -2.0, _float(width) + 1.0)
    y = ops.clip(y, -2.0, _float(height) + 1.0)
    x0, y0 = ops.floor(x), ops.floor(y)
    fx, fy = x - x0, y - y0
    x0, y0 = ops.cast(x0, "int32"), ops.cast(y0, "int32")
    total = 0.0
    for dy, weight_y in ((0, 1.0 - fy), (1, fy)):
        for dx, weight_x in ((0, 1.0 - fx), (1, fx)):
            column, row = x0 + dx, y0 + dy
            inside = (column >= 0) & (column < width) & (row >= 0) & (row < height)
            index = ops.where(inside, row * width + column, outside_index)
            total = total + ops.take(flat, index, axis=0) * ops.expand_dims(
                weight_x * weight_y, -1)
    return total


def crop_to_normalized(points, input_size):
    """Crop pixels -> normalised [0, 1] coordinates (the TFLite MoveNet-style output).

    Args:
        points: float [..., 2], (x, y) in crop pixels, pixel centres at integers.
        input_size: (height, width) of the crop.

    Returns:
        float32 [..., 2], (x, y) with `x = (x_px + 0.5) / W`, `y = (y_px + 0.5) / H`: 0 and 1
        are the crop's outer pixel edges.
    """
    height, width = input_size
    return (_float(points) + 0.5) / ops.convert_to_tensor([width, height], "float32")


def normalized_to_crop(points, input_size):
    """Normalised [0, 1] (x, y) -> crop pixels, `x_px = x * W - 0.5` (inverse of
    `crop_to_normalized`): float [..., 2] -> float32 [..., 2]."""
    height, width = input_size
    return _float(points) * ops.convert_to_tensor([width, height], "float32") - 0.5


def normalized_formula(input_size) -> str:
    """`crop_to_normalized` and its inverse in words, with the crop's numbers (export JSON)."""
    height, width = input_size
    return (f"y = (y_px + 0.5) / {height}, x = (x_px + 0.5) / {width}; "
            "pixels back: x_px = x * W - 0.5, y_px = y * H - 0.5")
