"""Tests of the synthetic people data set: file formats, annotation invariants, determinism,
MPII/COCO consistency, detections, left/right appearance and the contact sheet."""

import filecmp
import json
import math
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import scipy.io
from pycocotools.coco import COCO as CocoApi

from skelpose_tf.data import synthetic
from skelpose_tf.data import synthetic_figures as figures_lib
from skelpose_tf.data.contact_sheet import make_contact_sheet
from skelpose_tf.data.synthetic_figures import LEFT_HUES_DEG, RIGHT_HUES_DEG
from skelpose_tf.keypoints import COCO, MPII

SEED = 3
SIZE = (160, 128)
NUM_TRAIN, NUM_VAL = 8, 8


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("synthetic"))
    return synthetic.generate_dataset(root, NUM_TRAIN, NUM_VAL, seed=SEED, image_size=SIZE)


def _load(path):
    with open(path) as f:
        return json.load(f)


def _coco_files(paths):
    return {"train": (paths.train_annotations, paths.train_images),
            "val": (paths.val_annotations, paths.val_images)}  # fmt: skip


def test_files_exist_and_load_with_pycocotools(dataset):
    assert dataset.exists()
    for split, (annotation_file, image_dir) in _coco_files(dataset).items():
        api = CocoApi(annotation_file)
        expected = NUM_TRAIN if split == "train" else NUM_VAL
        assert len(api.getImgIds()) == expected
        assert api.loadCats(1)[0]["name"] == "person"
        assert len(api.getAnnIds(catIds=[1])) == len(api.dataset["annotations"]) > 0
        for entry in api.dataset["images"]:
            image = cv2.imread(os.path.join(image_dir, entry["file_name"]))
            assert image is not None and image.shape == (SIZE[1], SIZE[0], 3)
            assert entry["file_name"] == f"{entry['id']:012d}.jpg"
            assert (entry["width"], entry["height"]) == SIZE


def test_train_and_val_image_ids_are_disjoint(dataset):
    train = {e["id"] for e in _load(dataset.train_annotations)["images"]}
    val = {e["id"] for e in _load(dataset.val_annotations)["images"]}
    assert train == set(range(1, NUM_TRAIN + 1))
    assert not train & val


def test_category_lists_coco_keypoints_and_one_based_skeleton(dataset):
    category = _load(dataset.val_annotations)["categories"][0]
    assert category["id"] == 1 and category["supercategory"] == "person"
    assert category["keypoints"] == list(COCO.keypoint_names)
    assert category["skeleton"] == [[a + 1, b + 1] for a, b in COCO.edges]


def test_annotation_fields_and_invariants(dataset):
    width, height = SIZE
    k = COCO.num_keypoints
    for annotation_file, _ in _coco_files(dataset).values():
        coco = _load(annotation_file)
        image_ids = {e["id"] for e in coco["images"]}
        ids = [a["id"] for a in coco["annotations"]]
        assert len(ids) == len(set(ids))
        for a in coco["annotations"]:
            assert set(a) == {"id", "image_id", "category_id", "keypoints", "num_keypoints",
                              "bbox", "area", "iscrowd"}  # fmt: skip
            assert isinstance(a["id"], int) and a["image_id"] in image_ids
            assert a["category_id"] == 1 and a["iscrowd"] == 0
            assert len(a["keypoints"]) == 3 * k
            values = np.array(a["keypoints"], float).reshape(k, 3)
            assert all(isinstance(v, int) for v in a["keypoints"][2::3])
            assert set(values[:, 2]) <= {0, 1, 2}
            assert np.all(values[values[:, 2] == 0, :2] == 0)
            assert a["num_keypoints"] == int((values[:, 2] > 0).sum())
            x, y, w, h = a["bbox"]
            assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= width and y + h <= height
            labelled = values[values[:, 2] > 0, :2]
            assert np.all((labelled >= 0) & (labelled <= (width - 1, height - 1)))
            assert np.all((labelled >= (x, y)) & (labelled <= (x + w, y + h)))
            assert isinstance(a["area"], int) and 0 < a["area"] < w * h


def test_visibility_levels_all_occur(dataset):
    visibility = np.concatenate([
        np.array(a["keypoints"][2::3])
        for path in (dataset.train_annotations, dataset.val_annotations)
        for a in _load(path)["annotations"]
    ])  # fmt: skip
    counts = np.bincount(visibility, minlength=3)
    assert counts[1] > 0 and counts[2] > counts[1]
    assert counts[0] > 0


