"""COCO / MPII readers, image decoding and the skip report, on fixture files written here."""

import json
import logging
import os

import numpy as np
import pytest
import scipy.io

from data_fixtures import coco_keypoints, constant_jpeg, encode, write_coco, write_image
from skelpose_tf.data import coco, images, mpii
from skelpose_tf.data.records import SkipReport
from skelpose_tf.keypoints import COCO, KeypointSet, SkeletalLink

K = COCO.num_keypoints


def _keypoints(points):
    """A [K, 3] array with the given {index: (x, y, v)} entries, zeros elsewhere."""
    array = np.zeros((K, 3))
    for k, xyv in points.items():
        array[k] = xyv
    return coco_keypoints(array)


def _annotation(annotation_id, image_id, bbox, points, **extra):
    annotation = {"id": annotation_id, "image_id": image_id, "category_id": 1, "bbox": bbox,
                  "area": 100.0, "iscrowd": 0, "keypoints": _keypoints(points),
                  "num_keypoints": sum(1 for p in points.values() if p[2] > 0)}
    annotation.update(extra)
    return annotation


@pytest.fixture
def coco_files(tmp_path):
    """Images a.jpg (64x48), b.jpg (40x30), c.jpg (no people), and missing.jpg (not written)."""
    image_dir = tmp_path / "images"
    for name, (h, w) in {"a.jpg": (48, 64), "b.jpg": (30, 40), "c.jpg": (20, 20)}.items():
        write_image(str(image_dir / name), np.full((h, w, 3), 90, np.uint8))
    image_table = [
        {"id": 1, "file_name": "a.jpg", "width": 64, "height": 48},
        {"id": 2, "file_name": "b.jpg", "width": 40, "height": 30},
        {"id": 3, "file_name": "c.jpg", "width": 20, "height": 20},
        {"id": 4, "file_name": "missing.jpg", "width": 20, "height": 20},
    ]
    annotations = [
        # box starts left of the image; keypoint 6 lies outside the 64-wide image
        _annotation(101, 1, [-5, 10, 30, 20], {0: (10, 12, 2), 5: (20, 15, 1), 6: (70, 20, 2)}),
        _annotation(102, 1, [0, 0, 10, 10], {0: (5, 5, 2)}, iscrowd=1),
        _annotation(103, 1, [0, 0, 10, 10], {}),  # no labelled keypoints
        _annotation(104, 1, [10, 10, 0.5, 5], {0: (10, 12, 2)}),  # zero area after cleaning
        dict(_annotation(105, 1, [0, 0, 10, 10], {0: (5, 5, 2)}), category_id=2),  # not a person
        # box runs past the bottom-right corner
        _annotation(201, 2, [30, 20, 100, 100], {3: (35, 25, 2)}),
        _annotation(401, 4, [0, 0, 10, 10], {0: (5, 5, 2)}),  # its image file is missing
    ]
    categories = [{"id": 1, "name": "person", "keypoints": list(COCO.keypoint_names)},
                  {"id": 2, "name": "dog"}]
    path = write_coco(tmp_path / "ann.json", image_table, annotations, COCO.keypoint_names,
                      categories)
    return path, str(image_dir)


def test_coco_records_follow_the_official_cleaning(coco_files):
    path, image_dir = coco_files
    report = SkipReport()
    records = coco.read_coco_keypoints(path, image_dir, "coco", (256, 192), report=report)
    assert [r.annotation_id for r in records] == [101, 201]
    first, second = records
    assert first.image_path == os.path.join(image_dir, "a.jpg")
    assert (first.image_id, first.image_size, first.box_score) == (1, (48, 64), 1.0)
    # x1 = max(0, -5) = 0, x2 = min(63, 0 + 29) = 29; y1 = 10, y2 = min(47, 10 + 19) = 29
    np.testing.assert_allclose(first.box, [0, 10, 29, 19])
    np.testing.assert_allclose(first.center, [14.5, 19.5])
    # 29 wide > 0.75 * 19: height -> 29 / 0.75; then x1.25
    np.testing.assert_allclose(first.scale, [36.25, 29 / 0.75 * 1.25], rtol=1e-6)
    expected_v = np.zeros(K)
    expected_v[[0, 5]] = [2, 1]  # keypoint 6 was outside the image: now unlabelled
    np.testing.assert_array_equal(first.visibility, expected_v)
    np.testing.assert_allclose(first.keypoints[[0, 5, 6]], [[10, 12], [20, 15], [0, 0]])
    # x2 = min(39, 30 + 99) = 39, y2 = min(29, 20 + 99) = 29
    np.testing.assert_allclose(second.box, [30, 20, 9, 9])
    np.testing.assert_allclose(second.center, [34.5, 24.5])
    assert report.skipped == {"crowd annotation": 1, "no labelled keypoints": 1,
                              "box of zero area": 1, "missing image file": 1,
                              "image without people": 1}
    assert report.repaired == {"labelled keypoint outside the image, made unlabelled": 1}


