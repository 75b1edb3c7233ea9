"""Decode work per worker when multi-worker training shards the input: 1 worker vs 2.

Each worker of `train.py --strategy=multi_worker` builds its training pipeline with
`make_train_dataset(..., shard=InputContext)`: with person records it decodes only its slice of
every global batch, with TFRecords only its files. This benchmark builds, in one process and
one after the other, the pipeline of one worker of a 1-worker and of a 2-worker cluster (same
global batch, same seed) and counts, for the same number of global steps:

- image files decoded by that worker (counted in the pipeline's loader),
- CPU-seconds its pipeline spends (all threads of the process; TF's and OpenCV's thread pools
  limited to one thread, so the figure is the work, not the parallelism).

    python -m bench.sharding [--images 64] [--steps 40] [--batch_size 32] [--repeats 3]

Prints a markdown table, the command, the machine and the date.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import datetime  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import cv2  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from bench.machine import describe_machine, load_average  # noqa: E402
from skelpose_tf.data import coco, pipeline, tfrecords  # noqa: E402
from skelpose_tf.data.synthetic import generate_dataset  # noqa: E402
from skelpose_tf.keypoints import COCO  # noqa: E402

_IMAGES = flags.DEFINE_integer("images", 64, "Synthetic 640x480 images to render.")
_STEPS = flags.DEFINE_integer("steps", 40, "Global steps timed per repeat.")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Global batch size.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed repeats (the median is shown).")

INPUT_SIZE = (256, 192)


def _measure(source, num_workers, global_batch, steps):
    """(images decoded, CPU-seconds) of worker 0's pipeline over `steps` global steps."""
    loads = [0]
    original = pipeline._SampleMaker.load

    def counting_load(self, *args, **kwargs):
        loads[0] += 1
        return original(self, *args, **kwargs)

    pipeline._SampleMaker.load = counting_load
    try:
        dataset = pipeline.make_train_dataset(
            source, COCO, INPUT_SIZE, global_batch // num_workers, seed=0, threads=1,
            shard=None if num_workers == 1 else (num_workers, 0))
        iterator = iter(dataset)
        next(iterator)  # warm-up: tracing and the first prefetch
        loads[0] = 0
        started = time.process_time()
        for _ in range(steps):
            next(iterator)
        return loads[0], time.process_time() - started
    finally:
        pipeline._SampleMaker.load = original


def main(argv):
    del argv
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory() as root:
        paths = generate_dataset(root, _IMAGES.value, 2, seed=0, image_size=(640, 480))
        records = coco.read_coco_keypoints(paths.train_annotations, paths.train_images, COCO,
                                           INPUT_SIZE)
        shards = os.path.join(root, "shards")
        tfrecords.write_tfrecords(records, shards, 8, COCO, INPUT_SIZE)
        sources = {"person records": records,
                   "TFRecords (8 files)": tfrecords.TFRecordSource(shards)}
        rows = []
        for name, source in sources.items():
            figures = {}
            for workers in (1, 2):
                runs = [_measure(source, workers, _BATCH.value, _STEPS.value)
                        for _ in range(_REPEATS.value)]
                figures[workers] = (statistics.median(r[0] for r in runs),
                                    statistics.median(r[1] for r in runs))
            (loads_1, cpu_1), (loads_2, cpu_2) = figures[1], figures[2]
            rows.append(f"| {name} | {loads_1 / _STEPS.value:.1f} | {loads_2 / _STEPS.value:.1f}"
                        f" | {cpu_1 / _STEPS.value * 1000:.0f} | {cpu_2 / _STEPS.value * 1000:.0f}"
                        f" | {cpu_2 / cpu_1:.2f} |")
    print(f"Decode work of one worker per global step (global batch {_BATCH.value}, "
          f"{len(records)} people in {_IMAGES.value} images, {INPUT_SIZE[0]}x{INPUT_SIZE[1]}):\n")
    print("| input | images decoded, 1 worker | images decoded, each of 2 workers | "
          "CPU ms, 1 worker | CPU ms, each of 2 workers | ratio |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    print(f"\ncommand: python -m bench.sharding {' '.join(sys.argv[1:])}".rstrip())
    print(f"machine: {describe_machine()}; load average {load_average()}")
    print(f"date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")


if __name__ == "__main__":
    app.run(main)
