"""skelpose_tf.detectors: HOG on a real photograph, a TF Object Detection API SavedModel built
here, a keras-hub detector with random weights, boxes files (incl. COCO detection results) and
the one-line errors."""

import json
import math

import cv2
import numpy as np
import pytest
import tensorflow as tf

from pose_fixtures import write_object_detection_saved_model
from skelpose_tf import detectors
from skelpose_tf.detectors import open_detector

# The astronaut of skimage.data.astronaut() (512x512), checked by eye on a drawing (README):
# her body runs from x 20 (left arm) to 365 (right shoulder), y 15 (hair) to the bottom edge;
# her face and most of her hair are x 150-300, y 30-190.
ASTRONAUT = (20.0, 15.0, 345.0, 497.0)
ASTRONAUT_HEAD = (150.0, 30.0, 150.0, 160.0)


def iou(a, b) -> float:
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    inter = max(0.0, min(ax2, bx2) - max(a[0], b[0])) * max(0.0, min(ay2, by2) - max(a[1], b[1]))
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def contains(outer, inner) -> bool:
    return (outer[0] <= inner[0] and outer[1] <= inner[1]
            and outer[0] + outer[2] >= inner[0] + inner[2]
            and outer[1] + outer[3] >= inner[1] + inner[3])


def test_hog_finds_the_astronaut():
    skimage_data = pytest.importorskip("skimage.data")
    image = skimage_data.astronaut()
    boxes, scores = open_detector("hog")(image)
    assert boxes.dtype == np.float32 and boxes.shape == (1, 4) and scores.shape == (1,)
    box = boxes[0].tolist()
    assert iou(box, ASTRONAUT) > 0.7, box
    assert contains(box, ASTRONAUT_HEAD), box
    assert detectors.DEFAULT_DET_SCORES["hog"] <= scores[0] < 1.0
    # A higher det_score drops it; the same box at det_score 0.
    assert open_detector("hog", det_score=0.9)(image)[0].shape == (0, 4)
    np.testing.assert_allclose(open_detector("hog", det_score=0.0)(image)[0][0], box)


def test_hog_score_is_the_documented_map_of_the_margin():
    np.testing.assert_allclose(detectors.hog_score([-1.0, 0.0, 1.0, 2.0]),
                               [0.0, 0.0, 1 - math.exp(-1), 1 - math.exp(-2)], rtol=1e-6)


def test_select_boxes_thresholds_then_suppresses_overlaps_best_first():
    boxes = [[0, 0, 10, 10], [1, 0, 10, 10], [50, 50, 10, 10], [80, 80, 5, 5]]
    scores = [0.6, 0.9, 0.7, 0.1]
    kept, kept_scores = detectors.select_boxes(boxes, scores, det_score=0.5, nms_iou=0.5)
    # [0] overlaps [1] with IoU 90/110 and scores lower; [3] is under det_score.
    np.testing.assert_array_equal(kept, [[1, 0, 10, 10], [50, 50, 10, 10]])
    np.testing.assert_allclose(kept_scores, [0.9, 0.7])


def test_object_detection_api_saved_model_gives_person_boxes_in_image_pixels(tmp_path):
    boxes = [[0.1, 0.2, 0.5, 0.6],     # person 0.9 -> kept
             [0.0, 0.0, 1.0, 1.0],     # class 3 (car) 0.95 -> dropped
             [0.12, 0.21, 0.5, 0.6],   # person 0.8, overlaps the first -> NMS
             [0.6, 0.6, 0.9, 0.8],     # person 0.2 -> under det_score
             [0.5, 0.0, 1.0, 0.25],    # person 0.7 -> kept
             [0.0, 0.0, 0.5, 0.5]]     # beyond num_detections -> ignored
    path = write_object_detection_saved_model(
        tmp_path / "od", boxes, [0.9, 0.95, 0.8, 0.2, 0.7, 0.99], [1, 3, 1, 1, 1, 1],
        num_detections=5)
    detector = open_detector(f"saved_model:{path}")
    boxes, scores = detector(np.zeros((100, 200, 3), np.uint8))
    # Normalised [y1, x1, y2, x2] * (H, W), the image's edges at -0.5 (pixel centres at
    # integers): x = 0.2 * 200 - 0.5, y = 0.1 * 100 - 0.5, w = 0.4 * 200, h = 0.4 * 100.
    np.testing.assert_allclose(boxes, [[39.5, 9.5, 80.0, 40.0], [-0.5, 49.5, 50.0, 50.0]],
                               atol=1e-4)
    np.testing.assert_allclose(scores, [0.9, 0.7])