def test_same_seed_gives_identical_files_and_workers_do_not_matter(dataset, tmp_path):
    again = synthetic.generate_dataset(str(tmp_path / "again"), NUM_TRAIN, NUM_VAL, seed=SEED,
                                       image_size=SIZE, workers=2)  # fmt: skip
    assert sorted(os.listdir(dataset.root)) == sorted(os.listdir(again.root))
    for sub in ("annotations", os.path.join("images", "train"), os.path.join("images", "val")):
        names = sorted(os.listdir(os.path.join(dataset.root, sub)))
        assert names == sorted(os.listdir(os.path.join(again.root, sub)))
        _, mismatch, errors = filecmp.cmpfiles(dataset.root, again.root,
                                               [os.path.join(sub, n) for n in names],
                                               shallow=False)  # fmt: skip
        assert not mismatch and not errors, (mismatch, errors)


def test_different_seed_differs(dataset, tmp_path):
    other = synthetic.generate_dataset(str(tmp_path / "other"), 0, 2, SEED + 1, SIZE)
    first = _load(dataset.val_annotations)["annotations"]
    second = _load(other.val_annotations)["annotations"]
    first_two = [a for a in first if a["image_id"] <= synthetic.image_id_for("val", 1)]
    assert first_two != second
    name = f"{synthetic.image_id_for('val', 0):012d}.jpg"
    assert not filecmp.cmp(os.path.join(dataset.val_images, name),
                           os.path.join(other.val_images, name), shallow=False)  # fmt: skip


def _coco_by_file(coco):
    by_id = {}
    for a in coco["annotations"]:
        by_id.setdefault(a["image_id"], []).append(a)
    return {e["file_name"]: by_id.get(e["id"], []) for e in coco["images"]}


@pytest.mark.parametrize("split", ["train", "val"])
def test_mpii_records_match_the_coco_people(dataset, split):
    coco_file = dataset.train_annotations if split == "train" else dataset.val_annotations
    records = _load(dataset.mpii_train if split == "train" else dataset.mpii_val)
    people = _coco_by_file(_load(coco_file))
    assert records, "expected some MPII records"
    shared = [(j, COCO.index(name)) for j, name in enumerate(MPII.keypoint_names)
              if name in COCO.keypoint_names]  # fmt: skip
    minimum = math.ceil(synthetic.MPII_MIN_LABELLED_FRACTION * MPII.num_keypoints)
    width, height = SIZE
    for record in records:
        joints = np.array(record["joints"], float)
        visible = np.array(record["joints_vis"])
        assert joints.shape == (MPII.num_keypoints, 2) and set(visible) <= {0, 1}
        assert ("headbox" in record) == (split == "val")
        assert visible.sum() >= minimum
        assert visible[MPII.index("head_top")] and visible[MPII.index("upper_neck")]
        assert np.all(joints[visible == 0] == -1)
        # 1-based: labelled joints lie in [1, W] x [1, H].
        assert np.all((joints[visible == 1] >= 1) & (joints[visible == 1] <= (width, height)))
        matches = []
        for a in people[record["image"]]:
            coco_points = np.array(a["keypoints"], float).reshape(-1, 3)
            same_labels = all(visible[j] == (coco_points[c, 2] > 0) for j, c in shared)
            same_points = all(np.allclose(joints[j], coco_points[c, :2] + 1, atol=1e-6)
                              for j, c in shared if visible[j])  # fmt: skip
            if same_labels and same_points:
                matches.append(a)
        assert len(matches) == 1, record
        box = matches[0]["bbox"]
        assert record["scale"] * 200 + 1 >= max(box[2], box[3])
        if split == "val":
            (x1, y1), (x2, y2) = record["headbox"]
            head_top = joints[MPII.index("head_top")]
            assert x1 < head_top[0] < x2 and y1 <= head_top[1] <= y2


