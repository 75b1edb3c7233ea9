"""SavedModel export: the TF Serving contract, agreement with Keras, the in-graph crop, bad input.

The model is tiny (W8, 64x64, one module and one block per stage) with He-initialised
convolutions, so its heatmaps vary by O(1) across the crop and the comparisons mean something
(the default initialisation gives heatmaps of ~1e-8). Crops and images are real: a few images
of the project's synthetic data set.
"""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from pose_fixtures import TINY_INPUT_SIZE, he_initialised_tiny_model, lose_keypoints
import tensorflow as tf

from skelpose_tf.crop_geometry import affine_matrix, box_to_center_scale, crop_to_image
from skelpose_tf.export import DEFAULT_TOLERANCES
from skelpose_tf.inference import PosePredictor
from skelpose_tf.export.runtime import SavedModelRunner
from skelpose_tf.export.saved_model import (FULL_IMAGE_SIGNATURE, SERVING_SIGNATURE,
                                            ServingGraph, export_saved_model, float32_network,
                                            load_saved_model, read_metadata)
from skelpose_tf.export.verify import compare_outputs, verify_full_image
from skelpose_tf.keypoints import COCO

INPUT_SIZE = TINY_INPUT_SIZE
HEATMAP_SIZE = (16, 16)
K = COCO.num_keypoints


# `network` (the He-initialised tiny model), `data` (a small synthetic set) and `crops` (its val
# crops) are conftest.py fixtures.
@pytest.fixture(scope="module")
def saved_model(tmp_path_factory, network):
    return export_saved_model(network, str(tmp_path_factory.mktemp("export") / "saved_model"),
                              flip_test=True)


@pytest.fixture(scope="module")
def signatures(saved_model):
    return load_saved_model(saved_model).signatures


def test_signatures_are_the_tf_serving_contract(saved_model):
    from tensorflow.python.tools import saved_model_utils

    meta_graph = saved_model_utils.get_meta_graph_def(saved_model, "serve")
    defs = meta_graph.signature_def
    assert set(defs) - {"__saved_model_init_op"} == {SERVING_SIGNATURE, FULL_IMAGE_SIGNATURE}

    def described(tensors):
        return {name: (tf.dtypes.as_dtype(info.dtype).name,
                       tuple(d.size for d in info.tensor_shape.dim))
                for name, info in tensors.items()}

    serving = defs[SERVING_SIGNATURE]
    assert serving.method_name == "tensorflow/serving/predict"
    assert described(serving.inputs) == {"images": ("uint8", (-1, 64, 64, 3))}
    assert described(serving.outputs) == {
        "keypoints": ("float32", (-1, K, 2)), "keypoint_scores": ("float32", (-1, K)),
        "heatmaps": ("float32", (-1, *HEATMAP_SIZE, K))}
    full = defs[FULL_IMAGE_SIGNATURE]
    assert full.method_name == "tensorflow/serving/predict"
    assert described(full.inputs) == {"image": ("uint8", (-1, -1, 3)),
                                      "boxes": ("float32", (-1, 4))}
    assert described(full.outputs) == {"keypoints": ("float32", (-1, K, 2)),
                                       "keypoint_scores": ("float32", (-1, K))}


def test_saved_model_cli_show_all_is_clean(saved_model):
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    result = subprocess.run([cli, "show", "--dir", saved_model, "--all"], capture_output=True,
                            text=True, timeout=120,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-2000:]
    for line in ("signature_def['serving_default']", "signature_def['full_image']",
                 "inputs['images'] tensor_info:", "outputs['keypoint_scores'] tensor_info:",
                 "Method name is: tensorflow/serving/predict"):
        assert line in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_metadata_json_states_the_contract(saved_model):
    with open(os.path.join(saved_model, "pose_export.json")) as file:
        metadata = json.load(file)
    assert metadata["artifact"] == "saved_model"
    assert metadata["input_size"] == {"height": 64, "width": 64}
    assert metadata["input_dtype"] == "uint8"
    assert metadata["keypoint_names"] == list(COCO.keypoint_names)
    assert metadata["flip_index"] == list(COCO.flip_index)
    assert len(metadata["links"]) == COCO.num_links
    assert metadata["decoder"]["method"] == "weighted" and metadata["flip_test"] is True
    assert set(metadata["signatures"]) == {SERVING_SIGNATURE, FULL_IMAGE_SIGNATURE}


def test_serving_default_equals_the_keras_model_with_flip_test(network, crops, signatures):
    outputs = {k: v.numpy() for k, v in signatures[SERVING_SIGNATURE](images=crops).items()}
    # The flip test written out here: mirror the crops, mirror the heatmaps back, swap sides.
    plain = network(crops.astype(np.float32))["heatmaps"].numpy()
    mirrored = network(crops[:, :, ::-1].astype(np.float32))["heatmaps"].numpy()
    expected = 0.5 * (plain + mirrored[:, :, ::-1, list(COCO.flip_index)])
    scale = np.abs(expected).max()
    assert scale > 0.1  # the He-initialised net has O(1) heatmaps
    np.testing.assert_allclose(outputs["heatmaps"], expected, atol=1e-5 * scale)
    comparison = compare_outputs(PosePredictor(network).predict(crops), outputs,
                                 DEFAULT_TOLERANCES["float32"], "saved_model")
    assert comparison.num_confident > 0
    assert comparison.passed, comparison
    assert comparison.mean_keypoint_error_px < 1e-3


