"""Crop geometry (transforms.py) and augmentation sampling (augment.py), numpy only."""

import cv2
import numpy as np
import pytest
from scipy.stats import norm

from data_fixtures import blob_image
from skelpose_tf.data import transforms
from skelpose_tf.data.augment import AugmentConfig, half_body_region, sample_augmentation
from skelpose_tf.keypoints import COCO


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
    got_center, got_scale = transforms.box_to_center_scale(box, aspect, padding)
    np.testing.assert_allclose(got_center, center)
    np.testing.assert_allclose(got_scale, scale)


def test_box_to_center_scale_is_vectorised():
    boxes = np.asarray([[10, 20, 30, 80], [0, 0, 120, 40]], np.float32)
    center, scale = transforms.box_to_center_scale(boxes, 0.75)
    np.testing.assert_allclose(center, [[25, 60], [60, 20]])
    np.testing.assert_allclose(scale, [[75, 100], [150, 200]])


@pytest.mark.parametrize("size", [(256, 0), (0, 192), ("a", 3), (256,)])
def test_input_aspect_ratio_rejects_bad_sizes(size):
    with pytest.raises(ValueError, match="input_size"):
        transforms.input_aspect_ratio(size)


# the affine crop ---------------------------------------------------------------------------------

def test_region_maps_onto_the_crop_with_pixel_centres_at_integers():
    # Region 100 x 200 around (50, 80) onto a 32 x 64 (W x H) crop: factor 0.32 both ways.
    matrix = transforms.affine_matrix([50.0, 80.0], [100.0, 200.0], 0.0, (64, 32))
    points = np.asarray([[50, 80], [0, -20], [100, 180]], np.float64)
    expected = [[15.5, 31.5], [-0.5, -0.5], [31.5, 63.5]]  # centre, region edges = crop edges
    np.testing.assert_allclose(transforms.apply_affine(points, matrix), expected, atol=1e-5)


def test_rotation_agrees_with_cv2_rotation_matrix():
    # Independent oracle: cv2.getRotationMatrix2D turns content counter-clockwise for angle > 0;
    # shifting its output so that the centre lands on the crop centre gives our matrix.
    center, size, out = np.asarray([37.3, 51.8]), 90.0, 64
    for angle in (-70.0, -12.5, 0.0, 30.0, 89.0):
        oracle = cv2.getRotationMatrix2D((center[0], center[1]), angle, out / size)
        oracle[:, 2] += (out - 1) / 2 - center
        ours = transforms.affine_matrix(center, [size, size], angle, (out, out))
        np.testing.assert_allclose(ours, oracle, atol=1e-9)


def test_positive_rotation_turns_content_counter_clockwise_on_screen():
    # A point to the right of the centre must move up (smaller y) in the crop.
    matrix = transforms.affine_matrix([0.0, 0.0], [10.0, 10.0], 90.0, (10, 10))
    np.testing.assert_allclose(transforms.apply_affine([[1.0, 0.0]], matrix), [[4.5, 3.5]],
                               atol=1e-6)


def test_flip_is_exactly_x_to_w_minus_1_minus_x():
    center, scale, rotation, size = [40.2, 33.1], [60.0, 80.0], 17.0, (64, 48)
    plain = transforms.affine_matrix(center, scale, rotation, size)
    flipped = transforms.affine_matrix(center, scale, rotation, size, flip=True)
    points = np.random.default_rng(0).uniform(0, 80, (20, 2))
    a = transforms.apply_affine(points, plain)
    b = transforms.apply_affine(points, flipped)
    np.testing.assert_allclose(b[:, 0], 48 - 1 - a[:, 0], atol=1e-4)
    np.testing.assert_allclose(b[:, 1], a[:, 1], atol=1e-4)


