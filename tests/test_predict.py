"""predict.py and skelpose_tf.image_prediction: poses on the user's own images."""

import json
import math
import os
import shutil

import cv2
import numpy as np
import pytest
import tensorflow as tf

from data_fixtures import write_image
from pose_fixtures import (DOT_IMAGE_SIZE, DOTS, PoolingNetwork, dot_image, run_script,
                           save_tiny_model)
from skelpose_tf import image_prediction
from skelpose_tf.drawing import MIN_PANEL_CROP_WIDTH
from skelpose_tf.data.synthetic import generate_dataset


ONE_PERSON = (((40.0, 20.0, 60.0, 90.0), ((55.0, 35.0), (70.4, 60.2), (85.0, 95.0))),)


def test_predict_command_on_a_folder_with_partial_boxes_writes_json_drawings_and_maps(tmp_path):
    images = tmp_path / "images"
    generate_dataset(str(tmp_path / "synthetic"), 0, 2, seed=0)
    shutil.copytree(tmp_path / "synthetic" / "images" / "val", images)
    first, second = sorted(os.listdir(images))
    boxes = [[20, 30, 80, 150], {"bbox": [150, 20, 60, 140], "score": 0.8}]
    with open(tmp_path / "boxes.json", "w") as f:
        json.dump({first: boxes}, f)
    run_dir = str(tmp_path / "run")
    save_tiny_model(run_dir)
    out_dir = tmp_path / "out"
    completed = run_script("predict.py", f"--weights={run_dir}", f"--image={images}",
                           f"--boxes={tmp_path / 'boxes.json'}", f"--out_dir={out_dir}",
                           "--show_maps")
    assert completed.returncode == 0, completed.stderr
    assert f"whole image (not listed in {tmp_path / 'boxes.json'})" in completed.stdout
    with open(out_dir / "predictions.json") as f:
        payload = json.load(f)
    assert payload["keypoint_names"][0] == "nose" and payload["flip_test"] is True
    by_name = {os.path.basename(entry["image"]): entry for entry in payload["images"]}
    given, whole = by_name[first], by_name[second]
    assert [p["box"] for p in given["people"]] == [boxes[0], boxes[1]["bbox"]]
    assert [p["box_score"] for p in given["people"]] == [1.0, 0.8]
    height, width = whole["height"], whole["width"]
    assert [p["box"] for p in whole["people"]] == [[-0.5, -0.5, width, height]]
    for entry in payload["images"]:
        assert all(np.asarray(p["keypoints"]).shape == (17, 3) for p in entry["people"])
        assert cv2.imread(entry["drawing"]).shape == (height, width, 3)
        assert len(entry["maps"]) == len(entry["people"])
        tile = math.ceil(MIN_PANEL_CROP_WIDTH / 64) * 64  # enlarged 64x64 crop
        for maps in entry["maps"]:
            panel = cv2.imread(maps)
            # Two rows (crop, skeletal, keypoint maps; then the three attention maps).
            assert panel.shape[0] > 2 * tile and panel.shape[1] > 3 * tile


def test_whole_image_prediction_lands_on_the_dots(tmp_path):
    path = write_image(tmp_path / "person.png", dot_image(ONE_PERSON))
    network = PoolingNetwork(DOTS)
    network.set_decoding(decoder="dark")
    (prediction,) = image_prediction.predict_images(network, [path])
    assert prediction.box_source == "whole image (no boxes given)"
    height, width = DOT_IMAGE_SIZE
    np.testing.assert_allclose(prediction.centers, [[(width - 1) / 2, (height - 1) / 2]])
    # Padding 1.0: the region is the image, enlarged only to the model's aspect ratio (3:4).
    np.testing.assert_allclose(prediction.scales, [[width, width * 4 / 3]])
    errors = np.linalg.norm(prediction.keypoints[0] - np.asarray(ONE_PERSON[0][1]), axis=-1)
    assert errors.max() < 1.0


def test_predictions_move_with_the_image_content(tmp_path):
    image = dot_image(ONE_PERSON)
    dx, dy = 23, 11
    shifted = np.zeros((image.shape[0] + 40, image.shape[1] + 40, 3), np.uint8)
    shifted[dy:dy + image.shape[0], dx:dx + image.shape[1]] = image
    paths = [write_image(tmp_path / "a.png", image), write_image(tmp_path / "b.png", shifted)]
    box = np.asarray(ONE_PERSON[0][0], np.float32)
    boxes = {paths[0]: (box[None], np.ones(1, np.float32)),
             paths[1]: ((box + [dx, dy, 0, 0])[None], np.ones(1, np.float32))}
    first, second = image_prediction.predict_images(PoolingNetwork(DOTS), paths, boxes, "boxes.json")
    assert first.box_source == "boxes from boxes.json"
    np.testing.assert_allclose(second.keypoints, first.keypoints + [dx, dy], atol=1e-3)
    np.testing.assert_allclose(second.keypoint_scores, first.keypoint_scores, atol=1e-6)


