"""TFLite export: a MoveNet-compatible keypoint model and a heatmap-only model, builtin ops only.

Variants (`VARIANTS`), both one signature `serving_default` with a fixed batch (1 by default):

- `keypoints`, the MoveNet SinglePose contract: input `images` uint8 `[1, H, W, 3]` RGB 0-255
  (normalised inside); output `keypoints_with_scores` float32 `[1, 1, K, 3]` = (y, x, score)
  per keypoint, in the keypoint set's order. y and x are normalised to [0, 1] over the input
  frame, `y = (y_px + 0.5) / H`, `x = (x_px + 0.5) / W`, with (x_px, y_px) continuous crop
  pixels whose pixel centres are integers (so `x * W - 0.5` gives the pixel back; MoveNet
  clients that multiply by W are off by half a pixel, well under the model's error). The score
  is the heatmap's peak. The decoder and the flip test run inside the model (TOPK_V2 and
  gathers; fine for the CPU/XNNPACK).
- `heatmaps`: the network alone, for GPU delegates (which cannot run the decoding's gathers):
  input as above; output `heatmaps` float32 `[1, H/4, W/4, K]`. The client decodes (the JSON
  names the decoder and the coordinate mapping) and flip-tests if it wants to (run the
  mirrored crop, mirror the heatmaps back and reorder channels by `flip_index`, average).

Quantisations (`QUANTIZATIONS`):
- `float32`: no optimisation.
- `float16`: float16 weights (`supported_types=[tf.float16]`), dequantised on the CPU, run
  natively in float16 by GPU delegates; half the size.
- `dynamic_int8`: int8 weights, activations quantised on the fly per op (`optimizations=
  [DEFAULT]` without calibration); a quarter of the size and ~3x faster on x86 CPUs.
- `int8`: full integer quantisation calibrated on a representative set of real crops from the
  data pipeline (`calibration_crops`): int8 weights and activations wherever TFLite has an int8
  kernel (`TFLITE_BUILTINS_INT8`), float where it has not; the uint8 input and the float32
  outputs keep their contract.

Every conversion goes through a frozen SavedModel (`saved_model.write_frozen_saved_model`) and
`TFLiteConverter.from_saved_model` with `supported_ops` limited to builtins, so no Flex
(SELECT_TF_OPS) or custom op can slip in. A JSON file beside each model (`model.tflite` ->
`model.json`) states the contract: input size, dtype and normalisation, output layout, keypoint
names, flip partners, links, decoder, quantisation, the ops in the model and its size.

Example:
```python
export_tflite(network, "pose_int8.tflite", quantization="int8", calibration_crops=crops)
runner = TFLiteRunner("pose_int8.tflite")          # skelpose_tf.export.runtime
keypoints, scores = runner.predict(crops)["keypoints"], ...
```
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import tensorflow as tf

from skelpose_tf.export.saved_model import (SERVING_SIGNATURE, ServingGraph,
                                            write_frozen_saved_model, write_metadata)

QUANTIZATIONS = ("float32", "float16", "dynamic_int8", "int8")
VARIANTS = ("keypoints", "heatmaps")
KEYPOINTS_OUTPUT = "keypoints_with_scores"
HEATMAPS_OUTPUT = "heatmaps"


def keypoints_signature(graph: ServingGraph, batch_size=1):
    """The MoveNet-style signature: images uint8 [B, H, W, 3] -> keypoints_with_scores [B, 1, K, 3]."""
    height, width = graph.input_size

    def serve(images):
        keypoints, scores = graph.decode(graph.heatmaps(images))
        y = (keypoints[..., 1] + 0.5) / height
        x = (keypoints[..., 0] + 0.5) / width
        return {KEYPOINTS_OUTPUT: tf.stack([y, x, scores], axis=-1)[:, None]}

    return serve, [graph.images_spec(batch_size)]


def heatmaps_signature(graph: ServingGraph, batch_size=1):
    """The heatmap-only signature: images uint8 [B, H, W, 3] -> heatmaps float32 [B, h, w, K]."""

    def serve(images):
        return {HEATMAPS_OUTPUT: graph.heatmaps(images)}

    return serve, [graph.images_spec(batch_size)]


def make_converter(saved_model_dir, quantization, calibration_crops=None):
    """A `TFLiteConverter` for the SavedModel's `serving_default`, set up for `quantization`.

    Args:
        saved_model_dir: a SavedModel whose `serving_default` takes `images` uint8 [B, H, W, 3].
        quantization: one of `QUANTIZATIONS`.
        calibration_crops: uint8 [N, H, W, 3] real crops; required for `int8`, fed one at a
            time (repeated to the model's batch size) as its representative dataset.
    """
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}. "
                         f"Received: quantization={quantization!r}")
    converter = tf.lite.TFLiteConverter.from_saved_model(
        saved_model_dir, signature_keys=[SERVING_SIGNATURE])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "dynamic_int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantization == "int8":
        crops = _check_calibration_crops(calibration_crops)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                               tf.lite.OpsSet.TFLITE_BUILTINS]
        converter.representative_dataset = lambda: ({"images": crop[None]} for crop in crops)
    return converter


def _check_calibration_crops(crops):
    if crops is None or len(crops) == 0:
        raise ValueError("quantization='int8' needs calibration_crops: real uint8 [N, H, W, 3] "
                         "crops from the data pipeline (e.g. verify.dataset_crops on the "
                         "training set). Received none.")
    crops = np.asarray(crops)
    if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[-1] != 3:
        raise ValueError("calibration_crops must be uint8 [N, H, W, 3]. Received "
                         f"{crops.dtype} {crops.shape}")
    return crops


def model_ops(model_content: bytes) -> list:
    """Sorted names of the operators in a .tflite model (builtins are upper case, e.g. CONV_2D)."""
    from skelpose_tf.export.runtime import make_interpreter

    interpreter = make_interpreter(model_content=model_content, num_threads=1)
    return sorted({op["op_name"] for op in interpreter._get_ops_details()})


def export_tflite(network, path, *, quantization="float32", variant="keypoints",
                  decoder="weighted", flip_test=True, calibration_crops=None, batch_size=1,
                  top_n=20, graph: ServingGraph | None = None) -> dict:
    """Convert `network` to a .tflite file and write its JSON contract beside it.

    Args:
        network: a trained `PoseHRNet` (mixed precision is exported in float32).
        path: the .tflite file to write; the JSON goes to the same path with `.json`.
        quantization: one of `QUANTIZATIONS`.
        variant: "keypoints" (MoveNet contract, decoder and flip test inside) or "heatmaps"
            (the network alone: no decoder, no flip test).
        decoder: decoder of the `keypoints` variant (`skelpose_tf.codec.DECODERS`).
        flip_test: flip test inside the `keypoints` variant.
        calibration_crops: uint8 [N, H, W, 3] real crops, required for `int8`.
        batch_size: the model's fixed batch (1 for the MoveNet contract).
        top_n: N of the `weighted` decoder.
        graph: a `ServingGraph` to reuse (its decoder/flip settings win over the arguments).

    Returns:
        The metadata dict written to the JSON file (with `path`, `ops`, `size_bytes`).
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}. Received: variant={variant!r}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be positive. Received: batch_size={batch_size}")
    if graph is None:
        graph = ServingGraph(network, decoder=decoder, flip_test=flip_test, top_n=top_n)
    if variant == "heatmaps" and graph.flip_test:
        graph = ServingGraph(graph.network, decoder=graph.codec.decoder, flip_test=False,
                             top_n=graph.codec.top_n, padding=graph.padding)
    signature = (keypoints_signature if variant == "keypoints" else heatmaps_signature)(
        graph, int(batch_size))
    with tempfile.TemporaryDirectory(prefix="skelpose_tflite_") as scratch:
        saved_model_dir = write_frozen_saved_model(os.path.join(scratch, "saved_model"),
                                                   {SERVING_SIGNATURE: signature})
        model_content = make_converter(saved_model_dir, quantization, calibration_crops).convert()
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with open(path, "wb") as file:
        file.write(model_content)
    metadata = _describe(graph, variant, quantization, int(batch_size))
    metadata.update(model_file=os.path.basename(path), size_bytes=len(model_content),
                    ops=model_ops(model_content))
    write_metadata(path, metadata)
    return dict(metadata, path=os.fspath(path))


