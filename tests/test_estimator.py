"""skelpose_tf.estimator.PoseEstimator: one API over every saved form of a model, the same
crops as evaluation, and predict.py's COCO results read by pycocotools."""

import json
import os

import numpy as np
import pytest

from pose_fixtures import pycocotools_stats, run_script, write_object_detection_saved_model
from skelpose_tf import PoseEstimator
from skelpose_tf.crop_geometry import image_to_crop
from skelpose_tf.data.coco import read_coco_detections
from skelpose_tf.estimator import read_image
from skelpose_tf.export.verify import DEFAULT_TOLERANCES, compare_outputs
from skelpose_tf.inference import PosePredictor, predict_records
from skelpose_tf.keypoints import COCO


# `network` (He-initialised W8 64x64, tiny topology) and `data` (3 + 3 synthetic images of
# 160x120, with COCO detection results for val) are conftest.py fixtures.
@pytest.fixture(scope="module")
def saved(network, tmp_path_factory):
    """The network as a run directory, a .weights.h5 file, a SavedModel and a TFLite export."""
    from skelpose_tf.export import export_tflite
    from skelpose_tf.export.saved_model import export_saved_model

    root = tmp_path_factory.mktemp("saved")
    run_dir = root / "run"
    run_dir.mkdir()
    network.save(str(run_dir / "best.keras"))
    network.save_weights(str(root / "model.weights.h5"))
    export_saved_model(network, str(root / "saved_model"), flip_test=True)
    export_tflite(network, str(root / "model.tflite"), quantization="float32",
                  variant="keypoints", flip_test=True)
    return {"keras": str(run_dir / "best.keras"), "run_dir": str(run_dir),
            "weights": str(root / "model.weights.h5"), "saved_model": str(root / "saved_model"),
            "tflite": str(root / "model.tflite")}


@pytest.fixture(scope="module")
def val_people(data):
    """{image path: (boxes [P, 4], scores [P])} of the synthetic detector results."""
    records = read_coco_detections(data.val_detections, data.val_annotations, data.val_images,
                                   COCO, (64, 64))
    people = {}
    for record in records:
        boxes, scores = people.setdefault(record.image_path, ([], []))
        boxes.append(record.box)
        scores.append(record.box_score)
    return {path: (np.asarray(b, np.float32), np.asarray(s, np.float32))
            for path, (b, s) in people.items()}


def _crop_outputs(prediction) -> dict:
    """A prediction's keypoints back in crop pixels (the export verification's frame)."""
    keypoints = image_to_crop(prediction.keypoints, prediction.centers, prediction.scales,
                              (64, 64))
    return {"keypoints": np.asarray(keypoints), "keypoint_scores": prediction.keypoint_scores}


def test_every_saved_form_gives_the_same_poses(saved, val_people):
    path, (boxes, scores) = next(iter(val_people.items()))
    image = read_image(path)
    predictions = {}
    for name, model in saved.items():
        options = ({"width": 8, "input_size": "64x64", "topology": "tiny"}
                   if name == "weights" else {})
        estimator = PoseEstimator.load(model, detector="none", **options)
        assert estimator.keypoint_set.num_keypoints == 17
        predictions[name] = estimator.predict_image(image, boxes, scores)
        people = estimator.estimate(image, boxes, scores)
        assert [p.box.tolist() for p in people] == boxes.tolist()
        np.testing.assert_allclose(np.stack([p.keypoints[:, :2] for p in people]),
                                   predictions[name].keypoints)
    reference = predictions["keras"]
    assert reference.num_people == len(boxes) > 0
    for name in ("run_dir", "weights"):  # the same network in the same graph
        np.testing.assert_allclose(predictions[name].keypoints, reference.keypoints, atol=1e-4)
    tolerance = DEFAULT_TOLERANCES["float32"]  # what the export verification holds them to
    for name in ("saved_model", "tflite"):
        comparison = compare_outputs(_crop_outputs(reference), _crop_outputs(predictions[name]),
                                     tolerance, name)
        assert comparison.passed, str(comparison)


def test_crops_and_keypoints_match_the_evaluation_pipeline(network, data, val_people):
    """In-memory crops (the estimator) and the data pipeline's crops (evaluation) agree."""
    records = read_coco_detections(data.val_detections, data.val_annotations, data.val_images,
                                   COCO, network.input_size)
    reference = predict_records(PosePredictor(network), records, batch_size=8)
    estimator = PoseEstimator(PosePredictor(network), None, batch_size=3)
    rows = []
    for path, (boxes, scores) in val_people.items():
        prediction = estimator.predict_image(read_image(path), boxes, scores)
        rows.append(prediction.keypoints)
    order = np.argsort(reference["record_index"])
    np.testing.assert_allclose(np.concatenate(rows), reference["keypoints"]["weighted"][order],
                               atol=1e-3)