def test_coco_without_required_keypoints_keeps_unlabelled_boxes(coco_files):
    path, image_dir = coco_files
    records = coco.read_coco_keypoints(path, image_dir, "coco", (256, 192),
                                       require_keypoints=False)
    assert [r.annotation_id for r in records] == [101, 103, 201]


def test_skips_are_logged_with_file_and_record(coco_files, caplog):
    path, image_dir = coco_files
    with caplog.at_level(logging.INFO, logger="skelpose_tf.data"):
        coco.read_coco_keypoints(path, image_dir, "coco", (256, 192))
    messages = caplog.messages
    assert any("annotation id 104" in m and "box of zero area" in m and path in m
               for m in messages)
    assert any("missing.jpg" in m and "missing image file" in m for m in messages)
    assert any("image id 3" in m and "image without people" in m for m in messages)
    assert any("keypoint 6 (r_shoulder) at (70, 20)" in m for m in messages)


def _rewrite(path, change):
    with open(path) as file:
        data = json.load(file)
    change(data)
    with open(path, "w") as file:
        json.dump(data, file)


@pytest.mark.parametrize("change, message", [
    (lambda d: d["annotations"][0].pop("bbox"), r"annotation id 101 has no field 'bbox'"),
    (lambda d: d["annotations"][0].update(bbox="1,2,3,4"),
     r"annotation id 101 field 'bbox' must be of type list"),
    (lambda d: d["annotations"][0]["keypoints"].__setitem__(4, "12"),
     r"annotation id 101 field 'keypoints'.*must hold only numbers"),
    (lambda d: d["annotations"][0]["keypoints"].pop(),
     r"annotation id 101 field 'keypoints'.*3 x 17"),
    (lambda d: d["annotations"][0]["keypoints"].__setitem__(2, 3), r"must be 0, 1 or 2"),
    (lambda d: d["annotations"][0].update(image_id=77), r"image_id 77, which is not in 'images'"),
    (lambda d: d["images"][0].pop("width"), r"image id 1 has no field 'width'"),
    (lambda d: d["images"][1].update(height="30"),
     r"image id 2 field 'height' must be of type int"),
    (lambda d: d.pop("annotations"), r"the file has no field 'annotations'"),
    (lambda d: d["annotations"][0].update(iscrowd="no"), r"'iscrowd' must be 0 or 1"),
    (lambda d: d["annotations"][0].update(area=None), r"'area' must be a number"),
    # Duplicate ids are refused, not renumbered (the image table would keep the last image).
    (lambda d: d["images"][2].update(id=2), r"1 image id\(s\) occur more than once: 2\. Give "
                                            r"every image its own id"),
    (lambda d: d["annotations"][1].update(id=101),
     r"1 annotation id\(s\) occur more than once: 101\."),
    (lambda d: d["categories"][1].update(id=1), r"1 category id\(s\) occur more than once: 1\."),
    (lambda d: d["categories"][0].update(name="human") or d["categories"][1].update(keypoints=[]),
     r"cannot tell which category holds the people .*: name exactly one category 'person'"),
    (lambda d: d["categories"][0].update(keypoints="nose"),
     r"category id 1 field 'keypoints' must be a list of keypoint names"),
])
def test_coco_schema_errors_name_the_file_and_record(coco_files, change, message):
    path, image_dir = coco_files
    _rewrite(path, change)
    with pytest.raises(ValueError, match=message) as error:
        coco.read_coco_keypoints(path, image_dir, "coco", (256, 192))
    assert path in str(error.value)