def _describe(graph: ServingGraph, variant, quantization, batch_size) -> dict:
    height, width = graph.input_size
    metadata = graph.describe()
    metadata.update(artifact="tflite", variant=variant, quantization=quantization,
                    signature=SERVING_SIGNATURE, batch_size=batch_size)
    images = {"name": "images", "dtype": "uint8", "shape": [batch_size, height, width, 3]}
    if variant == "keypoints":
        metadata["inputs"] = [images]
        metadata["outputs"] = [{
            "name": KEYPOINTS_OUTPUT, "dtype": "float32",
            "shape": [batch_size, 1, graph.keypoint_set.num_keypoints, 3],
            "layout": "(y, x, score) per keypoint (MoveNet SinglePose)",
            "normalization": (f"y = (y_px + 0.5) / {height}, x = (x_px + 0.5) / {width}; "
                              "pixels back: x_px = x * W - 0.5, y_px = y * H - 0.5"),
        }]
    else:
        metadata["flip_test"] = False
        metadata["decoder"]["inside_model"] = False
        metadata["inputs"] = [images]
        metadata["outputs"] = [{
            "name": HEATMAPS_OUTPUT, "dtype": "float32",
            "shape": [batch_size, *graph.heatmap_size, graph.keypoint_set.num_keypoints],
            "layout": "one heatmap per keypoint, channels in keypoint_names order",
        }]
    return metadata
