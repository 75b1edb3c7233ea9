"""HeatmapCodec: targets and decoders against numpy references written here, round trips,
eager / tf.function / XLA agreement, the flip helper and TFLite export of the decoders."""

import math

import numpy as np
import pytest
import tensorflow as tf
from scipy.ndimage import gaussian_filter

from skelpose_tf.codec import DECODERS, HeatmapCodec, flip_heatmaps
from skelpose_tf.keypoints import COCO, KeypointSet, SkeletalLink

STRIDE = 4
SMALL_INPUT = (64, 48)  # 16 x 12 heatmaps


def _to_heatmap(points, stride=STRIDE):
    return (np.asarray(points, np.float64) + 0.5) / stride - 0.5


def _to_input(points, stride=STRIDE):
    return (np.asarray(points, np.float64) + 0.5) * stride - 0.5


def _numpy_gaussian(center, height, width, sigma):
    """[h, w] unnormalised Gaussian with its peak at `center` (heatmap pixels)."""
    rows, columns = np.mgrid[0:height, 0:width].astype(np.float64)
    return np.exp(-((columns - center[0]) ** 2 + (rows - center[1]) ** 2) / (2 * sigma**2))


def _numpy_segment_distance(px, py, a, b):
    """Distance from (px, py) to segment a-b by case analysis: beyond an end, or perpendicular."""
    ax, ay = a
    bx, by = b
    length = math.hypot(bx - ax, by - ay)
    if length == 0:
        return math.hypot(px - ax, py - ay)
    ux, uy = (bx - ax) / length, (by - ay) / length
    along = (px - ax) * ux + (py - ay) * uy
    if along <= 0:
        return math.hypot(px - ax, py - ay)
    if along >= length:
        return math.hypot(px - bx, py - by)
    return abs((px - ax) * uy - (py - ay) * ux)


def _numpy_line_map(a, b, height, width, sigma):
    out = np.zeros((height, width))
    for y in range(height):
        for x in range(width):
            out[y, x] = math.exp(-_numpy_segment_distance(x, y, a, b) ** 2 / (2 * sigma**2))
    return out


def _random_pose(rng, batch, codec, margin=0.0):
    """Keypoints [B, K, 2] in input pixels, heatmap positions at least `margin` inside the map."""
    height, width = codec.heatmap_size
    k = codec.keypoint_set.num_keypoints
    heat_x = rng.uniform(margin, width - 1 - margin, (batch, k))
    heat_y = rng.uniform(margin, height - 1 - margin, (batch, k))
    heat = np.stack([heat_x, heat_y], axis=-1)
    return _to_input(heat, codec.stride).astype(np.float32)


# Encoding: keypoint targets -------------------------------------------------------------------
def test_keypoint_target_peak_and_neighbour_values_by_hand():
    codec = HeatmapCodec(SMALL_INPUT, stride=STRIDE, sigma=2.0)
    keypoints = np.zeros((1, 17, 2), np.float32)
    keypoints[0, 3] = (21.5, 13.5)  # heatmap (5, 3): (21.5 + 0.5) / 4 - 0.5 = 5
    visibility = np.zeros((1, 17), np.float32)
    visibility[0, 3] = 2.0
    heatmap = codec.encode(keypoints, visibility)["heatmaps"].numpy()[0, :, :, 3]
    assert heatmap[3, 5] == pytest.approx(1.0, abs=1e-7)
    assert heatmap[3, 6] == pytest.approx(math.exp(-1 / 8), abs=1e-7)
    assert heatmap[4, 7] == pytest.approx(math.exp(-5 / 8), abs=1e-7)
    assert np.unravel_index(np.argmax(heatmap), heatmap.shape) == (3, 5)


def test_keypoint_targets_match_numpy_at_subpixel_positions():
    rng = np.random.default_rng(1)
    codec = HeatmapCodec(SMALL_INPUT, stride=STRIDE, sigma=1.5)
    keypoints = rng.uniform(-4, 60, (3, 17, 2)).astype(np.float32)
    visibility = rng.integers(0, 3, (3, 17)).astype(np.float32)
    heatmaps = codec.encode(keypoints, visibility)["heatmaps"].numpy()
    assert heatmaps.shape == (3, 16, 12, 17) and heatmaps.dtype == np.float32
    for b in range(3):
        for k in range(17):
            expected = _numpy_gaussian(_to_heatmap(keypoints[b, k]), 16, 12, 1.5)
            if visibility[b, k] == 0:
                expected = np.zeros_like(expected)
            np.testing.assert_allclose(heatmaps[b, :, :, k], expected, atol=1e-6)