def test_coco_unreadable_json_and_wrong_keypoint_set(coco_files, tmp_path):
    path, image_dir = coco_files
    broken = tmp_path / "broken.json"
    broken.write_text('{"images": [')
    with pytest.raises(ValueError, match=f"Cannot read JSON file {broken}"):
        coco.read_coco_keypoints(str(broken), image_dir, "coco", (256, 192))
    with pytest.raises(ValueError, match="lists 17 keypoints, but the keypoint set 'mpii' has 16: "
                                         "use the keypoint set of the annotations"):
        coco.read_coco_keypoints(path, image_dir, "mpii", (256, 192))


def test_custom_keypoint_set_in_coco_format(tmp_path):
    three = KeypointSet(
        name="three", keypoint_names=("left", "centre", "right"), flip_pairs=((0, 2),),
        links=(SkeletalLink(0, 1, "physical", "upper"), SkeletalLink(1, 2, "physical", "lower")),
        oks_sigmas=(0.05, 0.05, 0.05), upper_body=(0, 1))
    write_image(str(tmp_path / "x.jpg"), np.zeros((30, 40, 3), np.uint8))
    annotation = {"id": 7, "image_id": 5, "category_id": 3, "bbox": [5, 5, 20, 20],
                  "area": 50.0, "keypoints": [6, 7, 2, 10, 12, 1, 0, 0, 0]}
    path = write_coco(tmp_path / "three.json",
                      [{"id": 5, "file_name": "x.jpg", "width": 40, "height": 30}], [annotation],
                      three.keypoint_names,
                      [{"id": 3, "name": "widget", "keypoints": list(three.keypoint_names)}])
    (record,) = coco.read_coco_keypoints(path, str(tmp_path), three, (64, 64))
    np.testing.assert_allclose(record.keypoints, [[6, 7], [10, 12], [0, 0]])
    np.testing.assert_array_equal(record.visibility, [2, 1, 0])
    with pytest.raises(ValueError, match="keypoint set 'coco' has 17"):
        coco.read_coco_keypoints(path, str(tmp_path), "coco", (64, 64))


def test_coco_detections(coco_files, tmp_path):
    path, image_dir = coco_files
    detections = [
        {"image_id": 1, "category_id": 1, "bbox": [5, 5, 20, 30], "score": 0.9},
        {"image_id": 2, "category_id": 1, "bbox": [1, 1, 5, 5], "score": 0.05},
        {"image_id": 99, "category_id": 1, "bbox": [1, 1, 5, 5], "score": 0.8},
        {"image_id": 1, "category_id": 1, "bbox": [1, 1, 0, 4], "score": 0.8},
        {"image_id": 1, "category_id": 2, "bbox": [1, 1, 5, 5], "score": 0.8},
        {"image_id": 4, "category_id": 1, "bbox": [1, 1, 5, 5], "score": 0.8},
    ]
    det_path = tmp_path / "dets.json"
    det_path.write_text(json.dumps(detections))
    report = SkipReport()
    (record,) = coco.read_coco_detections(str(det_path), path, image_dir, "coco", (256, 192),
                                          score_threshold=0.1, report=report)
    np.testing.assert_allclose(record.box, [5, 5, 20, 30])  # detector boxes are not cleaned
    np.testing.assert_allclose(record.center, [15, 20])
    np.testing.assert_allclose(record.scale, [28.125, 37.5])
    assert record.box_score == pytest.approx(0.9) and record.image_id == 1
    assert record.keypoints.shape == (K, 2) and not record.visibility.any()
    assert report.skipped == {"detection score below 0.1": 1,
                              "detection for an image not in the annotation file": 1,
                              "box of zero area": 1, "missing image file": 1}
    detections[0].pop("score")
    det_path.write_text(json.dumps(detections))
    with pytest.raises(ValueError, match=r"detection #0 has no field 'score'"):
        coco.read_coco_detections(str(det_path), path, image_dir, "coco", (256, 192))


# MPII --------------------------------------------------------------------------------------------

