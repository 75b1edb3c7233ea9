"""The tf.data pipeline: crop geometry on real output images, flip, determinism, bad images."""

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import tensorflow as tf

from data_fixtures import blob_image, coco_keypoints, constant_jpeg, encode, write_coco, write_image
from skelpose_tf import crop_geometry
from skelpose_tf.data import coco, pipeline, tfrecords
from skelpose_tf.data.augment import AugmentConfig
from skelpose_tf.data.records import PersonRecord, SkipReport
from skelpose_tf.keypoints import COCO

INPUT_SIZE = (64, 48)  # (height, width)
K = COCO.num_keypoints
LABELLED = (0, 5, 6, 11, 12, 15, 16)  # nose, shoulders, hips, ankles
RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def _colour_of(k):
    """Left keypoints red, right keypoints green, the rest blue: a flip must swap the colours."""
    for left, right in COCO.flip_pairs:
        if k == left:
            return RED
        if k == right:
            return GREEN
    return BLUE


@pytest.fixture(scope="module")
def people(tmp_path_factory):
    """Three 120x100 JPEGs, one person each: seven coloured blobs at sub-pixel positions."""
    root = tmp_path_factory.mktemp("people")
    layout = np.asarray([[0, -60], [-20, -35], [20, -35], [-15, 5], [15, 5], [-18, 50],
                         [18, 50]], np.float64)
    image_table, annotations = [], []
    for i, (cx, cy) in enumerate([(50.3, 62.6), (47.8, 58.1), (52.4, 60.9)]):
        points = layout * (1.0 - 0.08 * i) + [cx, cy]
        image = blob_image(120, 100, points, [_colour_of(k) for k in LABELLED], sigma=1.6)
        write_image(str(root / f"{i}.jpg"), image)
        xyv = np.zeros((K, 3))
        xyv[list(LABELLED)] = np.concatenate([points, np.full((7, 1), 2.0)], 1)
        x0, y0 = points.min(0) - 4
        x1, y1 = points.max(0) + 4
        image_table.append({"id": 10 + i, "file_name": f"{i}.jpg", "width": 100, "height": 120})
        annotations.append({"id": 100 + i, "image_id": 10 + i, "category_id": 1,
                            "bbox": [x0, y0, x1 - x0, y1 - y0], "area": 900.0, "iscrowd": 0,
                            "keypoints": coco_keypoints(xyv)})
    path = write_coco(root / "ann.json", image_table, annotations, COCO.keypoint_names)
    return coco.read_coco_keypoints(path, str(root), COCO, INPUT_SIZE)


def _blob_centroid(image, x, y, channel, radius=6.0):
    ys, xs = np.mgrid[0 : image.shape[0], 0 : image.shape[1]]
    weights = image[..., channel].astype(np.float64) * ((xs - x) ** 2 + (ys - y) ** 2 < radius**2)
    return np.asarray([(weights * xs).sum(), (weights * ys).sum()]) / weights.sum(), weights.sum()


def _check_blobs_under_keypoints(images, keypoints, visibility, flipped):
    """Every labelled output keypoint sits on a blob of the colour of the keypoint it came from."""
    checked = 0
    height, width = INPUT_SIZE
    for image, points, labelled in zip(images, keypoints, visibility):
        for k in np.flatnonzero(labelled):
            x, y = points[k]
            if not (6 <= x <= width - 7 and 6 <= y <= height - 7):
                continue  # moved (partly) out of the crop by the augmentation
            source = COCO.flip_index[k] if flipped else k
            channel = int(np.argmax(_colour_of(source)))
            centroid, mass = _blob_centroid(image, x, y, channel)
            other_mass = [_blob_centroid(image, x, y, c)[1] for c in range(3) if c != channel]
            assert mass > 3 * max(other_mass), (k, source, mass, other_mass)
            np.testing.assert_allclose(centroid, [x, y], atol=0.1)
            checked += 1
    assert checked >= 10


def _first_batch(dataset):
    images, targets = next(iter(dataset))
    return images.numpy(), targets["keypoints"].numpy(), targets["visibility"].numpy()


