"""Augmentation sampling (augment.py), numpy only: the official recipe's draws."""

import numpy as np
import pytest
from scipy.stats import norm

from skelpose_tf.crop_geometry import fix_aspect_ratio
from skelpose_tf.data.augment import AugmentConfig, half_body_region, sample_augmentation
from skelpose_tf.keypoints import COCO


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
    center, size = half_body_region(keypoints, labelled, COCO.upper_body, 1.5, True)
    np.testing.assert_allclose(center, [25, 25])
    np.testing.assert_allclose(size, [45, 15])  # 30 x 10, x1.5
    # as cut: 30 x 10 -> height 40 -> x1.5
    np.testing.assert_allclose(np.asarray(fix_aspect_ratio(size, 0.75)), [45, 60])
    center, size = half_body_region(keypoints, labelled, COCO.upper_body, 1.5, False)
    np.testing.assert_allclose(center, [15, 130])
    np.testing.assert_allclose(np.asarray(fix_aspect_ratio(size, 0.75)), [67.5, 90])
    # the lower body has only 2 points: falls back to the upper body even when not preferred
    labelled[15] = False
    center, _ = half_body_region(keypoints, labelled, COCO.upper_body, 1.5, False)
    np.testing.assert_allclose(center, [25, 25])
    # coinciding keypoints: no region
    keypoints[[0, 5, 6]] = [7, 9]
    assert half_body_region(keypoints, labelled, COCO.upper_body, 1.5, True) is None


def test_no_augmentation_keeps_the_record_region():
    keypoints, visibility = _person()
    for seed in range(5):
        aug = sample_augmentation(np.random.default_rng(seed), [50, 60], [75, 100], keypoints,
                                  visibility, COCO.upper_body, AugmentConfig.none())
        np.testing.assert_allclose(aug.center, [50, 60])
        np.testing.assert_allclose(aug.scale, [75, 100])
        assert aug.rotation == 0.0 and not aug.flip


def test_augmentation_frequencies_and_ranges_follow_the_official_recipe():
    keypoints, visibility = _person()
    config = AugmentConfig.coco()
    rng = np.random.default_rng(5)
    draws = [sample_augmentation(rng, [200, 200], [75, 100], keypoints, visibility,
                                 COCO.upper_body, config) for _ in range(6000)]
    half_body = np.asarray([not np.allclose(d.center, [200, 200]) for d in draws])
    rotations = np.asarray([d.rotation for d in draws])
    # the regions as cut (half-body regions get the input's aspect ratio then)
    regions = np.asarray(fix_aspect_ratio(np.stack([d.scale for d in draws]), 0.75))
    factors = regions[:, 1] / regions[:, 0]
    flips = np.asarray([d.flip for d in draws])
    assert abs(half_body.mean() - 0.3) < 0.025
    assert abs((rotations != 0).mean() - 0.6) < 0.025
    assert np.abs(rotations).max() <= 90.0 and np.abs(rotations).max() > 80.0
    assert abs(flips.mean() - 0.5) < 0.025
    np.testing.assert_allclose(factors, 100 / 75, rtol=1e-5)  # aspect ratio kept
    full = ~half_body
    # a record region keeps its aspect ratio: the fix leaves it as it is (to float32 rounding)
    np.testing.assert_allclose(np.stack([d.scale for d in draws])[full], regions[full], rtol=1e-6)
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
                                  visibility, COCO.upper_body, config)
        np.testing.assert_allclose(aug.center, [200, 200])


def test_mpii_recipe_and_config_validation():
    mpii = AugmentConfig.mpii()
    assert (mpii.scale_factor, mpii.rotation_factor, mpii.half_body_prob) == (0.25, 30.0, 0.0)
    with pytest.raises(ValueError, match="flip_prob=1.5"):
        AugmentConfig(flip_prob=1.5)
    with pytest.raises(ValueError, match="scale_factor=1.0"):
        AugmentConfig(scale_factor=1.0)