@pytest.fixture
def mpii_files(tmp_path):
    write_image(str(tmp_path / "m1.jpg"), np.zeros((60, 80, 3), np.uint8))
    write_image(str(tmp_path / "m2.png"), np.zeros((40, 50, 3), np.uint8))
    joints = np.full((16, 2), 30.0)
    joints[0] = [11, 21]
    joints[3] = [100, 10]  # outside the 80-wide image
    vis = [1.0] * 16
    entries = [
        {"image": "m1.jpg", "center": [40, 30], "scale": 0.2, "joints": joints.tolist(),
         "joints_vis": vis, "headbox": [[10, 5], [20, 15]]},
        {"image": "m1.jpg", "center": [-1, -1], "scale": 0.2, "joints": joints.tolist(),
         "joints_vis": vis},
        {"image": "missing.jpg", "center": [40, 30], "scale": 0.2, "joints": joints.tolist(),
         "joints_vis": vis},
        {"image": "m2.png", "center": [25, 20], "scale": 0.1, "joints": joints.tolist(),
         "joints_vis": [0.0] * 16},
    ]
    path = tmp_path / "mpii.json"
    path.write_text(json.dumps(entries))
    return str(path), str(tmp_path)


def test_mpii_conversion_from_matlab_coordinates(mpii_files):
    path, image_dir = mpii_files
    report = SkipReport()
    records = mpii.read_mpii(path, image_dir, (256, 192), report=report)
    assert [r.annotation_id for r in records] == [0, 3]
    first, second = records
    # centre y += 15 * s, then -1 for 0-based: (40 - 1, 30 + 3 - 1)
    np.testing.assert_allclose(first.center, [39, 32])
    # side 200 * 0.2 * 1.25 = 50, widened to the 0.75 aspect ratio: height 50 / 0.75
    np.testing.assert_allclose(first.scale, [50, 50 / 0.75], rtol=1e-6)
    np.testing.assert_allclose(first.box, [19, 12, 40, 40])
    np.testing.assert_allclose(first.keypoints[0], [10, 20])
    assert first.visibility[3] == 0 and first.visibility[0] == 1  # joint 3 was outside
    np.testing.assert_allclose(first.head_box, [[9, 4], [19, 14]])
    assert first.image_size == (60, 80) and second.image_size == (40, 50)  # JPEG and PNG headers
    assert (first.image_id, second.image_id) == (0, 1)
    assert second.head_box is None
    assert report.skipped == {"person without a centre (center_x = -1)": 1,
                              "missing image file": 1}
    assert report.repaired == {"labelled keypoint outside the image, made unlabelled": 1}
    square = mpii.read_mpii(path, image_dir, (256, 256))
    np.testing.assert_allclose(square[0].scale, [50, 50])


def test_mpii_head_boxes_from_gt_mat(mpii_files, tmp_path):
    path, image_dir = mpii_files
    boxes = np.arange(16, dtype=np.float64).reshape(2, 2, 4) + 1
    scipy.io.savemat(tmp_path / "gt.mat", {"headboxes_src": boxes})
    records = mpii.read_mpii(path, image_dir, (256, 256), gt_mat_file=str(tmp_path / "gt.mat"))
    np.testing.assert_allclose(records[0].head_box, boxes[:, :, 0] - 1)
    np.testing.assert_allclose(records[1].head_box, boxes[:, :, 3] - 1)
    scipy.io.savemat(tmp_path / "short.mat", {"headboxes_src": boxes[:, :, :3]})
    with pytest.raises(ValueError, match="holds 3 head boxes but the annotation file has 4"):
        mpii.read_mpii(path, image_dir, (256, 256), gt_mat_file=str(tmp_path / "short.mat"))
    scipy.io.savemat(tmp_path / "other.mat", {"jnt_missing": np.zeros((16, 4))})
    with pytest.raises(ValueError, match="no variable 'headboxes_src'"):
        mpii.read_mpii(path, image_dir, (256, 256), gt_mat_file=str(tmp_path / "other.mat"))


@pytest.mark.parametrize("change, message", [
    (lambda e: e.pop("scale"), r"entry #0 \(m1.jpg\) has no field 'scale'"),
    (lambda e: e.update(joints=e["joints"][:15]), r"entry #0 \(m1.jpg\) field 'joints'.*\(16, 2\)"),
    (lambda e: e.update(joints_vis=[2] * 16), r"'joints_vis' must hold 0 or 1"),
    (lambda e: e.update(center="40,30"), r"field 'center' must be numbers"),
    (lambda e: e.update(image=5), r"field 'image' must be a string"),
])
def test_mpii_schema_errors_name_the_file_and_entry(mpii_files, change, message):
    path, image_dir = mpii_files
    _rewrite(path, lambda entries: change(entries[0]))
    with pytest.raises(ValueError, match=message) as error:
        mpii.read_mpii(path, image_dir, (256, 256))
    assert path in str(error.value)


