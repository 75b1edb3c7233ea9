"""`skelpose_tf.crop_geometry`: hand-computed regions and matrices, independent oracles (cv2, a
numpy reference), eager vs graph, the in-graph cutter vs `cv2.warpAffine`, round trips.

The functions compute in float32, so matrices agree with float64 oracles to ~1e-5 relative.
"""

import math

import cv2
import numpy as np
import pytest
import tensorflow as tf

from data_fixtures import blob_image
from skelpose_tf import crop_geometry as cg


def np_(value):
    return np.asarray(value)


# box -> centre / scale ---------------------------------------------------------------------------

@pytest.mark.parametrize("box, aspect, padding, center, scale", [
    # narrow box: width grows to 0.75 * 80 = 60, then x1.25
    ([10, 20, 30, 80], 0.75, 1.25, [25, 60], [75, 100]),
    # wide box: height grows to 120 / 0.75 = 160
    ([0, 0, 120, 40], 0.75, 1.25, [60, 20], [150, 200]),
    # exact aspect, no padding
    ([5, 5, 30, 40], 0.75, 1.0, [20, 25], [30, 40]),
    # square input
    ([100, 50, 64, 32], 1.0, 1.25, [132, 66], [80, 80]),
])
def test_box_to_center_scale_hand_values(box, aspect, padding, center, scale):
    got_center, got_scale = cg.box_to_center_scale(box, aspect, padding)
    np.testing.assert_allclose(np_(got_center), center)
    np.testing.assert_allclose(np_(got_scale), scale)


def test_box_to_center_scale_is_vectorised_and_pads_by_box_padding():
    assert cg.BOX_PADDING == 1.25
    boxes = np.asarray([[10, 20, 30, 80], [0, 0, 120, 40]], np.float32)
    center, scale = cg.box_to_center_scale(boxes, 0.75)
    np.testing.assert_allclose(np_(center), [[25, 60], [60, 20]])
    np.testing.assert_allclose(np_(scale), [[75, 100], [150, 200]])


def test_fix_aspect_ratio_hand_values_and_idempotence():
    sizes = np.asarray([[30, 80], [120, 40], [0, 10], [10, 0], [60, 80]], np.float32)
    fixed = np_(cg.fix_aspect_ratio(sizes, 0.75))
    np.testing.assert_allclose(fixed, [[60, 80], [120, 160], [7.5, 10], [10, 40 / 3], [60, 80]],
                               rtol=1e-6)
    np.testing.assert_allclose(np_(cg.fix_aspect_ratio(fixed, 0.75)), fixed, rtol=1e-6)


@pytest.mark.parametrize("size", [(256, 0), (0, 192), ("a", 3), (256,)])
def test_input_aspect_ratio_rejects_bad_sizes(size):
    with pytest.raises(ValueError, match="input_size"):
        cg.input_aspect_ratio(size)


# the affine crop ---------------------------------------------------------------------------------

def test_region_maps_onto_the_crop_with_pixel_centres_at_integers():
    # Region 100 x 200 around (50, 80) onto a 32 x 64 (W x H) crop: factor 0.32 both ways.
    matrix = cg.affine_matrix([50.0, 80.0], [100.0, 200.0], 0.0, (64, 32))
    np.testing.assert_allclose(np_(matrix), [[0.32, 0, 15.5 - 16], [0, 0.32, 31.5 - 25.6]],
                               atol=1e-5)
    points = np.asarray([[50, 80], [0, -20], [100, 180]], np.float64)
    expected = [[15.5, 31.5], [-0.5, -0.5], [31.5, 63.5]]  # centre, region edges = crop edges
    np.testing.assert_allclose(np_(cg.apply_affine(points, matrix)), expected, atol=1e-5)