@pytest.mark.parametrize("flip_prob", [0.0, 1.0])
def test_augmented_crops_put_each_blob_under_its_keypoint(people, flip_prob):
    config = AugmentConfig(scale_factor=0.3, rotation_factor=40.0, rotation_prob=1.0,
                           flip_prob=flip_prob, half_body_prob=0.0)
    dataset = pipeline.make_train_dataset(people, COCO, INPUT_SIZE, 6, config, seed=3,
                                          deterministic=True)
    images, keypoints, visibility = _first_batch(dataset)
    assert images.dtype == np.uint8 and images.shape == (6, 64, 48, 3)
    assert keypoints.shape == (6, K, 2) and visibility.shape == (6, K)
    expected_visibility = np.zeros(K)
    expected_visibility[list(LABELLED)] = 1.0  # v = 2 -> 1.0; the labelled set is symmetric
    np.testing.assert_array_equal(visibility, np.broadcast_to(expected_visibility, (6, K)))
    assert np.all(keypoints[:, expected_visibility == 0] == 0)
    _check_blobs_under_keypoints(images, keypoints, visibility, flipped=flip_prob == 1.0)


def test_flip_mirrors_the_crop_exactly_and_swaps_partners(people):
    def batch(flip_prob):
        config = AugmentConfig(rotation_prob=1.0, flip_prob=flip_prob, half_body_prob=0.0)
        return _first_batch(pipeline.make_train_dataset(
            people, COCO, INPUT_SIZE, 6, config, seed=11, deterministic=True))

    plain_images, plain_points, plain_vis = batch(0.0)
    flip_images, flip_points, flip_vis = batch(1.0)
    width = INPUT_SIZE[1]
    index = list(COCO.flip_index)
    diff = np.abs(flip_images.astype(int) - plain_images[:, :, ::-1].astype(int))
    assert diff.max() <= 1
    labelled = plain_vis[:, index] > 0
    np.testing.assert_allclose(flip_points[..., 0][labelled],
                               (width - 1 - plain_points[:, index, 0])[labelled], atol=1e-3)
    np.testing.assert_allclose(flip_points[..., 1][labelled],
                               plain_points[:, index, 1][labelled], atol=1e-3)
    np.testing.assert_array_equal(flip_vis, plain_vis[:, index])


def test_static_shapes_for_keras(people, tmp_path):
    tfrecords.write_tfrecords(people, str(tmp_path), 1, COCO, INPUT_SIZE)
    for source in (people, tfrecords.TFRecordSource(str(tmp_path))):
        train = pipeline.make_train_dataset(source, COCO, INPUT_SIZE, 6, seed=0)
        image_spec, target_spec = train.element_spec
        assert image_spec.shape == (6, 64, 48, 3) and image_spec.dtype == tf.uint8
        assert target_spec["keypoints"].shape == (6, K, 2)
        assert target_spec["visibility"].shape == (6, K)
        image_spec, meta_spec = pipeline.make_eval_dataset(source, COCO, INPUT_SIZE,
                                                           4).element_spec
        assert image_spec.shape.as_list() == [None, 64, 48, 3]
        assert meta_spec["keypoints"].shape.as_list() == [None, K, 2]
        assert meta_spec["center"].shape.as_list() == [None, 2]
        assert meta_spec["record_index"].dtype == tf.int64


def test_eval_crops_match_the_closed_form(people):
    dataset = pipeline.make_eval_dataset(people, COCO, INPUT_SIZE, 2)
    batches = list(dataset)
    assert [len(images) for images, _ in batches] == [2, 1]
    images = np.concatenate([b[0].numpy() for b in batches])
    meta = {key: np.concatenate([b[1][key].numpy() for b in batches]) for key in batches[0][1]}
    np.testing.assert_array_equal(meta["record_index"], [0, 1, 2])
    np.testing.assert_array_equal(meta["image_id"], [10, 11, 12])
    np.testing.assert_allclose(meta["center"], [r.center for r in people])
    np.testing.assert_allclose(meta["scale"], [r.scale for r in people])
    np.testing.assert_allclose(meta["box_score"], 1.0)
    height, width = INPUT_SIZE
    for i, record in enumerate(people):
        # x_crop = (x - cx) * W / sw + (W - 1) / 2, the same for y
        expected = ((record.keypoints - record.center) * [width / record.scale[0],
                                                         height / record.scale[1]]
                    + [(width - 1) / 2, (height - 1) / 2])
        labelled = record.visibility > 0
        np.testing.assert_allclose(meta["keypoints"][i][labelled], expected[labelled], atol=1e-3)
    _check_blobs_under_keypoints(images, meta["keypoints"], meta["visibility"], flipped=False)