def test_keypoint_weights_labelled_unlabelled_and_out_of_map():
    codec = HeatmapCodec(SMALL_INPUT, stride=STRIDE, sigma=2.0)  # 16 x 12 map, 3 sigma = 6
    heat_positions = {
        0: (5.0, 5.0),  # inside
        1: (-6.0, 5.0),  # exactly 3 sigma left of column 0: still reaches it
        2: (-6.1, 5.0),  # just beyond
        3: (11.0 + 6.0, 15.0 + 6.0),  # exactly 3 sigma beyond the last column and row
        4: (11.0 + 6.1, 5.0),  # just beyond on the right
        5: (5.0, 15.0 + 6.1),  # just beyond at the bottom
        6: (5.0, 5.0),  # inside but unlabelled
        7: (np.nan, np.nan),  # unlabelled with a NaN placeholder
        8: (-100.0, -100.0),  # far outside
    }
    keypoints = np.zeros((1, 17, 2), np.float32)
    visibility = np.ones((1, 17), np.float32)
    for k, position in heat_positions.items():
        keypoints[0, k] = _to_input(position)
    visibility[0, 6] = 0.0
    visibility[0, 7] = 0.0
    targets = codec.encode(keypoints, visibility)
    weights = targets["heatmap_weights"].numpy()[0]
    np.testing.assert_array_equal(weights[:9], [1, 1, 0, 1, 0, 0, 0, 0, 0])
    heatmaps = targets["heatmaps"].numpy()[0]
    assert np.all(np.isfinite(heatmaps))
    for k in (2, 4, 5, 6, 7, 8):
        assert np.all(heatmaps[..., k] == 0), k
    # A kept keypoint outside the map still has its (faint) Gaussian tail rendered.
    expected = _numpy_gaussian((-6.0, 5.0), 16, 12, 2.0)
    np.testing.assert_allclose(heatmaps[..., 1], expected, atol=1e-7)


def test_joint_weights_multiply_the_keypoint_weights():
    codec = HeatmapCodec(SMALL_INPUT, keypoint_set="coco", use_joint_weights=True)
    keypoints = np.full((1, 17, 2), 20.0, np.float32)
    visibility = np.ones((1, 17), np.float32)
    visibility[0, 9] = 0.0
    weights = codec.encode(keypoints, visibility)["heatmap_weights"].numpy()[0]
    expected = np.asarray(COCO.joint_weights, np.float32)
    expected[9] = 0.0
    np.testing.assert_allclose(weights, expected)


# Encoding: skeletal targets -------------------------------------------------------------------
def test_skeletal_line_by_hand_through_pixel_centres_and_beyond_an_end():
    codec = HeatmapCodec(SMALL_INPUT, stride=STRIDE)
    link = 0
    a, b = COCO.link_pairs[link]
    keypoints = np.zeros((1, 17, 2), np.float32)
    keypoints[0, a] = _to_input((2.0, 3.0))  # a horizontal segment along row 3, columns 2..8
    keypoints[0, b] = _to_input((8.0, 3.0))
    visibility = np.zeros((1, 17), np.float32)
    visibility[0, [a, b]] = 1.0
    targets = codec.encode(keypoints, visibility)
    line = targets["skeletal_heatmaps"].numpy()[0, :, :, link]
    np.testing.assert_array_equal(line[3, 2:9], 1.0)  # on the segment: exactly 1 (the clip)
    assert line[5, 4] == pytest.approx(math.exp(-2.0), abs=1e-7)  # 2 px beside the segment
    assert line[3, 10] == pytest.approx(math.exp(-2.0), abs=1e-7)  # 2 px beyond end b
    assert line[4, 0] == pytest.approx(math.exp(-2.5), abs=1e-7)  # beyond end a: d^2 = 4 + 1
    assert targets["skeletal_weights"].numpy()[0, link] == 1.0


