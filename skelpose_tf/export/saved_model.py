"""SavedModel export: a frozen TF Serving graph with two named, input-checked signatures.

Signatures (what TF Serving's REST `:predict` and gRPC `Predict` call):

- `serving_default`: person crops at the model's input size.
  - input `images`: uint8 `[N, H, W, 3]` RGB, values 0-255 (normalised inside the graph).
  - outputs `keypoints` float32 `[N, K, 2]`, (x, y) in crop pixels with pixel centres at
    integers (docs/design.md section 3); `keypoint_scores` float32 `[N, K]`, the heatmap peaks;
    optionally `heatmaps` float32 `[N, H/4, W/4, K]`.
- `full_image`: one whole image and person boxes; the crops are cut inside the graph.
  - inputs `image`: uint8 `[height, width, 3]` RGB, any size; `boxes`: float32 `[M, 4]`,
    (x, y, w, h) in image pixels (COCO / detector boxes).
  - outputs `keypoints` float32 `[M, K, 2]`, (x, y) in image pixels; `keypoint_scores`
    float32 `[M, K]`.
  All of the geometry is `skelpose_tf.crop_geometry`'s, the same functions the data pipeline
  and predict.py use, traced into the graph: each box becomes the pipeline's crop region
  (`box_to_center_scale`: centre of the box, enlarged to the input's aspect ratio, times
  `padding` = `BOX_PADDING` = 1.25), is cut with the pipeline's matrix (`affine_matrix`: region
  centre on the crop's centre pixel, region edges on the crop's outer pixel edges) by
  `cut_crops` (bilinear, zero outside the image, rounded to uint8 as the pipeline's crops are;
  equal to the pipeline's OpenCV crop to one grey level), and the keypoints go back with
  `crop_to_image`.

The flip test (`flip_test=True`) and the decoder (`skelpose_tf.codec.DECODERS`) are export
options; both are baked into the graph.

Bad input fails with a clear error instead of a wrong answer or a crash: the signatures
reject another dtype (TensorFlow: "expected to be a uint8 tensor but is a float tensor"), and
in-graph assertions check every shape, the image's size (no zero side) and the boxes (finite,
positive sizes, overlapping the image, at most `MAX_BOX_TO_IMAGE` times its size), e.g.
"images must be uint8 [N, 256, 192, 3] RGB crops; received shape [1 128 96 3]". (Without them
TensorFlow does not check shapes against a signature: a wrong crop size runs and returns
nonsense, and an image without the batch axis aborts the process inside the oneDNN
convolution.)

Why a frozen graph: the network (with the flip test) is traced once and its weights are written
as constants (`convert_variables_to_constants_v2`) in one function that both signatures call,
instead of as the Keras model's ~1,500 variables. For the W8 test model, writing took ~1 s
instead of 20-40 s (Keras `ExportArchive`) and loading ~1 s instead of 7-9 s; the directory
holds the weights once (the demo model: 3.9 MB); and the TFLite converter reads it without the
resource-variable pitfall (docs/design.md section 7.3). The SavedModel is for
serving; train further from the `.keras` file.

Example:
```python
export_saved_model(network, "export/saved_model", flip_test=True)
serve = tf.saved_model.load("export/saved_model").signatures["serving_default"]
serve(images=crops)["keypoints"]          # [N, K, 2] crop pixels
```
"""

from __future__ import annotations

import json
import os

import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from skelpose_tf import crop_geometry
from skelpose_tf.atomic_files import write_json_atomic
from skelpose_tf.codec import DECODERS
from skelpose_tf.crop_geometry import BOX_PADDING
from skelpose_tf.inference import PosePredictor
from skelpose_tf.models.image_normalization import IMAGENET_MEAN, IMAGENET_STD

SERVING_SIGNATURE = "serving_default"
FULL_IMAGE_SIGNATURE = "full_image"
METADATA_FILE = "pose_export.json"
METADATA_VERSION = 1
# A `full_image` box may be at most this many times the image's width and height.
MAX_BOX_TO_IMAGE = 10.0
# Elements of a shape that an assertion message shows (TF's default of 3 cuts a 4-D shape).
_SHAPE_SUMMARY = 8


