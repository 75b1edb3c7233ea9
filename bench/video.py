"""End-to-end video benchmark: frames/s of `predict_video`, with the detector and the pose model split out.

    python -m bench.video --weights runs/demo --w32 --formats keras,saved_model,tflite_int8

The clip is the synthetic video of `skelpose_tf.data.synthetic_video` (three people walking and
waving) rendered at `--size` (640x480) and written as an MP4, so decoding is part of the run.
For each model (the trained network of `--weights`, and HRNet-W32 256x192 with random weights
when `--w32`) and each format (`keras`; `saved_model` and `tflite_int8`, exported and verified
by `export_tflite.py` into a scratch directory), `predict_video` runs the whole loop: read a
frame, detect people (`--detector`, default OpenCV HOG; every `--detect_every`-th frame), cut
the people's crops and run them through the pose model in one batch, decode, track, draw, write
the MP4 and the JSON Lines. Reported per configuration (median of `--repeats` passes over the
clip, after one untimed warm-up pass): end-to-end frames/s, and the milliseconds per frame
spent in the detector and in the pose model (crops, forward pass with the flip test, decoding).
Prints a markdown table with the command, machine and date, for BENCHMARKS.md.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from bench.machine import describe_machine, load_average  # noqa: E402
from skelpose_tf.atomic_files import write_json_atomic  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FORMATS = ("keras", "saved_model", "tflite_int8")


class TimedEstimator:
    """The estimator interface of `video_prediction`, timing `detect` and `estimate`."""

    def __init__(self, estimator):
        self.estimator = estimator
        self.keypoint_set = estimator.keypoint_set
        self.detect_s, self.estimate_s = 0.0, 0.0

    def detect(self, image):
        started = time.perf_counter()
        try:
            return self.estimator.detect(image)
        finally:
            self.detect_s += time.perf_counter() - started

    def estimate(self, image, boxes=None, box_scores=None):
        started = time.perf_counter()
        try:
            return self.estimator.estimate(image, boxes, box_scores)
        finally:
            self.estimate_s += time.perf_counter() - started


def export_formats(weights, formats, out_dir, data_dir) -> dict:
    """{format: model path}: the Keras checkpoint itself, and the exports `formats` asks for
    (written and verified by `export_tflite.py`)."""
    paths = {"keras": weights} if "keras" in formats else {}
    if "saved_model" in formats or "tflite_int8" in formats:
        command = [sys.executable, os.path.join(REPO_ROOT, "export_tflite.py"),
                   f"--weights={weights}", f"--out={out_dir}", "--format=all",
                   "--quantization=int8", "--heatmap_quantization=", f"--data_dir={data_dir}"]
        result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"export failed: {' '.join(command)}\n{result.stderr[-3000:]}")
        if "saved_model" in formats:
            paths["saved_model"] = os.path.join(out_dir, "saved_model")
        if "tflite_int8" in formats:
            paths["tflite_int8"] = os.path.join(out_dir, "pose_int8.tflite")
    return paths


def time_video(estimator, clip, repeats, detect_every, scratch) -> dict:
    """Median over `repeats` timed passes (after a warm-up pass) of `predict_video` on `clip`."""
    from skelpose_tf.video_prediction import predict_video

    passes = []
    for index in range(repeats + 1):
        timed = TimedEstimator(estimator)
        started = time.perf_counter()
        summary = predict_video(timed, clip, os.path.join(scratch, f"pass{index}"),
                                detect_every=detect_every, progress=False)
        seconds = time.perf_counter() - started
        frames = summary["frames"]
        passes.append({"fps": frames / seconds, "detector_ms": 1e3 * timed.detect_s / frames,
                       "pose_ms": 1e3 * timed.estimate_s / frames,
                       "people_per_frame": summary["people_per_frame"]["mean"]})
    timed_passes = passes[1:]
    return {key: statistics.median(p[key] for p in timed_passes) for key in timed_passes[0]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="runs/demo",
                        help="trained model (.keras or run directory); 'none' to skip")
    parser.add_argument("--w32", action="store_true", help="also HRNet-W32 256x192, random weights")
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--detector", default="hog")
    parser.add_argument("--detect_every", type=int, default=1)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--size", default="640x480", help="WIDTHxHEIGHT of the clip")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="TFLite interpreter threads")
    parser.add_argument("--data_dir", default="data/synthetic",
                        help="synthetic set for export verification and int8 calibration")
    parser.add_argument("--json_out", default="")
    args = parser.parse_args()
    formats = [f for f in args.formats.split(",") if f]
    if set(formats) - set(FORMATS):
        parser.error(f"--formats must be among {', '.join(FORMATS)}")

    from skelpose_tf.data.synthetic_video import render_video, write_video
    from skelpose_tf.detectors import open_detector
    from skelpose_tf.estimator import PoseEstimator, open_pose_runner

    width, height = (int(v) for v in args.size.lower().split("x"))
    load_before = load_average()
    rows = []
    with tempfile.TemporaryDirectory(prefix="skelpose_video_bench_") as scratch:
        clip, _ = write_video(scratch, render_video(0, args.frames, (width, height)))
        models = []
        if args.weights.lower() != "none":
            models.append(("demo", args.weights))
        if args.w32:
            from skelpose_tf.models.pose_model import build_pose_model

            w32_path = os.path.join(scratch, "w32.keras")
            build_pose_model(32, (256, 192), "coco").save(w32_path)
            models.append(("W32 256x192 (random weights)", w32_path))
        detector = open_detector(args.detector)
        for label, weights in models:
            paths = export_formats(weights, formats, os.path.join(scratch, f"{len(rows)}_export"),
                                   args.data_dir)
            for name in formats:
                runner = open_pose_runner(paths[name], num_threads=args.threads)
                estimator = PoseEstimator(runner, detector)
                figures = time_video(estimator, clip, args.repeats, args.detect_every,
                                     os.path.join(scratch, f"{len(rows)}_{name}"))
                rows.append({"model": label, "format": name, **figures})
                print(json.dumps(rows[-1]), flush=True)
    command = "python -m bench.video " + " ".join(sys.argv[1:])
    print(f"\n`{command}` on {describe_machine()}, {datetime.date.today()}, load average "
          f"{load_before} -> {load_average()}; clip {args.size}, {args.frames} frames, "
          f"detector {args.detector} every {args.detect_every} frame(s)\n")
    print("| model | format | people/frame | frames/s end to end | detector ms/frame "
          "| pose model ms/frame |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['format']} | {r['people_per_frame']:.1f} | {r['fps']:.2f} | "
              f"{r['detector_ms']:.1f} | {r['pose_ms']:.1f} |")
    if args.json_out:
        write_json_atomic(args.json_out, {"command": command, "machine": describe_machine(),
                                          "date": str(datetime.date.today()), "rows": rows})


if __name__ == "__main__":
    main()
