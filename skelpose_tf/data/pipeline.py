"""tf.data input pipelines for training and evaluation (top-down person crops).

Per person: draw the augmentation (`augment.sample_augmentation`, seeded per sample), take the
crop matrix and the crop keypoints from `skelpose_tf.crop_geometry` (a flip is folded into the
matrix and swaps left/right keypoints with `keypoint_set.flip_index`), read the image file,
decode it with OpenCV (any JPEG/PNG content, grey/CMYK converted to RGB) and warp the region to
the input size with one `cv2.warpAffine` and that matrix (bilinear, black border; only the
window the crop needs is converted, to 4 channels, which OpenCV warps 2.5x faster).

Where each part runs (`_SampleMaker`):
- the augmentation draw: numpy, in one `tf.numpy_function` call per batch (TFRecords: per
  `tfrecords.IMAGES_PER_CALL` images);
- the geometry: `crop_geometry` (keras.ops) inside the tf.data graph, once per batch (TFRecords:
  per `IMAGES_PER_CALL` images); for evaluation once for all records when the dataset is made.
  Called eagerly from the numpy worker it would cost milliseconds per call (bench/pipeline.py
  measures it). A crop's geometry does not depend on the other crops of the call, so sharded
  pipelines cut bit for bit the crops of the unsharded one;
- decoding and warping: OpenCV in `tf.numpy_function` inside a parallel `map` (cv2 measured
  1.6x faster per core than TF's decode + projective warp, docs/design.md section 7.4):
  training cuts a whole batch per call (less per-sample overhead), evaluation one person per
  call (exact record order). `crop_geometry.cut_crops` cuts the same crops in-graph (the
  serving graph's way); the two agree to one grey level (OpenCV's fixed-point weights).

Elements:
- training: `(image uint8 [B, H, W, 3] RGB, {"keypoints": float32 [B, K, 2],
  "visibility": float32 [B, K]})`; keypoints in input-crop pixels with pixel centres at
  integers (docs/design.md section 3.1), zeros where unlabelled; visibility = 1.0 where the keypoint
  is labelled (COCO v > 0), else 0. Keypoints that the augmentation moves out of the crop keep
  their coordinates and visibility: the target code decides their weight.
- evaluation: `(image uint8 [B, H, W, 3], meta)` with meta = {"record_index" int64 [B] (position
  in the records list), "image_id" int64 [B], "center" float32 [B, 2], "scale" float32 [B, 2]
  (region in image pixels, for `crop_geometry.crop_to_image`), "box_score" float32 [B],
  "keypoints" float32 [B, K, 2] and "visibility" float32 [B, K] (ground truth in crop pixels;
  zeros for detector boxes)}. No augmentation; the flip test can mirror the crop with
  `tf.reverse(images, [2])`, which equals the crop of the flipped matrix (x -> W - 1 - x) to
  within one grey level (OpenCV interpolates at 1/32-pixel steps).

Bad images (missing or unreadable file, empty, truncated or corrupt data, a decoded size that
differs from the annotation) never raise inside tf.data: the record is counted once in the
`SkipReport` with the reason and logged with its file and record index; evaluation drops it,
training replaces it in its batch by a random record of the shard (batches stay full).
Grey, CMYK and PNG content (also under a .jpg name) is decoded, converted and counted as
repaired. If every record of a training pipeline fails, the pipeline stops with an error saying
so instead of looping forever.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np
import tensorflow as tf

from keras import ops

from skelpose_tf import crop_geometry
from skelpose_tf.crop_geometry import input_aspect_ratio
from skelpose_tf.data.augment import AugmentConfig, sample_augmentation
from skelpose_tf.data.images import load_for_record
from skelpose_tf.data.records import SkipReport
from skelpose_tf.keypoints import get_keypoint_set

AUTOTUNE = tf.data.AUTOTUNE
_META_KEYS = ("record_index", "image_id", "center", "scale", "box_score", "keypoints",
              "visibility")


def make_train_dataset(records, keypoint_set, input_size, batch_size,
                       augment_config: AugmentConfig | None = None, *, seed=None,
                       deterministic=False, shard=None, shuffle_buffer=None, threads=None,
                       report: SkipReport | None = None) -> tf.data.Dataset:
    """An infinite, shuffled, augmented and batched training dataset.

    Args:
        records: a sequence of `PersonRecord`s (from the readers), or a `TFRecordSource`
            (`skelpose_tf.data.tfrecords`).
        keypoint_set: a `KeypointSet` or a name/path for `get_keypoint_set`.
        input_size: (height, width) of the model input.
        batch_size: elements per batch (per replica when used with
            `distribute_datasets_from_function`: pass `ctx.get_per_replica_batch_size(...)`).
        augment_config: an `AugmentConfig` (default: the official COCO recipe);
            `AugmentConfig.none()` turns augmentation off.
        seed: integer seed of the shuffle and of the per-sample augmentation; None for
            non-reproducible randomness.
        deterministic: keep the element order fixed (with a seed, the output is then identical
            from run to run); False lets parallel work finish out of order (faster).
        shard: None, `(num_shards, index)` or a `tf.distribute.InputContext`: this pipeline
            reads only its share of the records (multi-worker training). Records: the
            `index`-th slice of every global batch of `batch_size * num_shards` (the same
            people as one unsharded pipeline of that batch size); TFRecords: whole files.
        shuffle_buffer: shuffle buffer size (default: all records of the shard).
        threads: size of a private tf.data thread pool (None: TF's shared pool).
        report: a `SkipReport` that counts skipped/repaired images (a new one if None).

    Returns:
        A `tf.data.Dataset` of `(image, {"keypoints", "visibility"})` batches (module docstring).
    """
    keypoint_set = get_keypoint_set(keypoint_set)
    augment_config = AugmentConfig() if augment_config is None else augment_config
    report = SkipReport() if report is None else report
    num_shards, shard_index = _shard_spec(shard)
    source = _source(records)
    # Record sources slice one global batch stream, so every shard draws the same sample seeds;
    # TFRecord sources (sharded by file) get a stream of their own per shard.
    seed_stream = 0 if isinstance(source, _RecordSource) else shard_index
    sample_seed = None if seed is None else int(
        np.random.SeedSequence([int(seed), seed_stream]).generate_state(1)[0])
    dataset = source.train_batches(
        _SampleMaker(keypoint_set, input_size, augment_config, report), batch_size,
        num_shards, shard_index, seed, sample_seed, shuffle_buffer, deterministic)
    dataset = dataset.map(lambda batch: (batch["image"], {
        "keypoints": batch["keypoints"], "visibility": batch["visibility"]}))
    return dataset.prefetch(AUTOTUNE).with_options(
        _options(deterministic, threads, shard is not None))


def make_eval_dataset(records, keypoint_set, input_size, batch_size, *, shard=None,
                      threads=None, report: SkipReport | None = None) -> tf.data.Dataset:
    """One pass over the records, in order, without augmentation.

    Args:
        records: a sequence of `PersonRecord`s, or a `TFRecordSource`.
        keypoint_set: a `KeypointSet` or a name/path for `get_keypoint_set`.
        input_size: (height, width) of the model input.
        batch_size: elements per batch (the last batch may be smaller).
        shard: None, `(num_shards, index)` or a `tf.distribute.InputContext`.
        threads: size of a private tf.data thread pool (None: TF's shared pool).
        report: a `SkipReport` that counts skipped/repaired images (a new one if None).

    Returns:
        A `tf.data.Dataset` of `(image, meta)` batches (module docstring).
    """
    keypoint_set = get_keypoint_set(keypoint_set)
    report = SkipReport() if report is None else report
    num_shards, shard_index = _shard_spec(shard)
    samples = _source(records).eval_samples(
        _SampleMaker(keypoint_set, input_size, None, report), num_shards, shard_index)
    dataset = samples.batch(batch_size)
    dataset = dataset.map(lambda batch: (batch["image"], {k: batch[k] for k in _META_KEYS}))
    return dataset.prefetch(AUTOTUNE).with_options(_options(True, threads, shard is not None))


class _SampleMaker:
    """How the pipeline cuts crops: the plan in the graph, the pixels in a numpy worker.

    `plan` draws the augmentation (numpy, in one `tf.numpy_function` call for all the people it
    is given) and computes the crop geometry with `crop_geometry` (keras.ops, inside the
    tf.data graph): the matrices, the image area each crop samples, the keypoints in crop
    pixels. `warp` then cuts a crop with `cv2.warpAffine` and that matrix. (An eager keras.ops
    call costs milliseconds, a numpy call microseconds: the geometry runs in the graph, once per
    batch or few images, never eagerly per crop; only a replacement for a failed image is
    planned eagerly.)

    Thread safe; the numpy parts run in tf.data worker threads through `tf.numpy_function`.
    """

    def __init__(self, keypoint_set, input_size, augment_config, report):
        self.keypoint_set = keypoint_set
        self.input_size = tuple(int(v) for v in input_size)
        self.aspect_ratio = input_aspect_ratio(self.input_size)
        self.augment_config = augment_config
        self.report = report
        self.flip_index = np.asarray(keypoint_set.flip_index, np.int64)
        self._failed = set()
        self._lock = threading.Lock()

    @property
    def num_keypoints(self) -> int:
        return self.keypoint_set.num_keypoints

    def load(self, data, path, expected_size, where):
        """Decode `data` (or read `path` when data is None) to BGR; None (and a report) on
        failure (`images.load_for_record`)."""
        return load_for_record(data, path, expected_size, where, self.report, rgb=False)

    def augment(self, centers, scales, keypoints, visibility, seeds):
        """Draw P people's augmentations (numpy; `augment.sample_augmentation`, seeded per person).

        Args:
            centers, scales: float32 [P, 2], the records' regions in image pixels.
            keypoints: float32 [P, K, 2] image pixels; visibility: float32 [P, K] (raw labels).
            seeds: int64 [P], the samples' augmentation seeds.

        Returns:
            (centers float32 [P, 2], scales float32 [P, 2] (half-body ones not yet at the
            aspect ratio, see `Augmentation`), rotations float32 [P], flips bool [P]).
        """
        draws = [sample_augmentation(np.random.default_rng(int(seed) & 0x7FFFFFFFFFFFFFFF),
                                     center, scale, points, labels, self.keypoint_set.upper_body,
                                     self.augment_config)
                 for center, scale, points, labels, seed in zip(centers, scales, keypoints,
                                                                visibility, seeds)]
        count = len(draws)
        return (np.asarray([d.center for d in draws], np.float32).reshape(count, 2),
                np.asarray([d.scale for d in draws], np.float32).reshape(count, 2),
                np.asarray([d.rotation for d in draws], np.float32).reshape(count),
                np.asarray([d.flip for d in draws], bool).reshape(count))

    def plan(self, centers, scales, keypoints, visibility, seeds):
        """The crops of P people, in the graph (or eagerly): augmentation, then geometry.

        Without augmentation (evaluation) the records' regions are cut as they are.

        Args:
            centers, scales: float32 [P, 2], the records' regions in image pixels.
            keypoints: float32 [P, K, 2] image pixels; visibility: float32 [P, K] (raw labels).
            seeds: int64 [P], the samples' augmentation seeds (unused without augmentation).

        Returns:
            The `geometry` dict for the P crops.
        """
        if self.augment_config is None:
            count = ops.shape(centers)[0]
            return self.geometry(centers, scales, ops.zeros((count,)),
                                 ops.zeros((count,), "bool"), keypoints, visibility)
        centers, scales, rotations, flips = tf.numpy_function(
            self.augment, [centers, scales, keypoints, visibility, seeds],
            [tf.float32, tf.float32, tf.float32, tf.bool], stateful=False)
        count = tf.shape(seeds)[0]
        centers = tf.ensure_shape(centers, [None, 2])
        scales = tf.ensure_shape(scales, [None, 2])
        rotations, flips = tf.reshape(rotations, [count]), tf.reshape(flips, [count])
        # Half-body regions come from the keypoints' box: bring every region to the input's
        # aspect ratio (the others have it already; the fix leaves them as they are).
        scales = crop_geometry.fix_aspect_ratio(scales, self.aspect_ratio)
        return self.geometry(centers, scales, rotations, flips, keypoints, visibility)

    def geometry(self, centers, scales, rotations, flips, keypoints, visibility) -> dict:
        """Crop geometry of P people with `crop_geometry` (keras.ops: symbolic or eager).

        Args:
            centers, scales: float [P, 2], the crop regions in image pixels.
            rotations: float [P], degrees; flips: bool [P].
            keypoints: float [P, K, 2] image pixels; visibility: float [P, K] (raw labels).

        Returns:
            {"matrix": float32 [P, 2, 3] image -> crop pixels, "corners": float32 [P, 4, 2]
            the crops' corners in image pixels (`crop_geometry.crop_corners`), "keypoints":
            float32 [P, K, 2] crop pixels, zeros where unlabelled, left/right swapped where
            flipped, "visibility": float32 [P, K] in {0, 1}, swapped alike}.
        """
        matrices = crop_geometry.affine_matrix(centers, scales, rotations, self.input_size,
                                               flips)
        points = crop_geometry.apply_affine(keypoints, matrices)
        labelled = ops.cast(ops.greater(visibility, 0), "float32")
        swap = ops.expand_dims(ops.convert_to_tensor(flips, "bool"), -1)  # [P, 1]
        points = ops.where(ops.expand_dims(swap, -1), ops.take(points, self.flip_index, axis=1),
                           points)
        labelled = ops.where(swap, ops.take(labelled, self.flip_index, axis=1), labelled)
        points = ops.where(ops.expand_dims(labelled, -1) > 0, points, 0.0)
        return {"matrix": matrices,
                "corners": crop_geometry.crop_corners(matrices, self.input_size),
                "keypoints": points, "visibility": labelled}

    def plan_now(self, center, scale, keypoints, visibility, seed) -> dict:
        """`plan` of one person, eagerly, as numpy arrays [1, ...] (a replacement record)."""
        arrays = [np.asarray(v, np.float32)[None] for v in (center, scale, keypoints, visibility)]
        plan = self.plan(*arrays, np.asarray([seed], np.int64))
        return {key: np.asarray(value) for key, value in plan.items()}

    def warp(self, image, matrix, corners):
        """Cut one crop with `cv2.warpAffine`: bilinear, black outside the image.

        Only the window the crop samples is converted, to RGBA: OpenCV warps 4-channel images
        about 2.5x faster than 3-channel ones, and the window is often a small part of the image.

        Args:
            image: uint8 [h, w, 3] BGR from `load`.
            matrix: float [2, 3], image pixels -> crop pixels (`geometry`).
            corners: float [4, 2], the crop's corners in image pixels (`geometry`).

        Returns:
            uint8 [H, W, 3] RGB.
        """
        height, width = self.input_size
        window = source_window(corners, image.shape[:2])
        if window is None:
            return np.zeros((height, width, 3), np.uint8)
        x0, y0, x1, y1 = window
        source = cv2.cvtColor(image[y0 : y1 + 1, x0 : x1 + 1], cv2.COLOR_BGR2RGBA)
        warped = cv2.warpAffine(source, shift_source(matrix, x0, y0), (width, height),
                                flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                borderValue=(0, 0, 0, 0))
        return cv2.cvtColor(warped, cv2.COLOR_RGBA2RGB)

    def failed(self, record_index, num_records, must_progress):
        """Remember a failed record; raise once every record has failed (infinite pipelines)."""
        with self._lock:
            self._failed.add(int(record_index))
            all_failed = len(self._failed) >= num_records
        if must_progress and all_failed:
            raise RuntimeError(
                f"All {num_records} records of this input pipeline failed to load; see the "
                f"logged reasons: {self.report.summary()}")


def source_window(corners, image_size):
    """The pixels of the image that a crop samples: the box bilinear warping reads.

    Args:
        corners: float [4, 2], the crop's corners in image pixels (`crop_geometry.crop_corners`).
        image_size: (height, width) of the image.

    Returns:
        (x0, y0, x1, y1) inclusive integer pixel bounds inside the image (one pixel beyond the
        corners' box: bilinear neighbours), or None when the crop lies entirely outside the
        image. Warping `image[y0:y1 + 1, x0:x1 + 1]` with `shift_source(matrix, x0, y0)` gives
        the same crop as warping the whole image.
    """
    corners = np.asarray(corners, np.float64)
    height, width = image_size
    x0, y0 = np.maximum(np.floor(corners.min(axis=0)) - 1, 0).astype(int)
    x1 = int(min(np.ceil(corners[:, 0].max()) + 1, width - 1))
    y1 = int(min(np.ceil(corners[:, 1].max()) + 1, height - 1))
    if x0 > x1 or y0 > y1:
        return None
    return int(x0), int(y0), x1, y1


def shift_source(matrix, x0, y0) -> np.ndarray:
    """The crop matrix for the image cut at (x0, y0): float [2, 3] -> float64 [2, 3].

    A window pixel p_window is image pixel p_window + (x0, y0), so the translation gains
    M[:, :2] @ (x0, y0).
    """
    matrix = np.array(matrix, np.float64)
    matrix[:, 2] += matrix[:, :2] @ np.asarray([x0, y0], np.float64)
    return matrix


class _RecordSource:
    """A list of `PersonRecord`s as a tf.data source (one element per person).

    The records stay in numpy arrays on the Python side; tf.data carries only the record index
    (and the sample's seed) into `tf.numpy_function`, which keeps the per-sample overhead low.
    """

    def __init__(self, records):
        if not records:
            raise ValueError("The pipeline needs at least one person record. Received none.")
        self.num_records = len(records)
        self.image_paths = [r.image_path for r in records]
        self.image_sizes = [tuple(r.image_size) for r in records]
        self.centers = np.stack([r.center for r in records]).astype(np.float32)
        self.scales = np.stack([r.scale for r in records]).astype(np.float32)
        self.keypoints = np.stack([r.keypoints for r in records]).astype(np.float32)
        self.visibility = np.stack([r.visibility for r in records]).astype(np.float32)
        self.image_ids = np.asarray([r.image_id for r in records], np.int64)
        self.box_scores = np.asarray([r.box_score for r in records], np.float32)

    def _indices(self, maker, num_shards, shard_index):
        """Dataset of this shard's record indices, and their number."""
        k = self.keypoints.shape[1]
        if k != maker.num_keypoints:
            raise ValueError(f"The records have {k} keypoints but the keypoint set "
                             f"{maker.keypoint_set.name!r} has {maker.num_keypoints}.")
        if self.num_records < num_shards:
            raise ValueError(f"Cannot shard {self.num_records} records {num_shards} ways.")
        dataset = tf.data.Dataset.range(self.num_records)
        if num_shards > 1:
            dataset = dataset.shard(num_shards, shard_index)
        return dataset, len(range(shard_index, self.num_records, num_shards))

    def _load(self, maker, index):
        return maker.load(None, self.image_paths[index], self.image_sizes[index],
                          f"record {int(index)}")

    def train_batches(self, maker, batch_size, num_shards, shard_index, seed, sample_seed,
                      shuffle_buffer, deterministic):
        """Batches of (augmented) crops: one `tf.numpy_function` call cuts a whole batch.

        Sharding slices global batches: every pipeline shuffles all record indices with the
        same seed and draws the same per-sample seeds, groups them into global batches of
        `batch_size * num_shards`, and decodes only its own slice `[shard_index * batch_size,
        (shard_index + 1) * batch_size)` of each. The pipelines of one step therefore read
        disjoint people, and together exactly the global batch that one pipeline would read
        with `batch_size * num_shards` (so a run's data does not depend on how many workers
        it has). A record whose image fails to load is replaced, within its batch, by a random
        record (drawn from the sample's seed), so batches stay full; the failure is counted
        once in the report.
        """
        dataset, _ = self._indices(maker, 1, 0)
        if self.num_records < num_shards:
            raise ValueError(f"Cannot shard {self.num_records} records {num_shards} ways.")
        num_records = self.num_records
        height, width = maker.input_size
        k = maker.num_keypoints
        people = [tf.constant(array) for array in
                  (self.centers, self.scales, self.keypoints, self.visibility)]

        def load_numpy(indices, seeds, matrices, corners, keypoints, visibility):
            images = np.empty((len(indices), height, width, 3), np.uint8)
            keypoints, visibility = np.array(keypoints), np.array(visibility)
            for j, (index, sample_seed) in enumerate(zip(indices, seeds)):
                image = self._load(maker, index)
                replacements = None
                while image is None:
                    maker.failed(index, num_records, must_progress=True)
                    replacements = replacements or np.random.default_rng(
                        int(sample_seed) & 0x7FFFFFFFFFFFFFFF)
                    index = replacements.integers(num_records)
                    image = self._load(maker, index)
                if replacements is None:
                    matrix, corner = matrices[j], corners[j]
                else:
                    plan = maker.plan_now(self.centers[index], self.scales[index],
                                          self.keypoints[index], self.visibility[index],
                                          sample_seed)
                    matrix, corner = plan["matrix"][0], plan["corners"][0]
                    keypoints[j], visibility[j] = plan["keypoints"][0], plan["visibility"][0]
                images[j] = maker.warp(image, matrix, corner)
            return images, keypoints, visibility

        def load(indices, seeds):
            start = shard_index * batch_size
            indices, seeds = indices[start:start + batch_size], seeds[start:start + batch_size]
            plan = maker.plan(*[tf.gather(array, indices) for array in people], seeds)
            images, keypoints, visibility = tf.numpy_function(
                load_numpy, [indices, seeds, plan["matrix"], plan["corners"], plan["keypoints"],
                             plan["visibility"]], [tf.uint8, tf.float32, tf.float32],
                stateful=False)
            images.set_shape((batch_size, height, width, 3))
            keypoints.set_shape((batch_size, k, 2))
            visibility.set_shape((batch_size, k))
            return {"image": images, "keypoints": keypoints, "visibility": visibility}

        dataset = dataset.shuffle(shuffle_buffer or num_records, seed=seed,
                                  reshuffle_each_iteration=True).repeat()
        dataset = tf.data.Dataset.zip(dataset, tf.data.Dataset.random(seed=sample_seed))
        dataset = dataset.batch(batch_size * num_shards, drop_remainder=True)
        return dataset.map(load, num_parallel_calls=AUTOTUNE, deterministic=deterministic)

    def eval_samples(self, maker, num_shards, shard_index):
        """Per-person samples in record order; records whose image fails are dropped.

        The crop geometry of every record is computed once, in one `crop_geometry` call, when
        the dataset is made (evaluation has no augmentation); each sample gathers its own.
        """
        dataset, _ = self._indices(maker, num_shards, shard_index)
        geometry = {key: tf.constant(np.asarray(value)) for key, value in maker.plan(
            self.centers, self.scales, self.keypoints, self.visibility,
            np.zeros(self.num_records, np.int64)).items()}
        height, width = maker.input_size

        def load_numpy(index, matrix, corners):
            image = self._load(maker, index)
            if image is None:
                return np.zeros((height, width, 3), np.uint8), False
            return maker.warp(image, matrix, corners), True

        def load(index):
            plan = {key: tf.gather(value, index) for key, value in geometry.items()}
            image, ok = tf.numpy_function(load_numpy, [index, plan["matrix"], plan["corners"]],
                                          [tf.uint8, tf.bool], stateful=False)
            return {"record_index": index, "ok": ok,
                    **_with_shapes(maker, image, plan["keypoints"], plan["visibility"])}

        dataset = dataset.map(load, num_parallel_calls=AUTOTUNE, deterministic=True)
        dataset = dataset.filter(lambda sample: sample["ok"])
        image_ids = tf.constant(self.image_ids)
        centers = tf.constant(self.centers)
        scales = tf.constant(self.scales)
        box_scores = tf.constant(self.box_scores)

        def add_meta(sample):
            index = sample["record_index"]
            return {**sample, "image_id": tf.gather(image_ids, index),
                    "center": tf.gather(centers, index), "scale": tf.gather(scales, index),
                    "box_score": tf.gather(box_scores, index)}

        return dataset.map(add_meta)


def _with_shapes(maker, image, keypoints, visibility):
    """One sample's outputs of `tf.numpy_function` (of unknown shape) with static shapes."""
    height, width = maker.input_size
    k = maker.num_keypoints
    image.set_shape((height, width, 3))
    keypoints.set_shape((k, 2))
    visibility.set_shape((k,))
    return {"image": image, "keypoints": keypoints, "visibility": visibility}


def _source(records):
    """Wrap the pipeline's input: a TFRecordSource as is, anything else as a list of records."""
    if hasattr(records, "train_batches") and hasattr(records, "eval_samples"):
        return records
    return _RecordSource(list(records))


def _shard_spec(shard) -> tuple:
    """(num_shards, index) from None, a pair or a tf.distribute.InputContext."""
    if shard is None:
        return 1, 0
    if isinstance(shard, tf.distribute.InputContext):
        return shard.num_input_pipelines, shard.input_pipeline_id
    try:
        num_shards, index = (int(v) for v in shard)
    except (TypeError, ValueError):
        raise ValueError("shard must be None, (num_shards, index) or a tf.distribute."
                         f"InputContext. Received: {shard!r}") from None
    if not 0 <= index < num_shards:
        raise ValueError(f"shard index must be in [0, num_shards). Received: shard={shard!r}")
    return num_shards, index


def _options(deterministic, threads, sharded) -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = bool(deterministic)
    if threads is not None:
        options.threading.private_threadpool_size = int(threads)
    if sharded:  # already split by record: a tf.distribute strategy must not split it again
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return options