def float32_network(network):
    """The network with float32 compute, for export (a mixed-precision net is rebuilt).

    A network trained under `mixed_bfloat16` / `mixed_float16` computes in 16 bits, which
    TFLite's float kernels do not run; its variables are float32 already, so a float32 copy
    from the same config gets the same weights.

    Args:
        network: a `PoseHRNet` (anything with `get_config`/`from_config` and `input_size`,
            `keypoint_set` attributes).

    Returns:
        `network` itself when every layer computes in float32, else a float32 rebuild.
    """
    if all(layer.dtype_policy.compute_dtype == "float32" for layer in network.layers):
        return network
    config = dict(network.get_config(), dtype="float32")
    rebuilt = type(network).from_config(config)
    rebuilt.set_weights(network.get_weights())
    return rebuilt


class ServingGraph:
    """The exported computations of one pose network (SavedModel and TFLite share them).

    Args:
        network: a `PoseHRNet` (mixed precision is rebuilt in float32, see `float32_network`).
        decoder: heatmap decoder baked into the graph, one of `skelpose_tf.codec.DECODERS`
            (None: the network's own, `network.codec`, with its sigma, N and pixel convention).
        flip_test: average each crop's heatmaps with those of its mirror image.
        padding: crop region enlargement around a box in `full_image`.

    Attributes:
        network, codec, flip_test, padding; `input_size` (H, W), `heatmap_size` (h, w),
        `keypoint_set`.
    """

    def __init__(self, network, decoder=None, flip_test=True, padding=BOX_PADDING):
        if decoder is not None and decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}. Received: decoder={decoder!r}")
        if not padding > 0:
            raise ValueError(f"padding must be positive. Received: padding={padding!r}")
        self.network = float32_network(network)
        self.codec = self.network.codec.replace(decoder=decoder)
        self.flip_test = bool(flip_test)
        self.padding = float(padding)
        self.input_size = tuple(self.codec.input_size)
        self.heatmap_size = tuple(self.codec.heatmap_size)
        self.keypoint_set = self.codec.keypoint_set
        self._predictor = PosePredictor(self.network, self.codec, flip_test=self.flip_test)
        self._frozen_heatmaps = None

    def images_spec(self, batch_size=None) -> tf.TensorSpec:
        """The `images` input: uint8 [batch_size, H, W, 3] (None: any batch)."""
        return tf.TensorSpec([batch_size, *self.input_size, 3], tf.uint8, name="images")

    # Graph pieces ----------------------------------------------------------------------------
    def checked_images(self, images):
        """`images` after an in-graph check that they are [N, H, W, 3] (any N)."""
        height, width = self.input_size
        shape = tf.shape(images)
        padded = tf.concat([shape, tf.zeros([4], tf.int32)], axis=0)  # any rank has 4 elements
        ok = tf.logical_and(tf.equal(tf.size(shape), 4),
                            tf.reduce_all(tf.equal(padded[1:4], [height, width, 3])))
        return _after_assert(images, ok, [
            f"images must be uint8 [N, {height}, {width}, 3] RGB crops; received shape", shape])

    def frozen_heatmaps(self):
        """The heatmap computation with the weights as constants: a `ConcreteFunction`.

        `PosePredictor`'s graph (network, flip test) for uint8 [None, H, W, 3] crops, traced
        and frozen once (`convert_variables_to_constants_v2`); every signature of every export
        calls this one function, so a SavedModel holds the weights once.
        """
        if self._frozen_heatmaps is None:
            with tf.init_scope():  # eagerly, even when first needed while tracing a signature
                traced = tf.function(self._predictor.heatmaps,
                                     input_signature=[self.images_spec()]).get_concrete_function()
                self._frozen_heatmaps = convert_variables_to_constants_v2(traced)
        return self._frozen_heatmaps

    def heatmaps(self, images):
        """float32 [N, h, w, K] heatmaps of uint8 crops (flip-averaged with `flip_test`), N > 0."""
        (heatmaps,) = tf.nest.flatten(self.frozen_heatmaps()(images))
        return heatmaps

    def heatmaps_any_batch(self, images):
        """`heatmaps` that also accepts N = 0 (the SavedModel signatures use it).

        The oneDNN convolutions fail on an empty batch, so the network then runs on one blank
        crop whose result is dropped.
        """
        count = tf.shape(images)[0]
        blank = tf.zeros([1, *self.input_size, 3], images.dtype)
        at_least_one = tf.concat([images, blank], axis=0)[: tf.maximum(count, 1)]
        return self.heatmaps(at_least_one)[:count]

    def decode(self, heatmaps):
        """(keypoints float32 [N, K, 2] crop pixels, scores float32 [N, K])."""
        return self.codec.decode(heatmaps)

    def crop_regions(self, boxes):
        """Boxes (x, y, w, h) [M, 4] -> (center [M, 2], scale [M, 2]) in image pixels
        (`crop_geometry.box_to_center_scale` with this graph's padding)."""
        height, width = self.input_size
        return crop_geometry.box_to_center_scale(boxes, width / height, self.padding)

    def crop(self, image, center, scale):
        """Cut the regions out of one uint8 [h, w, 3] image: uint8 [M, H, W, 3]
        (`crop_geometry.cut_crops` with the unrotated `affine_matrix` of each region)."""
        matrices = crop_geometry.affine_matrix(center, scale, 0.0, self.input_size)
        return crop_geometry.cut_crops(image, matrices, self.input_size)

    def to_image(self, keypoints, center, scale):
        """Crop pixels [M, K, 2] -> image pixels (`crop_geometry.crop_to_image`)."""
        return crop_geometry.crop_to_image(keypoints, center, scale, self.input_size)

    # Signatures ------------------------------------------------------------------------------
    def crops_signature(self, include_heatmaps=True):
        """`serving_default`: images uint8 [N, H, W, 3] -> keypoints, scores (, heatmaps)."""

        def serve(images):
            heatmaps = self.heatmaps_any_batch(self.checked_images(images))
            keypoints, scores = self.decode(heatmaps)
            outputs = {"keypoints": keypoints, "keypoint_scores": scores}
            if include_heatmaps:
                outputs["heatmaps"] = heatmaps
            return outputs

        return serve, [self.images_spec()]

    def full_image_signature(self):
        """`full_image`: image uint8 [height, width, 3], boxes float32 [M, 4] -> image keypoints."""

        def serve(image, boxes):
            image, boxes = self._checked_image_and_boxes(image, boxes)
            center, scale = self.crop_regions(boxes)
            heatmaps = self.heatmaps_any_batch(self.crop(image, center, scale))
            keypoints, scores = self.decode(heatmaps)
            return {"keypoints": self.to_image(keypoints, center, scale),
                    "keypoint_scores": scores}

        return serve, [tf.TensorSpec([None, None, 3], tf.uint8, name="image"),
                       tf.TensorSpec([None, 4], tf.float32, name="boxes")]

    def _checked_image_and_boxes(self, image, boxes):
        """`image` and `boxes` after in-graph checks of the `full_image` contract: one
        [height, width, 3] image with both sides > 0; finite [M, 4] boxes with w > 0, h > 0
        that overlap the image (its pixels span -0.5 ... width - 0.5) and are at most
        `MAX_BOX_TO_IMAGE` times its size (a box of 1e30 pixels is an error, not a crop)."""
        image_shape, box_shape = tf.shape(image), tf.shape(boxes)
        image_ok = tf.logical_and(tf.equal(tf.size(image_shape), 3), tf.equal(
            tf.concat([image_shape, [0, 0, 0]], axis=0)[2], 3))
        image = _after_assert(image, image_ok, [
            "image must be one uint8 [height, width, 3] RGB image (no batch axis); received "
            "shape", image_shape])
        image = _after_assert(image, tf.reduce_all(tf.shape(image)[:2] > 0), [
            "image must have a height and a width above 0; received shape", tf.shape(image)])
        boxes_ok = tf.logical_and(tf.equal(tf.size(box_shape), 2), tf.equal(
            tf.concat([box_shape, [0, 0]], axis=0)[1], 4))
        boxes = _after_assert(boxes, boxes_ok, [
            "boxes must be float32 [M, 4] as (x, y, w, h) in image pixels; received shape",
            box_shape])
        sizes_ok = tf.logical_and(tf.reduce_all(boxes[:, 2:] > 0),
                                  tf.reduce_all(tf.math.is_finite(boxes)))
        boxes = _after_assert(boxes, sizes_ok, [
            "boxes must be finite (x, y, w, h) with w > 0 and h > 0; received boxes", boxes])
        size = tf.cast(tf.reverse(tf.shape(image)[:2], [0]), tf.float32)  # (width, height)
        overlaps = tf.logical_and(tf.reduce_all(boxes[:, :2] < size - 0.5, axis=-1),
                                  tf.reduce_all(boxes[:, :2] + boxes[:, 2:] > -0.5, axis=-1))
        boxes = _after_assert(boxes, tf.reduce_all(overlaps), [
            "boxes must overlap the image (x < width - 0.5, x + w > -0.5, y likewise); image "
            "(width, height)", size, "received boxes", boxes])
        in_scale = tf.reduce_all(boxes[:, 2:] <= MAX_BOX_TO_IMAGE * size)
        boxes = _after_assert(boxes, in_scale, [
            f"boxes may be at most {MAX_BOX_TO_IMAGE:g} times the image's width and height; "
            "image (width, height)", size, "received boxes", boxes])
        return image, boxes

    # Metadata --------------------------------------------------------------------------------
    def describe(self) -> dict:
        """What every exported artifact's JSON says about the model and its decoding.

        `decoder` is `HeatmapCodec.describe_decoding()`: the method, N, sigma, stride, pixel
        convention and the heatmap-to-crop mapping of this model (`heatmap_to_crop`: formula,
        and `x_crop = x_heatmap * scale + offset`).
        """
        keypoint_set = self.keypoint_set
        decoding = self.codec.describe_decoding()
        return {
            "format_version": METADATA_VERSION,
            "input_size": {"height": self.input_size[0], "width": self.input_size[1]},
            "input_dtype": "uint8",
            "input_color": "RGB",
            "normalization": {
                "inside_graph": True,
                "formula": "(pixel / 255 - mean) / std, per RGB channel",
                "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
            },
            "heatmap_size": {"height": self.heatmap_size[0], "width": self.heatmap_size[1]},
            "heatmap_stride": self.codec.stride,
            "coordinates": ("continuous pixel coordinates, pixel centres at integers; heatmap "
                            "to crop: " + decoding["heatmap_to_crop"]["formula"]),
            "keypoint_set": keypoint_set.name,
            "keypoint_set_config": keypoint_set.to_config(),
            "keypoint_names": list(keypoint_set.keypoint_names),
            "flip_index": list(keypoint_set.flip_index),
            "flip_pairs": [list(pair) for pair in keypoint_set.flip_pairs],
            "links": [{"a": link.a, "b": link.b, "kind": link.kind, "part": link.part}
                      for link in keypoint_set.links],
            "oks_sigmas": list(keypoint_set.oks_sigmas),
            "flip_test": self.flip_test,
            "decoder": decoding,
            "network": {"name": self.network.name,
                        "width": getattr(self.network, "width", None),
                        "skeletal_attention": getattr(self.network, "skeletal_attention", None)},
        }


