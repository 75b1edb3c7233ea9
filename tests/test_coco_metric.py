"""COCO keypoint metric: rescoring, OKS-NMS, results JSON, pycocotools scores, and the checks of
annotation and results files before pycocotools reads them."""

import contextlib
import io
import json
import re

import numpy as np
import pytest
from data_fixtures import write_coco
from pose_fixtures import pycocotools_stats

from skelpose_tf.evaluation import coco_metric
from skelpose_tf.evaluation.coco_metric import (
    COCO_STAT_NAMES,
    GROUND_TRUTH_BOXES,
    CocoKeypointMetric,
    detector_box_source,
    rescore_instances,
)
from skelpose_tf.evaluation.report import format_coco_table
from skelpose_tf.keypoints import KeypointSet, SkeletalLink, get_keypoint_set

COCO_SET = get_keypoint_set("coco")

# A standing person in a unit box (x right, y down), COCO keypoint order.
_UNIT_POSE = np.array([
    [0.50, 0.08], [0.53, 0.06], [0.47, 0.06], [0.57, 0.08], [0.43, 0.08], [0.65, 0.22],
    [0.35, 0.22], [0.72, 0.38], [0.28, 0.38], [0.75, 0.52], [0.25, 0.52], [0.60, 0.55],
    [0.40, 0.55], [0.62, 0.75], [0.38, 0.75], [0.63, 0.95], [0.37, 0.95],
])  # fmt: skip


def _person(ann_id, image_id, box, area, visibility=None):
    """A COCO annotation of `_UNIT_POSE` stretched over box = (x, y, w, h)."""
    x, y, w, h = box
    points = _UNIT_POSE * [w, h] + [x, y]
    visibility = np.full(17, 2) if visibility is None else np.asarray(visibility)
    triplets = np.concatenate([points, visibility[:, None]], axis=1)
    triplets[visibility == 0] = 0.0
    return {
        "id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0,
        "bbox": [float(v) for v in box], "area": float(area),
        "keypoints": [float(v) for v in triplets.reshape(-1)],
        "num_keypoints": int(np.count_nonzero(visibility)),
    }  # fmt: skip


def _write_gt(path, annotations, image_ids, keypoint_names):
    """A COCO file of 320x240 images; its category lists no keypoint names if they are None."""
    images = [
        {"id": i, "file_name": f"{i:012d}.jpg", "width": 320, "height": 240} for i in image_ids
    ]
    category = {"id": 1, "name": "person", "skeleton": []}
    if keypoint_names is not None:
        category["keypoints"] = list(keypoint_names)
    return write_coco(path, images, annotations, keypoint_names, categories=[category])


@pytest.fixture
def gt_file(tmp_path):
    """Three images, four people: medium and large, one with unlabelled face keypoints."""
    no_face = [0] * 5 + [2] * 12
    some_hidden = [2] * 9 + [1] * 8
    annotations = [
        _person(1, 11, (20, 30, 60, 120), 4000),
        _person(2, 42, (100, 20, 90, 200), 12000, no_face),
        _person(3, 42, (10, 40, 40, 90), 2500),
        _person(4, 7, (150, 10, 70, 150), 6000, some_hidden),
    ]
    return _write_gt(tmp_path / "gt.json", annotations, [11, 42, 7], COCO_SET.keypoint_names)


def _gt_predictions(path):
    """Every ground-truth person as a prediction: image ids, keypoints [N,17,2], padded areas."""
    with open(path) as f:
        annotations = json.load(f)["annotations"]
    image_ids = np.array([a["image_id"] for a in annotations])
    keypoints = np.array([np.reshape(a["keypoints"], (-1, 3))[:, :2] for a in annotations])
    areas = np.array([a["bbox"][2] * a["bbox"][3] * 1.25**2 for a in annotations])
    return image_ids, keypoints, areas


def test_rescoring_matches_hand_computed_values():
    keypoint_scores = [[0.1, 0.5, 0.9], [0.2, 0.1, 0.0], [0.3, 0.3, 0.3]]
    scores = rescore_instances(keypoint_scores, [0.8, 1.0, 0.5])
    # (0.5 + 0.9) / 2 * 0.8; nothing above 0.2 (0.2 itself is not above); 0.3 * 0.5.
    np.testing.assert_allclose(scores, [0.56, 0.0, 0.15], atol=1e-12)