def test_skeletal_targets_match_numpy_reference():
    rng = np.random.default_rng(2)
    codec = HeatmapCodec(SMALL_INPUT, stride=STRIDE, skeletal_sigma=1.3)
    keypoints = rng.uniform(-10, 70, (2, 17, 2)).astype(np.float32)
    keypoints[0, 6] = keypoints[0, 5]  # zero-length link (l_shoulder, r_shoulder)
    visibility = rng.integers(0, 3, (2, 17)).astype(np.float32)
    visibility[0, [5, 6]] = 1.0
    targets = codec.encode(keypoints, visibility)
    maps = targets["skeletal_heatmaps"].numpy()
    weights = targets["skeletal_weights"].numpy()
    assert maps.shape == (2, 16, 12, COCO.num_links)
    for b in range(2):
        for s, (i, j) in enumerate(COCO.link_pairs):
            labelled = visibility[b, i] > 0 and visibility[b, j] > 0
            assert weights[b, s] == float(labelled)
            expected = np.zeros((16, 12))
            if labelled:
                ends = _to_heatmap(keypoints[b, [i, j]])
                expected = _numpy_line_map(ends[0], ends[1], 16, 12, 1.3)
            np.testing.assert_allclose(maps[b, :, :, s], expected, atol=2e-6)
    zero_length = list(map(tuple, COCO.link_pairs)).index((5, 6))
    point = _to_heatmap(keypoints[0, 5])
    expected = _numpy_gaussian(point, 16, 12, 1.3)
    np.testing.assert_allclose(maps[0, :, :, zero_length], expected, atol=2e-6)


def test_custom_keypoint_set_with_three_links():
    custom = KeypointSet(
        name="tri",
        keypoint_names=("left", "centre", "right", "tail"),
        flip_pairs=((0, 2),),
        links=(
            SkeletalLink(0, 1, "physical", "upper"),
            SkeletalLink(1, 2, "physical", "upper"),
            SkeletalLink(1, 3, "virtual", "lower"),
        ),
        oks_sigmas=(0.05,) * 4,
        upper_body=(0, 1, 2),
    )
    codec = HeatmapCodec((32, 32), keypoint_set=custom, stride=4)
    keypoints = np.array([[[2.0, 2.0], [16.0, 16.0], [30.0, 2.0], [16.0, 30.0]]], np.float32)
    visibility = np.array([[1.0, 1.0, 1.0, 0.0]], np.float32)
    targets = codec.encode(keypoints, visibility)
    assert targets["heatmaps"].shape == (1, 8, 8, 4)
    assert targets["skeletal_heatmaps"].shape == (1, 8, 8, 3)
    np.testing.assert_array_equal(targets["skeletal_weights"].numpy(), [[1.0, 1.0, 0.0]])
    ends = _to_heatmap(keypoints[0])
    expected = _numpy_line_map(ends[1], ends[2], 8, 8, 1.0)
    line = targets["skeletal_heatmaps"].numpy()[0, :, :, 1]
    np.testing.assert_allclose(line, expected, atol=2e-6)
    restored = HeatmapCodec.from_config(codec.get_config())
    assert restored.keypoint_set == custom
    with pytest.raises(ValueError, match=r"keypoints must be \[B, 4, 2\]"):
        codec.encode(np.zeros((1, 17, 2), np.float32), np.ones((1, 17), np.float32))


# Decoding against numpy -------------------------------------------------------------------------
def _numpy_weighted(heatmap, top_n):
    """Paper Eq. 4-5 on one [h, w] map: ties ranked by flat index (stable sort)."""
    order = np.argsort(-heatmap.ravel(), kind="stable")[:top_n]
    rows, columns = np.unravel_index(order, heatmap.shape)
    weights = 1.0 / np.arange(1, top_n + 1)
    weights /= weights.sum()
    return np.array([np.sum(weights * columns), np.sum(weights * rows)])


def _numpy_quarter(heatmap):
    """Official HRNet get_final_preds post-processing on one map."""
    height, width = heatmap.shape
    py, px = np.unravel_index(np.argmax(heatmap), heatmap.shape)
    x, y = float(px), float(py)
    if 1 < px < width - 1 and 1 < py < height - 1:
        x += 0.25 * np.sign(heatmap[py, px + 1] - heatmap[py, px - 1])
        y += 0.25 * np.sign(heatmap[py + 1, px] - heatmap[py - 1, px])
    return np.array([x, y])


