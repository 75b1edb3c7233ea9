"""The one inference path: person crops -> keypoints in original-image pixels, for any model.

A *runner* is anything with

    input_size   (H, W) of its crops
    codec        the `HeatmapCodec` its outputs follow (keypoint set, decoder, pixel convention)
    predict(images uint8 [N, H, W, 3]) -> {"keypoints": float32 [N, K, 2] (x, y) crop pixels,
        "keypoint_scores": float32 [N, K], "heatmaps": float32 [N, h, w, K] (when it has them)}

- `PosePredictor`: a Keras pose network with its own codec (`network.codec`) and the flip test
  in one `tf.function`; the reference of every comparison.
- `skelpose_tf.export.runtime.SavedModelRunner` / `TFLiteRunner`: exported models, with the codec
  their JSON states (`open_runner` opens any of the three).

`run_inference` drives a runner over an evaluation dataset (`make_eval_dataset` crops of
`PersonRecord`s) and maps every keypoint back to original-image pixels with the inverse crop
transform; `predict_records` does both for a list of records. Several decoders can read the same
heatmaps (an ablation over decoders costs one forward pass). Training's validation and final
evaluation, `evaluate.py`, `ablation.py`, `predict.py`, export verification and the AP of the
exports all go through here; the metrics (`skelpose_tf.evaluation`) only see the arrays.

Example:
```python
predictions = predict_records(PosePredictor(network), records, batch_size=32)
predictions["keypoints"]["weighted"]          # [N, K, 2] original-image pixels
```
"""

from __future__ import annotations

import sys
import time

import numpy as np
import tensorflow as tf

from skelpose_tf.codec import HeatmapCodec
from skelpose_tf.crop_geometry import crop_to_image

_META_KEYS = ("record_index", "image_id", "center", "scale", "box_score")


class PosePredictor:
    """The runner of a Keras pose network: flip-averaged heatmaps and decoded keypoints.

    Args:
        network: a pose model returning `{"heatmaps": [B, h, w, K], ...}` from raw RGB pixels.
        codec: the `HeatmapCodec` to decode with (default: the network's own, `network.codec`;
            pass `network.codec.replace(decoder=...)` for another decoder).
        flip_test: average the heatmaps of each crop and of its mirror image (channels swapped
            by the keypoint set's flip partners; no pixel shift is needed with the centred
            pixel convention, one pixel with the "hrnet" one: `HeatmapCodec.unflip`).

    Call arguments (`heatmaps`, `predict`):
        images: uint8 or float `[B, H, W, 3]` RGB crops at the model's input size.

    Example:
    ```python
    predictor = PosePredictor(model)
    outputs = predictor.predict(crops)   # keypoints [B, K, 2] crop pixels, keypoint_scores [B, K]
    ```
    """

    def __init__(self, network, codec: HeatmapCodec | None = None, flip_test: bool = True):
        self.network = network
        self.codec = network.codec if codec is None else codec
        self.flip_test = bool(flip_test)
        self.input_size = tuple(self.codec.input_size)
        height, width = self.input_size
        spec = [tf.TensorSpec([None, height, width, 3], tf.uint8, name="images")]
        self._heatmaps = tf.function(lambda images: self._maps_graph(images)["heatmaps"],
                                     input_signature=spec)
        self._maps = tf.function(self._maps_graph, input_signature=spec)

    def _maps_graph(self, images):
        """{"heatmaps": flip-averaged, and the network's other outputs for the crops as given
        (`skeletal_heatmaps`)}, float32."""
        if not self.flip_test:
            outputs = self.network(images, training=False)
            return {name: tf.cast(value, tf.float32) for name, value in outputs.items()}
        # One network call on [crops; mirrored crops]: half the tracing time of two calls
        # (4.2 s vs 8.5 s for a W8 model on CPU) and one larger batch on an accelerator.
        count = tf.shape(images)[0]
        both = tf.concat([images, tf.reverse(images, axis=[2])], axis=0)
        outputs = {name: tf.cast(value, tf.float32)
                   for name, value in self.network(both, training=False).items()}
        heatmaps = outputs.pop("heatmaps")
        mirrored = self.codec.unflip(heatmaps[count:])
        return {"heatmaps": 0.5 * (heatmaps[:count] + mirrored),
                **{name: value[:count] for name, value in outputs.items()}}

    def heatmaps(self, images):
        """float32 `[B, h, w, K]` heatmaps (flip-averaged when `flip_test`).

        Float pixels are rounded to uint8 first (the graph is traced once, for uint8 crops).
        """
        return self._heatmaps(_as_uint8(images))

    def predict(self, images, with_maps=False) -> dict:
        """`keypoints` float32 [B, K, 2] crop pixels, `keypoint_scores` [B, K], `heatmaps`
        [B, h, w, K]; with `with_maps`, also the network's other maps of the crops as given
        (`skeletal_heatmaps` [B, h, w, S], not flip-averaged), from the same forward pass."""
        images = _as_uint8(images)
        outputs = self._maps(images) if with_maps else {"heatmaps": self._heatmaps(images)}
        keypoints, scores = self.codec.decode(outputs["heatmaps"])
        return {"keypoints": np.asarray(keypoints), "keypoint_scores": np.asarray(scores),
                **{name: np.asarray(value) for name, value in outputs.items()}}