def _after_assert(tensor, condition, message):
    """`tensor`, computed only after an in-graph assertion of `condition` with `message`."""
    check = tf.debugging.Assert(condition, message, summarize=_SHAPE_SUMMARY)
    with tf.control_dependencies([check]):
        return tf.identity(tensor)


def write_serving_saved_model(path, signatures: dict) -> str:
    """Write a SavedModel of signature functions built on `ServingGraph` pieces.

    The functions hold no variables (the network is a frozen function, see
    `ServingGraph.frozen_heatmaps`), so the SavedModel is a frozen serving graph whose
    signatures share one copy of the weights.

    Args:
        path: output directory.
        signatures: {name: (python function returning a dict of tensors, [TensorSpec, ...])}.
            The first one is also exported as `serving_default` if no signature has that name.

    Returns:
        `path`.
    """
    module = tf.Module()
    concrete = {}
    for name, (function, input_signature) in signatures.items():
        traced = tf.function(function, input_signature=input_signature)
        setattr(module, name, traced)
        concrete[name] = traced.get_concrete_function()
    if SERVING_SIGNATURE not in concrete:
        concrete[SERVING_SIGNATURE] = next(iter(concrete.values()))
    tf.saved_model.save(module, path, signatures=concrete)
    return path


def metadata_path(artifact_path) -> str:
    """Where an artifact's JSON lives: `<dir>/pose_export.json` or `<file stem>.json`."""
    artifact_path = os.fspath(artifact_path)
    if os.path.isdir(artifact_path) or not os.path.splitext(artifact_path)[1]:
        return os.path.join(artifact_path, METADATA_FILE)
    return os.path.splitext(artifact_path)[0] + ".json"


