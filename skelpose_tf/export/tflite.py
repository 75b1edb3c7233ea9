"""TFLite export: a MoveNet-compatible keypoint model and a heatmap-only model, builtin ops only.

Variants (`VARIANTS`), both one signature `serving_default` with a fixed batch (1 by default):

- `keypoints`, the MoveNet SinglePose contract: input `images` uint8 `[1, H, W, 3]` RGB 0-255
  (normalised inside); output `keypoints_with_scores` float32 `[1, 1, K, 3]` = (y, x, score)
  per keypoint, in the keypoint set's order. y and x are normalised to [0, 1] over the input
  frame, `y = (y_px + 0.5) / H`, `x = (x_px + 0.5) / W`, with (x_px, y_px) continuous crop
  pixels whose pixel centres are integers (`crop_geometry.crop_to_normalized`; so
  `x * W - 0.5` gives the pixel back, `crop_geometry.normalized_to_crop`; MoveNet clients that
  multiply by W are off by half a pixel, well under the model's error). The score
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
  [DEFAULT]` without calibration); a quarter of the size, ~3x faster than float32 for W32 on
  this project's x86 CPU (`shared/reference/performance-facts.md`).
- `int8`: full integer quantisation calibrated on a representative set of real crops from the
  data pipeline (`calibration_crops`): int8 weights and activations up to the heatmaps
  (`TFLITE_BUILTINS_INT8`, float where an op has no int8 kernel); the decoder stays float32
  (see `convert`); the uint8 input and the float32 outputs keep their contract.

Every conversion goes through a frozen SavedModel (`saved_model.write_serving_saved_model`) and
`TFLiteConverter.from_saved_model` with `supported_ops` limited to builtins, so no Flex
(SELECT_TF_OPS) or custom op can slip in. A JSON file beside each model (`model.tflite` ->
`model.json`) states the contract: input size, dtype and normalisation, output layout, keypoint
names, flip partners, links, decoder, quantisation, the ops in the model and its size.

Example:
```python
export_tflite(network, "pose_int8.tflite", quantization="int8", calibration_crops=crops)
outputs = TFLiteRunner("pose_int8.tflite").predict(crops)   # skelpose_tf.export.runtime
outputs["keypoints"]                                         # [N, K, 2] crop pixels
```
"""

from __future__ import annotations

import os
import tempfile
import warnings

import numpy as np
import tensorflow as tf

from skelpose_tf import crop_geometry
from skelpose_tf.atomic_files import atomic_write
from skelpose_tf.export.saved_model import (SERVING_SIGNATURE, ServingGraph,
                                            write_serving_saved_model, write_metadata)

QUANTIZATIONS = ("float32", "float16", "dynamic_int8", "int8")
VARIANTS = ("keypoints", "heatmaps")
KEYPOINTS_OUTPUT = "keypoints_with_scores"
HEATMAPS_OUTPUT = "heatmaps"
# Name scope of the decoding ops: full int8 quantisation leaves them (and all that follows) in
# float32 (see `convert`).
DECODER_SCOPE = "keypoint_decoder"


def keypoints_signature(graph: ServingGraph, batch_size=1):
    """MoveNet-style signature: images uint8 [B, H, W, 3] -> keypoints_with_scores [B, 1, K, 3]
    ((y, x) from `crop_geometry.crop_to_normalized`, then the score)."""

    def serve(images):
        heatmaps = graph.heatmaps(images)
        with tf.name_scope(DECODER_SCOPE):
            keypoints, scores = graph.decode(heatmaps)
            normalized = crop_geometry.crop_to_normalized(keypoints, graph.input_size)
            return {KEYPOINTS_OUTPUT: tf.stack(
                [normalized[..., 1], normalized[..., 0], scores], axis=-1)[:, None]}

    return serve, [graph.images_spec(batch_size)]


def heatmaps_signature(graph: ServingGraph, batch_size=1):
    """The heatmap-only signature: images uint8 [B, H, W, 3] -> heatmaps float32 [B, h, w, K]."""

    def serve(images):
        return {HEATMAPS_OUTPUT: graph.heatmaps(images)}

    return serve, [graph.images_spec(batch_size)]


