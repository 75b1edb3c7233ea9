"""TFLite export: every quantisation x variant end to end, the MoveNet contract, bad input.

Tiny He-initialised model (W8, 64x64, one module and one block per stage) and real crops of
the synthetic data set; int8 calibrates on training-set crops and is checked on val crops.
Random weights make quantisation look worse than on a trained model (no clear peaks), so the
quantised variants are held to bounds on the heatmaps and scores here; their keypoint error
and AP cost are measured on the trained demo model (BENCHMARKS.md).
"""

import json
import os

import numpy as np
import pytest
from pose_fixtures import (TINY_INPUT_SIZE, he_initialised_tiny_model, lose_keypoints,
                           run_script)

from skelpose_tf.inference import PosePredictor
from skelpose_tf.export import (DEFAULT_TOLERANCES, QUANTIZATIONS, ExportVerificationError,
                                TFLiteExporter, Tolerance, compare_ap, export_all,
                                export_tflite)
from skelpose_tf.export.runtime import TFLiteRunner, make_interpreter
from skelpose_tf.export.saved_model import ServingGraph
from skelpose_tf.export.tflite import convert
from skelpose_tf.export.verify import compare_outputs
from skelpose_tf.keypoints import COCO

INPUT_SIZE = TINY_INPUT_SIZE
K = COCO.num_keypoints
# Bounds for random-weight models: heatmap error relative to the largest |heatmap|, and score
# error (scores are O(10) here; the comparison divides by the largest score). Measured over
# four seeds: float16 <= 0.0015, dynamic_int8 <= 0.026, int8 <= 0.092 (heatmaps) and <= 0.2
# (scores of the flip-averaged keypoint model); the bounds leave room for data changes.
HEATMAP_BOUND = {"float32": 1e-5, "float16": 0.01, "dynamic_int8": 0.1, "int8": 0.3}
SCORE_BOUND = {"float32": 1e-5, "float16": 0.01, "dynamic_int8": 0.1, "int8": 0.3}
LOOSE = Tolerance(keypoint_max_px=64.0, keypoint_mean_px=64.0, score=0.3, heatmap=0.3)


# `network` (the He-initialised tiny model), `data` (a small synthetic set), `crops` (its val
# crops) and `calibration` (its train crops) are conftest.py fixtures.
@pytest.fixture(scope="module")
def graph(network):
    return ServingGraph(network, flip_test=True)


@pytest.fixture(scope="module")
def references(network, crops):
    return {"keypoints": PosePredictor(network, flip_test=True).predict(crops),
            "heatmaps": PosePredictor(network, flip_test=False).predict(crops)}


@pytest.mark.parametrize("variant", ["keypoints", "heatmaps"])
@pytest.mark.parametrize("quantization", QUANTIZATIONS)
def test_export_load_run_compare(tmp_path, graph, calibration, crops, references, quantization,
                                 variant):
    path = str(tmp_path / f"{variant}_{quantization}.tflite")
    metadata = export_tflite(graph.network, path, quantization=quantization, variant=variant,
                             calibration_crops=calibration, graph=graph)
    # The contract, as LiteRT sees it.
    interpreter = make_interpreter(path)
    output_name = "keypoints_with_scores" if variant == "keypoints" else "heatmaps"
    assert interpreter.get_signature_list() == {
        "serving_default": {"inputs": ["images"], "outputs": [output_name]}}
    runner = interpreter.get_signature_runner("serving_default")
    (input_details,) = runner.get_input_details().values()
    (output_details,) = runner.get_output_details().values()
    assert input_details["dtype"] == np.uint8
    assert list(input_details["shape"]) == [1, 64, 64, 3]
    assert output_details["dtype"] == np.float32
    expected_shape = [1, 1, K, 3] if variant == "keypoints" else [1, 16, 16, K]
    assert list(output_details["shape"]) == expected_shape
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert ops == set(metadata["ops"]) and "CONV_2D" in ops
    assert all(name.isupper() and not name.startswith(("FLEX", "CUSTOM")) for name in ops), ops
    # The JSON beside the model.
    with open(path[: -len(".tflite")] + ".json") as file:
        sidecar = json.load(file)
    assert sidecar["quantization"] == quantization and sidecar["variant"] == variant
    assert sidecar["inputs"] == [{"name": "images", "dtype": "uint8", "shape": [1, 64, 64, 3]}]
    assert sidecar["outputs"][0]["shape"] == expected_shape
    assert sidecar["keypoint_names"] == list(COCO.keypoint_names)
    assert sidecar["flip_pairs"] == [list(p) for p in COCO.flip_pairs]
    assert sidecar["flip_test"] is (variant == "keypoints")
    assert sidecar["size_bytes"] == os.path.getsize(path)
    # Run and compare with Keras.
    reference = references[variant]
    outputs = TFLiteRunner(path).predict(crops)
    tolerance = DEFAULT_TOLERANCES["float32"] if quantization == "float32" else LOOSE
    comparison = compare_outputs(reference, outputs, tolerance, path)
    assert comparison.passed, comparison
    assert comparison.max_score_error <= SCORE_BOUND[quantization], comparison
    if variant == "heatmaps":
        assert comparison.heatmap_error <= HEATMAP_BOUND[quantization], comparison


