"""Running exported models: the LiteRT interpreter (tf.lite as a fallback) and uniform runners.

`make_interpreter` opens a .tflite file with `ai_edge_litert.interpreter.Interpreter` (the
LiteRT runtime; XNNPACK on CPU) and falls back to `tf.lite.Interpreter` (deprecated since TF
2.20, still present) when `ai-edge-litert` is not installed.

The runners of exported models follow the runner interface of `skelpose_tf.inference` (which
the one inference path, verification, the AP evaluation and the benchmark use):

    runner.input_size, runner.codec (from the export JSON), runner.flip_test,
    runner.predict(images uint8 [N, H, W, 3]) -> {"keypoints": float32 [N, K, 2] (x, y) crop
        pixels, "keypoint_scores": float32 [N, K], "heatmaps": float32 [N, h, w, K] or absent}

- `TFLiteRunner`: either TFLite variant (MoveNet `keypoints_with_scores` mapped back to
  pixels with `crop_geometry.normalized_to_crop`, or `heatmaps` decoded with the codec its
  JSON names); batches are cut to the model's fixed batch size.
- `SavedModelRunner`: the SavedModel's `serving_default`.
- a Keras network: `skelpose_tf.inference.PosePredictor` (the reference); `open_runner` opens
  any of the three.

Inputs are checked before they reach a runtime: LiteRT's signature runner silently *resizes*
its input to whatever it is given, which turns a wrong crop size into a wrong answer.
"""

from __future__ import annotations

import os

import numpy as np

from skelpose_tf.crop_geometry import normalized_to_crop
from skelpose_tf.export.saved_model import METADATA_FILE, SERVING_SIGNATURE, read_metadata


def make_interpreter(model_path=None, *, model_content=None, num_threads=2):
    """A TFLite interpreter: LiteRT's (`ai_edge_litert`), else `tf.lite.Interpreter`.

    Args:
        model_path: a .tflite file (or pass `model_content`).
        model_content: the model's bytes.
        num_threads: CPU threads of the interpreter and its XNNPACK delegate.
    """
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # ai-edge-litert not installed: TensorFlow's own copy
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    if model_path is not None and not os.path.isfile(model_path):
        raise ValueError(f"No TFLite model at {model_path}.")
    return Interpreter(model_path=None if model_path is None else os.fspath(model_path),
                       model_content=model_content, num_threads=num_threads)


def interpreter_backend() -> str:
    """"ai_edge_litert <version>" or "tf.lite <version>": which runtime `make_interpreter` uses."""
    try:
        import ai_edge_litert

        return f"ai_edge_litert {getattr(ai_edge_litert, '__version__', '')}".strip()
    except ImportError:
        import tensorflow as tf

        return f"tf.lite {tf.__version__}"


def check_images(images, input_size, where) -> np.ndarray:
    """`images` as a uint8 [N, H, W, 3] array, or a ValueError that states the contract."""
    images = np.asarray(images)
    height, width = input_size
    if images.dtype != np.uint8:
        raise ValueError(f"{where}: images must be uint8 RGB 0-255 (normalisation happens inside "
                         f"the model). Received dtype {images.dtype}.")
    if images.ndim != 4 or tuple(images.shape[1:]) != (height, width, 3):
        raise ValueError(f"{where}: images must be [N, {height}, {width}, 3] crops at the model's "
                         f"input size. Received shape {tuple(images.shape)}.")
    return images


def codec_from_metadata(metadata: dict):
    """The `HeatmapCodec` an export JSON describes (input size, keypoint set, decoding)."""
    from skelpose_tf.codec import HeatmapCodec

    size, decoding = metadata["input_size"], metadata["decoder"]
    return HeatmapCodec((int(size["height"]), int(size["width"])),
                        metadata["keypoint_set_config"], stride=int(decoding["stride"]),
                        sigma=float(decoding["sigma"]), decoder=decoding["method"],
                        top_n=int(decoding["top_n"]),
                        pixel_convention=decoding.get("pixel_convention", "centered"))