def test_perfect_predictions_give_ap_one(gt_file, tmp_path):
    image_ids, keypoints, areas = _gt_predictions(gt_file)
    metric = CocoKeypointMetric(gt_file, COCO_SET, box_source=GROUND_TRUTH_BOXES)
    metric.add(image_ids, keypoints, np.full((4, 17), 0.9), np.ones(4), areas)
    result = metric.evaluate(str(tmp_path / "out" / "results.json"))
    assert result.stats == pytest.approx({name: 1.0 for name in COCO_STAT_NAMES}, abs=1e-12)
    assert result.num_predictions == 4 and result.num_after_nms == 4 and result.num_images == 3
    assert len(result.summary_lines) == 10 and "Average Precision" in result.summary_lines[0]


def test_results_json_and_scores_match_direct_pycocotools(gt_file, tmp_path):
    image_ids, keypoints, areas = _gt_predictions(gt_file)
    rng = np.random.default_rng(0)
    noisy = keypoints + rng.normal(0.0, 3.0, keypoints.shape)
    scores = rng.uniform(0.3, 1.0, (4, 17))
    box_scores = np.array([0.9, 0.8, 0.7, 0.95])
    centers = rng.uniform(0, 100, (4, 2))
    scales = rng.uniform(0.2, 1.0, (4, 2))
    # A near duplicate of person 0 with lower keypoint scores (dropped by OKS-NMS) and a
    # false positive far from everyone in image 7 (kept).
    extra_keypoints = np.stack([noisy[0] + 0.3, keypoints[3] * 0.2])
    metric = CocoKeypointMetric(gt_file, COCO_SET, box_source=detector_box_source("dets.json"))
    for part in (slice(0, 2), slice(2, 4)):  # two batches
        metric.add(image_ids[part], noisy[part], scores[part], box_scores[part], areas[part],
                   centers[part], scales[part])  # fmt: skip
    metric.add([11, 7], extra_keypoints, np.full((2, 17), 0.25), [0.5, 0.4], [areas[0], 300.0],
               np.zeros((2, 2)), np.ones((2, 2)))  # fmt: skip
    results_path = str(tmp_path / "results.json")
    result = metric.evaluate(results_path)

    with open(results_path) as f:
        written = json.load(f)
    assert result.num_predictions == 6 and result.num_after_nms == 5 and len(written) == 5
    expected_scores = box_scores * np.mean(scores, axis=1)  # every score is above 0.2
    by_image = {}
    for entry in written:
        assert set(entry) == {"image_id", "category_id", "keypoints", "score", "center", "scale"}
        assert entry["category_id"] == 1 and len(entry["keypoints"]) == 51
        by_image.setdefault(entry["image_id"], []).append(entry)
    assert len(by_image[11]) == 1  # the duplicate is gone, the original stays
    kept = by_image[11][0]
    np.testing.assert_allclose(np.reshape(kept["keypoints"], (17, 3))[:, :2], noisy[0])
    np.testing.assert_allclose(np.reshape(kept["keypoints"], (17, 3))[:, 2], scores[0])
    assert kept["score"] == pytest.approx(expected_scores[0])
    np.testing.assert_allclose(kept["center"], centers[0])
    assert sorted(e["score"] for e in by_image[7]) == pytest.approx(
        sorted([expected_scores[3], 0.4 * 0.25])
    )

    direct = pycocotools_stats(gt_file, results_path)
    np.testing.assert_allclose([result.stats[n] for n in COCO_STAT_NAMES], direct, atol=1e-12)
    assert 0.0 < result.stats["AP"] < 1.0