def test_movenet_layout_is_y_x_score_normalised(tmp_path, graph, crops, references):
    path = str(tmp_path / "pose.tflite")
    export_tflite(graph.network, path, quantization="float32", graph=graph)
    runner = make_interpreter(path).get_signature_runner("serving_default")
    packed = np.concatenate([runner(images=crop[None])["keypoints_with_scores"]
                             for crop in crops])[:, 0]
    expected = references["keypoints"]
    np.testing.assert_allclose(packed[..., 0], (expected["keypoints"][..., 1] + 0.5) / 64,
                               atol=1e-5)
    np.testing.assert_allclose(packed[..., 1], (expected["keypoints"][..., 0] + 0.5) / 64,
                               atol=1e-5)
    np.testing.assert_allclose(packed[..., 2], expected["keypoint_scores"],
                               atol=1e-5 * np.abs(expected["keypoint_scores"]).max())
    assert packed[..., :2].min() >= 0.0 and packed[..., :2].max() <= 1.0


# (activation dtype into the convolutions, dtype of their weights) for each quantisation.
CONVOLUTION_DTYPES = {"float32": (np.float32, np.float32), "float16": (np.float32, np.float16),
                      "dynamic_int8": (np.float32, np.int8), "int8": (np.int8, np.int8)}


@pytest.mark.parametrize("variant", ["keypoints", "heatmaps"])
def test_each_quantization_is_what_it_says(tmp_path, graph, calibration, variant):
    with TFLiteExporter(graph) as exporter:
        for quantization in QUANTIZATIONS:
            path = str(tmp_path / f"{quantization}.tflite")
            exporter.export(path, quantization, variant, calibration)
            interpreter = make_interpreter(path)
            tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
            ops = interpreter._get_ops_details()
            convolutions = [op for op in ops if op["op_name"] == "CONV_2D"]
            activations = {tensors[op["inputs"][0]]["dtype"] for op in convolutions}
            assert activations == {CONVOLUTION_DTYPES[quantization][0]}, quantization
            # float16 weights are dequantised by a DEQUANTIZE op in front of the conv.
            weight_dtypes = {tensors[op["inputs"][1]]["dtype"] for op in convolutions}
            producers = {out: op for op in ops for out in op["outputs"]}
            weight_dtypes |= {tensors[producers[op["inputs"][1]]["inputs"][0]]["dtype"]
                              for op in convolutions if op["inputs"][1] in producers}
            assert CONVOLUTION_DTYPES[quantization][1] in weight_dtypes, quantization
            if variant == "keypoints":  # the decoder runs in float32 in every model
                (top_k,) = [op for op in ops if op["op_name"] == "TOPK_V2"]
                assert tensors[top_k["inputs"][0]]["dtype"] == np.float32, quantization


def test_int8_needs_calibration_crops(tmp_path, graph):
    with pytest.raises(ValueError, match="calibration_crops"):
        export_tflite(graph.network, str(tmp_path / "x.tflite"), quantization="int8",
                      graph=graph)


def test_unknown_quantization_and_variant_are_refused(tmp_path, graph):
    with pytest.raises(ValueError, match="quantization must be one of"):
        convert(str(tmp_path), "int4")
    with pytest.raises(ValueError, match="variant must be one of"):
        export_tflite(graph.network, str(tmp_path / "x.tflite"), variant="boxes", graph=graph)