def test_eval_crops_equal_the_crop_geometry_cutter(people, tmp_path):
    """The pipeline's OpenCV crop and `crop_geometry.cut_crops` (the serving graph's cutter)
    cut the same region alike, to one grey level (OpenCV's fixed-point bilinear weights)."""
    noise = np.random.default_rng(7).integers(0, 256, (120, 100, 3), dtype=np.uint8)
    write_image(str(tmp_path / "noise.png"), noise)
    # Regions inside, across the border and larger than the image; a noise image makes any
    # sub-pixel disagreement visible (a half-pixel shift differs by tens of levels).
    regions = [([50.3, 61.7], [36.0, 48.0]), ([4.2, 100.9], [45.0, 60.0]),
               ([50.0, 60.0], [300.0, 400.0]), ([-30.0, 20.0], [42.0, 56.0])]
    records = [PersonRecord(
        image_path=str(tmp_path / "noise.png"), image_id=0, image_size=(120, 100),
        box=np.zeros(4, np.float32), center=np.asarray(center, np.float32),
        scale=np.asarray(scale, np.float32), keypoints=np.zeros((K, 2), np.float32),
        visibility=np.zeros((K,), np.float32)) for center, scale in regions]
    images, meta = next(iter(pipeline.make_eval_dataset(records, COCO, INPUT_SIZE, 8)))
    matrices = crop_geometry.affine_matrix(meta["center"], meta["scale"], 0.0, INPUT_SIZE)
    cut = np.asarray(crop_geometry.cut_crops(noise, matrices, INPUT_SIZE))
    difference = np.abs(images.numpy().astype(int) - cut.astype(int))
    assert difference.max() <= 1 and (difference > 0).mean() < 0.01
    assert cut[1].min() == 0 and cut[1].max() > 200  # part outside the image: black
    assert not cut[3][:, :10].any()  # the left of this crop is outside the image


@pytest.mark.parametrize("center, scale, rotation, flip", [
    ([60.0, 45.0], [30.0, 40.0], 0.0, False),  # small region inside the image
    ([60.0, 45.0], [60.0, 80.0], 37.0, True),  # rotated
    ([5.0, 80.0], [60.0, 80.0], -20.0, False),  # cut by the image border
    ([60.0, 45.0], [600.0, 800.0], 10.0, False),  # larger than the image
])
def test_warping_only_the_source_window_gives_the_same_crop(center, scale, rotation, flip):
    image = np.random.default_rng(6).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    matrix = np.asarray(crop_geometry.affine_matrix(center, scale, rotation, (64, 48), flip))
    corners = np.asarray(crop_geometry.crop_corners(matrix, (64, 48)))
    full = cv2.warpAffine(image, matrix, (48, 64), flags=cv2.INTER_LINEAR)
    x0, y0, x1, y1 = pipeline.source_window(corners, image.shape[:2])
    assert 0 <= x0 <= x1 <= 119 and 0 <= y0 <= y1 <= 89
    window = cv2.warpAffine(image[y0 : y1 + 1, x0 : x1 + 1],
                            pipeline.shift_source(matrix, x0, y0), (48, 64),
                            flags=cv2.INTER_LINEAR)
    assert np.abs(window.astype(int) - full.astype(int)).max() <= 1
    maker = pipeline._SampleMaker(COCO, (64, 48), None, SkipReport())
    rgb = maker.warp(image, matrix, corners)  # the pipeline's step: BGR in, RGB out
    assert np.abs(rgb.astype(int) - full[..., ::-1].astype(int)).max() <= 1


def test_source_window_bounds():
    def window(center, scale):
        matrix = crop_geometry.affine_matrix(center, scale, 0.0, (64, 48))
        return pipeline.source_window(crop_geometry.crop_corners(matrix, (64, 48)), (90, 120))

    assert window([500.0, 45.0], [30.0, 40.0]) is None
    # region x in [54, 66], y in [37, 53]: one more pixel on each side for bilinear sampling
    assert window([60.0, 45.0], [12.0, 16.0]) == (53, 36, 67, 54)


