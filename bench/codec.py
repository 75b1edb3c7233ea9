"""Heatmap codec micro-benchmark: encode -> decode round-trip error and target rendering time.

Round trip: keypoints at uniform random sub-pixel positions (optionally kept `--margin` heatmap
pixels inside the map) are rendered with `HeatmapCodec.encode` and decoded by every decoder; the
Euclidean error is reported in input-crop pixels.

Timing: `encode` for a batch (keypoint and skeletal targets), eagerly, under `tf.function` and
under `tf.function(jit_compile=True)`; median of repeated calls after a warm-up call.

Usage:
    python bench/codec.py --mode=round_trip [--margin=6]
    python bench/codec.py --mode=timing --batch_size=32 --input_height=256 --input_width=192
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import time

import numpy as np
import tensorflow as tf
from absl import app, flags

from skelpose_tf.codec import DECODERS, HeatmapCodec

_MODE = flags.DEFINE_enum("mode", "both", ["round_trip", "timing", "both"], "What to measure.")
_INPUT_HEIGHT = flags.DEFINE_integer("input_height", 256, "Input crop height in pixels.")
_INPUT_WIDTH = flags.DEFINE_integer("input_width", 192, "Input crop width in pixels.")
_SIGMA = flags.DEFINE_float("sigma", 2.0, "Keypoint Gaussian sigma in heatmap pixels.")
_KEYPOINT_SET = flags.DEFINE_string("keypoint_set", "coco", "Keypoint set name or JSON path.")
_SAMPLES = flags.DEFINE_integer("samples", 20000, "Round trip: number of random keypoints.")
_MARGIN = flags.DEFINE_float(
    "margin", 0.0, "Round trip: keep keypoints this many heatmap pixels inside the map."
)
_SEED = flags.DEFINE_integer("seed", 0, "Random seed.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Timing: batch size.")
_REPEATS = flags.DEFINE_integer("repeats", 20, "Timing: timed calls per mode.")


def _random_keypoints(codec, batch_size, rng, margin):
    """Keypoints [B, K, 2] in input pixels whose heatmap positions lie `margin` px inside."""
    height, width = codec.heatmap_size
    num_keypoints = codec.keypoint_set.num_keypoints
    heat_x = rng.uniform(margin, width - 1 - margin, (batch_size, num_keypoints))
    heat_y = rng.uniform(margin, height - 1 - margin, (batch_size, num_keypoints))
    heat = np.stack([heat_x, heat_y], axis=-1)
    return ((heat + 0.5) * codec.stride - 0.5).astype(np.float32)


def round_trip(codec, samples, margin, rng):
    num_keypoints = codec.keypoint_set.num_keypoints
    batches = max(1, samples // (64 * num_keypoints))
    errors = {method: [] for method in DECODERS}
    for _ in range(batches):
        keypoints = _random_keypoints(codec, 64, rng, margin)
        heatmaps = codec.encode(keypoints, np.ones(keypoints.shape[:2], np.float32))["heatmaps"]
        for method in DECODERS:
            decoded, _ = codec.decode(heatmaps, method=method)
            errors[method].append(np.linalg.norm(decoded.numpy() - keypoints, axis=-1).ravel())
    count = batches * 64 * num_keypoints
    print(f"Round trip, {count} keypoints, input {codec.input_size}, stride {codec.stride}, "
          f"sigma {codec.sigma}, margin {margin} heatmap px (error in input-crop pixels):")
    print(f"{'decoder':10s} {'mean':>8s} {'max':>8s}")
    for method in DECODERS:
        values = np.concatenate(errors[method])
        print(f"{method:10s} {values.mean():8.4f} {values.max():8.4f}")


def timing(codec, batch_size, repeats, rng):
    keypoints = tf.constant(_random_keypoints(codec, batch_size, rng, margin=0.0))
    visibility = tf.ones(keypoints.shape[:2])
    variants = {
        "eager": codec.encode,
        "tf.function": tf.function(codec.encode),
        "tf.function + XLA": tf.function(codec.encode, jit_compile=True),
    }
    print(f"encode, batch {batch_size}, heatmaps {codec.heatmap_size}, "
          f"K={codec.keypoint_set.num_keypoints}, S={codec.keypoint_set.num_links} "
          f"(median of {repeats} calls, ms):")
    for name, encode in variants.items():
        encode(keypoints, visibility)["skeletal_heatmaps"].numpy()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            encode(keypoints, visibility)["skeletal_heatmaps"].numpy()
            times.append(time.perf_counter() - start)
        print(f"{name:20s} {1000 * np.median(times):8.2f}")


def main(argv):
    del argv
    codec = HeatmapCodec(
        input_size=(_INPUT_HEIGHT.value, _INPUT_WIDTH.value),
        keypoint_set=_KEYPOINT_SET.value,
        sigma=_SIGMA.value,
    )
    rng = np.random.default_rng(_SEED.value)
    if _MODE.value in ("round_trip", "both"):
        round_trip(codec, _SAMPLES.value, _MARGIN.value, rng)
    if _MODE.value in ("timing", "both"):
        timing(codec, _BATCH_SIZE.value, _REPEATS.value, rng)


if __name__ == "__main__":
    app.run(main)