def _numpy_dark(heatmap, sigma):
    """Blur (scipy, zero border, radius ceil(3 sigma) - 1), log, one Newton step on a 3x3 patch."""
    height, width = heatmap.shape
    radius = math.ceil(3 * sigma) - 1
    blurred = gaussian_filter(
        heatmap.astype(np.float64), sigma, mode="constant", truncate=radius / sigma
    )
    log = np.log(np.maximum(blurred, 1e-10))
    py, px = np.unravel_index(np.argmax(heatmap), heatmap.shape)
    if not (1 <= px <= width - 2 and 1 <= py <= height - 2):
        return np.array([px, py], np.float64)
    patch = log[py - 1 : py + 2, px - 1 : px + 2]
    gradient = np.array([patch[1, 2] - patch[1, 0], patch[2, 1] - patch[0, 1]]) / 2
    xx = patch[1, 2] - 2 * patch[1, 1] + patch[1, 0]
    yy = patch[2, 1] - 2 * patch[1, 1] + patch[0, 1]
    xy = (patch[2, 2] - patch[0, 2] - patch[2, 0] + patch[0, 0]) / 4
    hessian = np.array([[xx, xy], [xy, yy]])
    if not np.all(np.linalg.eigvalsh(hessian) < 0):
        return np.array([px, py], np.float64)
    step = np.clip(-np.linalg.solve(hessian, gradient), -1, 1)
    return np.array([px, py]) + step


def _decode_numpy(heatmaps, method, sigma=2.0, top_n=20):
    batch, _, _, channels = heatmaps.shape
    out = np.zeros((batch, channels, 2))
    for b in range(batch):
        for k in range(channels):
            heatmap = heatmaps[b, :, :, k]
            if method == "weighted":
                out[b, k] = _numpy_weighted(heatmap, top_n)
            elif method == "argmax":
                py, px = np.unravel_index(np.argmax(heatmap), heatmap.shape)
                out[b, k] = (px, py)
            elif method == "quarter":
                out[b, k] = _numpy_quarter(heatmap)
            else:
                out[b, k] = _numpy_dark(heatmap, sigma)
    return _to_input(out)


def _peaked_random_heatmaps(rng, batch, height, width, channels):
    """Distinct values: a smooth random bump per channel plus small noise, some peaks at borders."""
    rows, columns = np.mgrid[0:height, 0:width]
    maps = np.zeros((batch, height, width, channels))
    for b in range(batch):
        for k in range(channels):
            cx, cy = rng.uniform(-1, width), rng.uniform(-1, height)
            spread = rng.uniform(1.0, 3.0)
            maps[b, :, :, k] = np.exp(-((columns - cx) ** 2 + (rows - cy) ** 2) / (2 * spread**2))
    return (maps + rng.uniform(-0.05, 0.05, maps.shape)).astype(np.float32)


@pytest.mark.parametrize("method", DECODERS)
def test_decoders_match_numpy_on_hand_made_heatmaps(method):
    rng = np.random.default_rng(3)
    codec = HeatmapCodec(SMALL_INPUT, keypoint_set="coco", sigma=2.0)
    heatmaps = _peaked_random_heatmaps(rng, 3, 16, 12, 17)
    keypoints, scores = codec.decode(heatmaps, method=method)
    assert keypoints.shape == (3, 17, 2) and scores.shape == (3, 17)
    np.testing.assert_allclose(keypoints.numpy(), _decode_numpy(heatmaps, method), atol=2e-4)
    np.testing.assert_array_equal(scores.numpy(), heatmaps.max(axis=(1, 2)))


def _heatmaps_with_lost_keypoints(rng, batch=2):
    """Peaked maps, except channel 0 all negative (peak -0.2 at x=5, y=7) and channel 1 all 0."""
    heatmaps = _peaked_random_heatmaps(rng, batch, 16, 12, 17)
    negative = -rng.uniform(0.3, 1.0, (batch, 16, 12))
    negative[:, 7, 5] = -0.2
    heatmaps[..., 0] = negative
    heatmaps[..., 1] = 0.0
    return heatmaps