def test_mpii_gt_mat_matches_val_json(dataset):
    records = _load(dataset.mpii_val)
    mat = scipy.io.loadmat(dataset.mpii_gt_val)
    n = len(records)
    assert mat["jnt_missing"].shape == (MPII.num_keypoints, n)
    assert mat["pos_gt_src"].shape == (MPII.num_keypoints, 2, n)
    assert mat["headboxes_src"].shape == (2, 2, n)
    for i, record in enumerate(records):
        np.testing.assert_allclose(mat["pos_gt_src"][:, :, i], record["joints"])
        np.testing.assert_array_equal(mat["jnt_missing"][:, i], 1 - np.array(record["joints_vis"]))
        np.testing.assert_allclose(mat["headboxes_src"][:, :, i], record["headbox"])
    # Looked up the way HRNet's MPII evaluation does.
    names = mat["dataset_joints"]
    assert np.where(names == "head")[1][0] == MPII.index("head_top")
    assert np.where(names == "lwri")[1][0] == MPII.index("l_wrist")


def test_detections_refer_to_val_images_and_cover_the_people(dataset):
    detections = _load(dataset.val_detections)
    val = _load(dataset.val_annotations)
    val_ids = {e["id"] for e in val["images"]}
    train_ids = {e["id"] for e in _load(dataset.train_annotations)["images"]}
    width, height = SIZE
    for d in detections:
        assert set(d) == {"image_id", "category_id", "bbox", "score"}
        assert d["image_id"] in val_ids and d["image_id"] not in train_ids
        assert d["category_id"] == 1 and 0 < d["score"] <= 1
        x, y, w, h = d["bbox"]
        assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= width + 1e-6
        assert y + h <= height + 1e-6

    def iou(a, b):
        ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
        iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
        inter = ix * iy
        return inter / (a[2] * a[3] + b[2] * b[3] - inter)

    overlaps = np.array([[d["image_id"] == a["image_id"] and iou(d["bbox"], a["bbox"]) > 0.5
                          for a in val["annotations"]] for d in detections])  # fmt: skip
    assert overlaps.any(axis=0).mean() > 0.75  # most people are detected
    # Boxes that match nobody (false positives) score lower on average than matched ones.
    scores = np.array([d["score"] for d in detections])
    matched = overlaps.any(axis=1)
    assert (~matched).any() and scores[~matched].mean() < scores[matched].mean()


def _hue_in(hue_opencv, family_deg, margin_deg=12.0):
    """Whether an OpenCV hue (0-180) lies in a hue family (degrees, may wrap) with a margin."""
    hue = hue_opencv * 2.0
    low, high = family_deg[0] - margin_deg, family_deg[1] + margin_deg
    return any(low <= h <= high for h in (hue, hue - 360.0, hue + 360.0))


def test_left_and_right_limbs_differ_in_colour(dataset):
    """The median colour around a visible wrist of a large-enough person lies in its side's hue
    family (sampled from the written JPEGs)."""
    samples = {"l_wrist": [], "r_wrist": []}
    for annotation_file, image_dir in _coco_files(dataset).values():
        coco = _load(annotation_file)
        files = {e["id"]: e["file_name"] for e in coco["images"]}
        for a in coco["annotations"]:
            if a["bbox"][3] < 50:
                continue
            image = cv2.imread(os.path.join(image_dir, files[a["image_id"]]))
            hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
            points = np.array(a["keypoints"], float).reshape(-1, 3)
            for name in samples:
                x, y, v = points[COCO.index(name)]
                if v == 2:
                    xi, yi = int(round(x)), int(round(y))
                    patch = hsv[max(0, yi - 1):yi + 2, max(0, xi - 1):xi + 2].reshape(-1, 3)
                    samples[name].append(np.median(patch, axis=0))
    assert len(samples["l_wrist"]) >= 4 and len(samples["r_wrist"]) >= 4, samples
    left_ok = [_hue_in(h, LEFT_HUES_DEG) and not _hue_in(h, RIGHT_HUES_DEG)
               for h, _, _ in samples["l_wrist"]]  # fmt: skip
    right_ok = [_hue_in(h, RIGHT_HUES_DEG) and not _hue_in(h, LEFT_HUES_DEG)
                for h, _, _ in samples["r_wrist"]]  # fmt: skip
    assert np.mean(left_ok) >= 0.8 and np.mean(right_ok) >= 0.8, samples


def test_render_scene_annotations_match_returned_image():
    image, people = synthetic.render_scene(SEED, "val", 0, SIZE)
    assert image.dtype == np.uint8 and image.shape == (SIZE[1], SIZE[0], 3)
    again, people_again = synthetic.render_scene(SEED, "val", 0, SIZE)
    np.testing.assert_array_equal(image, again)
    assert [p.bbox for p in people] == [p.bbox for p in people_again]
    with pytest.raises(ValueError, match="split"):
        synthetic.render_scene(SEED, "test", 0, SIZE)


