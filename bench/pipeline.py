"""Input pipeline throughput on one core: training samples/s, with a breakdown by stage.

Renders synthetic 640x480 JPEGs with several people each (`skelpose_tf.data.synthetic`), reads
them with the COCO reader and times, in the same run and all on one thread (tf.data private
thread pool of 1, TF intra/inter-op threads 1, `cv2.setNumThreads(1)`):

- TF's `tf.io.decode_jpeg` alone (reference),
- the pipeline's decoder alone (`images.decode_image`: cv2 in one `tf.numpy_function` per batch,
  as the training pipeline calls it): the reference of the "vs decode only" column,
- the training pipeline without augmentation (decode + crop + keypoints, shuffled, batched),
- the full training pipeline (with the official COCO augmentation),
- the evaluation pipeline,
- the full training pipeline reading sharded TFRecords (each image decoded once for all its
  people),

taking turns (each repeat times every stage once, so load changes hit all alike), plus per-call
costs of the pipeline's steps measured outside tf.data, among them the crop geometry
(`skelpose_tf.crop_geometry`, keras.ops) called eagerly with numpy inputs, per person and per
batch: what it would cost in the numpy worker (the pipeline runs it in the tf.data graph).
Rates are per CPU-second of the process (all its threads), which a shared, loaded machine
disturbs far less than wall-clock rates (also shown). Every figure is per person sample (a
person crop decodes its whole image). Prints a markdown table, the command, the machine, the
date and the load average.

    python -m bench.pipeline [--images 64] [--samples 1000] [--repeats 5]
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import datetime  # noqa: E402
import gc  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import cv2  # noqa: E402
from bench.machine import describe_machine, load_average  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from skelpose_tf.data import coco, images, pipeline, tfrecords  # noqa: E402
from skelpose_tf.data.augment import AugmentConfig, sample_augmentation  # noqa: E402
from skelpose_tf.data.records import SkipReport  # noqa: E402
from skelpose_tf.data.synthetic import generate_dataset  # noqa: E402
from skelpose_tf.keypoints import COCO  # noqa: E402

_IMAGES = flags.DEFINE_integer("images", 64, "Synthetic 640x480 images to render.")
_SAMPLES = flags.DEFINE_integer("samples", 1000, "Person samples timed per repeat.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed repeats per stage (the median is shown).")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Batch size of the training pipelines.")

INPUT_SIZE = (256, 192)


def _rates(stages, num_samples, repeats):
    """Per stage: samples per CPU-second and samples per wall-clock second, `repeats` times.

    The stages take turns within each repeat (so a change of machine load hits all of them
    alike); each timing uses a fresh iterator, warmed up first and deleted after, so no other
    stage's pipeline runs in the background. Samples are counted from the batches' actual
    sizes. CPU time is the whole process's (all threads): on a shared machine it measures the
    work per sample far more steadily than the wall clock.
    """
    cpu_rates = [[] for _ in stages]
    wall_rates = [[] for _ in stages]
    for _ in range(repeats):
        for index, (_, dataset) in enumerate(stages):
            iterator = iter(dataset.repeat())
            for _ in range(4):
                next(iterator)
            samples = 0
            wall, cpu = time.perf_counter(), time.process_time()
            while samples < num_samples:
                samples += int(tf.nest.flatten(next(iterator))[0].shape[0])
            cpu_rates[index].append(samples / (time.process_time() - cpu))
            wall_rates[index].append(samples / (time.perf_counter() - wall))
            del iterator
            gc.collect()
    return [(name, cpu, wall) for (name, _), cpu, wall in zip(stages, cpu_rates, wall_rates)]


def _single_thread(dataset):
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    return dataset.with_options(options)


def _decode_only_tf(paths):
    dataset = tf.data.Dataset.from_tensor_slices(paths)
    dataset = dataset.map(lambda path: tf.shape(tf.io.decode_jpeg(tf.io.read_file(path),
                                                                  channels=3)),
                          num_parallel_calls=tf.data.AUTOTUNE)
    return _single_thread(dataset.repeat().batch(_BATCH.value))


def _decode_only_cv2(paths):
    """The pipeline's decoder in the training pipeline's harness: one numpy_function per batch."""

    def decode(batch):
        shapes = [images.decode_image(images.read_image_bytes(os.fsdecode(path)),
                                      rgb=False)[0].shape for path in batch]
        return np.asarray(shapes, np.int32)

    dataset = tf.data.Dataset.from_tensor_slices(paths).repeat().batch(_BATCH.value)
    dataset = dataset.map(lambda batch: tf.numpy_function(decode, [batch], tf.int32),
                          num_parallel_calls=tf.data.AUTOTUNE)
    return _single_thread(dataset)


def _micro(function, repeats=300):
    """Median microseconds per call."""
    times = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(repeats):
            function()
        times.append((time.perf_counter() - start) / repeats * 1e6)
    return statistics.median(times)


def _numpy_steps(records):
    record = records[0]
    data = images.read_image_bytes(record.image_path)
    image, _ = images.decode_image(data, rgb=False)
    rng = np.random.default_rng(0)
    config = AugmentConfig.coco()
    height, width = INPUT_SIZE
    # The pipeline's per-person steps (private class; the same code tf.data runs).
    maker = pipeline._SampleMaker(COCO, INPUT_SIZE, config, SkipReport())
    batch = _BATCH.value

    def people(count):
        return [np.repeat(np.asarray(v, np.float32)[None], count, axis=0) for v in (
            record.center, record.scale, record.keypoints, record.visibility)]

    def geometry(count):
        centers, scales, keypoints, visibility = people(count)
        rotations, flips = np.full(count, 30.0, np.float32), np.ones(count, bool)
        return lambda: {key: np.asarray(value) for key, value in maker.geometry(
            centers, scales, rotations, flips, keypoints, visibility).items()}

    plan = geometry(1)()
    matrix, corners = plan["matrix"][0], plan["corners"][0]
    seeds = np.arange(batch, dtype=np.int64)
    return [
        ("read file", _micro(lambda: images.read_image_bytes(record.image_path))),
        ("decode_image(rgb=False): cv2.imdecode + checks",
         _micro(lambda: images.decode_image(data, rgb=False))),
        ("sample_augmentation", _micro(lambda: sample_augmentation(
            rng, record.center, record.scale, record.keypoints, record.visibility,
            COCO.upper_body, config))),
        (f"augmentation draw of a batch ({batch} people, `_SampleMaker.augment`)",
         _micro(lambda: maker.augment(*people(batch), seeds), repeats=30)),
        ("crop geometry (crop_geometry, keras.ops) called eagerly on numpy, 1 person",
         _micro(geometry(1), repeats=30)),
        (f"crop geometry called eagerly on numpy, a batch of {batch} people (per call)",
         _micro(geometry(batch), repeats=30)),
        ("warp step (window to RGBA, cv2.warpAffine, to RGB)",
         _micro(lambda: maker.warp(image, matrix, corners))),
        ("for comparison: cv2.warpAffine of the whole 3-channel image",
         _micro(lambda: cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR))),
    ]


def main(argv):
    del argv
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    cv2.setNumThreads(1)
    load_before = load_average()
    with tempfile.TemporaryDirectory() as root:
        paths = generate_dataset(root, num_train=_IMAGES.value, num_val=0, seed=0,
                                 image_size=(640, 480))
        records = coco.read_coco_keypoints(paths.train_annotations, paths.train_images, COCO,
                                           INPUT_SIZE)
        tfrecords.write_tfrecords(records, os.path.join(root, "shards"), 4, COCO, INPUT_SIZE)
        tfrecord_source = tfrecords.TFRecordSource(os.path.join(root, "shards"))
        person_paths = np.asarray([r.image_path for r in records])
        sizes = [os.path.getsize(p) for p in set(person_paths)]
        batch = _BATCH.value
        stages = [
            ("decode only: tf.io.decode_jpeg (reference)", _decode_only_tf(person_paths)),
            ("decode only: pipeline decoder (cv2, one numpy_function per batch)",
             _decode_only_cv2(person_paths)),
            ("decode + crop + keypoints, no augmentation (train pipeline)",
             pipeline.make_train_dataset(records, COCO, INPUT_SIZE, batch,
                                         AugmentConfig.none(), seed=0, threads=1)),
            ("full training pipeline (COCO augmentation)",
             pipeline.make_train_dataset(records, COCO, INPUT_SIZE, batch,
                                         AugmentConfig.coco(), seed=0, threads=1)),
            ("evaluation pipeline (no augmentation, in order)",
             pipeline.make_eval_dataset(records, COCO, INPUT_SIZE, batch, threads=1)),
            ("full training pipeline from TFRecords (one decode per image)",
             pipeline.make_train_dataset(tfrecord_source, COCO, INPUT_SIZE, batch,
                                         AugmentConfig.coco(), seed=0, threads=1)),
        ]
        results = _rates(stages, _SAMPLES.value, _REPEATS.value)
        steps = _numpy_steps(records)
    load_after = load_average()

    reference = statistics.median(results[1][1])
    print(f"Command: python -m bench.pipeline {' '.join(sys.argv[1:])}".rstrip())
    print(f"Machine: {describe_machine()}; date {datetime.datetime.now().isoformat(timespec='minutes')}; "
          f"load average before {load_before}, after {load_after}")
    print(f"Data: {len(records)} person samples in {len(sizes)} synthetic 640x480 JPEGs "
          f"(mean {np.mean(sizes) / 1024:.0f} KiB), input {INPUT_SIZE[0]}x{INPUT_SIZE[1]}, "
          f"batch {_BATCH.value}; one thread; {_REPEATS.value} runs of >= {_SAMPLES.value} "
          "samples per stage, medians.\n")
    print("| stage (1 core) | samples per CPU-second | vs pipeline decode only | "
          "wall-clock samples/s (best) | CPU-second runs |")
    print("|---|---|---|---|---|")
    for name, cpu_rates, wall_rates in results:
        cpu = statistics.median(cpu_rates)
        runs = ", ".join(f"{r:.0f}" for r in cpu_rates)
        print(f"| {name} | {cpu:.0f} | {cpu / reference:.0%} | {max(wall_rates):.0f} | {runs} |")
    print("\n| step, outside tf.data | us per call (median) |")
    print("|---|---|")
    for name, micros in steps:
        print(f"| {name} | {micros:.0f} |")


if __name__ == "__main__":
    app.run(main)