def test_written_outputs_and_the_panel_of_a_model_without_skeletal_maps(tmp_path):
    path = write_image(tmp_path / "person.png", dot_image(ONE_PERSON))
    network = PoolingNetwork(DOTS)
    predictions = image_prediction.predict_images(network, [path], keep_maps=True)
    payload = image_prediction.write_outputs(predictions, network, str(tmp_path / "out"),
                                        show_maps=True)
    (entry,) = payload["images"]
    assert payload["coordinates"].startswith("original-image pixels")
    np.testing.assert_allclose(np.asarray(entry["people"][0]["keypoints"])[:, :2],
                               predictions[0].keypoints[0], atol=1e-3)
    drawing = cv2.imread(entry["drawing"])[..., ::-1]
    assert not np.array_equal(drawing, dot_image(ONE_PERSON))  # the skeleton is drawn
    (maps,) = entry["maps"]
    panel = cv2.imread(maps)
    factor = math.ceil(MIN_PANEL_CROP_WIDTH / network.input_size[1])
    tile_height, tile_width = (factor * side for side in network.input_size)
    assert tile_height < panel.shape[0] < 2 * tile_height  # one row: no attention maps
    assert 2 * tile_width < panel.shape[1] < 3 * tile_width  # crop + keypoint heatmaps


class CountingNetwork(PoolingNetwork):
    """`PoolingNetwork` that counts its forward passes (a variable, so graph runs count)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = tf.Variable(0, dtype=tf.int64)

    def __call__(self, images, training=False):
        self.calls.assign_add(1)
        return super().__call__(images, training)


def test_maps_panels_come_from_the_predictions_own_pass_and_crops(tmp_path, monkeypatch):
    paths = [write_image(tmp_path / f"person{i}.png", dot_image(ONE_PERSON)) for i in range(2)]
    boxes = {paths[0]: (np.asarray([ONE_PERSON[0][0], (10.0, 5.0, 90.0, 120.0)], np.float32),
                        np.ones(2, np.float32))}
    network = CountingNetwork(DOTS)
    reads = []
    monkeypatch.setattr(image_prediction, "read_image_bytes",
                        lambda path: reads.append(path) or open(path, "rb").read())
    predictions = image_prediction.predict_images(network, paths, boxes, "boxes.json", batch_size=8,
                                             keep_maps=True)
    # One pass per image (crops of one image in one batch), the flip test in the same pass.
    assert int(network.calls.numpy()) == 2
    maps = predictions[0].maps
    assert maps["crops"].shape == (2, *network.input_size, 3)
    # The kept keypoints are the image keypoints in the crop's own pixels.
    crop_scale = predictions[0].scales[:, None, :] / np.float32(network.input_size[::-1])
    half = (np.float32(network.input_size[::-1]) - 1) / 2
    np.testing.assert_allclose(
        (maps["crop_keypoints"] - half) * crop_scale + predictions[0].centers[:, None],
        predictions[0].keypoints, atol=1e-3)
    payload = image_prediction.write_outputs(predictions, network, str(tmp_path / "out"),
                                        show_maps=True)
    assert int(network.calls.numpy()) == 2  # the panels ran no second pass
    assert sorted(reads) == sorted(paths)  # each image read once, for its skeleton drawing
    assert [len(entry["maps"]) for entry in payload["images"]] == [2, 1]
    with pytest.raises(ValueError, match="keep_maps=True"):
        image_prediction.write_outputs(image_prediction.predict_images(network, paths[:1]), network,
                                  str(tmp_path / "out2"), show_maps=True)


def test_bad_inputs_give_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="Image not found"):
        image_prediction.list_images(str(tmp_path / "missing.jpg"))
    with pytest.raises(ValueError, match="holds no image file"):
        image_prediction.list_images(str(tmp_path))
    paths = [write_image(tmp_path / "a.png", dot_image(ONE_PERSON)),
             write_image(tmp_path / "b.png", dot_image(ONE_PERSON))]
    boxes_file = tmp_path / "boxes.json"
    cases = [({"c.png": [[0, 0, 10, 10]]}, "not being predicted, e.g. \\['c.png'\\]"),
             ({"a.png": [[0, 0, 0, 10]]}, "positive width and height"),
             ({"a.png": [[0, 0, 10]]}, "must be numbers of shape \\(4,\\)"),
             ([[0, 0, 10, 10]], "fits one image only")]
    for content, message in cases:
        boxes_file.write_text(json.dumps(content))
        with pytest.raises(ValueError, match=message):
            image_prediction.read_boxes_file(str(boxes_file), paths)
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="Cannot read image .*garbage.jpg"):
        image_prediction.predict_images(PoolingNetwork(DOTS), [str(garbage)])
    _, encoded = cv2.imencode(".jpg", dot_image(ONE_PERSON))
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(encoded.tobytes()[:400])
    for images in ([paths[0], str(truncated)], [str(truncated)]):
        with pytest.raises(ValueError, match="Cannot read image .*truncated.jpg: truncated"):
            image_prediction.predict_images(PoolingNetwork(DOTS), images)


def test_predict_command_reports_a_missing_image_without_a_traceback(tmp_path):
    completed = run_script("predict.py", "--weights=runs/none", f"--image={tmp_path / 'x.jpg'}")
    assert completed.returncode == 1
    assert "predict.py: error: Image not found" in completed.stderr
    assert "Traceback" not in completed.stderr