def test_detector_and_whole_image_paths(saved, data, val_people, tmp_path):
    path, (boxes, scores) = next(iter(val_people.items()))
    estimator = PoseEstimator.load(saved["keras"], detector=f"boxes:{data.val_detections}",
                                   annotations=data.val_annotations)
    found, found_scores = estimator.detect(path)
    np.testing.assert_array_equal(found, boxes)
    np.testing.assert_array_equal(found_scores, scores)
    by_detector = estimator(path)
    given = estimator.estimate(read_image(path), boxes, scores)
    for a, b in zip(by_detector, given, strict=True):
        np.testing.assert_allclose(a.keypoints, b.keypoints)
        assert a.score == pytest.approx(b.score) and a.box_score == pytest.approx(b.box_score)
    whole = PoseEstimator.load(saved["keras"], detector="none").predict_image(path)
    assert whole.box_source == "whole image (no boxes given)" and whole.num_people == 1
    with pytest.raises(ValueError, match="RGB uint8"):
        estimator(np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="baked in: decoder='argmax'"):
        PoseEstimator.load(saved["tflite"], decoder="argmax")


def test_predict_command_writes_coco_results_that_pycocotools_scores(saved, data, network,
                                                                     tmp_path):
    out = tmp_path / "out"
    completed = run_script("predict.py", f"--weights={saved['run_dir']}",
                           f"--image={data.val_images}", f"--out_dir={out}",
                           f"--detector=boxes:{data.val_detections}",
                           f"--annotations={data.val_annotations}")
    assert completed.returncode == 0, completed.stderr[-3000:]
    with open(out / "coco_results.json") as f:
        results = json.load(f)
    with open(data.val_annotations) as f:
        image_ids = {image["id"] for image in json.load(f)["images"]}
    assert results and {r["image_id"] for r in results} <= image_ids
    assert all(r["category_id"] == 1 and len(r["keypoints"]) == 51 for r in results)
    # loadRes takes the file as it is and COCOeval scores it (AP ~0 for random weights).
    stats = pycocotools_stats(data.val_annotations, str(out / "coco_results.json"))
    assert stats.shape == (10,) and np.all(np.isfinite(stats))
    # The evaluation's own path on the same boxes: the data pipeline's crops, the same
    # rescoring; each person's keypoints and score agree.
    from skelpose_tf.evaluation.coco_metric import rescore_instances

    records = read_coco_detections(data.val_detections, data.val_annotations, data.val_images,
                                   COCO, network.input_size)
    reference = predict_records(PosePredictor(network), records, batch_size=8)
    order = np.argsort(reference["record_index"])
    keypoints = reference["keypoints"]["weighted"][order]
    scores = reference["scores"]["weighted"][order]
    instance = rescore_instances(scores, reference["box_score"][order])
    expected = [{"image_id": int(reference["image_id"][order][i]), "category_id": 1,
                 "keypoints": np.concatenate([keypoints[i], scores[i][:, None]], -1)
                 .reshape(-1).tolist(), "score": float(instance[i]),
                 "bbox": records[i].box.tolist()}
                for i in range(len(order))]

    # An image the detection file does not list is one person, the whole image (as reported).
    listed = {r["image_id"] for r in expected}
    unlisted = [r for r in results if r["image_id"] not in listed]
    assert len(unlisted) == len(image_ids - listed) == 1
    assert unlisted[0]["bbox"] == [-0.5, -0.5, 160, 120]
    assert "(person boxes: whole image (not listed in " in completed.stdout
    results = [r for r in results if r["image_id"] in listed]

    def by_box(entries):
        return sorted(entries, key=lambda r: (r["image_id"], *np.round(r["bbox"], 2)))

    assert len(results) == len(expected)
    for got, want in zip(by_box(results), by_box(expected)):
        assert got["image_id"] == want["image_id"]
        np.testing.assert_allclose(got["bbox"], want["bbox"], atol=1e-3)
        np.testing.assert_allclose(got["keypoints"], want["keypoints"], atol=2e-3)
        assert got["score"] == pytest.approx(want["score"], abs=1e-5)
    with open(out / "predictions.json") as f:
        payload = json.load(f)
    assert len(payload["images"]) == len(os.listdir(data.val_images))
    assert all(os.path.exists(entry["drawing"]) for entry in payload["images"])


def test_predict_command_with_an_export_and_a_saved_model_detector(saved, data, tmp_path):
    detector = write_object_detection_saved_model(
        tmp_path / "od", [[0.1, 0.25, 0.9, 0.5], [0.2, 0.5, 0.8, 0.75], [0.0, 0.0, 1.0, 1.0]],
        [0.9, 0.6, 0.99], [1, 1, 62])
    image = os.path.join(data.val_images, sorted(os.listdir(data.val_images))[0])
    out = tmp_path / "out"
    completed = run_script("predict.py", f"--weights={saved['saved_model']}", f"--image={image}",
                           f"--detector=saved_model:{detector}", f"--out_dir={out}",
                           "--show_maps")
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert f"model: export {saved['saved_model']}" in completed.stdout
    with open(out / "predictions.json") as f:
        (entry,) = json.load(f)["images"]
    assert entry["box_source"] == f"detector {detector}"
    # 160x120 image: x = 0.25 * 160 - 0.5, y = 0.1 * 120 - 0.5, w = 0.25 * 160, h = 0.8 * 120.
    assert [p["box"] for p in entry["people"]] == [[39.5, 11.5, 40.0, 96.0],
                                                    [79.5, 23.5, 40.0, 72.0]]
    assert [p["box_score"] for p in entry["people"]] == [0.9, 0.6]
    assert len(entry["maps"]) == 2 and all(os.path.exists(m) for m in entry["maps"])