class _NotADetector(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([1, None, None, 3], tf.uint8)])
    def serve(self, images):
        return {"boxes": tf.zeros([1, 1, 4])}


def test_bad_specs_and_files_are_one_line_errors(tmp_path):
    module = _NotADetector()
    tf.saved_model.save(module, str(tmp_path / "other"),
                        signatures={"serving_default": module.serve})
    cases = [("yolo", "unknown detector 'yolo'"),
             ("hog:big", "hog:big: the HOG image side must be a number"),
             ("saved_model:", "saved_model needs a path"),
             (f"saved_model:{tmp_path / 'none'}", "no such directory"),
             (f"saved_model:{tmp_path}", "saved_model.pb is missing"),
             (f"saved_model:{tmp_path / 'other'}",
              "lacks the Object Detection API outputs \\['detection_boxes'"),
             (f"boxes:{tmp_path / 'missing.json'}", "missing.json: no such file")]
    for spec, message in cases:
        with pytest.raises(ValueError, match=message) as error:
            open_detector(spec)
        assert "\n" not in str(error.value)
    assert open_detector("none") is None


def test_an_opencv_without_hog_names_the_wheel_to_install(monkeypatch):
    monkeypatch.delattr(cv2, "HOGDescriptor")
    with pytest.raises(ValueError, match="install opencv-contrib-python-headless"):
        open_detector("hog")


def test_boxes_file_layouts_and_coco_detection_results(tmp_path):
    image = np.zeros((50, 60, 3), np.uint8)
    (tmp_path / "named.json").write_text(json.dumps({"a.jpg": [[1, 2, 3, 4]]}))
    named = open_detector(f"boxes:{tmp_path / 'named.json'}")
    assert named.covers("some/dir/a.jpg") and not named.covers("b.jpg")
    np.testing.assert_array_equal(named(image, "some/dir/a.jpg")[0], [[1, 2, 3, 4]])
    results = [{"image_id": 139, "category_id": 1, "bbox": [10, 20, 30, 40], "score": 0.9},
               {"image_id": 139, "category_id": 18, "bbox": [0, 0, 5, 5], "score": 0.99},
               {"image_id": 139, "category_id": 1, "bbox": [5, 5, 10, 10], "score": 0.1},
               {"image_id": 7, "category_id": 1, "bbox": [1, 1, 2, 2], "score": 0.5}]
    (tmp_path / "dets.json").write_text(json.dumps(results))
    by_stem = open_detector(f"boxes:{tmp_path / 'dets.json'}", det_score=0.2)
    boxes, scores = by_stem(image, "000000000139.jpg")  # image id = numeric file stem
    np.testing.assert_array_equal(boxes, [[10, 20, 30, 40]])
    np.testing.assert_allclose(scores, [0.9])
    assert not by_stem.covers("cat.jpg")
    annotations = tmp_path / "ann.json"
    annotations.write_text(json.dumps({"images": [{"id": 7, "file_name": "cat.jpg"}]}))
    by_name = open_detector(f"boxes:{tmp_path / 'dets.json'}", annotations=str(annotations))
    assert by_name.covers("x/cat.jpg")
    np.testing.assert_array_equal(by_name(image, "x/cat.jpg")[0], [[1, 1, 2, 2]])