def test_box_source_appears_in_result_dict_and_report(gt_file, tmp_path):
    image_ids, keypoints, areas = _gt_predictions(gt_file)
    metric = CocoKeypointMetric(gt_file, COCO_SET, box_source=detector_box_source("d/dets.json"))
    metric.add(image_ids, keypoints, np.ones((4, 17)), np.ones(4), areas)
    result = metric.evaluate(str(tmp_path / "r.json"))
    as_dict = json.loads(json.dumps(result.to_dict()))
    assert as_dict["box_source"] == "detector boxes from d/dets.json"
    assert as_dict["stats"]["AP"] == pytest.approx(1.0)
    assert "Person boxes: detector boxes from d/dets.json" in str(result)
    table = format_coco_table(result.stats, result.box_source, title="t", style="markdown")
    assert "| result | 100.0 | 100.0 | 100.0 | 100.0 | 100.0 | 100.0 |" in table


def test_image_subset_evaluates_only_those_images(gt_file, tmp_path):
    image_ids, keypoints, areas = _gt_predictions(gt_file)
    metric = CocoKeypointMetric(gt_file, COCO_SET, box_source=GROUND_TRUTH_BOXES)
    metric.add(image_ids[:1], keypoints[:1], np.ones((1, 17)), [1.0], areas[:1])
    everything = metric.evaluate(str(tmp_path / "a.json"))
    subset = metric.evaluate(str(tmp_path / "b.json"), image_ids=[11])
    assert everything.stats["AR"] == pytest.approx(0.25)  # 1 of 4 people found
    assert subset.stats["AP"] == pytest.approx(1.0) and subset.stats["AR"] == pytest.approx(1.0)
    assert subset.num_images == 1


def test_custom_keypoint_set_uses_its_sigmas(tmp_path):
    names = ("left", "centre", "right")
    custom = KeypointSet(
        name="three", keypoint_names=names, flip_pairs=((0, 2),),
        links=(SkeletalLink(0, 1, "physical", "upper"),), oks_sigmas=(0.05, 0.1, 0.2),
        upper_body=(0, 1, 2),
    )  # fmt: skip
    points = [[[10, 10], [40, 60], [90, 20]], [[30, 100], [60, 150], [120, 110]]]
    annotations = [
        {"id": i + 1, "image_id": 5, "category_id": 1, "iscrowd": 0, "area": 2000.0,
         "bbox": [0.0, 0.0, 100.0, 100.0], "num_keypoints": 3,
         "keypoints": [float(v) for p in pose for v in (*p, 2)]}
        for i, pose in enumerate(points)
    ]  # fmt: skip
    # No keypoint names in the category: the count comes from the annotations.
    gt_path = _write_gt(tmp_path / "custom.json", annotations, [5], keypoint_names=None)
    predictions = np.asarray(points, np.float64) + [[[2.0, -1.0], [3.0, 2.0], [-4.0, 1.0]]]
    metric = CocoKeypointMetric(gt_path, custom, box_source=GROUND_TRUTH_BOXES)
    metric.add([5, 5], predictions, np.ones((2, 3)), [1.0, 1.0], [5000.0, 5000.0])
    result = metric.evaluate(str(tmp_path / "r.json"))
    direct = pycocotools_stats(gt_path, str(tmp_path / "r.json"), sigmas=custom.oks_sigmas)
    np.testing.assert_allclose([result.stats[n] for n in COCO_STAT_NAMES], direct, atol=1e-12)
    assert 0.0 < result.stats["AP"] < 1.0


def test_predictions_for_other_images_are_named(gt_file):
    image_ids, keypoints, areas = _gt_predictions(gt_file)
    metric = CocoKeypointMetric(gt_file, COCO_SET, box_source=GROUND_TRUTH_BOXES)
    with pytest.raises(ValueError, match=r"2 image id\(s\).*not in the annotation file.*: 99, 500"):
        metric.add([11, 99, 500, 7], keypoints, np.ones((4, 17)), np.ones(4), areas)


def test_wrong_keypoint_counts_are_rejected(gt_file):
    with pytest.raises(ValueError, match="'mpii' has 16 keypoints.*has 17"):
        CocoKeypointMetric(gt_file, get_keypoint_set("mpii"), box_source=GROUND_TRUTH_BOXES)
    metric = CocoKeypointMetric(gt_file, COCO_SET, box_source=GROUND_TRUTH_BOXES)
    with pytest.raises(ValueError, match=r"keypoints must have shape \(1, 17, 2\)"):
        metric.add([11], np.zeros((1, 16, 2)), np.ones((1, 16)), [1.0], [100.0])


