"""evaluate.py and skelpose_tf.model_evaluation: COCO AP/AR and MPII PCKh of a network."""

import json
import os
import re
import zipfile

import numpy as np
import pytest
import scipy.io

from pose_fixtures import (DOT_PEOPLE, DOTS, PoolingNetwork, nearest_truth_errors,
                           pycocotools_stats, run_script, save_tiny_model, tiny_pose_model,
                           write_dots_dataset)
from skelpose_tf import model_evaluation
from skelpose_tf.data import sources
from skelpose_tf.evaluation import COCO_STAT_NAMES
from skelpose_tf.keypoints import get_keypoint_set
from skelpose_tf.model_loading import load_pose_model
from skelpose_tf.models.pose_model import TOPOLOGIES


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """(run directory, network) of an untrained W8 64x64 COCO model with the skeletal module."""
    run_dir = str(tmp_path_factory.mktemp("run"))
    return run_dir, save_tiny_model(run_dir)


@pytest.fixture(scope="module")
def dots(tmp_path_factory):
    return write_dots_dataset(str(tmp_path_factory.mktemp("dots")))


def dot_truth(num_images=2):
    return {i + 1: [[(x + 3.0 * i, y) for x, y in keypoints] for _, keypoints in DOT_PEOPLE]
            for i in range(num_images)}


@pytest.mark.parametrize("boxes", ["ground truth", "detector"])
def test_a_perfect_estimator_scores_ap_one_with_either_box_source(dots, tmp_path, boxes):
    detections = dots["detections"] if boxes == "detector" else ""
    (evaluation,) = model_evaluation.evaluate_coco_decoders(
        PoolingNetwork(DOTS), dots["ann"], dots["images"], detections, decoders=["dark"],
        batch_size=3, out_dir=str(tmp_path), log_every=0).values()
    assert evaluation.metric.stats["AP"] == 1.0
    assert evaluation.metric.stats["AR"] == 1.0
    assert evaluation.box_source == ("ground-truth boxes" if boxes == "ground truth"
                                     else f"detector boxes from {detections}")
    with open(evaluation.files["results"]) as f:
        results = json.load(f)
    assert len(results) == 4
    # Keypoints are in original-image pixels: within a pixel of the dots.
    assert nearest_truth_errors(results, dot_truth()).max() < 1.0
    table = evaluation.format_table("dots")
    assert f"Person boxes: {evaluation.box_source}" in table and "100.0" in table


def test_max_people_evaluates_whole_first_images_only(dots, tmp_path):
    (evaluation,) = model_evaluation.evaluate_coco_decoders(
        PoolingNetwork(DOTS), dots["ann"], dots["images"], max_people=1,
        out_dir=str(tmp_path), log_every=0).values()
    assert (evaluation.num_people, evaluation.metric.num_images) == (2, 1)
    assert evaluation.metric.stats["AP"] == 1.0  # the second image's people are not misses
    with open(evaluation.files["results"]) as f:
        assert {r["image_id"] for r in json.load(f)} == {1}