def test_bad_input_gives_a_clear_error(tmp_path, graph):
    path = str(tmp_path / "pose.tflite")
    export_tflite(graph.network, path, quantization="float32", graph=graph)
    runner = TFLiteRunner(path)
    with pytest.raises(ValueError, match="must be uint8"):
        runner.predict(np.zeros((1, 64, 64, 3), np.float32))
    with pytest.raises(ValueError, match=r"\[N, 64, 64, 3\].*\(1, 32, 64, 3\)"):
        runner.predict(np.zeros((1, 32, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="batches of exactly 1"):
        runner.run(np.zeros((2, 64, 64, 3), np.uint8))
    # LiteRT itself refuses another dtype.
    raw = make_interpreter(path).get_signature_runner("serving_default")
    with pytest.raises(ValueError, match="(?i)uint8"):
        raw(images=np.zeros((1, 64, 64, 3), np.float32))


def test_export_all_writes_verifies_and_scores(tmp_path, network, data, calibration, crops):
    out_dir = str(tmp_path / "export")
    report = export_all(network, out_dir, calibration, crops, quantizations=("float32", "int8"),
                        heatmap_quantizations=("float16",), tolerances={"int8": LOOSE,
                                                                         "float16": LOOSE})
    assert report.passed
    names = {os.path.basename(a.path) for a in report.artifacts}
    assert names == {"saved_model", "pose_float32.tflite", "pose_int8.tflite",
                     "heatmaps_float16.tflite"}
    assert [a.variant for a in report.artifacts if a.kind == "saved_model"] == ["crops",
                                                                                 "full_image"]
    with open(os.path.join(out_dir, "export_report.json")) as file:
        assert json.load(file)["passed"] is True
    with open(os.path.join(out_dir, "pose_int8.json")) as file:
        assert json.load(file)["verification"][0]["passed"] is True
    # AP through the exports: the float32 models score exactly as the Keras model does.
    table = compare_ap(network, report, data.val_annotations, data.val_images)
    assert table["pose_float32.tflite"] == pytest.approx(table["keras"], abs=1e-6)
    assert table["saved_model"] == pytest.approx(table["keras"], abs=1e-6)
    assert set(table) == {"keras", "keras_no_flip", "saved_model", "pose_float32.tflite",
                          "pose_int8.tflite", "heatmaps_float16.tflite"}


def test_export_fails_loudly_past_its_tolerance(tmp_path, network, crops):
    strict = Tolerance(keypoint_max_px=0.0, keypoint_mean_px=0.0, score=0.0, heatmap=0.0)
    with pytest.raises(ExportVerificationError, match="heatmaps_float16.tflite.*FAILED"):
        export_all(network, str(tmp_path / "export"), None, crops, quantizations=(),
                   heatmap_quantizations=("float16",), saved_model=False,
                   tolerances={"float16": strict})
    # The rejected export is not installed: it waits in export.failed with its report.
    assert not os.path.exists(tmp_path / "export")
    with open(tmp_path / "export.failed" / "export_report.json") as file:
        assert json.load(file)["passed"] is False


@pytest.mark.parametrize("decoder", ["dark", "quarter"])
def test_other_decoders_convert_and_agree(tmp_path, network, crops, decoder):
    graph = ServingGraph(network, decoder=decoder, flip_test=False)
    path = str(tmp_path / f"pose_{decoder}.tflite")
    export_tflite(network, path, graph=graph)
    assert TFLiteRunner(path).codec.decoder == decoder
    keras_predictor = PosePredictor(network, network.codec.replace(decoder=decoder),
                                    flip_test=False)
    comparison = compare_outputs(keras_predictor.predict(crops),
                                 TFLiteRunner(path).predict(crops),
                                 DEFAULT_TOLERANCES["float32"], path)
    assert comparison.passed, comparison


def test_keypoints_with_non_positive_heatmaps_are_not_found(tmp_path, crops):
    network = lose_keypoints(he_initialised_tiny_model(INPUT_SIZE, seed=1))
    path = str(tmp_path / "lost.tflite")
    export_tflite(network, path, decoder="dark", flip_test=True)
    outputs = TFLiteRunner(path).predict(crops)
    # Nose (all negative), eyes (all zero): score 0 at crop pixel (0 + 0.5) * 4 - 0.5 = 1.5.
    np.testing.assert_array_equal(outputs["keypoint_scores"][:, :3], 0.0)
    np.testing.assert_allclose(outputs["keypoints"][:, :3], 1.5, atol=1e-5)
    assert (outputs["keypoint_scores"][:, 3:] > 0).any()


@pytest.mark.slow
def test_command_line_export(tmp_path, network, data):
    weights = str(tmp_path / "net.keras")
    network.save(weights)
    out = str(tmp_path / "model.tflite")
    result = run_script(
        "export_tflite.py", f"--weights={weights}", "--format=tflite", f"--out={out}",
        "--quantization=float32", "--variant=heatmaps", f"--ann={data.val_annotations}",
        f"--images={data.val_images}", f"--calibration_ann={data.train_annotations}",
        f"--calibration_images={data.train_images}", "--num_verification=8")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "verified model.tflite" in result.stdout and "| ok" in result.stdout
    with open(str(tmp_path / "model.json")) as file:
        metadata = json.load(file)
    assert metadata["variant"] == "heatmaps" and metadata["verification"][0]["passed"]