def test_rotation_agrees_with_cv2_rotation_matrix():
    # Independent oracle: cv2.getRotationMatrix2D turns content counter-clockwise for angle > 0;
    # shifting its output so that the centre lands on the crop centre gives our matrix.
    center, size, out = np.asarray([37.3, 51.8]), 90.0, 64
    for angle in (-70.0, -12.5, 0.0, 30.0, 89.0):
        oracle = cv2.getRotationMatrix2D((center[0], center[1]), angle, out / size)
        oracle[:, 2] += (out - 1) / 2 - center
        ours = np_(cg.affine_matrix(center, [size, size], angle, (out, out)))
        np.testing.assert_allclose(ours, oracle, atol=2e-5)


def test_positive_rotation_turns_content_counter_clockwise_on_screen():
    # A point to the right of the centre must move up (smaller y) in the crop.
    matrix = cg.affine_matrix([0.0, 0.0], [10.0, 10.0], 90.0, (10, 10))
    np.testing.assert_allclose(np_(cg.apply_affine([[1.0, 0.0]], matrix)), [[4.5, 3.5]],
                               atol=1e-6)


def test_flip_is_exactly_x_to_w_minus_1_minus_x():
    center, scale, rotation, size = [40.2, 33.1], [60.0, 80.0], 17.0, (64, 48)
    plain = cg.affine_matrix(center, scale, rotation, size)
    flipped = cg.affine_matrix(center, scale, rotation, size, flip=True)
    points = np.random.default_rng(0).uniform(0, 80, (20, 2))
    a = np_(cg.apply_affine(points, plain))
    b = np_(cg.apply_affine(points, flipped))
    np.testing.assert_allclose(b[:, 0], 48 - 1 - a[:, 0], atol=1e-4)
    np.testing.assert_allclose(b[:, 1], a[:, 1], atol=1e-4)


def _reference_matrix(center, scale, rotation, output_size, flip):
    """Plain numpy float64, composed from 3 x 3 steps (not the closed form of the module):
    move the centre to 0, rotate, scale to the crop, move to the crop centre, mirror."""
    out_h, out_w = output_size
    theta = math.radians(rotation)
    to_origin = np.asarray([[1, 0, -center[0]], [0, 1, -center[1]], [0, 0, 1]])
    rotate = np.asarray([[math.cos(theta), math.sin(theta), 0],
                         [-math.sin(theta), math.cos(theta), 0], [0, 0, 1]])
    resize = np.diag([out_w / scale[0], out_h / scale[1], 1.0])
    to_crop = np.asarray([[1, 0, (out_w - 1) / 2], [0, 1, (out_h - 1) / 2], [0, 0, 1]])
    mirror = np.asarray([[-1, 0, out_w - 1], [0, 1, 0], [0, 0, 1]]) if flip else np.eye(3)
    return (mirror @ to_crop @ resize @ rotate @ to_origin)[:2]


def test_matrices_equal_a_numpy_reference_on_random_regions():
    rng = np.random.default_rng(8)
    n = 64
    centers = rng.uniform(-50, 700, (n, 2))
    scales = rng.uniform(10, 500, (n, 2))
    rotations = rng.uniform(-180, 180, n)
    flips = rng.random(n) < 0.5
    got = np_(cg.affine_matrix(centers, scales, rotations, (256, 192), flips))
    expected = np.stack([_reference_matrix(*args, (256, 192), flip) for *args, flip
                         in zip(centers, scales, rotations, flips)])
    # float32: relative error ~1e-7 of the largest term (|a * cx| up to ~100 crop pixels)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
    points = rng.uniform(-100, 800, (n, 17, 2))
    mapped = np_(cg.apply_affine(points, got))
    reference = np.einsum("nij,nkj->nki", expected[:, :, :2], points) + expected[:, None, :, 2]
    np.testing.assert_allclose(mapped, reference, rtol=1e-5, atol=2e-3)
    inverse = np_(cg.invert_affine(got))
    expected_inverse = np.stack([np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2] for m in expected])
    np.testing.assert_allclose(inverse, expected_inverse, rtol=1e-4, atol=1e-3)