class TFLiteRunner:
    """Runs an exported .tflite model (either variant) described by its JSON.

    Args:
        path: the .tflite file; its JSON (`model.json` beside `model.tflite`) must exist.
        num_threads: interpreter threads.

    Attributes:
        metadata: the JSON dict; `input_size` (H, W); `batch_size` (the model's fixed batch);
        `variant`; `codec` (the JSON's `HeatmapCodec`); `flip_test`.
    """

    def __init__(self, path, num_threads=2):
        self.path = os.fspath(path)
        self.metadata = read_metadata(self.path)
        self.variant = self.metadata["variant"]
        self.codec = codec_from_metadata(self.metadata)
        self.input_size = self.codec.input_size
        self.flip_test = bool(self.metadata["flip_test"])
        self.batch_size = int(self.metadata["batch_size"])
        self.interpreter = make_interpreter(self.path, num_threads=num_threads)
        self.signature = self.interpreter.get_signature_runner(SERVING_SIGNATURE)

    def run(self, images) -> dict:
        """The raw signature outputs for uint8 [batch_size, H, W, 3] images (numpy dict)."""
        images = check_images(images, self.input_size, f"TFLite model {self.path}")
        if images.shape[0] != self.batch_size:
            raise ValueError(f"TFLite model {self.path} takes batches of exactly "
                             f"{self.batch_size}. Received {images.shape[0]} images.")
        return self.signature(images=images)

    def predict(self, images) -> dict:
        """keypoints [N, K, 2] crop pixels, keypoint_scores [N, K] (+ heatmaps), any N."""
        images = check_images(images, self.input_size, f"TFLite model {self.path}")
        count = images.shape[0]
        if count == 0:
            num_keypoints = len(self.metadata["keypoint_names"])
            return {"keypoints": np.zeros((0, num_keypoints, 2), np.float32),
                    "keypoint_scores": np.zeros((0, num_keypoints), np.float32)}
        padded = -count % self.batch_size
        if padded:
            images = np.concatenate([images, np.zeros((padded, *images.shape[1:]), np.uint8)])
        parts = [self.run(images[i:i + self.batch_size])
                 for i in range(0, images.shape[0], self.batch_size)]
        outputs = {name: np.concatenate([p[name] for p in parts])[:count] for name in parts[0]}
        if self.variant == "keypoints":
            packed = outputs["keypoints_with_scores"][:, 0]  # [N, K, 3] = (y, x, score)
            keypoints = normalized_to_crop(packed[..., 1::-1], self.input_size)  # (x, y) order
            return {"keypoints": np.asarray(keypoints, np.float32),
                    "keypoint_scores": packed[..., 2].astype(np.float32)}
        keypoints, scores = self.codec.decode(outputs["heatmaps"])
        return {"keypoints": np.asarray(keypoints), "keypoint_scores": np.asarray(scores),
                "heatmaps": outputs["heatmaps"]}


class SavedModelRunner:
    """Runs the `serving_default` signature of an exported SavedModel.

    Args:
        path: the SavedModel directory (with its `pose_export.json`).
    """

    def __init__(self, path):
        from skelpose_tf.export.saved_model import load_saved_model

        self.path = os.fspath(path)
        self.metadata = read_metadata(self.path)
        self.codec = codec_from_metadata(self.metadata)
        self.input_size = self.codec.input_size
        self.flip_test = bool(self.metadata["flip_test"])
        self.model = load_saved_model(self.path)
        self.signature = self.model.signatures[SERVING_SIGNATURE]

    def predict(self, images) -> dict:
        """keypoints [N, K, 2] crop pixels, keypoint_scores [N, K] (+ heatmaps if exported)."""
        images = check_images(images, self.input_size, f"SavedModel {self.path}")
        return {name: value.numpy() for name, value in self.signature(images=images).items()}


def recover_interrupted_export(path) -> bool:
    """Put an export directory back that a kill took away between the two renames of its swap.

    `path` is an artifact (a .tflite file, a SavedModel directory) or the directory it lies
    in. When `path` or its parent is missing while `<it>.being-replaced` holds an export (its
    `export_report.json` or `pose_export.json`), `atomic_files.recover_directory` renames it
    back. It does nothing else: a directory that exists, or a `.being-replaced` directory that is no
    export, is never touched by a reader. Returns True when it repaired something.
    """
    from skelpose_tf.atomic_files import PREVIOUS_SUFFIX, recover_directory
    from skelpose_tf.export.bundle import REPORT_FILE

    path = os.path.normpath(os.fspath(path))
    for final in (path, os.path.dirname(path)):
        previous = final + PREVIOUS_SUFFIX
        if final and not os.path.exists(final) and any(
                os.path.isfile(os.path.join(previous, marker))
                for marker in (REPORT_FILE, METADATA_FILE)):
            return recover_directory(final)
    return False


def open_runner(artifact, num_threads=2, **keras_options):
    """A runner for a .tflite file, a SavedModel directory or a Keras network (runners pass).

    A path whose export directory a kill left between the two renames of its swap is repaired
    first (`recover_interrupted_export`).

    Args:
        artifact: a path, a pose network (a Keras `PoseHRNet`, or any callable with
            `keypoint_set` and `codec`: a `PosePredictor` with its own codec;
            `keras_options`: `decoder` (None: the network's), `flip_test`), or a runner, which
            is returned as it is.
        num_threads: interpreter threads of a .tflite model.
    """
    import keras

    if isinstance(artifact, keras.Model) or (callable(artifact)
                                              and hasattr(artifact, "keypoint_set")):
        from skelpose_tf.inference import PosePredictor

        decoder = keras_options.pop("decoder", None)
        codec = artifact.codec.replace(decoder=decoder)
        return PosePredictor(artifact, codec, **keras_options)
    if not isinstance(artifact, (str, os.PathLike)):
        return artifact
    path = os.fspath(artifact)
    recover_interrupted_export(path)
    if os.path.isdir(path):
        return SavedModelRunner(path)
    if path.endswith(".tflite"):
        return TFLiteRunner(path, num_threads=num_threads)
    raise ValueError(f"Cannot tell what {path} is: expected a SavedModel directory or a .tflite "
                     "file.")