def test_results_file_with_wrong_keypoint_count_is_rejected(gt_file, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"image_id": 11, "category_id": 1, "keypoints": [0.0] * 48,
                                 "score": 1.0}]))  # fmt: skip
    coco_gt = coco_metric.load_coco_ground_truth(gt_file)
    with pytest.raises(ValueError, match="do not hold 51 keypoint values"):
        coco_metric.evaluate_results_file(coco_gt, str(path), COCO_SET.oks_sigmas, 1)


def test_empty_predictions_and_missing_box_source_are_rejected(gt_file, tmp_path):
    metric = CocoKeypointMetric(gt_file, COCO_SET, box_source=GROUND_TRUTH_BOXES)
    with pytest.raises(ValueError, match="No predictions to evaluate"):
        metric.evaluate(str(tmp_path / "r.json"))
    with pytest.raises(ValueError, match="box_source must say which person boxes"):
        CocoKeypointMetric(gt_file, COCO_SET, box_source="")


def test_non_finite_keypoints_are_rejected(gt_file):
    metric = CocoKeypointMetric(gt_file, COCO_SET, box_source=GROUND_TRUTH_BOXES)
    keypoints = np.zeros((1, 17, 2))
    keypoints[0, 3, 0] = np.nan
    with pytest.raises(ValueError, match="keypoints holds non-finite"):
        metric.add([11], keypoints, np.ones((1, 17)), [1.0], [100.0])


# Files checked before pycocotools sees them ------------------------------------------------------
def _rewrite(path, change, name="changed.json"):
    """A copy of the JSON file at `path` next to it, after `change(data)`; returns its path."""
    with open(path) as f:
        data = json.load(f)
    change(data)
    changed = str(path).rsplit("/", 1)[0] + "/" + name
    with open(changed, "w") as f:
        json.dump(data, f)
    return changed


def _set(record, **fields):
    record.update(fields)


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("categories"), r": field 'categories' must be a list of objects .*Received "
                                    r"nothing"),
    (lambda d: d.update(annotations={"1": d["annotations"][0]}),
     r": field 'annotations' must be a list of objects .*Received a JSON object"),
    (lambda d: d["annotations"].append([1, 2]), r" annotation #4 must be a JSON object"),
    (lambda d: d["annotations"][0].pop("image_id"),
     r" annotation id 1 has no field 'image_id' \(an integer\)"),
    (lambda d: _set(d["annotations"][1], image_id=99),
     r" annotation id 2 field 'image_id' is 99, which is not an id of 'images'"),
    (lambda d: _set(d["annotations"][1], image_id="42"),
     r" annotation id 2 field 'image_id' must be an integer. Received: '42'"),
    (lambda d: _set(d["annotations"][2], category_id=3),
     r" annotation id 3 field 'category_id' is 3, which is not an id of 'categories' \(1\)"),
    (lambda d: d["annotations"][0]["keypoints"].pop(),
     r" annotation id 1 field 'keypoints' must hold 51 numbers .*Received 50"),
    (lambda d: d["annotations"][0]["keypoints"].__setitem__(4, "12"),
     r" annotation id 1 field 'keypoints'\[4\] must be a finite number. Received: '12'"),
    (lambda d: d["annotations"][0]["keypoints"].__setitem__(4, float("nan")),
     r" annotation id 1 field 'keypoints'\[4\] must be a finite number. Received: nan"),
    (lambda d: d["annotations"][0]["keypoints"].__setitem__(5, 3),
     r" annotation id 1 field 'keypoints': every third value .* must be 0, 1 or 2"),
    (lambda d: d["annotations"][3].pop("bbox"), r" annotation id 4 has no field 'bbox'"),
    (lambda d: _set(d["annotations"][3], bbox=[0, 0, -5, 10]),
     r" annotation id 4 field 'bbox' must be \[x, y, width, height\] with width and height >= 0"),
    (lambda d: d["annotations"][3].pop("iscrowd"),
     r" annotation id 4 field 'iscrowd' must be 0 or 1 \(pycocotools needs it\). Received: None"),
    (lambda d: d["annotations"][3].pop("num_keypoints"),
     r" annotation id 4 has no field 'num_keypoints'"),
    (lambda d: _set(d["annotations"][3], area=0), r" annotation id 4 has labelled keypoints but "
                                                  r"'area' 0: OKS divides by the area"),
    (lambda d: _set(d["images"][1], id="42"),
     r" image #1 field 'id' must be an integer. Received: '42'"),
    (lambda d: _set(d["categories"][0], keypoints="nose,eyes"),
     r" category #0 \(id 1\) field 'keypoints' must be a list of keypoint names"),
])
def test_a_bad_annotation_file_names_the_file_record_and_field(gt_file, change, message):
    bad = _rewrite(gt_file, change)
    with pytest.raises(ValueError, match="^" + re.escape(bad) + message):
        coco_metric.load_coco_ground_truth(bad)
    with pytest.raises(ValueError, match=re.escape(bad)):
        CocoKeypointMetric(bad, COCO_SET, box_source=GROUND_TRUTH_BOXES)