def test_flipped_warp_equals_mirrored_warp_pixel_for_pixel():
    image = (np.random.default_rng(1).uniform(0, 255, (90, 120, 3))).astype(np.uint8)
    args = ([61.3, 44.6], [70.0, 70.0 * 4 / 3], 23.0, (64, 48))
    plain = cv2.warpAffine(image, transforms.affine_matrix(*args), (48, 64),
                           flags=cv2.INTER_LINEAR)
    flipped = cv2.warpAffine(image, transforms.affine_matrix(*args, flip=True), (48, 64),
                             flags=cv2.INTER_LINEAR)
    # cv2 interpolates at 1/32 pixel steps, so a mirrored sample may differ by one grey level
    # (a one-pixel convention error would differ by about 50 on this noise image).
    diff = np.abs(flipped.astype(int) - plain[:, ::-1].astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.01


def test_warped_blob_lands_where_the_matrix_maps_its_centre():
    # A Gaussian blob at a sub-pixel position; after scaling x2, rotating and flipping, the
    # intensity centroid of the crop's blob must sit where apply_affine puts the point.
    point = np.asarray([[30.3, 21.7]])
    image = blob_image(50, 60, point, [(255, 255, 255)], sigma=1.5)
    matrix = transforms.affine_matrix([31.0, 24.0], [24.0, 32.0], 35.0, (64, 48), flip=True)
    crop = cv2.warpAffine(image, matrix, (48, 64), flags=cv2.INTER_LINEAR)[..., 0].astype(float)
    expected = transforms.apply_affine(point, matrix)[0]
    ys, xs = np.mgrid[0:64, 0:48]
    near = (xs - expected[0]) ** 2 + (ys - expected[1]) ** 2 < 10**2
    weights = crop * near
    centroid = [(weights * xs).sum() / weights.sum(), (weights * ys).sum() / weights.sum()]
    np.testing.assert_allclose(centroid, expected, atol=0.15)


@pytest.mark.parametrize("center, scale, rotation, flip", [
    ([60.0, 45.0], [30.0, 40.0], 0.0, False),  # small region inside the image
    ([60.0, 45.0], [60.0, 80.0], 37.0, True),  # rotated
    ([5.0, 80.0], [60.0, 80.0], -20.0, False),  # cut by the image border
    ([60.0, 45.0], [600.0, 800.0], 10.0, False),  # larger than the image
])
def test_warping_only_the_source_window_gives_the_same_crop(center, scale, rotation, flip):
    image = np.random.default_rng(6).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    matrix = transforms.affine_matrix(center, scale, rotation, (64, 48), flip)
    full = cv2.warpAffine(image, matrix, (48, 64), flags=cv2.INTER_LINEAR)
    x0, y0, x1, y1 = transforms.source_window(matrix, (64, 48), image.shape[:2])
    assert 0 <= x0 <= x1 <= 119 and 0 <= y0 <= y1 <= 89
    window = cv2.warpAffine(image[y0 : y1 + 1, x0 : x1 + 1],
                            transforms.shift_source(matrix, x0, y0), (48, 64),
                            flags=cv2.INTER_LINEAR)
    assert np.abs(window.astype(int) - full.astype(int)).max() <= 1


def test_source_window_bounds():
    matrix = transforms.affine_matrix([500.0, 45.0], [30.0, 40.0], 0.0, (64, 48))
    assert transforms.source_window(matrix, (64, 48), (90, 120)) is None
    # region x in [54, 66], y in [37, 53]: one more pixel on each side for bilinear sampling
    matrix = transforms.affine_matrix([60.0, 45.0], [12.0, 16.0], 0.0, (64, 48))
    assert transforms.source_window(matrix, (64, 48), (90, 120)) == (53, 36, 67, 54)


def test_affine_matrix_broadcasts_over_people():
    centers = np.asarray([[10.0, 20.0], [30.0, 40.0], [50.0, 60.0]])
    scales = np.asarray([[30.0, 40.0], [60.0, 80.0], [15.0, 20.0]])
    rotations = np.asarray([0.0, 10.0, -20.0])
    flips = np.asarray([False, True, False])
    batch = transforms.affine_matrix(centers, scales, rotations, (64, 48), flips)
    assert batch.shape == (3, 2, 3)
    for i in range(3):
        single = transforms.affine_matrix(centers[i], scales[i], rotations[i], (64, 48), flips[i])
        np.testing.assert_allclose(batch[i], single)


def test_invert_affine_round_trip():
    matrix = transforms.affine_matrix([12.0, 7.5], [40.0, 30.0], 33.0, (48, 64), flip=True)
    points = np.random.default_rng(2).uniform(-50, 100, (4, 5, 2))
    back = transforms.apply_affine(transforms.apply_affine(points, matrix),
                                   transforms.invert_affine(matrix))
    np.testing.assert_allclose(back, points, atol=1e-4)


def test_crop_to_image_matches_the_closed_form_and_inverts_the_crop():
    rng = np.random.default_rng(3)
    centers = rng.uniform(50, 500, (4, 2))
    scales = np.stack([rng.uniform(40, 300, 4)] * 2, -1) * [0.75, 1.0]
    crop_points = rng.uniform(0, 192, (4, 17, 2))
    got = transforms.crop_to_image(crop_points, centers, scales, (256, 192))
    # x_image = (x_crop - (W - 1) / 2) * scale_w / W + center_x, the same for y with H.
    expected = ((crop_points - [95.5, 127.5]) * (scales / [192, 256])[:, None, :]
                + centers[:, None, :])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-3)
    image_points = rng.uniform(0, 600, (4, 17, 2))
    matrices = transforms.affine_matrix(centers, scales, np.zeros(4), (256, 192))
    crop = transforms.apply_affine(image_points, matrices)
    np.testing.assert_allclose(transforms.crop_to_image(crop, centers, scales, (256, 192)),
                               image_points, atol=1e-3)


# augmentation sampling --------------------------------------------------------------------------