def test_results_json_scored_by_pycocotools_equals_the_printed_metrics(dots, tmp_path):
    # Shifted heatmaps make a mediocre estimator, so AP is neither 0 nor 1.
    network = PoolingNetwork(DOTS, shift=(0.0, 2.0))
    evaluations = model_evaluation.evaluate_coco_decoders(
        network, dots["ann"], dots["images"], decoders=["weighted", "argmax"], batch_size=4,
        out_dir=str(tmp_path), log_every=0)
    for decoder, evaluation in evaluations.items():
        direct = pycocotools_stats(dots["ann"], evaluation.files["results"], DOTS.oks_sigmas)
        stats = evaluation.metric.stats
        np.testing.assert_allclose([stats[name] for name in COCO_STAT_NAMES], direct)
        assert 0.0 < stats["AP"] < 1.0, decoder
        row = evaluation.table_row
        assert row["mAP"] == round(100 * direct[0], 1) and row["mAR"] == round(100 * direct[5], 1)
        assert f"{row['mAP']:.1f}" in evaluation.format_table("dots").splitlines()[-1]
    # The same file through the command line's scoring mode prints the same table.
    results_file = evaluations["weighted"].files["results"]
    metrics_file = str(tmp_path / "scored.json")
    completed = run_script("evaluate.py", f"--results_json={results_file}",
                           f"--ann={dots['ann']}", f"--keypoint_set={dots['keypoint_set']}",
                           f"--metrics_json={metrics_file}")
    assert completed.returncode == 0, completed.stderr
    direct = pycocotools_stats(dots["ann"], results_file, DOTS.oks_sigmas)
    printed_row = completed.stdout.splitlines()[3].split()[-6:]
    # Table I columns: mAP, AP .5, AP .75, AP (M), AP (L), mAR; -1 (no such people) is n/a.
    assert printed_row == [f"{100 * v:.1f}" if v >= 0 else "n/a" for v in direct[:6]]
    assert printed_row[3] == "n/a"  # the dots are all large people
    assert 0 < direct[0] < 1
    with open(metrics_file) as f:
        scored = json.load(f)
    np.testing.assert_allclose([scored["stats"][n] for n in COCO_STAT_NAMES], direct)