def test_runner_and_loaded_model_agree(saved_model, crops, signatures):
    runner = SavedModelRunner(saved_model)
    direct = signatures[SERVING_SIGNATURE](images=crops)
    np.testing.assert_array_equal(runner.predict(crops)["keypoints"], direct["keypoints"].numpy())


def _val_image_and_boxes(data):
    with open(data.val_annotations) as file:
        coco = json.load(file)
    image_id = max({a["image_id"] for a in coco["annotations"]},
                   key=lambda i: sum(a["image_id"] == i for a in coco["annotations"]))
    entry = next(e for e in coco["images"] if e["id"] == image_id)
    image = cv2.cvtColor(cv2.imread(os.path.join(data.val_images, entry["file_name"])),
                         cv2.COLOR_BGR2RGB)
    boxes = [a["bbox"] for a in coco["annotations"] if a["image_id"] == image_id]
    # A box reaching past the top-left corner: the crop must be black outside the image.
    boxes.append([-20.0, -15.5, 60.0, 50.0])
    return image, np.asarray(boxes, np.float32)


def test_in_graph_crop_matches_the_pipeline_crop(data, network):
    image, boxes = _val_image_and_boxes(data)
    graph = ServingGraph(network)
    center, scale = (np.asarray(v) for v in box_to_center_scale(boxes,
                                                                 INPUT_SIZE[1] / INPUT_SIZE[0]))
    graph_center, graph_scale = graph.crop_regions(tf.constant(boxes))
    np.testing.assert_allclose(graph_center.numpy(), center, rtol=1e-6)
    np.testing.assert_allclose(graph_scale.numpy(), scale, rtol=1e-6)
    crops = graph.crop(tf.constant(image), graph_center, graph_scale).numpy()
    for i in range(len(boxes)):
        expected = cv2.warpAffine(image, np.asarray(affine_matrix(center[i], scale[i], 0.0,
                                                                  INPUT_SIZE)),
                                  INPUT_SIZE[::-1], flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        difference = np.abs(crops[i].astype(int) - expected.astype(int))
        assert difference.max() <= 1 and (difference > 0).mean() < 0.01, i
    assert crops[-1][:5, :5].max() == 0  # outside the image


def test_full_image_equals_crops_mapped_back_to_the_image(data, network, signatures):
    image, boxes = _val_image_and_boxes(data)
    outputs = signatures[FULL_IMAGE_SIGNATURE](image=image, boxes=boxes)
    center, scale = (np.asarray(v) for v in box_to_center_scale(boxes,
                                                                 INPUT_SIZE[1] / INPUT_SIZE[0]))
    pipeline_crops = np.stack([
        cv2.warpAffine(image, np.asarray(affine_matrix(c, s, 0.0, INPUT_SIZE)), INPUT_SIZE[::-1],
                       flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        for c, s in zip(center, scale)])
    from_crops = signatures[SERVING_SIGNATURE](images=pipeline_crops)
    expected = crop_to_image(from_crops["keypoints"].numpy(), center, scale, INPUT_SIZE)
    errors = np.linalg.norm(outputs["keypoints"].numpy() - expected, axis=-1)
    # Pixels rounded differently by one level may swap near-equal heatmap ranks (weighted
    # decoder): rare and small; the scale of the region is 1-3 image px per crop px.
    assert np.median(errors) < 1e-3 and errors.max() < 8.0
    np.testing.assert_allclose(outputs["keypoint_scores"].numpy(),
                               from_crops["keypoint_scores"].numpy(), atol=0.05)


def test_full_image_offset_check_of_the_export(saved_model, network, crops):
    comparison = verify_full_image(saved_model, PosePredictor(network).predict(crops), crops,
                                   DEFAULT_TOLERANCES["float32"])
    assert comparison.passed, comparison


def test_no_boxes_and_no_crops_give_empty_outputs(signatures):
    empty = signatures[FULL_IMAGE_SIGNATURE](image=np.zeros((50, 40, 3), np.uint8),
                                             boxes=np.zeros((0, 4), np.float32))
    assert empty["keypoints"].shape == (0, K, 2) and empty["keypoint_scores"].shape == (0, K)
    none = signatures[SERVING_SIGNATURE](images=np.zeros((0, 64, 64, 3), np.uint8))
    assert none["keypoints"].shape == (0, K, 2) and none["heatmaps"].shape == (0, 16, 16, K)


@pytest.mark.parametrize("images,message", [
    (np.zeros((1, 64, 64, 3), np.float32), "uint8"),
    (np.zeros((2, 32, 64, 3), np.uint8), r"images must be uint8 \[N, 64, 64, 3\].*\[2 32 64 3\]"),
    (np.zeros((64, 64, 3), np.uint8), r"images must be uint8 \[N, 64, 64, 3\].*\[64 64 3\]"),
    (np.zeros((1, 64, 64, 4), np.uint8), r"images must be uint8 \[N, 64, 64, 3\]"),
])
def test_serving_default_rejects_bad_images_clearly(signatures, images, message):
    with pytest.raises((tf.errors.InvalidArgumentError, TypeError, ValueError), match=message):
        signatures[SERVING_SIGNATURE](images=tf.constant(images))


@pytest.mark.parametrize("image,boxes,message", [
    (np.zeros((1, 50, 40, 3), np.uint8), [[1, 1, 10, 10]], "image must be one uint8"),
    (np.zeros((50, 40, 1), np.uint8), [[1, 1, 10, 10]], "image must be one uint8"),
    (np.zeros((50, 40, 3), np.uint8), [[1, 1, 10]], r"boxes must be float32 \[M, 4\]"),
    (np.zeros((50, 40, 3), np.uint8), [[1, 1, 0, 10]], "w > 0 and h > 0"),
    (np.zeros((50, 40, 3), np.uint8), [[1, np.nan, 5, 10]], "must be finite"),
    # Inputs that used to answer with confident-looking keypoints:
    (np.zeros((50, 40, 3), np.uint8), [[5000, 10, 20, 30]], "boxes must overlap the image"),
    (np.zeros((50, 40, 3), np.uint8), [[1, 1, 20, 30], [-30, 1, 29, 30]],
     "boxes must overlap the image"),
    (np.zeros((50, 40, 3), np.uint8), [[0, 0, 1e30, 1e30]], "at most 10 times the image"),
    (np.zeros((0, 0, 3), np.uint8), [[0, 0, 10, 10]], "height and a width above 0"),
])
def test_full_image_rejects_bad_input_clearly(signatures, image, boxes, message):
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        signatures[FULL_IMAGE_SIGNATURE](image=tf.constant(image),
                                         boxes=tf.constant(boxes, tf.float32))


def test_runner_rejects_bad_images_before_the_model(saved_model):
    runner = SavedModelRunner(saved_model)
    with pytest.raises(ValueError, match="must be uint8"):
        runner.predict(np.zeros((1, 64, 64, 3), np.float32))
    with pytest.raises(ValueError, match=r"\[N, 64, 64, 3\].*\(1, 48, 64, 3\)"):
        runner.predict(np.zeros((1, 48, 64, 3), np.uint8))


def test_flip_test_off_and_no_heatmaps(tmp_path, network, crops):
    path = export_saved_model(network, str(tmp_path / "plain"), flip_test=False,
                              include_heatmaps=False)
    outputs = load_saved_model(path).signatures[SERVING_SIGNATURE](images=crops)
    assert set(outputs) == {"keypoints", "keypoint_scores"}
    assert read_metadata(path)["flip_test"] is False
    expected = network(crops.astype(np.float32))["heatmaps"].numpy().reshape(len(crops), -1, K)
    # Non-positive peaks are not found: score 0 (codec module docstring).
    np.testing.assert_allclose(outputs["keypoint_scores"].numpy(),
                               np.maximum(expected.max(axis=1), 0.0),
                               atol=1e-5 * np.abs(expected).max())
    comparison = compare_outputs(PosePredictor(network, flip_test=False).predict(crops),
                                 {k: v.numpy() for k, v in outputs.items()},
                                 DEFAULT_TOLERANCES["float32"], "plain")
    assert comparison.passed, comparison


def test_mixed_precision_network_is_exported_in_float32(network):
    mixed = he_initialised_tiny_model(INPUT_SIZE, dtype="mixed_bfloat16")
    mixed.set_weights(network.get_weights())
    exported = float32_network(mixed)
    assert exported is not mixed
    assert {layer.dtype_policy.compute_dtype for layer in exported.layers} == {"float32"}
    images = np.random.default_rng(1).integers(0, 256, (2, 64, 64, 3)).astype(np.float32)
    np.testing.assert_allclose(exported(images)["heatmaps"], network(images)["heatmaps"],
                               rtol=1e-5, atol=1e-5)
    assert float32_network(network) is network


def test_keypoints_with_non_positive_heatmaps_are_not_found(tmp_path, crops):
    network = lose_keypoints(he_initialised_tiny_model(INPUT_SIZE, seed=1))
    path = export_saved_model(network, str(tmp_path / "lost"), decoder="weighted", flip_test=True)
    outputs = load_saved_model(path).signatures[SERVING_SIGNATURE](images=crops)
    heatmaps, scores = outputs["heatmaps"].numpy(), outputs["keypoint_scores"].numpy()
    assert heatmaps[..., 0].max() < 0 and not heatmaps[..., 1:3].any()
    # Score 0 at heatmap pixel (0, 0), i.e. crop pixel (0 + 0.5) * 4 - 0.5 = 1.5 on both axes.
    np.testing.assert_array_equal(scores[:, :3], 0.0)
    np.testing.assert_array_equal(outputs["keypoints"].numpy()[:, :3], 1.5)
    np.testing.assert_allclose(scores[:, 3:], np.maximum(heatmaps.max(axis=(1, 2))[:, 3:], 0))
