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
    comparison = filecmp.dircmp(dataset.root, again.root)
    for sub in ("annotations", os.path.join("images", "train"), os.path.join("images", "val")):
        names = sorted(os.listdir(os.path.join(dataset.root, sub)))
        assert names == sorted(os.listdir(os.path.join(again.root, sub)))
        match, mismatch, errors = filecmp.cmpfiles(dataset.root, again.root,
                                                   [os.path.join(sub, n) for n in names],
                                                   shallow=False)  # fmt: skip
        assert not mismatch and not errors, (mismatch, errors)
    assert comparison.left_only == [] and comparison.right_only == []


def test_different_seed_differs(dataset, tmp_path):
    other = synthetic.generate_dataset(str(tmp_path / "other"), 0, 2, seed=SEED + 1, image_size=SIZE)
    first = _load(dataset.val_annotations)["annotations"]
    second = _load(other.val_annotations)["annotations"]
    first_two = [a for a in first if a["image_id"] <= synthetic.image_id_for("val", 1)]
    assert first_two != second


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
    shared = [(j, COCO.index(n)) for j, n in enumerate(MPII.keypoint_names) if n in COCO.keypoint_names]
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
    assert summary["val"]["keypoints_labelled"] == sum(a["num_keypoints"] for a in val["annotations"])
    assert summary["val"]["detections"] == len(_load(dataset.val_detections))
    assert 0.2 < summary["val"]["area_over_box"] < 0.9


def test_contact_sheet_grid(dataset):
    sheet = make_contact_sheet(dataset.val_annotations, dataset.val_images, COCO, num=3, cols=2)
    pad, caption = 2, 14
    assert sheet.shape == (2 * (SIZE[1] + caption) + 3 * pad, 2 * SIZE[0] + 3 * pad, 3)


def test_generator_cli_runs_without_tensorflow(tmp_path):
    out = tmp_path / "cli"
    code = (
        "import sys\n"
        "from skelpose_tf.data import synthetic\n"
        "assert 'tensorflow' not in sys.modules\n"
        "sys.argv = ['synthetic', '--out', sys.argv[1], '--train', '1', '--val', '1',\n"
        "            '--image_size', '96x64']\n"
        "from absl import app\n"
        "try:\n"
        "    app.run(synthetic.main)\n"
        "finally:\n"
        "    assert 'tensorflow' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "train: 1 images" in result.stdout and "val: 1 images" in result.stdout
    assert synthetic.dataset_paths(str(out)).exists()