def test_unreadable_annotation_files_are_named(tmp_path, gt_file):
    truncated = tmp_path / "truncated.json"
    with open(gt_file) as f:
        truncated.write_text(f.read()[:300])
    with pytest.raises(ValueError, match=f"COCO annotation file {re.escape(str(truncated))} is "
                                         "not valid JSON .*truncated"):
        coco_metric.load_coco_ground_truth(str(truncated))
    listed = tmp_path / "list.json"
    listed.write_text("[]")
    with pytest.raises(ValueError, match=f"{re.escape(str(listed))}: a COCO annotation file must "
                                         "be a JSON object .*Received a list"):
        coco_metric.load_coco_ground_truth(str(listed))
    with pytest.raises(ValueError, match="COCO annotation file not found: .*nowhere.json"):
        coco_metric.load_coco_ground_truth(str(tmp_path / "nowhere.json"))


@pytest.mark.parametrize("change, message", [
    # Annotation ids 1 and 3 become 2 (one of them is in image 42 with another person 2).
    (lambda d: [_set(d["annotations"][i], id=2) for i in (0, 2)],
     r"1 annotation id\(s\) occur more than once: 2\. Give every annotation its own id"),
    (lambda d: _set(d["images"][2], id=11),
     r"1 image id\(s\) occur more than once: 11\. Give every image its own id"),
    (lambda d: d["categories"].append(dict(d["categories"][0])),
     r"1 category id\(s\) occur more than once: 1\."),
])
def test_duplicate_ids_are_refused_with_the_first_ones_named(gt_file, tmp_path, change, message):
    bad = _rewrite(gt_file, change)
    with pytest.raises(ValueError, match="^" + re.escape(bad) + ": " + message):
        coco_metric.load_coco_ground_truth(bad)


def test_duplicate_annotation_ids_would_silently_lower_pycocotools_scores(gt_file, tmp_path):
    """Why duplicates are refused: pycocotools' index keeps one annotation per id, so perfect
    predictions of a file with duplicate ids score below 1."""
    image_ids, keypoints, _ = _gt_predictions(gt_file)
    results = [{"image_id": int(i), "category_id": 1, "score": 1.0,
                "keypoints": [float(v) for p in k for v in (*p, 1.0)]}
               for i, k in zip(image_ids, keypoints)]  # fmt: skip
    results_file = str(tmp_path / "perfect.json")
    with open(results_file, "w") as f:
        json.dump(results, f)
    assert pycocotools_stats(gt_file, results_file)[0] == pytest.approx(1.0)
    duplicated = _rewrite(gt_file, lambda d: _set(d["annotations"][2], id=2))
    assert pycocotools_stats(duplicated, results_file)[0] < 0.9
    with pytest.raises(ValueError, match="annotation id.* occur more than once: 2"):
        CocoKeypointMetric(duplicated, COCO_SET, box_source=GROUND_TRUTH_BOXES)
    # A COCO object made by pycocotools itself is checked too.
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        loaded = COCO(duplicated)
    with pytest.raises(ValueError, match=r"<COCO object>: 1 annotation id\(s\) occur more"):
        CocoKeypointMetric(loaded, COCO_SET, box_source=GROUND_TRUTH_BOXES)