@pytest.mark.parametrize("method", DECODERS)
def test_non_positive_peaks_give_score_0_at_heatmap_pixel_0_0(method):
    heatmaps = _heatmaps_with_lost_keypoints(np.random.default_rng(11))
    codec = HeatmapCodec(SMALL_INPUT, keypoint_set="coco")
    decode = lambda h: codec.decode(h, method=method)
    spec = [tf.TensorSpec([None, 16, 12, 17], tf.float32)]
    runs = {"eager": decode(tf.constant(heatmaps)),
            "graph": tf.function(decode, input_signature=spec)(tf.constant(heatmaps)),
            "xla": tf.function(decode, jit_compile=True)(tf.constant(heatmaps))}
    for name, (keypoints, scores) in runs.items():
        keypoints, scores = keypoints.numpy(), scores.numpy()
        np.testing.assert_array_equal(scores[:, :2], 0.0, err_msg=name)
        # Heatmap pixel (0, 0) -> input crop (0 + 0.5) * 4 - 0.5 = 1.5 px on both axes.
        np.testing.assert_array_equal(keypoints[:, :2], 1.5, err_msg=name)
        np.testing.assert_array_equal(scores[:, 2:], heatmaps.max(axis=(1, 2))[:, 2:])
        np.testing.assert_allclose(keypoints[:, 2:], _decode_numpy(heatmaps, method)[:, 2:],
                                   atol=2e-4, err_msg=name)
    hrnet = HeatmapCodec(SMALL_INPUT, keypoint_set="coco", pixel_convention="hrnet")
    keypoints, scores = hrnet.decode(heatmaps, method=method)
    np.testing.assert_array_equal(keypoints.numpy()[:, :2], 0.0)  # x_in = x_h * 4 = 0
    np.testing.assert_array_equal(scores.numpy()[:, :2], 0.0)


def test_weighted_decoding_by_hand_and_with_ties():
    codec = HeatmapCodec((16, 16), keypoint_set=_single_keypoint_set(), stride=4, top_n=3)
    heatmap = np.zeros((1, 4, 4, 1), np.float32)
    heatmap[0, 1, 2, 0] = 0.9  # rank 1 at (x=2, y=1)
    heatmap[0, 3, 0, 0] = 0.5  # ranks 2 and 3 tie: flat index 12 ranks before 15
    heatmap[0, 3, 3, 0] = 0.5
    keypoints, scores = codec.decode(heatmap)
    weights = np.array([1, 1 / 2, 1 / 3]) / (1 + 1 / 2 + 1 / 3)
    expected_heat = np.array([weights @ [2, 0, 3], weights @ [1, 3, 3]])
    np.testing.assert_allclose(keypoints.numpy()[0, 0], _to_input(expected_heat), atol=1e-5)
    assert scores.numpy()[0, 0] == pytest.approx(0.9)
    np.testing.assert_allclose(
        keypoints.numpy(), _decode_numpy(heatmap, "weighted", top_n=3), atol=1e-5
    )
    # top_n=1 is the argmax; a method/top_n given to decode overrides the codec's defaults.
    np.testing.assert_allclose(codec.decode(heatmap, top_n=1)[0].numpy()[0, 0], _to_input([2, 1]))


def test_quarter_offset_only_strictly_inside():
    codec = HeatmapCodec((24, 24), keypoint_set=_single_keypoint_set(), stride=4)  # 6 x 6 map
    inside = np.zeros((1, 6, 6, 1), np.float32)
    inside[0, 2, 3, 0] = 1.0
    inside[0, 2, 4, 0] = 0.6  # right > left: +0.25 in x
    inside[0, 1, 3, 0] = 0.3  # up > down: -0.25 in y
    keypoints, _ = codec.decode(inside, method="quarter")
    np.testing.assert_allclose(keypoints.numpy()[0, 0], _to_input([3.25, 1.75]), atol=1e-6)
    border = np.zeros((1, 6, 6, 1), np.float32)
    border[0, 2, 1, 0] = 1.0  # px = 1 is not strictly inside 1 < px
    border[0, 2, 2, 0] = 0.6
    keypoints, _ = codec.decode(border, method="quarter")
    np.testing.assert_allclose(keypoints.numpy()[0, 0], _to_input([1.0, 2.0]), atol=1e-6)


def _single_keypoint_set():
    return KeypointSet(
        name="one",
        keypoint_names=("p",),
        flip_pairs=(),
        links=(),
        oks_sigmas=(0.05,),
        upper_body=(0,),
    )