def test_seeded_training_is_reproducible(people):
    def batches(seed):
        dataset = pipeline.make_train_dataset(people, COCO, INPUT_SIZE, 4, seed=seed,
                                              deterministic=True)
        return [(i.numpy(), t["keypoints"].numpy()) for i, t in dataset.take(3)]

    first, again, other = batches(5), batches(5), batches(6)
    for (a_images, a_points), (b_images, b_points) in zip(first, again):
        np.testing.assert_array_equal(a_images, b_images)
        np.testing.assert_array_equal(a_points, b_points)
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(first, other))


def test_sharding_splits_the_records(people):
    def indices(shard):
        dataset = pipeline.make_eval_dataset(people, COCO, INPUT_SIZE, 4, shard=shard)
        return sorted(int(i) for _, meta in dataset for i in meta["record_index"])

    assert indices((2, 0)) == [0, 2] and indices((2, 1)) == [1]
    context = tf.distribute.InputContext(num_input_pipelines=3, input_pipeline_id=2)
    assert indices(context) == [2]
    with pytest.raises(ValueError, match=r"shard index must be in \[0, num_shards\)"):
        pipeline.make_eval_dataset(people, COCO, INPUT_SIZE, 4, shard=(2, 2))


def test_training_shards_are_disjoint_slices_of_the_global_batch(people, monkeypatch):
    """Two workers of batch 2 decode disjoint people that together make exactly the batches
    of one pipeline of batch 4 (same seed), each image read by one worker only."""
    people = [p for _ in range(4) for p in people]  # 12 records
    loads = []
    original_load = pipeline._SampleMaker.load

    def counting_load(self, data, path, expected_size, where):
        loads.append(where)
        return original_load(self, data, path, expected_size, where)

    monkeypatch.setattr(pipeline._SampleMaker, "load", counting_load)

    def batches(batch_size, shard, steps):
        loads.clear()
        dataset = pipeline.make_train_dataset(people, COCO, INPUT_SIZE, batch_size, seed=3,
                                              deterministic=True, shard=shard)
        out = [(i.numpy(), t["keypoints"].numpy()) for i, t in dataset.take(steps)]
        return out, len(loads)

    whole, whole_loads = batches(4, None, 30)
    first, first_loads = batches(2, (2, 0), 30)
    second, second_loads = batches(2, tf.distribute.InputContext(2, 1), 30)
    for (images, points), (a_images, a_points), (b_images, b_points) in zip(whole, first, second):
        np.testing.assert_array_equal(images, np.concatenate([a_images, b_images]))
        np.testing.assert_array_equal(points, np.concatenate([a_points, b_points]))
    # Each worker decodes half the people: 60 of the 120 of 30 steps, plus the few batches that
    # tf.data prefetches beyond the last step (a run-dependent read-ahead, up to ~10 batches).
    assert 120 <= whole_loads <= 120 + 40
    assert 60 <= first_loads <= 60 + 20 and 60 <= second_loads <= 60 + 20


def _record(path, size=(16, 16)):
    return PersonRecord(
        image_path=str(path), image_id=0, image_size=size,
        box=np.asarray([2, 2, 12, 12], np.float32), center=np.asarray([7.5, 7.5], np.float32),
        scale=np.asarray([12, 16], np.float32), keypoints=np.zeros((K, 2), np.float32),
        visibility=np.zeros((K,), np.float32))