def test_parse_image_size():
    assert synthetic.parse_image_size("320x240") == (320, 240)
    for bad in ("320", "axb", "16x16"):
        with pytest.raises(ValueError, match=bad):
            synthetic.parse_image_size(bad)


def test_summarize_counts_what_was_written(dataset):
    summary = synthetic.summarize(dataset)
    val = _load(dataset.val_annotations)
    assert summary["val"]["images"] == NUM_VAL
    assert summary["val"]["people"] == len(val["annotations"])
    labelled = sum(a["num_keypoints"] for a in val["annotations"])
    assert summary["val"]["keypoints_labelled"] == labelled
    assert summary["val"]["detections"] == len(_load(dataset.val_detections))
    assert 0.2 < summary["val"]["area_over_box"] < 0.9


def test_contact_sheet_grid(dataset):
    sheet = make_contact_sheet(dataset.val_annotations, dataset.val_images, COCO, num=3, cols=2)
    pad, caption = 2, 14
    assert sheet.shape == (2 * (SIZE[1] + caption) + 3 * pad, 2 * SIZE[0] + 3 * pad, 3)


def test_generator_cli_runs_without_tensorflow(tmp_path):
    out = tmp_path / "cli"
    command = [sys.executable, "-X", "importtime", "-m", "skelpose_tf.data.synthetic",
               "--out", str(out), "--train", "1", "--val", "1",
               "--image_size", "96x64"]  # fmt: skip
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run(command, capture_output=True, text=True, cwd=root)
    assert result.returncode == 0, result.stderr
    assert "train: 1 images" in result.stdout and "val: 1 images" in result.stdout
    assert synthetic.dataset_paths(str(out)).exists()
    # -X importtime lists every imported module on stderr, one per line, name last.
    lines = result.stderr.splitlines()
    imported = {line.rsplit("|", 1)[-1].strip() for line in lines if "|" in line}
    assert "numpy" in imported and "cv2" in imported
    assert not any(name.split(".")[0] in ("tensorflow", "keras") for name in imported)


def test_contact_sheet_cli_writes_png(dataset, tmp_path):
    out = tmp_path / "sheet.png"
    command = [sys.executable, "-m", "skelpose_tf.data.contact_sheet", "--data", dataset.root,
               "--split", "val", "--out", str(out), "--num", "2", "--cols", "2",
               "--bits", "6"]  # fmt: skip
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run(command, capture_output=True, text=True, cwd=root)
    assert result.returncode == 0, result.stderr
    sheet = cv2.imread(str(out))
    assert sheet.shape == (SIZE[1] + 14 + 2 * 2, 2 * SIZE[0] + 3 * 2, 3)
    assert np.all(sheet % 4 == 2)  # 6 bits kept per channel


def _pose(yaw, shoulder_flex=0.0):
    """A neutral standing pose with arms slightly out, seen from `yaw` degrees."""
    side = {"shoulder_flex": shoulder_flex, "shoulder_abd": 15.0, "humeral_twist": 0.0,
            "elbow": 10.0, "hip_flex": 0.0, "hip_abd": 5.0, "knee": 5.0, "ankle": 0.0}  # fmt: skip
    return {"family": "standing", "lean_forward": 0.0, "lean_side": 0.0, "twist": 0.0,
            "head_yaw": 0.0, "head_pitch": 0.0, "head_roll": 0.0, "left": dict(side),
            "right": dict(side), "yaw": yaw, "pitch": 0.0, "roll": 0.0}  # fmt: skip


def _draw_alone(yaw, shoulder_flex=0.0, size=(200, 240)):
    """One figure, 200 px tall, alone on a blank canvas; returns (figure, id_map, silhouette)."""
    width, height = size
    figure = figures_lib.make_figure(np.random.default_rng(0), 200, (width / 2, height / 2),
                                     _pose(yaw, shoulder_flex))  # fmt: skip
    image = np.zeros((height, width, 3), np.uint8)
    id_map = np.zeros((height, width), np.uint16)
    silhouette = np.zeros((height, width), np.uint8)
    figure.draw(image, id_map, silhouette, synthetic.PERSON_ID_STRIDE, np.array([-0.6, -0.8]))
    return figure, id_map, silhouette