# Round trips -----------------------------------------------------------------------------------
def test_round_trip_error_bounds():
    rng = np.random.default_rng(4)
    codec = HeatmapCodec((128, 96), keypoint_set="coco", sigma=2.0)  # 32 x 24 maps
    keypoints = _random_pose(rng, 24, codec, margin=1.0)
    heatmaps = codec.encode(keypoints, np.ones(keypoints.shape[:2], np.float32))["heatmaps"]
    errors = {}
    for method in DECODERS:
        decoded, scores = codec.decode(heatmaps, method=method)
        errors[method] = np.linalg.norm(decoded.numpy() - keypoints, axis=-1)
        assert np.all(scores.numpy() > 0.88)  # peak of a Gaussian within half a pixel: exp(-0.25)
    # argmax: at most half a heatmap pixel per axis.
    assert errors["argmax"].max() <= STRIDE * math.sqrt(0.5) + 1e-4
    assert errors["quarter"].mean() < 0.7 * errors["argmax"].mean()
    assert errors["dark"].mean() < 0.3 * errors["argmax"].mean()
    assert errors["weighted"].mean() < errors["argmax"].mean()
    # The weighted decoder is Eq. 4-5 on the same rendered heatmap.
    np.testing.assert_allclose(
        codec.decode(heatmaps, method="weighted")[0].numpy(),
        _decode_numpy(heatmaps.numpy(), "weighted"),
        atol=1e-4,
    )


def test_dark_is_exact_on_interior_gaussians():
    rng = np.random.default_rng(5)
    codec = HeatmapCodec((128, 96), keypoint_set="coco", sigma=2.0)
    keypoints = _random_pose(rng, 4, codec, margin=6.0)
    heatmaps = codec.encode(keypoints, np.ones(keypoints.shape[:2], np.float32))["heatmaps"]
    decoded, _ = codec.decode(heatmaps, method="dark")
    np.testing.assert_allclose(decoded.numpy(), keypoints, atol=5e-3)


# Graph modes -----------------------------------------------------------------------------------
def test_encode_agrees_eager_tf_function_and_xla():
    rng = np.random.default_rng(6)
    codec = HeatmapCodec(SMALL_INPUT, keypoint_set="coco")
    keypoints = tf.constant(rng.uniform(-8, 64, (2, 17, 2)).astype(np.float32))
    visibility = tf.constant(rng.integers(0, 3, (2, 17)).astype(np.float32))
    eager = codec.encode(keypoints, visibility)
    graph = tf.function(codec.encode)(keypoints, visibility)
    xla = tf.function(codec.encode, jit_compile=True)(keypoints, visibility)
    for key, value in eager.items():
        np.testing.assert_allclose(graph[key].numpy(), value.numpy(), atol=1e-6, err_msg=key)
        np.testing.assert_allclose(xla[key].numpy(), value.numpy(), atol=1e-5, err_msg=key)


def test_encode_in_tf_function_with_unknown_batch():
    codec = HeatmapCodec(SMALL_INPUT, keypoint_set="coco")
    spec = (tf.TensorSpec([None, 17, 2], tf.float32), tf.TensorSpec([None, 17], tf.float32))
    encode = tf.function(codec.encode, input_signature=spec)
    targets = encode(tf.fill([3, 17, 2], 20.0), tf.ones([3, 17]))
    assert targets["skeletal_heatmaps"].shape == (3, 16, 12, COCO.num_links)


@pytest.mark.parametrize("method", DECODERS)
def test_decode_agrees_eager_tf_function_and_xla(method):
    rng = np.random.default_rng(7)
    codec = HeatmapCodec(SMALL_INPUT, keypoint_set="coco")
    heatmaps = tf.constant(_peaked_random_heatmaps(rng, 2, 16, 12, 17))
    eager = codec.decode(heatmaps, method=method)
    spec = [tf.TensorSpec([None, 16, 12, 17], tf.float32)]
    graph = tf.function(lambda h: codec.decode(h, method=method), input_signature=spec)(heatmaps)
    xla = tf.function(lambda h: codec.decode(h, method=method), jit_compile=True)(heatmaps)
    for other in (graph, xla):
        np.testing.assert_allclose(other[0].numpy(), eager[0].numpy(), atol=1e-4)
        np.testing.assert_allclose(other[1].numpy(), eager[1].numpy(), atol=1e-6)


