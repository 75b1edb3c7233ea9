"""Flip test and the mapping of predictions back to original-image pixels."""

import keras
import numpy as np
import pytest

from pose_fixtures import DOT_PEOPLE, DOTS, PoolingNetwork, tiny_pose_model, write_dots_dataset
from skelpose_tf.codec import DECODERS, flip_heatmaps
from skelpose_tf.data.coco import read_coco_keypoints
from skelpose_tf.data.pipeline import make_eval_dataset
from skelpose_tf.inference import PosePredictor, run_inference

INPUT_SIZE = (64, 64)


@pytest.fixture(scope="module")
def network():
    keras.utils.set_random_seed(0)  # the same weights whatever ran before in this process
    return tiny_pose_model(skeletal_attention=True, input_size=INPUT_SIZE)


@pytest.fixture(scope="module")
def flip_predictor(network):
    return PosePredictor(network, flip_test=True)


def decoded(predictor, images, decoder):
    """(keypoints [B, K, 2] crop pixels, scores [B, K]) of one decoder, as numpy."""
    keypoints, scores = predictor.codec.decode(predictor.heatmaps(images), method=decoder)
    return np.asarray(keypoints), np.asarray(scores)


def mirrored_points(keypoints, flip_index, width):
    """Keypoints of the mirror image: x -> W - 1 - x, left and right swapped."""
    mirrored = np.asarray(keypoints, np.float64).copy()
    mirrored[..., 0] = width - 1 - mirrored[..., 0]
    return mirrored[..., list(flip_index), :]


def test_flip_test_makes_predictions_mirror_equivariant(network, flip_predictor):
    predictor = flip_predictor
    flip_index = network.keypoint_set.flip_index
    image = np.random.default_rng(0).integers(0, 256, (1, *INPUT_SIZE, 3), dtype=np.uint8)
    mirror = image[:, :, ::-1]
    heatmaps, mirror_heatmaps = predictor.heatmaps(image), predictor.heatmaps(mirror)
    scale = float(np.abs(heatmaps).max())  # an untrained network's maps are ~1e-10
    np.testing.assert_allclose(mirror_heatmaps, flip_heatmaps(heatmaps, flip_index),
                               atol=1e-6 * scale)
    # Not `quarter`: its official inside-test 1 < px < w - 1 treats the left and right borders
    # differently, so a peak in column 1 is refined only in the mirror image.
    for decoder in ("weighted", "argmax", "dark"):
        keypoints, scores = decoded(predictor, image, decoder)
        mirror_keypoints, mirror_scores = decoded(predictor, mirror, decoder)
        # A keypoint whose map peaks at <= 0 is not found (score 0, heatmap pixel (0, 0) in
        # both images, so not mirrored); the others must mirror.
        found = mirror_scores > 0
        np.testing.assert_array_equal(found, scores[:, list(flip_index)] > 0)
        np.testing.assert_allclose(
            mirror_keypoints[found],
            mirrored_points(keypoints, flip_index, INPUT_SIZE[1])[found], atol=1e-3,
            err_msg=decoder)
        np.testing.assert_allclose(mirror_scores, scores[:, list(flip_index)],
                                   atol=1e-6 * scale)


def test_flip_test_of_a_symmetric_input_gives_mirrored_keypoints(network, flip_predictor):
    predictor = flip_predictor
    flip_index = np.asarray(network.keypoint_set.flip_index)
    half = np.random.default_rng(1).integers(0, 256, (1, INPUT_SIZE[0], INPUT_SIZE[1] // 2, 3))
    image = np.concatenate([half, half[:, :, ::-1]], axis=2).astype(np.uint8)
    heatmaps = np.asarray(predictor.heatmaps(image))
    # Each map is the mirror of its partner's; a centre keypoint's map is mirror-symmetric.
    np.testing.assert_allclose(heatmaps[:, :, ::-1][..., flip_index], heatmaps,
                               atol=1e-6 * np.abs(heatmaps).max())
    keypoints, scores = decoded(predictor, image, "argmax")
    paired = flip_index != np.arange(len(flip_index))
    assert paired.sum() == 2 * len(network.keypoint_set.flip_pairs)
    expected = mirrored_points(keypoints, flip_index, INPUT_SIZE[1])
    found = paired & (scores[0] > 0)  # not-found keypoints sit at heatmap pixel (0, 0)
    np.testing.assert_allclose(keypoints[:, found], expected[:, found], atol=1e-3)


def test_without_flip_test_the_network_alone_is_not_mirror_equivariant(network):
    predictor = PosePredictor(network, flip_test=False)
    image = np.random.default_rng(0).integers(0, 256, (1, *INPUT_SIZE, 3), dtype=np.uint8)
    mirror_heatmaps = np.asarray(predictor.heatmaps(image[:, :, ::-1]))
    flipped = np.asarray(flip_heatmaps(predictor.heatmaps(image), network.keypoint_set.flip_index))
    assert np.abs(mirror_heatmaps - flipped).max() > 1e-2 * np.abs(flipped).max()


@pytest.mark.parametrize("flip_test", [True, False])
def test_keypoints_map_back_to_original_image_pixels(tmp_path, flip_test):
    paths = write_dots_dataset(str(tmp_path), num_images=2)
    stub = PoolingNetwork(DOTS, input_size=(64, 48))
    records = read_coco_keypoints(paths["ann"], paths["images"], DOTS, stub.input_size)
    assert len(records) == 4
    dataset = make_eval_dataset(records, DOTS, stub.input_size, batch_size=3)
    predictor = PosePredictor(stub, flip_test=flip_test)
    predictions = run_inference(predictor, dataset, decoders=DECODERS, log_every=0)
    truth = np.stack([records[i].keypoints for i in predictions["record_index"]])
    # One heatmap pixel is 4 crop pixels; a crop pixel is scale / input image pixels.
    image_pixels_per_crop_pixel = predictions["scale"][:, 1] / stub.input_size[0]
    for decoder in DECODERS:
        errors = np.linalg.norm(predictions["keypoints"][decoder] - truth, axis=-1)
        errors_in_crop_pixels = errors / image_pixels_per_crop_pixel[:, None]
        # argmax is off by at most half a heatmap pixel per axis (2 crop px each way).
        bound = 2.0 * np.sqrt(2.0) if decoder == "argmax" else 1.5
        assert errors_in_crop_pixels.max() <= bound, (decoder, errors_in_crop_pixels.max())
    assert np.all(predictions["scores"]["dark"] > 0.3)
    np.testing.assert_allclose(records[0].keypoints, DOT_PEOPLE[0][1], atol=1e-4)