def test_a_regions_geometry_does_not_depend_on_the_other_regions_of_the_call():
    # Sharded pipelines cut parts of a global batch: their crops must be bit for bit the same.
    rng = np.random.default_rng(10)
    centers = rng.uniform(0, 600, (64, 2)).astype(np.float32)
    scales = rng.uniform(20, 400, (64, 2)).astype(np.float32)
    rotations = rng.uniform(-90, 90, 64).astype(np.float32)
    flips = rng.random(64) < 0.5
    points = rng.uniform(0, 600, (64, 17, 2)).astype(np.float32)
    together = cg.affine_matrix(centers, scales, rotations, (256, 192), flips)
    mapped = np_(cg.apply_affine(points, together))
    for i in range(0, 64, 7):
        alone = cg.affine_matrix(centers[i:i + 1], scales[i:i + 1], rotations[i:i + 1],
                                 (256, 192), flips[i:i + 1])
        np.testing.assert_array_equal(np_(alone)[0], np_(together)[i])
        np.testing.assert_array_equal(np_(cg.apply_affine(points[i:i + 1], alone))[0], mapped[i])


def test_graph_and_eager_agree():
    rng = np.random.default_rng(9)
    centers = rng.uniform(0, 300, (5, 2)).astype(np.float32)
    scales = rng.uniform(20, 200, (5, 2)).astype(np.float32)
    rotations = rng.uniform(-90, 90, 5).astype(np.float32)
    flips = rng.random(5) < 0.5
    points = rng.uniform(0, 300, (5, 7, 2)).astype(np.float32)

    def geometry(centers, scales, rotations, flips, points):
        matrix = cg.affine_matrix(centers, scales, rotations, (64, 48), flips)
        return (matrix, cg.apply_affine(points, matrix),
                cg.crop_to_image(points, centers, scales, (64, 48)))

    traced = tf.function(geometry, input_signature=[
        tf.TensorSpec([None, 2]), tf.TensorSpec([None, 2]), tf.TensorSpec([None]),
        tf.TensorSpec([None], tf.bool), tf.TensorSpec([None, None, 2])])
    for eager, graph in zip(geometry(centers, scales, rotations, flips, points),
                            traced(centers, scales, rotations, flips, points)):
        np.testing.assert_allclose(np_(eager), graph.numpy(), rtol=1e-6, atol=1e-5)