def test_decoders_convert_to_tflite_builtins():
    from ai_edge_litert.interpreter import Interpreter

    codec = HeatmapCodec(SMALL_INPUT, keypoint_set="coco")

    class Decoders(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, 16, 12, 17], tf.float32)])
        def decode_all(self, heatmaps):
            outputs = {}
            for method in DECODERS:
                outputs[method], outputs[f"{method}_scores"] = codec.decode(heatmaps, method=method)
            return outputs

    module = Decoders()
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [module.decode_all.get_concrete_function()], module
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    interpreter = Interpreter(model_content=converter.convert())
    heatmaps = _heatmaps_with_lost_keypoints(np.random.default_rng(8), batch=1)
    outputs = interpreter.get_signature_runner()(heatmaps=heatmaps)
    for method in DECODERS:
        expected, expected_scores = codec.decode(heatmaps, method=method)
        np.testing.assert_allclose(outputs[method], expected.numpy(), atol=1e-3, err_msg=method)
        np.testing.assert_allclose(outputs[f"{method}_scores"], expected_scores.numpy(),
                                   atol=1e-6, err_msg=method)
        # Channels 0 (all negative) and 1 (all zero) are not found: score 0 at (1.5, 1.5).
        np.testing.assert_array_equal(outputs[f"{method}_scores"][0, :2], 0.0)
        np.testing.assert_array_equal(outputs[method][0, :2], 1.5)


# Flip ------------------------------------------------------------------------------------------
def test_flip_heatmaps_leaves_a_flip_symmetric_input_unchanged():
    rng = np.random.default_rng(9)
    base = rng.uniform(size=(2, 5, 6, 17)).astype(np.float32)
    symmetric = base + base[:, :, ::-1, :][..., list(COCO.flip_index)]
    flipped = flip_heatmaps(symmetric, COCO.flip_index)
    np.testing.assert_allclose(flipped.numpy(), symmetric, atol=1e-6)
    # A non-symmetric input changes, and flipping twice restores it.
    flipped = flip_heatmaps(base, COCO.flip_index)
    assert not np.allclose(flipped.numpy(), base)
    np.testing.assert_array_equal(flip_heatmaps(flipped, COCO.flip_index).numpy(), base)


def test_targets_of_a_mirrored_pose_are_the_flipped_targets_without_shift():
    rng = np.random.default_rng(10)
    codec = HeatmapCodec(SMALL_INPUT, keypoint_set="coco")
    keypoints = rng.uniform(0, 48, (2, 17, 2)).astype(np.float32)
    visibility = np.ones((2, 17), np.float32)
    mirrored = keypoints.copy()
    mirrored[..., 0] = SMALL_INPUT[1] - 1 - mirrored[..., 0]  # x -> W - 1 - x
    mirrored = mirrored[:, list(COCO.flip_index)]
    original = codec.encode(keypoints, visibility)["heatmaps"]
    of_mirror = codec.encode(mirrored, visibility)["heatmaps"]
    flipped_back = flip_heatmaps(of_mirror, COCO.flip_index)
    np.testing.assert_allclose(flipped_back.numpy(), original.numpy(), atol=1e-6)


def test_flip_heatmaps_rejects_wrong_index_length():
    with pytest.raises(ValueError, match="flip_index has 3 entries for 17"):
        flip_heatmaps(np.zeros((1, 4, 4, 17), np.float32), (0, 2, 1))


# Config and validation -------------------------------------------------------------------------
def test_config_round_trip_and_heatmap_size():
    codec = HeatmapCodec((256, 192), keypoint_set="mpii", sigma=3.0, decoder="dark", top_n=9)
    config = codec.get_config()
    assert config["keypoint_set"] == "mpii"
    restored = HeatmapCodec.from_config(config)
    assert restored.get_config() == config
    assert restored.heatmap_size == (64, 48)
    assert restored.decoder == "dark" and restored.top_n == 9


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"input_size": (250, 192)}, r"input_size=\(250, 192\)"),
        ({"input_size": (256, 192), "stride": 0}, "stride=0"),
        ({"input_size": (256, 192), "sigma": 0.0}, "sigma=0.0"),
        ({"input_size": (256, 192), "decoder": "mean"}, "decoder='mean'"),
        ({"input_size": (16, 16), "top_n": 17}, r"top_n must be an integer in \[1, 16\]"),
    ],
)
def test_invalid_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HeatmapCodec(**kwargs)