def _annotate_alone(figure, id_map, silhouette):
    height, width = id_map.shape
    area = int(((id_map >> 6) == 1).sum())
    return synthetic.annotate_person(figure, 0, id_map, silhouette, area, width, height)


def _v(person, name):
    return int(person.keypoints[COCO.index(name), 2])


def test_facing_figure_has_every_keypoint_visible_with_left_on_image_right():
    person = _annotate_alone(*_draw_alone(yaw=0.0))
    assert person.keypoints[:, 2].tolist() == [2] * COCO.num_keypoints
    for left, right in COCO.flip_pairs:  # facing the camera, the person's left is image right
        assert person.keypoints[left, 0] > person.keypoints[right, 0]
    assert person.mpii_eligible and person.mpii_labelled.all()
    # Standing upright: head above shoulders above hips above knees above ankles.
    names = ("nose", "l_shoulder", "l_hip", "l_knee", "l_ankle")
    y = {name: person.keypoints[COCO.index(name), 1] for name in names}
    assert y["nose"] < y["l_shoulder"] < y["l_hip"] < y["l_knee"] < y["l_ankle"]
    head_top_to_ankle = y["l_ankle"] - person.mpii_joints[MPII.index("head_top"), 1]
    assert 0.85 * 200 < head_top_to_ankle < 200  # of the 200 px standing height


def test_back_view_hides_the_face_and_puts_left_on_image_left():
    person = _annotate_alone(*_draw_alone(yaw=180.0))
    for name in ("nose", "l_eye", "r_eye"):
        assert _v(person, name) == 0
        assert np.all(person.keypoints[COCO.index(name), :2] == 0)
    for left, right in COCO.flip_pairs[2:]:  # body pairs (the ears may be unlabelled)
        assert person.keypoints[left, 0] < person.keypoints[right, 0]


def test_profile_view_covers_the_far_side():
    # yaw +90 turns the person's left side towards the camera; arms forward keep the hips clear.
    person = _annotate_alone(*_draw_alone(yaw=90.0, shoulder_flex=70.0))
    assert _v(person, "l_ear") == 2 and _v(person, "r_ear") == 0 and _v(person, "r_eye") == 0
    assert _v(person, "nose") == 2 and _v(person, "l_eye") == 2
    assert _v(person, "l_shoulder") == 2 and _v(person, "r_shoulder") == 1
    assert _v(person, "l_hip") == 2 and _v(person, "r_hip") == 1


def test_occluded_keypoint_becomes_labelled_but_not_visible():
    figure, id_map, silhouette = _draw_alone(yaw=0.0)
    before = _annotate_alone(figure, id_map, silhouette)
    x, y = np.round(before.keypoints[COCO.index("l_wrist"), :2]).astype(int)
    id_map[y - 3:y + 4, x - 3:x + 4] = synthetic.OCCLUDER_ID
    after = _annotate_alone(figure, id_map, silhouette)
    assert _v(before, "l_wrist") == 2 and _v(after, "l_wrist") == 1
    changed = np.flatnonzero(before.keypoints[:, 2] != after.keypoints[:, 2])
    assert changed.tolist() == [COCO.index("l_wrist")]
    assert after.area < before.area and after.bbox == before.bbox


def test_keypoints_outside_the_image_are_unlabelled():
    # The same figure centred at the left border: its left-most keypoints fall outside.
    figure, id_map, silhouette = _draw_alone(yaw=0.0)
    shifted = np.zeros_like(id_map)
    shifted[:, :100] = id_map[:, 100:]
    shifted_silhouette = np.zeros_like(silhouette)
    shifted_silhouette[:, :100] = silhouette[:, 100:]
    for name in figure.keypoints:
        figure.keypoints[name] = figure.keypoints[name] - (100.0, 0.0)
    person = _annotate_alone(figure, shifted, shifted_silhouette)
    outside = [n for n in COCO.keypoint_names if figure.keypoints[n][0] < 0]
    inside = [n for n in COCO.keypoint_names if figure.keypoints[n][0] > 1]
    assert outside and inside
    assert all(_v(person, n) == 0 for n in outside)
    assert all(_v(person, n) == 2 for n in inside)
    assert person.bbox[0] == 0