@pytest.fixture(scope="module")
def retinanet():
    """A tiny keras-hub RetinaNet (91 COCO classes, 64x64 input) with random weights, every box
    kept by its NMS, and no box regression (its boxes are its anchors, most in the image)."""
    keras_hub = pytest.importorskip("keras_hub")
    import keras

    keras.utils.set_random_seed(0)
    encoder = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 8, 8, 8],
        stackwise_num_blocks=[1, 1, 1, 1], stackwise_num_strides=[1, 2, 2, 2],
        block_type="bottleneck_block", use_pre_activation=False, image_shape=(None, None, 3))
    backbone = keras_hub.models.RetinaNetBackbone(image_encoder=encoder, min_level=3,
                                                  max_level=4, use_p5=False)
    converter = keras_hub.layers.RetinaNetImageConverter(image_size=(64, 64), scale=1 / 255.0)
    model = keras_hub.models.RetinaNetObjectDetector(
        backbone=backbone, num_classes=91,
        preprocessor=keras_hub.models.RetinaNetObjectDetectorPreprocessor(
            image_converter=converter),
        prediction_decoder=keras_hub.layers.NonMaxSuppression(
            bounding_box_format="yxyx", from_logits=True, confidence_threshold=0.0,
            max_detections=20))
    for weight in model.box_head.weights:
        weight.assign(np.zeros(weight.shape, weight.dtype))
    return model


def test_keras_hub_detector_plumbing(retinanet):
    model = retinanet
    image = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    assert open_detector(model) is model  # a detector object passes through
    assert detectors.KerasHubDetector(model).person_class == 1  # keras-hub's COCO "person"

    class EightyClasses:
        num_classes = 80

    assert detectors._keras_hub_person_class(EightyClasses()) == 0  # contiguous COCO labels
    # The oracle: the model's own output on the image resized to its 64x64 input. Random
    # weights rarely call anything a person: the plumbing is checked on the label it gives
    # most often, as if that were the person class.
    resized = cv2.resize(image, (64, 64), interpolation=cv2.INTER_LINEAR)
    raw = model.predict(resized[None].astype(np.float32), verbose=0)
    count = int(raw["num_detections"][0])
    labels = raw["labels"][0, :count]
    label = int(np.bincount(labels).argmax())
    detector = detectors.KerasHubDetector(model, det_score=0.0, nms_iou=1.0, person_class=label)
    boxes, scores = detector(image)
    # The label's boxes, yxyx scaled by (96 / 64, 128 / 64), the edges moved to -0.5, clipped.
    chosen = labels == label
    y1, x1, y2, x2 = (raw["boxes"][0, :count][chosen, i] for i in range(4))
    expected = np.stack([x1 * 2 - 0.5, y1 * 1.5 - 0.5, x2 * 2 - 0.5, y2 * 1.5 - 0.5], -1)
    expected = np.clip(expected, -0.5, [127.5, 95.5, 127.5, 95.5])
    inside = (expected[:, 2] > expected[:, 0]) & (expected[:, 3] > expected[:, 1])
    expected, expected_scores = expected[inside], raw["confidence"][0, :count][chosen][inside]
    order = np.argsort(-expected_scores, kind="stable")
    assert len(boxes) == len(order) > 0
    np.testing.assert_allclose(scores, expected_scores[order], atol=1e-4)
    np.testing.assert_allclose(boxes[:, :2], expected[order, :2], atol=0.05)
    np.testing.assert_allclose(boxes[:, :2] + boxes[:, 2:], expected[order, 2:], atol=0.05)


def test_keras_hub_spec_loads_a_local_preset_directory(retinanet, tmp_path):
    retinanet.save_to_preset(str(tmp_path / "preset"))
    detector = open_detector(f"keras_hub:{tmp_path / 'preset'}", det_score=0.0)
    assert detector.name == f"keras-hub detector {tmp_path / 'preset'}"
    assert detector.person_class == 1
    image = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    # Random weights need not call anything a person: compare on the label given most often.
    raw = retinanet.predict(image[None].astype(np.float32), verbose=0)
    label = int(np.bincount(raw["labels"][0, :int(raw["num_detections"][0])]).argmax())
    detector.person_class = label
    reference = detectors.KerasHubDetector(retinanet, det_score=0.0, person_class=label)(image)
    assert len(reference[0]) > 0
    for got, want in zip(detector(image), reference):  # the loaded model is the saved one
        np.testing.assert_allclose(got, want, atol=1e-4)
    with pytest.raises(ValueError, match=f"keras_hub:{tmp_path / 'none'}: cannot load"):
        open_detector(f"keras_hub:{tmp_path / 'none'}")