def test_decode_rejects_wrong_heatmap_size_and_method():
    codec = HeatmapCodec(SMALL_INPUT)
    with pytest.raises(ValueError, match=r"heatmaps must be \[B, 16, 12, K\]"):
        codec.decode(np.zeros((1, 12, 16, 17), np.float32))
    with pytest.raises(ValueError, match="method='soft'"):
        codec.decode(np.zeros((1, 16, 12, 17), np.float32), method="soft")


def test_hrnet_pixel_convention_by_hand():
    """Official HRNet coordinates: input x lies at heatmap x / 4 (no half-pixel centring)."""
    codec = HeatmapCodec((64, 48), _single_keypoint_set(), sigma=2.0, pixel_convention="hrnet")
    keypoints = np.array([[[12.0, 8.0]]], np.float32)  # (x, y) in input pixels
    heatmaps = codec.encode(keypoints, np.ones((1, 1), np.float32))["heatmaps"].numpy()
    assert np.unravel_index(heatmaps[0, :, :, 0].argmax(), (16, 12)) == (2, 3)
    assert heatmaps[0, 2, 3, 0] == pytest.approx(1.0)
    np.testing.assert_allclose(codec.decode(heatmaps, method="argmax")[0].numpy(), keypoints,
                               atol=1e-5)
    np.testing.assert_allclose(codec.to_input_coordinates(codec.to_heatmap_coordinates(
        np.array([5.3, 17.0], np.float32))).numpy(), [5.3, 17.0], atol=1e-5)
    restored = HeatmapCodec.from_config(codec.get_config())
    assert restored.pixel_convention == "hrnet"
    with pytest.raises(ValueError, match="pixel_convention"):
        HeatmapCodec((64, 48), "coco", pixel_convention="corner")


def test_unflip_shifts_one_pixel_only_with_the_hrnet_convention():
    rng = np.random.default_rng(5)
    flipped = rng.uniform(size=(2, 8, 6, 17)).astype("float32")
    mirrored = flipped[:, :, ::-1, :][..., list(COCO.flip_index)]
    shifted = np.concatenate([mirrored[:, :, :1], mirrored[:, :, :-1]], axis=2)
    centred = HeatmapCodec((32, 24), "coco")
    official = HeatmapCodec((32, 24), "coco", pixel_convention="hrnet")
    np.testing.assert_allclose(centred.unflip(flipped).numpy(), mirrored, atol=1e-7)
    np.testing.assert_allclose(official.unflip(flipped).numpy(), shifted, atol=1e-7)


@pytest.mark.parametrize("convention,expected_error", [("centered", 0.0), ("hrnet", 1.0)])
def test_flip_test_error_of_each_convention(convention, expected_error):
    """A keypoint rendered in a mirrored crop and unflipped lands within the convention's known
    error: exactly for the centred one, 1 input pixel (1 / stride of a heatmap pixel, the
    official flip test's residual) for HRNet's with its shift (3 pixels without it)."""
    codec = HeatmapCodec((64, 48), _single_keypoint_set(), sigma=2.0,
                         pixel_convention=convention)
    truth = np.array([[[20.0, 30.0]]], np.float32)
    mirrored = truth.copy()
    mirrored[..., 0] = 48 - 1 - truth[..., 0]
    targets = codec.encode(mirrored, np.ones((1, 1), np.float32))["heatmaps"]
    decoded = codec.decode(codec.unflip(targets), method="dark")[0].numpy()
    assert abs(decoded[0, 0, 0] - truth[0, 0, 0]) == pytest.approx(expected_error, abs=0.05)
    assert decoded[0, 0, 1] == pytest.approx(truth[0, 0, 1], abs=0.05)
    if convention == "hrnet":
        unshifted = codec.decode(flip_heatmaps(targets, [0]), method="dark")[0]
        assert abs(unshifted.numpy()[0, 0, 0] - truth[0, 0, 0]) == pytest.approx(3.0, abs=0.05)
