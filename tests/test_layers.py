"""Custom layers: the shared layer checks plus hand-computed arithmetic."""

import numpy as np
import pytest

from layer_test_case import run_layer_test
from skelpose_tf.keypoints import COCO
from skelpose_tf.models.image_normalization import ImageNormalization
from skelpose_tf.models.skeletal_attention import SkeletalAttention


def test_image_normalization_layer_checks(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (2, 8, 6, 3)).astype("float32")
    run_layer_test(ImageNormalization, {}, images, (2, 8, 6, 3), 0, tmp_path)


def test_image_normalization_values():
    images = np.zeros((1, 1, 2, 3), np.uint8)
    images[0, 0, 1] = 255
    out = np.asarray(ImageNormalization()(images))
    # Hand computed: (0 - 0.485) / 0.229 = -2.117904; (1 - 0.406) / 0.225 = 2.64
    np.testing.assert_allclose(out[0, 0, 0, 0], -2.117904, atol=1e-5)
    np.testing.assert_allclose(out[0, 0, 1, 2], 2.64, atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(ImageNormalization()(images.astype("float32"))), out, atol=1e-6
    )


def test_skeletal_attention_layer_checks(tmp_path):
    rng = np.random.default_rng(0)
    branches = [
        rng.normal(size=(2, 8, 8, 32)).astype("float32"),
        rng.normal(size=(2, 4, 4, 64)).astype("float32"),
        rng.normal(size=(2, 2, 2, 128)).astype("float32"),
    ]
    kwargs = dict(num_links=COCO.num_links, upper_links=COCO.upper_link_indices,
                  lower_links=COCO.lower_link_indices)
    expected = {"branch0": (2, 8, 8, 32), "branch1": (2, 4, 4, 64), "branch2": (2, 2, 2, 128),
                "skeletal_heatmaps": (2, 8, 8, 16)}
    run_layer_test(SkeletalAttention, kwargs, branches, expected, 2, tmp_path)


def _hand_case(t0):
    """Branch 0 channel s (s < 4) is the constant s + 1, except 9 at pixel (0, 0) of channel 0."""
    b0 = np.zeros((1, 4, 4, t0), np.float32)
    for s in range(4):
        b0[..., s] = s + 1
    b0[0, 0, 0, 0] = 9.0
    b1 = np.full((1, 2, 2, 4), 100.0, np.float32)
    b2 = np.full((1, 1, 1, 3), 200.0, np.float32)
    layer = SkeletalAttention(4, upper_links=(0, 1), lower_links=(2, 3))
    layer.build([b.shape for b in (b0, b1, b2)])
    kernel = np.zeros((1, 1, t0, 4), np.float32)
    kernel[0, 0, range(4), range(4)] = 1.0  # H_s[s] = branch0[s]
    layer.set_weights([kernel, np.array([0.5, 0, 0, 0], np.float32)])
    return {k: np.asarray(v) for k, v in layer([b0, b1, b2]).items()}


def test_skeletal_attention_hand_computed():
    out = _hand_case(t0=8)
    # H_s: link 0 = 1.5 (9.5 at (0,0)), link 1 = 2, link 2 = 3, link 3 = 4.
    np.testing.assert_allclose(out["skeletal_heatmaps"][0, 0, 0], [9.5, 2, 3, 4])
    np.testing.assert_allclose(out["skeletal_heatmaps"][0, 3, 3], [1.5, 2, 3, 4])
    # Branch 0: channel c += H_s[c % 4] (tiling order), on top of the input.
    np.testing.assert_allclose(out["branch0"][0, 0, 0], [18.5, 4, 6, 8, 9.5, 2, 3, 4])
    np.testing.assert_allclose(out["branch0"][0, 1, 1], [2.5, 4, 6, 8, 1.5, 2, 3, 4])
    # H_u = H_s0 + H_s1 = 3.5 (11.5 at (0,0)); 2x2 average: (11.5 + 3 * 3.5) / 4 = 5.5.
    # H_l = H_s2 + H_s3 = 7. Branch 1 channels alternate H_u, H_l.
    np.testing.assert_allclose(out["branch1"][0, 0, 0], [105.5, 107, 105.5, 107])
    np.testing.assert_allclose(out["branch1"][0, 1, 1], [103.5, 107, 103.5, 107])
    # H_f = H_u + H_l = 10.5 (18.5 at (0,0)); 4x4 average: (18.5 + 15 * 10.5) / 16 = 11.
    np.testing.assert_allclose(out["branch2"][0, 0, 0], [211, 211, 211])


def test_skeletal_attention_channels_not_multiple_of_links():
    out = _hand_case(t0=6)  # ceil(6 / 4) = 2 tiles, sliced to 6 channels: s0..s3, s0, s1
    np.testing.assert_allclose(out["branch0"][0, 0, 0], [18.5, 4, 6, 8, 9.5, 2])


def test_skeletal_attention_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_links"):
        SkeletalAttention(0, (), ())
    with pytest.raises(ValueError, match="out of range"):
        SkeletalAttention(4, (0, 4), (1,))
    layer = SkeletalAttention(4, (0,), (1,))
    with pytest.raises(ValueError, match="1/2 and 1/4"):
        layer.build([(1, 8, 8, 8), (1, 8, 8, 8), (1, 2, 2, 8)])