def test_mpii_test_file_without_joints(mpii_files):
    path, image_dir = mpii_files
    _rewrite(path, lambda entries: [e.pop(k) for e in entries for k in ("joints", "joints_vis")])
    with pytest.raises(ValueError, match="has no field 'joints'"):
        mpii.read_mpii(path, image_dir, (256, 256))
    records = mpii.read_mpii(path, image_dir, (256, 256), require_joints=False)
    assert len(records) == 2 and not any(r.visibility.any() for r in records)


# image files ------------------------------------------------------------------------------------

def test_image_headers():
    colour = np.zeros((30, 40, 3), np.uint8)
    header = images.read_image_header(encode(colour, ".jpg"))
    assert (header.format, header.width, header.height, header.channels) == ("jpeg", 40, 30, 3)
    assert images.read_image_header(constant_jpeg((200,), 16, 24)).channels == 1
    assert images.read_image_header(constant_jpeg((1, 2, 3, 4))).channels == 4
    header = images.read_image_header(encode(colour, ".png"))
    assert (header.format, header.width, header.height, header.channels) == ("png", 40, 30, 3)
    assert images.read_image_header(b"GIF89a" + bytes(20)) is None


def test_decode_converts_grey_cmyk_and_png_to_rgb():
    grey, header = images.decode_image(constant_jpeg((200,)))
    assert grey.shape == (16, 16, 3) and np.all(grey == 200)
    assert header.conversion_note("x.jpg") == "grayscale JPEG"
    cyan, header = images.decode_image(constant_jpeg((0, 255, 255, 255)))  # inverted CMYK
    assert cyan.shape == (16, 16, 3)
    assert np.all(cyan[..., 0] < 5) and np.all(cyan[..., 1:] > 250)
    assert header.conversion_note("x.jpg") == "CMYK JPEG"
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 255
    decoded, header = images.decode_image(encode(red, ".png"))
    np.testing.assert_array_equal(decoded, red)  # RGB order
    assert header.conversion_note("photo.jpg") == "PNG content in a .jpg file"
    assert header.conversion_note("photo.png") is None
    _, header = images.decode_image(encode(red, ".jpg"))
    assert header.conversion_note("photo.jpg") is None


_NOISE = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)


@pytest.mark.parametrize("data, reason", [
    (b"", "empty image file"),
    (encode(_NOISE, ".jpg")[: len(encode(_NOISE, ".jpg")) // 2], "truncated JPEG"),
    (b"this is not an image" * 10, "undecodable data"),
    (encode(_NOISE, ".png")[:500], "corrupt PNG"),
])
def test_undecodable_bytes_raise_a_countable_reason(data, reason):
    with pytest.raises(images.ImageDecodeError) as error:
        images.decode_image(data)
    assert error.value.reason.startswith(reason)


def test_read_image_bytes_and_size_errors(tmp_path):
    with pytest.raises(images.ImageDecodeError, match="missing image file"):
        images.read_image_bytes(str(tmp_path / "nope.jpg"))
    with pytest.raises(images.ImageDecodeError, match="unreadable image file"):
        images.read_image_bytes(str(tmp_path))  # a directory
    (tmp_path / "junk.jpg").write_bytes(b"junk" * 10)
    with pytest.raises(images.ImageDecodeError, match="undecodable"):
        images.read_image_size(str(tmp_path / "junk.jpg"))


def test_skip_report_counts_each_item_once():
    report = SkipReport()
    assert report.skip("missing image file", "record 3 (a.jpg)")
    assert not report.skip("missing image file", "record 3 (a.jpg)")  # e.g. the next epoch
    report.skip("missing image file", "record 4 (b.jpg)")
    report.repair("CMYK JPEG, decoded and converted to RGB", "c.jpg")
    assert report.skipped == {"missing image file": 2}
    assert report.summary() == ("skipped: 2 x missing image file\n"
                                "repaired: 1 x CMYK JPEG, decoded and converted to RGB")
    assert SkipReport().summary() == "no input skipped or repaired"