def _person(num_labelled=17):
    rng = np.random.default_rng(4)
    keypoints = rng.uniform(100, 300, (17, 2)).astype(np.float32)
    visibility = np.zeros(17, np.float32)
    visibility[:num_labelled] = 2
    return keypoints, visibility


def test_half_body_region_hand_values():
    keypoints = np.zeros((17, 2), np.float32)
    labelled = np.zeros(17, bool)
    # upper body (COCO 0-10): three points spanning x 10..40, y 20..30
    keypoints[[0, 5, 6]] = [[10, 20], [40, 30], [25, 25]]
    # lower body: three points spanning x 0..30, y 100..160
    keypoints[[11, 13, 15]] = [[0, 100], [30, 160], [15, 130]]
    labelled[[0, 5, 6, 11, 13, 15]] = True
    center, scale = half_body_region(keypoints, labelled, COCO.upper_body, 0.75, 1.5, True)
    np.testing.assert_allclose(center, [25, 25])
    np.testing.assert_allclose(scale, [45, 60])  # 30 x 10 -> height 40 -> x1.5
    center, scale = half_body_region(keypoints, labelled, COCO.upper_body, 0.75, 1.5, False)
    np.testing.assert_allclose(center, [15, 130])
    np.testing.assert_allclose(scale, [67.5, 90])  # 30 x 60 -> width 45 -> x1.5
    # the lower body has only 2 points: falls back to the upper body even when not preferred
    labelled[15] = False
    center, _ = half_body_region(keypoints, labelled, COCO.upper_body, 0.75, 1.5, False)
    np.testing.assert_allclose(center, [25, 25])


def test_no_augmentation_keeps_the_record_region():
    keypoints, visibility = _person()
    for seed in range(5):
        aug = sample_augmentation(np.random.default_rng(seed), [50, 60], [75, 100], keypoints,
                                  visibility, COCO.upper_body, 0.75, AugmentConfig.none())
        np.testing.assert_allclose(aug.center, [50, 60])
        np.testing.assert_allclose(aug.scale, [75, 100])
        assert aug.rotation == 0.0 and not aug.flip


def test_augmentation_frequencies_and_ranges_follow_the_official_recipe():
    keypoints, visibility = _person()
    config = AugmentConfig.coco()
    rng = np.random.default_rng(5)
    draws = [sample_augmentation(rng, [200, 200], [75, 100], keypoints, visibility,
                                 COCO.upper_body, 0.75, config) for _ in range(6000)]
    half_body = np.asarray([not np.allclose(d.center, [200, 200]) for d in draws])
    rotations = np.asarray([d.rotation for d in draws])
    factors = np.asarray([d.scale[1] / d.scale[0] for d in draws])
    flips = np.asarray([d.flip for d in draws])
    assert abs(half_body.mean() - 0.3) < 0.025
    assert abs((rotations != 0).mean() - 0.6) < 0.025
    assert np.abs(rotations).max() <= 90.0 and np.abs(rotations).max() > 80.0
    assert abs(flips.mean() - 0.5) < 0.025
    np.testing.assert_allclose(factors, 100 / 75, rtol=1e-5)  # aspect ratio kept
    full = ~half_body
    scale_factors = np.asarray([d.scale[0] / 75 for d in draws])[full]
    assert scale_factors.min() >= 0.65 - 1e-6 and scale_factors.max() <= 1.35 + 1e-6
    # randn clipped at one sf: P(factor at a bound) = 2 * (1 - Phi(1)) = 0.317
    at_bounds = np.isclose(scale_factors, 0.65) | np.isclose(scale_factors, 1.35)
    assert abs(at_bounds.mean() - 2 * norm.sf(1.0)) < 0.03
    # quirk: the upper body is chosen when randn < 0.5, i.e. with probability Phi(0.5) = 0.69
    upper_center = keypoints[list(COCO.upper_body)].mean(0)
    chose_upper = np.asarray([np.allclose(d.center, upper_center) for d in draws])[half_body]
    assert abs(chose_upper.mean() - norm.cdf(0.5)) < 0.04


def test_half_body_needs_more_than_eight_labelled_keypoints():
    keypoints, visibility = _person(num_labelled=8)
    config = AugmentConfig(half_body_prob=1.0)
    for seed in range(20):
        aug = sample_augmentation(np.random.default_rng(seed), [200, 200], [75, 100], keypoints,
                                  visibility, COCO.upper_body, 0.75, config)
        np.testing.assert_allclose(aug.center, [200, 200])


def test_mpii_recipe_and_config_validation():
    mpii = AugmentConfig.mpii()
    assert (mpii.scale_factor, mpii.rotation_factor, mpii.half_body_prob) == (0.25, 30.0, 0.0)
    with pytest.raises(ValueError, match="flip_prob=1.5"):
        AugmentConfig(flip_prob=1.5)
    with pytest.raises(ValueError, match="scale_factor=1.0"):
        AugmentConfig(scale_factor=1.0)
