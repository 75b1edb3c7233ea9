"""Pose models, stand-ins, data sets and oracles shared by the tests (and their helper scripts).

- Tiny pose models: `tiny_pose_model` builds the tests' small `PoseHRNet` (width 8, 64x64,
  `TOPOLOGIES["tiny"]`: the official structure at one module of one block per stage, about a
  tenth of the graph); `he_initialised_tiny_model` gives it He-initialised convolutions (export
  comparisons), `save_tiny_model` saves it as a run directory (`best.keras`),
  `freeze_batch_norm` fixes its BatchNorm layers, `lose_keypoints` makes three of its heatmaps
  non-positive, and `tiny_batch` is a random training batch for it.
- `DOTS`: a 3-keypoint set ("red", "green", "blue") without flip pairs or links, and
  `PoolingNetwork`, a stand-in network whose heatmap k is the 4x4 average of the crop's colour
  channel k. On images of coloured Gaussian dots (`write_dots_dataset`) it is a perfect pose
  estimator, so evaluation must score it AP 1.0 and every mapping error shows; it traces in
  milliseconds, unlike an HRNet.
- Scripts: `run_script` runs a repository script (evaluate.py, ...) in a subprocess;
  `small_train_command` is the command line of a small `train.py` run.
- `pycocotools_stats`: COCOeval run directly, the oracle for every COCO number.

The fixtures several test modules share (synthetic data sets, the export tests' model and
crops) are in conftest.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import keras
import numpy as np
import tensorflow as tf

from data_fixtures import blob_image, coco_keypoints, write_coco, write_image
from skelpose_tf.codec import HeatmapCodec
from skelpose_tf.keypoints import KeypointSet
from skelpose_tf.models.pose_model import TOPOLOGIES, build_pose_model

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(TESTS_DIR)
TINY_INPUT_SIZE = (64, 64)


# Tiny pose models --------------------------------------------------------------------------------
def tiny_pose_model(keypoint_set="coco", skeletal_attention=True, input_size=TINY_INPUT_SIZE,
                    width=8, **kwargs):
    """An untrained W8 `PoseHRNet` of the tiny topology (one module of one block per stage: the
    official structure, branches, fuse layers, skeletal module and heads, at about a tenth of the
    graph, so it builds, loads and traces fast). `kwargs` go to `build_pose_model` (dtype, ...)."""
    return build_pose_model(width, input_size, keypoint_set, skeletal_attention,
                            **TOPOLOGIES["tiny"], **kwargs)


def he_initialised_tiny_model(input_size=TINY_INPUT_SIZE, dtype=None, seed=0, **kwargs):
    """A tiny COCO model whose convolutions are He-initialised (`he_initialise`); `kwargs` go
    to `build_pose_model` (pixel_convention, sigma, ...)."""
    keras.utils.set_random_seed(seed)  # the layers' own initialisers too (skeletal module)
    network = tiny_pose_model("coco", input_size=input_size, dtype=dtype, **kwargs)
    return he_initialise(network, seed)


def he_initialise(network, seed=0):
    """Give every convolution of `network` He-initialised weights (in place); returns it.

    The official N(0, 0.001) initialisation makes untrained heatmaps ~1e-10 everywhere; He
    initialisation gives peaked, input-dependent heatmaps, so export and decoding comparisons
    between two runtimes test something.
    """
    rng = np.random.default_rng(seed)
    for layer in network.layers:
        if isinstance(layer, keras.layers.Conv2D):
            weights = layer.get_weights()
            fan_in = int(np.prod(weights[0].shape[:-1]))
            weights[0] = rng.normal(0.0, np.sqrt(2.0 / fan_in), weights[0].shape)
            layer.set_weights([w.astype(np.float32) for w in weights])
    return network


def save_tiny_model(run_dir, keypoint_set="coco", skeletal_attention=True,
                    input_size=TINY_INPUT_SIZE):
    """`tiny_pose_model`, saved as `run_dir/best.keras`; returns the model."""
    network = tiny_pose_model(keypoint_set, skeletal_attention, input_size)
    os.makedirs(run_dir, exist_ok=True)
    network.save(os.path.join(run_dir, "best.keras"))
    return network


def freeze_batch_norm(network):
    """Put every BatchNormalization layer of `network` in inference mode (not trainable), so
    that batch statistics cannot differ between runs that split a batch differently; returns
    the network."""
    for layer in network.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    return network


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


def tiny_batch(batch=4, size=TINY_INPUT_SIZE, seed=0, num_keypoints=17):
    """A random training batch: uint8 images [B, H, W, 3] and labels (keypoints uniform in
    [4, H - 4), about 70% visible)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (batch, *size, 3)).astype("uint8")
    keypoints = rng.uniform(4, size[0] - 4, (batch, num_keypoints, 2)).astype("float32")
    visibility = (rng.uniform(size=(batch, num_keypoints)) > 0.3).astype("float32")
    return images, {"keypoints": keypoints, "visibility": visibility}


# The dots stand-in -------------------------------------------------------------------------------
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
        write_image(os.path.join(image_dir, name), dot_image(people))
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


# Person detectors -------------------------------------------------------------------------------
def write_object_detection_saved_model(path, boxes, scores, classes, num_detections=None) -> str:
    """A SavedModel with the TF Object Detection API's `serving_default` (uint8 [1, H, W, 3]
    `input_tensor` -> `detection_boxes` [1, N, 4] normalised [y1, x1, y2, x2],
    `detection_scores`, `detection_classes`, `num_detections`) that returns the given
    detections whatever the image; `num_detections` defaults to N."""
    outputs = {"detection_boxes": tf.constant([boxes], tf.float32),
               "detection_scores": tf.constant([scores], tf.float32),
               "detection_classes": tf.constant([classes], tf.float32),
               "num_detections": tf.constant([float(len(scores) if num_detections is None
                                                    else num_detections)])}
    module = tf.Module()
    module.serve = tf.function(lambda input_tensor: dict(outputs), input_signature=[
        tf.TensorSpec([1, None, None, 3], tf.uint8, name="input_tensor")])
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return str(path)


# Scripts and oracles -----------------------------------------------------------------------------
def run_script(script, *args, timeout=600):
    """Run `python <script> args...` from the repository root; returns the CompletedProcess."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, os.path.join(REPO_ROOT, script), *map(str, args)],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def small_train_command(run_dir, data_dir, epochs, steps, *flags) -> list:
    """The command line of a small `train.py` run (demo recipe, W8 64x64, no export, one log line
    per epoch), to run from the repository root; `flags` are added at the end."""
    return [sys.executable, os.path.join(REPO_ROOT, "train.py"), "--flagfile=configs/demo.cfg",
            f"--run_dir={run_dir}", f"--data_dir={data_dir}", "--width=8", "--input_size=64x64",
            f"--epochs={epochs}", f"--steps_per_epoch={steps}", "--val_max_people=8",
            "--export=false", "--verbose=2", *flags]


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