def test_flipped_warp_equals_mirrored_warp_pixel_for_pixel():
    image = (np.random.default_rng(1).uniform(0, 255, (90, 120, 3))).astype(np.uint8)
    args = ([61.3, 44.6], [70.0, 70.0 * 4 / 3], 23.0, (64, 48))
    plain_matrix = np_(cg.affine_matrix(*args))
    flip_matrix = np_(cg.affine_matrix(*args, flip=True))
    plain = cv2.warpAffine(image, plain_matrix, (48, 64), flags=cv2.INTER_LINEAR)
    flipped = cv2.warpAffine(image, flip_matrix, (48, 64), flags=cv2.INTER_LINEAR)
    # cv2 interpolates at 1/32 pixel steps, so a mirrored sample may differ by one grey level
    # (a one-pixel convention error would differ by about 50 on this noise image).
    diff = np.abs(flipped.astype(int) - plain[:, ::-1].astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.01
    cut = np_(cg.cut_crops(image, np.stack([plain_matrix, flip_matrix]), (64, 48)))
    diff = np.abs(cut[1].astype(int) - cut[0][:, ::-1].astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.01


def test_warped_blob_lands_where_the_matrix_maps_its_centre():
    # A Gaussian blob at a sub-pixel position; after scaling x2, rotating and flipping, the
    # intensity centroid of the crop's blob must sit where apply_affine puts the point.
    point = np.asarray([[30.3, 21.7]])
    image = blob_image(50, 60, point, [(255, 255, 255)], sigma=1.5)
    matrix = np_(cg.affine_matrix([31.0, 24.0], [24.0, 32.0], 35.0, (64, 48), flip=True))
    expected = np_(cg.apply_affine(point, matrix))[0]
    ys, xs = np.mgrid[0:64, 0:48]
    near = (xs - expected[0]) ** 2 + (ys - expected[1]) ** 2 < 10**2
    for crop in (cv2.warpAffine(image, matrix, (48, 64), flags=cv2.INTER_LINEAR),
                 np_(cg.cut_crops(image, matrix[None], (64, 48)))[0]):
        weights = crop[..., 0].astype(float) * near
        centroid = [(weights * xs).sum() / weights.sum(), (weights * ys).sum() / weights.sum()]
        np.testing.assert_allclose(centroid, expected, atol=0.15)


def test_affine_matrix_broadcasts_over_people():
    centers = np.asarray([[10.0, 20.0], [30.0, 40.0], [50.0, 60.0]])
    scales = np.asarray([[30.0, 40.0], [60.0, 80.0], [15.0, 20.0]])
    rotations = np.asarray([0.0, 10.0, -20.0])
    flips = np.asarray([False, True, False])
    batch = np_(cg.affine_matrix(centers, scales, rotations, (64, 48), flips))
    assert batch.shape == (3, 2, 3)
    for i in range(3):
        single = cg.affine_matrix(centers[i], scales[i], rotations[i], (64, 48), flips[i])
        np.testing.assert_allclose(batch[i], np_(single), rtol=1e-6)
    # a scalar rotation and flip apply to every region
    same = np_(cg.affine_matrix(centers, scales, 10.0, (64, 48), True))
    np.testing.assert_allclose(same[1], batch[1], rtol=1e-6)


def test_invert_affine_round_trip():
    matrix = cg.affine_matrix([12.0, 7.5], [40.0, 30.0], 33.0, (48, 64), flip=True)
    points = np.random.default_rng(2).uniform(-50, 100, (4, 5, 2))
    back = cg.apply_affine(cg.apply_affine(points, matrix), cg.invert_affine(matrix))
    np.testing.assert_allclose(np_(back), points, atol=1e-4)


def test_crop_corners_hand_values():
    # Region 100 x 200 around (50, 80): the crop's outer corners are the region's corners.
    matrix = cg.affine_matrix([50.0, 80.0], [100.0, 200.0], 0.0, (64, 32))
    np.testing.assert_allclose(np_(cg.crop_corners(matrix, (64, 32))),
                               [[0, -20], [100, -20], [0, 180], [100, 180]], atol=1e-4)


def test_crop_to_image_matches_the_closed_form_and_inverts_the_crop():
    rng = np.random.default_rng(3)
    centers = rng.uniform(50, 500, (4, 2))
    scales = np.stack([rng.uniform(40, 300, 4)] * 2, -1) * [0.75, 1.0]
    crop_points = rng.uniform(0, 192, (4, 17, 2))
    got = np_(cg.crop_to_image(crop_points, centers, scales, (256, 192)))
    # x_image = (x_crop - (W - 1) / 2) * scale_w / W + center_x, the same for y with H.
    expected = ((crop_points - [95.5, 127.5]) * (scales / [192, 256])[:, None, :]
                + centers[:, None, :])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-3)
    # x_crop = (x_image - center_x) * W / scale_w + (W - 1) / 2: image -> crop -> image
    image_points = rng.uniform(0, 600, (4, 17, 2))
    crop = np_(cg.image_to_crop(image_points, centers, scales, (256, 192)))
    np.testing.assert_allclose(
        crop, (image_points - centers[:, None]) * ([192, 256] / scales)[:, None] + [95.5, 127.5],
        rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(np_(cg.crop_to_image(crop, centers, scales, (256, 192))),
                               image_points, atol=1e-3)


# cutting crops -----------------------------------------------------------------------------------

def test_cut_crops_equals_cv2_warp_affine_on_random_regions():
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (120, 100, 3), dtype=np.uint8)
    n = 12
    centers = np.concatenate([rng.uniform(0, 100, (n - 2, 2)), [[-40.0, 60.0], [50.0, 60.0]]])
    sides = np.concatenate([rng.uniform(10, 150, n - 2), [50.0, 500.0]])  # outside; larger
    scales = np.stack([sides * 0.75, sides], -1)
    matrices = np_(cg.affine_matrix(centers, scales, rng.uniform(-90, 90, n), (64, 48),
                                    rng.random(n) < 0.5))
    crops = np_(cg.cut_crops(image, matrices, (64, 48)))
    assert crops.shape == (n, 64, 48, 3) and crops.dtype == np.uint8
    for crop, matrix in zip(crops, matrices):
        expected = cv2.warpAffine(image, matrix, (48, 64), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        difference = np.abs(crop.astype(int) - expected.astype(int))
        assert difference.max() <= 1 and (difference > 0).mean() < 0.01
    assert not crops[-2][:, :12].any()  # region left of the image: black


def test_cut_crops_hand_values():
    image = np.zeros((4, 5, 1), np.uint8)
    image[1, 2] = 200
    image[2, 2] = 100
    image[0, 4] = 255
    # Identity region: crop pixel = image pixel; half-pixel shift right: mean of neighbours.
    identity = cg.affine_matrix([2.0, 1.5], [5.0, 4.0], 0.0, (4, 5))
    shifted = cg.affine_matrix([2.5, 1.5], [5.0, 4.0], 0.0, (4, 5))
    crops = np_(cg.cut_crops(image, tf.stack([identity, shifted]), (4, 5)))
    np.testing.assert_array_equal(crops[0], image)
    assert crops[1][1, 1, 0] == 100 and crops[1][1, 2, 0] == 100  # (0 + 200) / 2, (200 + 0) / 2
    assert crops[1][2, 1, 0] == 50 and crops[1][1, 4, 0] == 0  # (0 + 100) / 2; 0 and outside
    assert crops[1][0, 4, 0] == 128  # (255 + outside 0) / 2 = 127.5, rounded half to even


def test_cut_crops_in_a_graph_takes_any_image_size():
    @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8),
                                  tf.TensorSpec([None, 4], tf.float32)])
    def cut(image, boxes):
        center, scale = cg.box_to_center_scale(boxes, 48 / 64)
        return cg.cut_crops(image, cg.affine_matrix(center, scale, 0.0, (64, 48)), (64, 48))

    image = np.random.default_rng(5).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    boxes = np.asarray([[10, 12, 30, 40], [-20, -5, 40, 40]], np.float32)
    center, scale = cg.box_to_center_scale(boxes, 48 / 64)
    eager = np_(cg.cut_crops(image, cg.affine_matrix(center, scale, 0.0, (64, 48)), (64, 48)))
    np.testing.assert_array_equal(cut(image, boxes).numpy(), eager)
    assert cut(image, np.zeros((0, 4), np.float32)).shape == (0, 64, 48, 3)
    empty = cut(np.zeros((0, 0, 3), np.uint8), boxes[:1]).numpy()
    assert empty.shape == (1, 64, 48, 3) and not empty.any()


# normalised coordinates ---------------------------------------------------------------------------

def test_normalized_coordinates_hand_values_and_round_trip():
    size = (64, 48)  # H, W
    pixels = np.asarray([[-0.5, -0.5], [47.5, 63.5], [23.5, 31.5], [0.0, 0.0]], np.float32)
    normalized = np_(cg.crop_to_normalized(pixels, size))
    np.testing.assert_allclose(normalized, [[0, 0], [1, 1], [0.5, 0.5], [0.5 / 48, 0.5 / 64]],
                               atol=1e-7)
    points = np.random.default_rng(6).uniform(-1, 70, (3, 17, 2)).astype(np.float32)
    back = np_(cg.normalized_to_crop(cg.crop_to_normalized(points, size), size))
    np.testing.assert_allclose(back, points, atol=1e-5)
    assert cg.normalized_formula(size).startswith("y = (y_px + 0.5) / 64, x = (x_px + 0.5) / 48")