def convert(saved_model_dir, quantization, calibration_crops=None, batch_size=1) -> bytes:
    """Convert the SavedModel's `serving_default` to TFLite with `quantization`; the model bytes.

    Args:
        saved_model_dir: a SavedModel whose `serving_default` takes `images` uint8 [B, H, W, 3].
        quantization: one of `QUANTIZATIONS`.
        calibration_crops: uint8 [N, H, W, 3] real crops; required for `int8`, fed in
            batches of `batch_size` (the model's fixed batch; the last one wraps around) as
            its representative dataset.
        batch_size: the model's fixed batch size.

    For `int8`, the ops in `DECODER_SCOPE` and every op after them stay float32 (selective
    quantisation with `tf.lite.experimental.QuantizationDebugger`'s `denylisted_nodes`): in
    int8, the decoded coordinates, scaled to [0, 1] and packed with the scores into one
    tensor, would keep 256 levels (a pixel of a 256-pixel crop), and every multiply-add of the
    weighted average would round again. The heatmaps themselves stay int8 up to the decoder.
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

        def representative_dataset():
            for start in range(0, len(crops), batch_size):
                rows = np.arange(start, start + batch_size) % len(crops)
                yield {"images": crops[rows]}

        converter.representative_dataset = representative_dataset
        with warnings.catch_warnings():  # the debugger runs tf.lite.Interpreter inside
            warnings.filterwarnings("ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated")
            debugger = tf.lite.experimental.QuantizationDebugger(
                converter=converter, debug_dataset=representative_dataset)
            float_nodes, float_op_types = _float_part(debugger.calibrated_model, DECODER_SCOPE)
            debugger.options = tf.lite.experimental.QuantizationDebugOptions(
                denylisted_nodes=float_nodes or None, denylisted_ops=float_op_types or None)
            return debugger.get_nondebug_quantized_model()
    return converter.convert()


def _float_part(model_content, scope) -> tuple:
    """What to keep in float: the ops under `scope` and every op downstream of them.

    Returns:
        (output tensor names of those ops, op types to keep float as a whole). The quantiser
        matches a multi-output op (TOPK_V2, UNPACK) by a fused name of its outputs, which
        tensor names do not give, so such op types are listed by type, when the rest of the
        model does not use them.
    """
    from skelpose_tf.export.runtime import make_interpreter

    interpreter = make_interpreter(model_content=model_content, num_threads=1)
    names = {t["index"]: t["name"] for t in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()
    consumers = {}
    for op in ops:
        for tensor in op["inputs"]:
            consumers.setdefault(int(tensor), []).append(op)
    pending = [op for op in ops if any(f"{scope}/" in names[int(t)] for t in op["outputs"])]
    chosen = {}
    while pending:
        op = pending.pop()
        if op["index"] in chosen:
            continue
        chosen[op["index"]] = op
        for tensor in op["outputs"]:
            pending.extend(consumers.get(int(tensor), []))
    nodes = sorted({names[int(t)] for op in chosen.values() for t in op["outputs"]})
    elsewhere = {op["op_name"] for op in ops if op["index"] not in chosen}
    multi_output = {op["op_name"] for op in chosen.values() if len(op["outputs"]) > 1}
    return nodes, sorted(multi_output - elsewhere)


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


class TFLiteExporter:
    """Writes TFLite models of one `ServingGraph`, one source SavedModel per (variant, batch).

    Every quantisation of a variant converts the same source SavedModel (written on first use
    into a scratch directory, deleted by `close()` or at the end of a `with` block); the network
    itself is traced and frozen once per `ServingGraph`, the slow part for a full-size network.

    Args:
        graph: the `ServingGraph` (network, decoder, flip test of the `keypoints` variant).

    Example:
    ```python
    with TFLiteExporter(ServingGraph(network)) as exporter:
        for quantization in QUANTIZATIONS:
            exporter.export(f"pose_{quantization}.tflite", quantization, calibration_crops=crops)
    ```
    """

    def __init__(self, graph: ServingGraph):
        self.graph = graph
        self._plain_graph = graph if not graph.flip_test else ServingGraph(
            graph.network, decoder=graph.codec.decoder, flip_test=False, padding=graph.padding)
        self._scratch = tempfile.TemporaryDirectory(prefix="skelpose_tflite_")
        self._sources = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self):
        """Delete the frozen SavedModels."""
        self._scratch.cleanup()

    def _graph_for(self, variant) -> ServingGraph:
        return self.graph if variant == "keypoints" else self._plain_graph

    def source(self, variant, batch_size) -> str:
        """The frozen SavedModel of `variant` at a fixed `batch_size` (written on first use)."""
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}. Received: variant={variant!r}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be positive. Received: batch_size={batch_size}")
        key = (variant, int(batch_size))
        if key not in self._sources:
            signature = (keypoints_signature if variant == "keypoints" else heatmaps_signature)(
                self._graph_for(variant), int(batch_size))
            self._sources[key] = write_serving_saved_model(
                os.path.join(self._scratch.name, f"{variant}_{int(batch_size)}"),
                {SERVING_SIGNATURE: signature})
        return self._sources[key]

    def export(self, path, quantization="float32", variant="keypoints", calibration_crops=None,
               batch_size=1) -> dict:
        """Convert to `path` and write its JSON (each file whole or not at all); see
        `export_tflite` for the arguments."""
        model_content = convert(self.source(variant, batch_size), quantization,
                                calibration_crops, int(batch_size))
        with atomic_write(path) as temporary, open(temporary, "wb") as file:  # creates the folder
            file.write(model_content)
        metadata = _describe(self._graph_for(variant), variant, quantization, int(batch_size))
        metadata.update(model_file=os.path.basename(path), size_bytes=len(model_content),
                        ops=model_ops(model_content))
        write_metadata(path, metadata)
        return dict(metadata, path=os.fspath(path))


def export_tflite(network, path, *, quantization="float32", variant="keypoints",
                  decoder=None, flip_test=True, calibration_crops=None, batch_size=1,
                  graph: ServingGraph | None = None) -> dict:
    """Convert `network` to a .tflite file and write its JSON contract beside it.

    Args:
        network: a trained `PoseHRNet` (mixed precision is exported in float32).
        path: the .tflite file to write; the JSON goes to the same path with `.json`.
        quantization: one of `QUANTIZATIONS`.
        variant: "keypoints" (MoveNet contract, decoder and flip test inside) or "heatmaps"
            (the network alone: no decoder, no flip test).
        decoder: decoder of the `keypoints` variant (`skelpose_tf.codec.DECODERS`; None: the
            network's own, `network.codec`).
        flip_test: flip test inside the `keypoints` variant.
        calibration_crops: uint8 [N, H, W, 3] real crops, required for `int8`.
        batch_size: the model's fixed batch (1 for the MoveNet contract).
        graph: a `ServingGraph` to reuse (its decoder/flip settings win over the arguments).

    Returns:
        The metadata dict written to the JSON file (with `path`, `ops`, `size_bytes`).
    """
    if graph is None:
        graph = ServingGraph(network, decoder=decoder, flip_test=flip_test)
    with TFLiteExporter(graph) as exporter:
        return exporter.export(path, quantization, variant, calibration_crops, batch_size)


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
            "normalization": crop_geometry.normalized_formula(graph.input_size),
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

