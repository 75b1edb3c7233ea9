"""Helpers for the inference, evaluation, prediction and ablation tests.

- `DOTS`: a 3-keypoint set ("red", "green", "blue") without flip pairs or links, and
  `PoolingNetwork`, a stand-in network whose heatmap k is the 4x4 average of the crop's colour
  channel k. On images of coloured Gaussian dots (`write_dots_dataset`) it is a perfect pose
  estimator, so evaluation must score it AP 1.0 and every mapping error shows; it traces in
  milliseconds, unlike an HRNet.
- `build_tiny_model` / `save_tiny_model`: an untrained W8 `PoseHRNet` (one module of one block
  per stage), or that model saved as a run directory (`best.keras`).
- `run_script`: runs a repository script (evaluate.py, ...) in a subprocess.
- `pycocotools_stats`: COCOeval run directly, the oracle for every COCO number.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import tensorflow as tf

from data_fixtures import blob_image, coco_keypoints, write_coco
from skelpose_tf.codec import HeatmapCodec
from skelpose_tf.keypoints import KeypointSet

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DOTS = KeypointSet(name="dots", keypoint_names=("red", "green", "blue"), flip_pairs=(),
                   links=(), oks_sigmas=(0.1, 0.1, 0.1), upper_body=(0, 1, 2))
DOT_COLORS = ((255, 0, 0), (0, 255, 0), (0, 0, 255))
DOT_SIGMA = 8.0
# Two people per image: (box [x, y, w, h], keypoints [3, 2]) in image pixels.
DOT_PEOPLE = (
    ((20.0, 10.0, 40.0, 80.0), ((30.0, 25.0), (40.3, 50.6), (50.0, 75.0))),
    ((95.0, 30.0, 50.0, 60.0), ((105.2, 40.0), (118.0, 61.7), (133.0, 80.0))),
)
DOT_IMAGE_SIZE = (120, 160)  # height, width
DOT_AREA = 10000.0


class PoolingNetwork:
    """A stand-in pose network: heatmap k = 4x4 average pool of colour channel k % 3, / 255.

    Args:
        keypoint_set: the `KeypointSet` it claims to predict.
        input_size: (height, width) of its crops (multiples of 4).
        skeletal_attention: the value of the attribute (no skeletal maps are produced).
        shift: (dx, dy) whole heatmap pixels to roll the heatmaps by: a deliberately worse
            estimator (its keypoints land 4 * shift crop pixels off).

    Pooled cell (i, j) covers crop pixels 4j..4j+3, centred at 4j + 1.5, which is the heatmap
    convention x_in = (x_h + 0.5) * 4 - 0.5. Like a `PoseHRNet` it carries its `codec`
    (default settings) and `set_decoding`.
    """

    def __init__(self, keypoint_set, input_size=(64, 48), skeletal_attention=False,
                 shift=(0.0, 0.0)):
        self.keypoint_set = keypoint_set
        self.input_size = tuple(input_size)
        self.skeletal_attention = skeletal_attention
        self.heatmap_size = (input_size[0] // 4, input_size[1] // 4)
        self.width = 0
        self.name = "pooling_network"
        self.shift = shift
        self.codec = HeatmapCodec(self.input_size, keypoint_set)

    def set_decoding(self, decoder=None, top_n=None):
        self.codec = self.codec.replace(decoder=decoder, top_n=top_n)

    def __call__(self, images, training=False):
        pooled = tf.nn.avg_pool2d(tf.cast(images, tf.float32) / 255.0, 4, 4, "VALID")
        if self.shift != (0.0, 0.0):
            pooled = tf.roll(pooled, shift=[int(self.shift[1]), int(self.shift[0])], axis=[1, 2])
        channels = [k % 3 for k in range(self.keypoint_set.num_keypoints)]
        return {"heatmaps": tf.gather(pooled, channels, axis=-1)}


def lose_keypoints(network):
    """Make a pose network's first three heatmaps non-positive (in place); returns it.

    Keypoint 0 (COCO nose, its own flip partner) gets heatmaps < 0 everywhere that still vary
    over the crop, keypoints 1 and 2 (the eyes, partners in the flip test) heatmaps of exactly
    0. The head is a 1x1 convolution of ReLU features (>= 0): non-positive weights with a
    negative bias give the first, zero weights and bias the second.
    """
    head = network.get_layer("keypoint_head")
    kernel, bias = head.get_weights()
    kernel[..., 0] = -np.abs(kernel[..., 0])
    bias[0] = -0.1
    kernel[..., 1:3] = 0.0
    bias[1:3] = 0.0
    head.set_weights([kernel, bias])
    return network


def dot_image(people=DOT_PEOPLE, size=DOT_IMAGE_SIZE):
    """RGB uint8 image with one Gaussian dot per keypoint, coloured by keypoint."""
    points = [point for _, keypoints in people for point in keypoints]
    colors = [DOT_COLORS[k] for _, keypoints in people for k in range(len(keypoints))]
    return blob_image(size[0], size[1], points, colors, sigma=DOT_SIGMA)


def write_dots_dataset(directory, num_images=2, detection_jitter=3.0) -> dict:
    """A COCO-format data set of dot images (PNG), a detector box file and the keypoint set.

    Image i shows `DOT_PEOPLE` shifted right by 3 * i pixels. Returns a dict of paths:
    `ann`, `images`, `detections`, `keypoint_set` (the DOTS set as JSON).
    """
    image_dir = os.path.join(directory, "images")
    images, annotations, detections = [], [], []
    for i in range(num_images):
        offset = 3.0 * i
        people = [((x + offset, y, w, h), [(px + offset, py) for px, py in keypoints])
                  for (x, y, w, h), keypoints in DOT_PEOPLE]
        name = f"dots_{i}.png"
        os.makedirs(image_dir, exist_ok=True)
        cv2.imwrite(os.path.join(image_dir, name), dot_image(people)[..., ::-1])
        images.append({"id": i + 1, "file_name": name, "height": DOT_IMAGE_SIZE[0],
                       "width": DOT_IMAGE_SIZE[1]})
        for p, (box, keypoints) in enumerate(people):
            annotations.append({
                "id": 10 * (i + 1) + p, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
                "bbox": list(box), "area": DOT_AREA, "num_keypoints": 3,
                "keypoints": coco_keypoints([(x, y, 2) for x, y in keypoints])})
            jitter = detection_jitter * (1 if p else -1)
            detections.append({"image_id": i + 1, "category_id": 1, "score": 0.9 - 0.1 * p,
                               "bbox": [box[0] + jitter, box[1] - jitter, box[2], box[3]]})
    ann = write_coco(os.path.join(directory, "dots.json"), images, annotations,
                     DOTS.keypoint_names)
    paths = {"ann": ann, "images": image_dir,
             "detections": os.path.join(directory, "dots_detections.json"),
             "keypoint_set": os.path.join(directory, "dots_set.json")}
    with open(paths["detections"], "w") as f:
        json.dump(detections, f)
    with open(paths["keypoint_set"], "w") as f:
        json.dump(DOTS.to_config(), f)
    return paths


def build_tiny_model(skeletal_attention=True, keypoint_set="coco", input_size=(64, 64)):
    """An untrained W8 `PoseHRNet` with one module of one block per stage (5x faster to build,
    load and trace than the official topology, with every part of the architecture)."""
    from tiny_models import tiny_pose_model

    return tiny_pose_model(keypoint_set, skeletal_attention, input_size)


def save_tiny_model(run_dir, skeletal_attention=True, keypoint_set="coco", input_size=(64, 64)):
    """`build_tiny_model`, saved as `run_dir/best.keras`; returns the model."""
    network = build_tiny_model(skeletal_attention, keypoint_set, input_size)
    os.makedirs(run_dir, exist_ok=True)
    network.save(os.path.join(run_dir, "best.keras"))
    return network


def run_script(script, *args, timeout=600):
    """Run `python <script> args...` from the repository root; returns the CompletedProcess."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, os.path.join(REPO_ROOT, script), *map(str, args)],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def pycocotools_stats(annotation_file, results_file, sigmas=None) -> np.ndarray:
    """COCOeval keypoint stats [10] computed directly with pycocotools (an independent oracle)."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(annotation_file)
        coco_eval = COCOeval(truth, truth.loadRes(results_file), "keypoints")
        coco_eval.params.useSegm = None
        if sigmas is not None:
            coco_eval.params.kpt_oks_sigmas = np.asarray(sigmas)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval.stats


def nearest_truth_errors(results, people_by_image) -> np.ndarray:
    """Per result, the keypoint errors [K] against the nearest true person of its image."""
    errors = []
    for result in results:
        predicted = np.asarray(result["keypoints"], np.float64).reshape(-1, 3)[:, :2]
        truths = [np.asarray(k, np.float64) for k in people_by_image[result["image_id"]]]
        distances = [np.linalg.norm(predicted - truth, axis=-1) for truth in truths]
        errors.append(min(distances, key=lambda d: d.mean()))
    return np.asarray(errors)