def _as_uint8(images):
    images = tf.convert_to_tensor(images)
    if images.dtype != tf.uint8:
        images = tf.saturate_cast(tf.round(images), tf.uint8)
    return images


def _decoded(runner, outputs: dict, decoder: str):
    """(keypoints, scores) in crop pixels of one decoder: the runner's own, or from heatmaps."""
    if decoder == runner.codec.decoder:
        return np.asarray(outputs["keypoints"]), np.asarray(outputs["keypoint_scores"])
    if "heatmaps" not in outputs:
        raise ValueError(f"This model decodes with {runner.codec.decoder!r} inside its graph and "
                         f"returns no heatmaps, so it cannot be decoded with {decoder!r}.")
    keypoints, scores = runner.codec.decode(outputs["heatmaps"], method=decoder)
    return np.asarray(keypoints), np.asarray(scores)


def run_inference(runner, dataset, decoders=None, log_every=50, out=sys.stdout,
                  keep_crops=False):
    """Predict every person of an evaluation dataset.

    Args:
        runner: a runner (module docstring), e.g. `PosePredictor(network)`.
        dataset: batches `(images, meta)` from `make_eval_dataset`.
        decoders: names of the decoders to apply to the same heatmaps (default: the runner's).
        log_every: print a progress line every this many batches (0: never).
        out: stream for progress lines.
        keep_crops: also return what the runner saw and computed per person, for pictures:
            `crops` uint8 [N, H, W, 3], `crop_keypoints` float32 [N, K, 2] (first decoder,
            crop pixels), `heatmaps` [N, h, w, K] and, from a Keras network with the skeletal
            module, `skeletal_heatmaps` [N, h, w, S] (one forward pass).

    Returns:
        Dict of numpy arrays over the N predicted persons: `record_index [N]`, `image_id [N]`,
        `center [N, 2]`, `scale [N, 2]` (image pixels), `box_score [N]`, and per decoder name
        `keypoints[name]` float32 [N, K, 2] in **original-image pixels** and
        `scores[name]` float32 [N, K]; `seconds`, the time spent; the `keep_crops` arrays.

    Raises:
        ValueError: the dataset yielded no crop, or a decoder the runner cannot apply.
    """
    decoders = list(dict.fromkeys(decoders or [runner.codec.decoder]))
    meta_parts = {key: [] for key in _META_KEYS}
    keypoint_parts = {name: [] for name in decoders}
    score_parts = {name: [] for name in decoders}
    kept = {}
    started = time.time()
    num_people = 0
    for batch_index, (images, meta) in enumerate(dataset):
        images = np.asarray(images)
        outputs = runner.predict(images, with_maps=True) if keep_crops else runner.predict(images)
        center, scale = meta["center"].numpy(), meta["scale"].numpy()
        for name in decoders:
            keypoints, scores = _decoded(runner, outputs, name)
            keypoint_parts[name].append(
                np.asarray(crop_to_image(keypoints, center, scale, runner.input_size)))
            score_parts[name].append(scores)
            if keep_crops and name == decoders[0]:
                kept.setdefault("crop_keypoints", []).append(keypoints)
        if keep_crops:
            kept.setdefault("crops", []).append(images)
            for name in ("heatmaps", "skeletal_heatmaps"):
                if name in outputs:
                    kept.setdefault(name, []).append(np.asarray(outputs[name]))
        for key in meta_parts:
            meta_parts[key].append(meta[key].numpy())
        num_people += int(images.shape[0])
        if log_every and (batch_index + 1) % log_every == 0:
            rate = num_people / max(time.time() - started, 1e-9)
            print(f"  inference: {num_people} people, {rate:.1f} people/s", file=out, flush=True)
    if num_people == 0:
        raise ValueError("run_inference: the dataset yielded no person crops (all images failed "
                         "to load, or no records); see the skip report above.")
    result = {key: np.concatenate(parts) for key, parts in meta_parts.items()}
    result["keypoints"] = {name: np.concatenate(parts) for name, parts in keypoint_parts.items()}
    result["scores"] = {name: np.concatenate(parts) for name, parts in score_parts.items()}
    result.update({name: np.concatenate(parts) for name, parts in kept.items()})
    result["seconds"] = time.time() - started
    return result


def predict_records(runner, records, *, batch_size=32, decoders=None, skip_report=None,
                    log_every=0, out=sys.stdout, keep_crops=False) -> dict:
    """`run_inference` over the crops of `PersonRecord`s (`make_eval_dataset`).

    Args:
        runner: a runner (module docstring).
        records: the people, with their crop regions (`center`, `scale`).
        batch_size: crops per call of the runner.
        decoders, log_every, out, keep_crops: as `run_inference`.
        skip_report: a `SkipReport` that counts unreadable images (they are left out).

    Returns:
        `run_inference`'s dict; `record_index` says which records were predicted.
    """
    from skelpose_tf.data.pipeline import make_eval_dataset

    dataset = make_eval_dataset(records, runner.codec.keypoint_set, runner.input_size,
                                batch_size, report=skip_report)
    return run_inference(runner, dataset, decoders=decoders, log_every=log_every, out=out,
                         keep_crops=keep_crops)