def write_metadata(artifact_path, metadata: dict) -> str:
    """Write an artifact's JSON beside it (see `metadata_path`), whole or not at all; returns
    the JSON's path. The JSON names no directory (the model file by its base name only), so an
    export directory can be written under a staging name and renamed."""
    path = metadata_path(artifact_path)
    write_json_atomic(path, metadata)
    return path


def read_metadata(artifact_path) -> dict:
    """An artifact's JSON; ValueError naming the file when it is missing or unreadable."""
    path = metadata_path(artifact_path)
    try:
        with open(path) as file:
            return json.load(file)
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"Cannot read the export metadata {path} of {artifact_path}: {error}. "
                         "Export with skelpose_tf.export (export_tflite.py) to write it.") from None


def export_saved_model(network, path, *, decoder=None, flip_test=True,
                       include_heatmaps=True, padding=BOX_PADDING,
                       graph: ServingGraph | None = None) -> str:
    """Export `network` as a frozen SavedModel with `serving_default` and `full_image`.

    Args:
        network: a trained `PoseHRNet`.
        path: output directory; its JSON description is written inside as `pose_export.json`.
        decoder: heatmap decoder in the graph (`skelpose_tf.codec.DECODERS`; None: the
            network's own).
        flip_test: average with the mirrored crop's heatmaps (twice the compute).
        include_heatmaps: also return `heatmaps` from `serving_default`.
        padding: region enlargement around the boxes of `full_image`.
        graph: a `ServingGraph` to reuse (its decoder, flip test and padding then win).

    Returns:
        `path`.
    """
    if graph is None:
        graph = ServingGraph(network, decoder=decoder, flip_test=flip_test, padding=padding)
    write_serving_saved_model(path, {
        SERVING_SIGNATURE: graph.crops_signature(include_heatmaps),
        FULL_IMAGE_SIGNATURE: graph.full_image_signature(),
    })
    metadata = graph.describe()
    metadata.update(
        artifact="saved_model",
        signatures={
            SERVING_SIGNATURE: {
                "inputs": {"images": f"uint8 [N, {graph.input_size[0]}, {graph.input_size[1]}, 3]"},
                "outputs": {
                    "keypoints": "float32 [N, K, 2], (x, y) crop pixels",
                    "keypoint_scores": "float32 [N, K]",
                    **({"heatmaps": f"float32 [N, {graph.heatmap_size[0]}, "
                                    f"{graph.heatmap_size[1]}, K]"} if include_heatmaps else {}),
                },
            },
            FULL_IMAGE_SIGNATURE: {
                "inputs": {"image": "uint8 [height, width, 3], height and width > 0",
                           "boxes": ("float32 [M, 4], (x, y, w, h) image pixels, finite, "
                                     "w > 0 and h > 0, overlapping the image, at most "
                                     f"{MAX_BOX_TO_IMAGE:g} x its size")},
                "outputs": {"keypoints": "float32 [M, K, 2], (x, y) image pixels",
                            "keypoint_scores": "float32 [M, K]"},
                "box_padding": graph.padding,
            },
        },
    )
    write_metadata(path, metadata)
    return path


def load_saved_model(path):
    """`tf.saved_model.load(path)` with a clear error for a missing directory."""
    if not os.path.exists(os.path.join(path, "saved_model.pb")):
        raise ValueError(f"No SavedModel at {path} (saved_model.pb is missing).")
    return tf.saved_model.load(path)