def test_bad_images_are_skipped_and_counted_never_raised(tmp_path):
    noise = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    jpeg = encode(noise, ".jpg")
    files = {
        "good.jpg": jpeg,
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "garbage.jpg": b"not an image at all" * 20,
        "empty.jpg": b"",
        "grey.jpg": constant_jpeg((200,)),
        "cmyk.jpg": constant_jpeg((0, 255, 255, 255)),
        "png.jpg": encode(noise, ".png"),
        "other_size.jpg": encode(np.zeros((20, 16, 3), np.uint8), ".jpg"),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    records = [_record(tmp_path / name) for name in files] + [_record(tmp_path / "gone.jpg")]
    report = SkipReport()
    dataset = pipeline.make_eval_dataset(records, COCO, INPUT_SIZE, 16, report=report)
    images, meta = next(iter(dataset))
    names = list(files) + ["gone.jpg"]
    assert [names[i] for i in meta["record_index"].numpy()] == [
        "good.jpg", "grey.jpg", "cmyk.jpg", "png.jpg"]
    assert report.skipped == {
        "truncated JPEG (no end-of-image marker)": 1,
        "undecodable data (not a known image format)": 1,
        "empty image file": 1,
        "image size differs from the annotation": 1,
        "missing image file": 1,
    }
    assert report.repaired == {
        "grayscale JPEG, decoded and converted to RGB": 1,
        "CMYK JPEG, decoded and converted to RGB": 1,
        "PNG content in a .jpg file, decoded and converted to RGB": 1,
    }
    centre = images.numpy()[:, 32, 24]
    np.testing.assert_array_equal(centre[1], [200, 200, 200])  # grey replicated
    assert centre[2][0] < 5 and min(centre[2][1:]) > 250  # CMYK cyan -> RGB (0, 255, 255)


def test_training_replaces_records_whose_image_fails(people, tmp_path):
    records = [people[0], _record(tmp_path / "gone.jpg")]
    report = SkipReport()
    dataset = pipeline.make_train_dataset(records, COCO, INPUT_SIZE, 4, AugmentConfig.none(),
                                          seed=0, report=report)
    for images, targets in dataset.take(3):
        assert images.shape == (4, 64, 48, 3)  # batches stay full
        # every sample is the good record's crop
        np.testing.assert_array_equal(targets["visibility"].numpy()[:, 0], 1.0)
        assert np.all(images.numpy() == images.numpy()[:1])
    assert report.skipped == {"missing image file": 1}


def test_training_with_only_bad_images_stops_with_a_clear_error(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"junk")
    records = [_record(tmp_path / "bad.jpg"), _record(tmp_path / "gone.jpg")]
    dataset = pipeline.make_train_dataset(records, COCO, INPUT_SIZE, 2, seed=0)
    with pytest.raises(tf.errors.OpError, match="All 2 records of this input pipeline failed"):
        next(iter(dataset))


def test_keypoint_count_must_match_the_keypoint_set(people):
    with pytest.raises(ValueError, match="17 keypoints but the keypoint set 'mpii' has 16"):
        pipeline.make_eval_dataset(people, "mpii", INPUT_SIZE, 2)


# TFRecords ---------------------------------------------------------------------------------------

def test_tfrecords_round_trip_gives_the_same_crops(people, tmp_path):
    (tmp_path / "junk.jpg").write_bytes(b"junk")
    records = list(people) + [_record(tmp_path / "junk.jpg")]
    report = SkipReport()
    meta = tfrecords.write_tfrecords(records, str(tmp_path / "shards"), 2, COCO, INPUT_SIZE,
                                     report=report)
    assert (meta["num_images"], meta["num_records"]) == (3, 3)
    assert [s["num_records"] for s in meta["shards"]] == [2, 1]
    assert report.skipped == {"undecodable data (not a known image format)": 1}
    source = tfrecords.TFRecordSource(str(tmp_path / "shards"))
    from_files = list(pipeline.make_eval_dataset(source, COCO, INPUT_SIZE, 8))
    from_list = list(pipeline.make_eval_dataset(people, COCO, INPUT_SIZE, 8))
    (images_a, meta_a), (images_b, meta_b) = from_files[0], from_list[0]
    order = np.argsort(meta_a["record_index"].numpy())
    np.testing.assert_array_equal(meta_a["record_index"].numpy()[order], [0, 1, 2])
    np.testing.assert_array_equal(images_a.numpy()[order], images_b.numpy())
    for key in ("image_id", "center", "scale", "box_score", "keypoints", "visibility"):
        np.testing.assert_allclose(meta_a[key].numpy()[order], meta_b[key].numpy())
    config = AugmentConfig(rotation_prob=1.0, flip_prob=1.0, half_body_prob=0.0)
    dataset = pipeline.make_train_dataset(source, COCO, INPUT_SIZE, 6, config, seed=2)
    images, keypoints, visibility = _first_batch(dataset)
    assert images.shape == (6, 64, 48, 3)
    _check_blobs_under_keypoints(images, keypoints, visibility, flipped=True)


def test_tfrecords_check_keypoints_and_aspect_ratio(people, tmp_path):
    tfrecords.write_tfrecords(people, str(tmp_path), 1, COCO, INPUT_SIZE)
    source = tfrecords.TFRecordSource(str(tmp_path))
    with pytest.raises(ValueError, match=r"written for input size \[64, 48\]"):
        pipeline.make_eval_dataset(source, COCO, (64, 64), 2)
    with pytest.raises(ValueError, match="holds 17 keypoints per person"):
        pipeline.make_eval_dataset(source, "mpii", INPUT_SIZE, 2)
    with pytest.raises(ValueError, match="1 non-empty shard files, fewer than the 2"):
        pipeline.make_train_dataset(source, COCO, INPUT_SIZE, 2, shard=(2, 0))
    with pytest.raises(ValueError, match="Cannot read"):
        tfrecords.TFRecordSource(str(tmp_path / "nothing"))


def test_tfrecords_command_line(people, tmp_path):
    image_dir = os.path.dirname(people[0].image_path)
    result = subprocess.run(
        [sys.executable, "-m", "skelpose_tf.data.tfrecords", "--ann",
         os.path.join(image_dir, "ann.json"), "--images", image_dir, "--out", str(tmp_path),
         "--shards", "2", "--input_size", "64x64"],
        capture_output=True, text=True, timeout=120,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "3 person records of 3 images in 2 shards" in result.stdout
    meta = tfrecords.TFRecordSource(str(tmp_path)).meta
    assert meta["input_size"] == [64, 64] and meta["keypoint_set"] == "coco"


# The project's synthetic data set ----------------------------------------------------------------

def test_synthetic_dataset_through_readers_and_pipelines(tmp_path):
    from skelpose_tf.data import mpii
    from skelpose_tf.data.synthetic import generate_dataset

    paths = generate_dataset(str(tmp_path), 6, 3, seed=0)
    report = SkipReport()
    train = coco.read_coco_keypoints(paths.train_annotations, paths.train_images, COCO,
                                     INPUT_SIZE, report=report)
    val = coco.read_coco_keypoints(paths.val_annotations, paths.val_images, COCO, INPUT_SIZE,
                                   report=report)
    detections = coco.read_coco_detections(paths.val_detections, paths.val_annotations,
                                           paths.val_images, COCO, INPUT_SIZE, report=report)
    mpii_val = mpii.read_mpii(paths.mpii_val, paths.val_images, (64, 64),
                              gt_mat_file=paths.mpii_gt_val, report=report)
    assert train and val and detections and mpii_val
    assert all(r.head_box is not None for r in mpii_val)
    # The generator writes clean data: only COCO's ordinary filtering may leave people out.
    assert set(report.skipped) <= {"no labelled keypoints", "image without people"}
    assert not report.repaired
    images, targets = next(iter(pipeline.make_train_dataset(train, COCO, INPUT_SIZE, 4, seed=0)))
    assert images.shape == (4, 64, 48, 3) and targets["keypoints"].shape == (4, K, 2)
    batches = list(pipeline.make_eval_dataset(val, COCO, INPUT_SIZE, 4, report=report))
    meta = {key: np.concatenate([b[1][key].numpy() for b in batches]) for key in batches[0][1]}
    np.testing.assert_array_equal(meta["record_index"], np.arange(len(val)))
    # crop -> image round trip recovers the annotated keypoints
    back = np.asarray(crop_geometry.crop_to_image(meta["keypoints"], meta["center"],
                                                  meta["scale"], INPUT_SIZE))
    for record, points in zip(val, back):
        labelled = record.visibility > 0
        np.testing.assert_allclose(points[labelled], record.keypoints[labelled], atol=1e-3)
    mpii_batch = next(iter(pipeline.make_eval_dataset(mpii_val, "mpii", (64, 64), 8)))
    assert mpii_batch[0].shape[1:] == (64, 64, 3)
    assert report.skipped.keys() <= {"no labelled keypoints", "image without people"}