def test_evaluate_command_on_the_synthetic_set_writes_results_metrics_and_table(
        synthetic_eval_dir, tiny_run, tmp_path):
    run_dir, _ = tiny_run
    out_dir = str(tmp_path / "out")
    completed = run_script("evaluate.py", f"--weights={run_dir}",
                           f"--data_dir={synthetic_eval_dir}", f"--out_dir={out_dir}",
                           "--batch_size=2")
    assert completed.returncode == 0, completed.stderr
    with open(os.path.join(out_dir, "metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["box_source"] == "ground-truth boxes"
    assert (metrics["decoder"], metrics["flip_test"]) == ("weighted", True)
    assert metrics["model"]["width"] == 8 and metrics["model"]["skeletal_attention"] is True
    assert metrics["weights"] == os.path.join(run_dir, "best.keras")
    results_file = os.path.join(out_dir, "keypoints_results_weighted.json")
    assert metrics["results_file"] == results_file
    direct = pycocotools_stats(metrics["annotation_file"], results_file)
    np.testing.assert_allclose([metrics["stats"][n] for n in COCO_STAT_NAMES], direct)
    with open(metrics["annotation_file"]) as f:
        annotated = sum(a["num_keypoints"] > 0 for a in json.load(f)["annotations"])
    assert metrics["num_people"] == annotated
    assert "Person boxes: ground-truth boxes" in completed.stdout
    header = next(line for line in completed.stdout.splitlines() if line.startswith("Method"))
    assert header.split()[1:] == ["mAP", "AP", ".5", "AP", ".75", "AP", "(M)", "AP", "(L)", "mAR"]


def mpii_pckh_reference(predictions, gt_mat, keypoint_set):
    """Mean PCKh@0.5 / @0.11 (official "@0.1") / @0.1 over all joints but pelvis and thorax,
    straight from the .mat."""
    content = scipy.io.loadmat(gt_mat)
    names = ["rank", "rkne", "rhip", "lhip", "lkne", "lank", "pelv", "thor", "neck", "head",
             "rwri", "relb", "rsho", "lsho", "lelb", "lwri"]
    file_names = [str(np.asarray(v).reshape(-1)[0]) for v in
                  np.asarray(content["dataset_joints"], object).reshape(-1)]
    assert file_names == names  # MPII's own order is the keypoint set's order
    joints = np.transpose(content["pos_gt_src"], (2, 0, 1)) - 1.0
    visible = np.transpose(content["jnt_missing"]) == 0
    boxes = np.transpose(content["headboxes_src"], (2, 0, 1))
    head = 0.6 * np.linalg.norm(boxes[:, 1] - boxes[:, 0], axis=-1)
    error = np.linalg.norm(predictions - joints, axis=-1) / head[:, None]
    counted = visible.copy()
    counted[:, [keypoint_set.index("pelvis"), keypoint_set.index("thorax")]] = False
    return tuple(((error <= t) & counted).sum() / counted.sum() for t in (0.5, 0.11, 0.1))


def test_mpii_pckh_equals_a_direct_computation_from_the_written_predictions(
        synthetic_eval_dir, tmp_path):
    mpii = get_keypoint_set("mpii")
    source = sources.resolve_data_source("mpii", data_dir=synthetic_eval_dir)
    assert source.head_boxes.endswith("mpii_gt_val.mat")
    (evaluation,) = model_evaluation.evaluate_mpii_decoders(
        PoolingNetwork(mpii, input_size=(64, 64)), source.annotation_file, source.image_dir,
        source.head_boxes, decoders=["argmax"], batch_size=2, out_dir=str(tmp_path),
        log_every=0).values()
    preds = scipy.io.loadmat(evaluation.files["pred_mat"])["preds"] - 1.0
    with open(evaluation.files["predictions"]) as f:
        people = json.load(f)["people"]
    np.testing.assert_allclose(preds[[p["annotation_index"] for p in people]],
                               [np.asarray(p["keypoints"])[:, :2] for p in people], atol=1e-3)
    at_05, at_011, at_01 = mpii_pckh_reference(preds, source.head_boxes, mpii)
    assert evaluation.metric.mean == pytest.approx(at_05)
    assert evaluation.metric.mean_at_0_1 == pytest.approx(at_011)
    assert evaluation.metric.mean_at_exact_0_1 == pytest.approx(at_01)
    assert evaluation.table_row["Mean"] == round(100 * at_05, 1)
    table = evaluation.format_table("synthetic MPII")
    assert ("Head  Shoulder  Elbow  Wrist  Hip  Knee  Ankle  Mean  Mean@0.1 (thr 0.11)  "
            "Mean@0.1 (exact)") in table


def test_a_results_file_for_other_images_is_refused(dots, tmp_path):
    foreign = str(tmp_path / "foreign.json")
    with open(foreign, "w") as f:
        json.dump([{"image_id": 999, "category_id": 1, "score": 1.0,
                    "keypoints": [10.0, 10.0, 1.0] * 3}], f)
    with pytest.raises(ValueError, match=r"image id\(s\) that are not in the annotation file"):
        model_evaluation.score_coco_results(foreign, dots["ann"], DOTS)
    completed = run_script("evaluate.py", f"--results_json={foreign}", f"--ann={dots['ann']}",
                           f"--keypoint_set={dots['keypoint_set']}")
    assert completed.returncode == 1
    assert "999" in completed.stderr and "another split or data set" in completed.stderr
    assert "Traceback" not in completed.stderr


def _broken_annotations(ann, tmp_path, kind):
    """A copy of the annotation file `ann` broken in one way; returns its path."""
    with open(ann) as f:
        data = json.load(f)
    if kind == "annotations object":  # was a TypeError inside pycocotools
        data["annotations"] = {str(a["id"]): a for a in data["annotations"]}
    elif kind == "no image_id":  # was KeyError: 'image_id'
        del data["annotations"][1]["image_id"]
    elif kind == "duplicate image ids":  # was a silently lower AP
        data["images"][1]["id"] = data["images"][0]["id"]
    path = str(tmp_path / f"{kind.replace(' ', '_')}.json")
    with open(path, "w") as f:
        json.dump(data, f)
    return path


@pytest.mark.parametrize("kind, message", [
    ("annotations object", "field 'annotations' must be a list of objects"),
    ("no image_id", "annotation id 11 has no field 'image_id'"),
    ("duplicate image ids", r"1 image id\(s\) occur more than once: 1\."),
])
def test_a_bad_annotation_file_for_a_results_file_is_one_line_and_status_1(dots, tmp_path, kind,
                                                                           message):
    results = str(tmp_path / "results.json")
    with open(results, "w") as f:
        json.dump([{"image_id": 1, "category_id": 1, "score": 1.0,
                    "keypoints": [10.0, 10.0, 1.0] * 3}], f)
    bad = _broken_annotations(dots["ann"], tmp_path, kind)
    completed = run_script("evaluate.py", f"--results_json={results}", f"--ann={bad}",
                           f"--keypoint_set={dots['keypoint_set']}")
    assert completed.returncode == 1, completed.stderr
    assert "Traceback" not in completed.stderr
    (line,) = [line for line in completed.stderr.splitlines() if "evaluate.py: error:" in line]
    assert re.search(f"evaluate.py: error: {re.escape(bad)}.*{message}", line), line
    assert completed.stdout == ""


def test_weights_of_another_keypoint_set_are_refused_before_inference(
        dots, synthetic_eval_dir):
    with pytest.raises(ValueError, match="predicts 16 keypoints .* annotates 3 per person"):
        model_evaluation.evaluate_coco_decoders(PoolingNetwork(get_keypoint_set("mpii")),
                                            dots["ann"], dots["images"])
    source = sources.resolve_data_source("mpii", data_dir=synthetic_eval_dir)
    with pytest.raises(ValueError, match="needs a model of the MPII keypoint set.*'coco'"):
        model_evaluation.evaluate_mpii_decoders(PoolingNetwork(get_keypoint_set("coco")),
                                            source.annotation_file, source.image_dir)


def test_checkpoints_of_another_architecture_are_refused(tmp_path):
    network = tiny_pose_model(skeletal_attention=True)
    weights = str(tmp_path / "coco.weights.h5")
    network.save_weights(weights)
    tiny = TOPOLOGIES["tiny"]
    with pytest.raises(ValueError, match="do not fit a W8 64x64 mpii, skeletal attention, stages"):
        load_pose_model(weights, width=8, input_size="64x64", keypoint_set="mpii", **tiny)
    with pytest.raises(ValueError, match="HRNet baseline.*check --width"):
        load_pose_model(weights, width=8, input_size="64x64", skeletal_attention=False, **tiny)
    with pytest.raises(ValueError, match="holds weights only: pass the architecture"):
        load_pose_model(weights)
    loaded, path = load_pose_model(weights, width=8, input_size="64x64", **tiny)
    assert path == weights
    np.testing.assert_array_equal(loaded.get_layer("keypoint_head").kernel.numpy(),
                                  network.get_layer("keypoint_head").kernel.numpy())
    # A .keras file's stored architecture is checked before the model is built.
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with zipfile.ZipFile(run_dir / "best.keras", "w") as archive:
        archive.writestr("config.json", json.dumps({"class_name": "PoseHRNet", "config": {
            "width": 8, "input_size": [64, 64], "keypoint_set": "coco",
            "skeletal_attention": True}}))
    with pytest.raises(ValueError, match="keypoint_set='coco', but keypoint_set='mpii' was"):
        load_pose_model(str(run_dir), keypoint_set="mpii")
    with pytest.raises(ValueError, match="No checkpoint at"):
        load_pose_model(str(tmp_path / "missing_run"))
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(ValueError, match="holds no best.keras or last.keras"):
        load_pose_model(str(tmp_path / "empty_run"))


def test_missing_images_and_inputs_give_clear_errors(dots, tmp_path):
    with pytest.raises(ValueError, match="No person to evaluate .* missing image file"):
        model_evaluation.evaluate_coco_decoders(PoolingNetwork(DOTS), dots["ann"], str(tmp_path))
    with pytest.raises(ValueError, match="Image folder \\(--images\\) not found"):
        sources.resolve_data_source("coco", annotation_file=dots["ann"],
                                         image_dir=str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="apply to COCO only"):
        sources.resolve_data_source("mpii", det_boxes_json=dots["detections"])
    with pytest.raises(ValueError, match="Pass both"):
        sources.resolve_data_source("coco", annotation_file=dots["ann"])