def _results_file(tmp_path, results, name="results.json"):
    path = tmp_path / name
    path.write_text(json.dumps(results))
    return str(path)


def _result(image_id=11, **fields):
    return {"image_id": image_id, "category_id": 1, "keypoints": [10.0, 20.0, 0.9] * 17,
            "score": 0.8, **fields}


@pytest.mark.parametrize("results, message", [
    ({"image_id": 11}, r": a COCO results file must be a non-empty JSON list .*Received a JSON "
                       r"object"),
    ([], r": a COCO results file must be a non-empty JSON list .*Received an empty list"),
    ([_result(), "x"], r" result #1 must be a JSON object"),
    ([{"category_id": 1, "keypoints": [0.0] * 51, "score": 1.0}],
     r" result #0 has no field 'image_id' \(an integer\)"),
    ([_result(), _result(category_id=2)],
     r" result #1 \(image id 11\) field 'category_id' is 2, but the keypoint category of "
     r".*gt.json is 1"),
    ([_result(keypoints=[10.0, None, 0.9] * 17)],
     r" result #0 \(image id 11\) field 'keypoints'\[1\] must be a finite number. Received: None"),
    ([_result(keypoints=[float("inf"), 1.0, 0.9] * 17)],
     r" result #0 \(image id 11\) field 'keypoints'\[0\] must be a finite number"),
    ([_result(score="0.8")], r" result #0 \(image id 11\) field 'score' must be a finite number"),
    ([{k: v for k, v in _result().items() if k != "score"}],
     r" result #0 \(image id 11\) field 'score' must be a finite number .*Received: None"),
    ([_result(bbox=[0, 0, 5, 5]), _result(7)],
     r" result #1 \(image id 7\) has no field 'bbox'"),
    ([_result(), _result(7, keypoints=[0.0] * 48)],
     r": 1 result\(s\) do not hold 51 keypoint values .*e.g. result #1 \(image id 7\)"),
    ([_result(99), _result(500), _result(7)],
     r": predictions for 2 image id\(s\) that are not in the annotation file .*gt.json: 99, 500"),
])
def test_a_bad_results_file_names_the_file_result_and_field(gt_file, tmp_path, results, message):
    path = _results_file(tmp_path, results)
    coco_gt = coco_metric.load_coco_ground_truth(gt_file)
    with pytest.raises(ValueError, match="^" + re.escape(path) + message):
        coco_metric.evaluate_results_file(coco_gt, path, COCO_SET.oks_sigmas, 1, source=gt_file)


def test_a_valid_results_file_scores_exactly_as_pycocotools(gt_file, tmp_path):
    image_ids, keypoints, _ = _gt_predictions(gt_file)
    rng = np.random.default_rng(1)
    results = [{"image_id": int(i), "category_id": 1, "score": float(rng.uniform(0.2, 1.0)),
                "keypoints": [float(v) for p in k + rng.normal(0, 4.0, k.shape)
                              for v in (*p, 1.0)]}
               for i, k in zip(image_ids, keypoints)]  # fmt: skip
    results.append(dict(results[0], image_id=7, score=0.3))  # a false positive
    path = _results_file(tmp_path, results)
    coco_gt = coco_metric.load_coco_ground_truth(gt_file)
    stats, _ = coco_metric.evaluate_results_file(coco_gt, path, COCO_SET.oks_sigmas, 1)
    direct = pycocotools_stats(gt_file, path)
    np.testing.assert_allclose([stats[n] for n in COCO_STAT_NAMES], direct, atol=1e-12)
    assert 0.0 < stats["AP"] < 1.0
    with open(path) as f:
        assert json.load(f) == results  # pycocotools' loadRes changed copies only
