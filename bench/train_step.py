"""Benchmark of the training step: images/s, time to the first step, peak memory, render share.

    python -m bench.train_step --width 32 --input_size 256x192 --batch_size 16 \
        --precisions float32,mixed_bfloat16 --jit false,true --steps 8

Each configuration runs in its own process (clean peak memory), on random images with random
keypoints fed from memory, through `PoseTrainer.fit` (the real step: on-device target rendering,
forward, masked losses, backward, Adam). Reported per configuration:
- images/s: median over `--steps` timed steps after the first (`--repeats` rounds, median);
- first step: seconds from `fit` start to the end of the first step (tracing + graph optimisation);
- peak RSS of the process;
- render share: time of `HeatmapCodec.encode` on the same batch over the step time, measured
  as in the step: inside one graph (compiled the same way), `RENDER_REPEATS` encodes per call so
  that the per-call dispatch of a standalone `tf.function` is not counted.
`--baseline` times HRNet without the skeletal module, the peer's architecture (like for like).
`--plain_keras` swaps in Keras' `BatchNormalization` and `Adam` for the project's fused
`FusedBatchNormalization` and `FusedAdam` (the ablation in BENCHMARKS.md).

The peer in the same run (`bench/peer.py`, where PyTorch is installed; `--peer false` skips it):
the official HRNet topology in PyTorch, in its default setting (NCHW fp32) and its best
(channels_last + bf16 autocast), same width, input size and batch. Project and peer processes
take turns for `--rounds` rounds (the order flips every round, so load changes on a shared
machine hit both alike); each figure is the median over rounds. The ratios printed are
project / peer: images/s (above 1: the project is faster), peak RSS and first step (below 1:
the project uses less), with the goals of issue 14 (bf16 step >= 1.1x the peer's best, peak RSS
<= the peer's, first step <= 2x the peer's).

Prints markdown tables with the command, machine and date, for BENCHMARKS.md.
"""

import argparse
import datetime
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench import peer  # noqa: E402
from bench.machine import (  # noqa: E402
    describe_machine, hide_jax_from_tensorflow, load_average, peak_rss_gb)
from skelpose_tf.atomic_files import write_json_atomic  # noqa: E402

RENDER_REPEATS = 10


def measure(args):
    hide_jax_from_tensorflow()
    import keras
    import numpy as np
    import tensorflow as tf

    from skelpose_tf.codec import HeatmapCodec
    from skelpose_tf.models import hrnet_blocks
    from skelpose_tf.models.pose_model import TOPOLOGIES, build_pose_model, parse_input_size
    from skelpose_tf.training.optimizers import FusedAdam
    from skelpose_tf.training.trainer import PoseTrainer

    optimizer = FusedAdam(1e-3)
    if args.plain_keras:
        # Ablation: Keras' own BatchNormalization and Adam instead of the fused kernels.
        hrnet_blocks.FusedBatchNormalization = keras.layers.BatchNormalization
        optimizer = keras.optimizers.Adam(1e-3)
    size = parse_input_size(args.input_size)
    topology = TOPOLOGIES["tiny" if args.tiny_topology else "official"]
    network = build_pose_model(args.width, size, "coco", dtype=args.precision,
                               skeletal_attention=not args.baseline, **topology)
    codec = HeatmapCodec(size, "coco")
    trainer = PoseTrainer(network, codec, micro_batches=args.micro_batches)
    trainer.compile(optimizer=optimizer, jit_compile=args.jit)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.batch_size, *size, 3)).astype("uint8")
    labels = {"keypoints": rng.uniform(0, min(size), (args.batch_size, 17, 2)).astype("float32"),
              "visibility": np.ones((args.batch_size, 17), "float32")}
    dataset = tf.data.Dataset.from_tensors((images, labels)).repeat()

    class Timer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.ends = []

        def on_train_batch_end(self, batch, logs=None):
            self.ends.append(time.perf_counter())

    timer = Timer()
    started = time.perf_counter()
    trainer.fit(dataset, epochs=1, steps_per_epoch=1 + args.steps * args.repeats, verbose=0,
                callbacks=[timer], shuffle=False)
    first_step = timer.ends[0] - started
    step_times = np.diff(timer.ends)
    rounds = [np.median(step_times[i * args.steps:(i + 1) * args.steps])
              for i in range(args.repeats)]
    step_time = float(np.median(rounds))

    # Rendering inside one graph, as in the step (no per-call dispatch): RENDER_REPEATS encodes
    # of shifted keypoints, every map reduced so that nothing can be pruned.
    @tf.function(jit_compile=args.jit)
    def encode_repeatedly(keypoints, visibility):
        total = tf.constant(0.0)
        for i in range(RENDER_REPEATS):
            targets = codec.encode(keypoints + 0.01 * i, visibility)
            total += (tf.reduce_sum(targets["heatmaps"])
                      + tf.reduce_sum(targets["skeletal_heatmaps"]))
        return total

    encode_repeatedly(labels["keypoints"], labels["visibility"])
    render_times = []
    for _ in range(10):
        begin = time.perf_counter()
        encode_repeatedly(labels["keypoints"], labels["visibility"]).numpy()
        render_times.append((time.perf_counter() - begin) / RENDER_REPEATS)
    render_time = float(np.median(render_times))
    return {
        "width": args.width, "input_size": args.input_size, "batch_size": args.batch_size,
        "precision": args.precision, "jit_compile": args.jit, "tiny_topology": args.tiny_topology,
        "plain_keras": args.plain_keras, "micro_batches": args.micro_batches,
        "baseline": args.baseline,
        "images_per_s": args.batch_size / step_time, "step_s": step_time,
        "first_step_s": first_step, "peak_rss_gb": peak_rss_gb(),
        "render_ms": render_time * 1e3, "render_share": render_time / step_time,
    }


def _median_row(rows: list) -> dict:
    """One row of the median of each number over the rounds' rows of one configuration."""
    merged = dict(rows[0])
    for key, value in rows[0].items():
        if isinstance(value, float):
            merged[key] = statistics.median(row[key] for row in rows)
    merged["rounds"] = len(rows)
    return merged


def _project_command(args, precision, jit) -> list:
    return [sys.executable, "-m", "bench.train_step", "--child", f"{precision}:{jit}",
            "--width", str(args.width), "--input_size", args.input_size,
            "--batch_size", str(args.batch_size), "--steps", str(args.steps),
            "--repeats", str(args.repeats), "--micro_batches", str(args.micro_batches)] + (
                ["--tiny_topology"] if args.tiny_topology else []) + (
                ["--plain_keras"] if args.plain_keras else []) + (
                ["--baseline"] if args.baseline else [])


def measure_all(args) -> tuple:
    """`(project rows, peer rows)`: every configuration measured `args.rounds` times in its own
    process, project and peer alternating (the order flips every round); medians."""
    jobs = [("project", (precision, jit), _project_command(args, precision, jit))
            for precision in args.precisions.split(",") for jit in args.jit.split(",")]
    with_peer = args.peer == "true" or (args.peer == "auto" and peer.torch_available())
    if with_peer:
        jobs += [("peer", setting, peer.child_command(
            "train", setting, args.width, args.input_size, args.batch_size, args.steps,
            args.peer_threads)) for setting in args.peer_settings.split(",")]
    results = {(side, key): [] for side, key, _ in jobs}
    for round_index in range(args.rounds):
        ordered = jobs if round_index % 2 == 0 else (
            [job for job in jobs if job[0] == "peer"] + [job for job in jobs if job[0] != "peer"])
        for side, key, command in ordered:
            row = peer.run_child(command)
            if row is not None:
                results[(side, key)].append(row)
                print(json.dumps(row), flush=True)
    rows = {key: _median_row(found) for key, found in results.items() if found}
    return ([row for (side, _), row in rows.items() if side == "project"],
            {key: row for (side, key), row in rows.items() if side == "peer"})


def print_tables(args, project_rows, peer_rows) -> list:
    """The markdown tables; returns the ratio rows (also for `--json_out`)."""
    print(f"\n`python -m bench.train_step {' '.join(sys.argv[1:])}` on {describe_machine()}, "
          f"{datetime.date.today()}, load average {load_average()}\n")
    print("| model | input | batch | precision | XLA | img/s | first step (s) | peak RSS (GB) "
          "| render (ms) | render share |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in project_rows:
        model = (f"W{r['width']}{' tiny' if r['tiny_topology'] else ''}"
                 f"{' baseline (no skeletal module)' if r['baseline'] else ''}"
                 f"{' (Keras BN + Adam)' if r['plain_keras'] else ''}"
                 + (f" ({r['micro_batches']} micro-batches)" if r["micro_batches"] > 1 else ""))
        print(f"| {model} | {r['input_size']} | {r['batch_size']} | {r['precision']} | "
              f"{'on' if r['jit_compile'] else 'off'} | {r['images_per_s']:.2f} | "
              f"{r['first_step_s']:.1f} | {r['peak_rss_gb']:.2f} | {r['render_ms']:.1f} | "
              f"{100 * r['render_share']:.1f}% |")
    if not peer_rows:
        return []
    print("\nPeer (PyTorch HRNet, bench/peer.py), same run:\n")
    print("| setting | img/s | first step (s) | peak RSS (GB) | threads |")
    print("|---|---|---|---|---|")
    for setting, r in peer_rows.items():
        layout = "channels_last + bf16 autocast" if setting == "best" else "NCHW fp32"
        print(f"| {setting} ({layout}) | {r['images_per_s']:.2f} | {r['first_step_s']:.1f} | "
              f"{r['peak_rss_gb']:.2f} | {r['threads']} |")
    ratios = []
    for r in project_rows:
        for setting, p in peer_rows.items():
            ratios.append({"precision": r["precision"], "jit_compile": r["jit_compile"],
                           "peer_setting": setting,
                           "images_per_s": r["images_per_s"] / p["images_per_s"],
                           "peak_rss": r["peak_rss_gb"] / p["peak_rss_gb"],
                           "first_step": r["first_step_s"] / p["first_step_s"]})
    print("\nRatios project / peer (img/s above 1: faster; RSS and first step below 1: less):\n")
    print("| project | peer | img/s | peak RSS | first step |")
    print("|---|---|---|---|---|")
    for q in ratios:
        print(f"| {q['precision']}{' XLA' if q['jit_compile'] else ''} | {q['peer_setting']} | "
              f"{q['images_per_s']:.2f}x | {q['peak_rss']:.2f}x | {q['first_step']:.2f}x |")
    best = [q for q in ratios if q["peer_setting"] == "best" and q["precision"] != "float32"]
    for q in best:
        def verdict(met):
            return "met" if met else "NOT met"

        print(f"\ngoals ({q['precision']} vs the peer's best): step {q['images_per_s']:.2f}x "
              f"(goal >= 1.1x: {verdict(q['images_per_s'] >= 1.1)}), peak RSS "
              f"{q['peak_rss']:.2f}x (goal <= 1: {verdict(q['peak_rss'] <= 1)}), first step "
              f"{q['first_step']:.2f}x (goal <= 2: {verdict(q['first_step'] <= 2)})")
    return ratios


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--input_size", default="256x192")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--precisions", default="float32,mixed_bfloat16")
    parser.add_argument("--jit", default="false", help="comma list of true/false")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2,
                        help="processes per configuration, project and peer alternating")
    parser.add_argument("--peer", choices=("auto", "true", "false"), default="auto",
                        help="time the PyTorch peer too (auto: where PyTorch is installed)")
    parser.add_argument("--peer_settings", default="default,best")
    parser.add_argument("--peer_threads", type=int, default=0,
                        help="torch threads (0: its default, all cores, as TensorFlow)")
    parser.add_argument("--tiny_topology", action="store_true")
    parser.add_argument("--micro_batches", type=int, default=1,
                        help="run each batch as this many sequential micro-batches")
    parser.add_argument("--baseline", action="store_true",
                        help="HRNet without the skeletal module, the peer's architecture (like "
                             "for like; the step still renders its targets)")
    parser.add_argument("--plain_keras", action="store_true",
                        help="Keras' BatchNormalization and Adam instead of the fused kernels")
    parser.add_argument("--json_out", default="")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        precision, jit = args.child.split(":")
        args.precision, args.jit = precision, jit == "true"
        print("RESULT " + json.dumps(measure(args)), flush=True)
        return
    if args.tiny_topology and args.peer != "false":
        print("note: the peer has the official topology only; --tiny_topology times the project "
              "on a smaller graph than the peer", file=sys.stderr)
    project_rows, peer_rows = measure_all(args)
    ratios = print_tables(args, project_rows, peer_rows)
    if args.json_out:
        write_json_atomic(args.json_out, {
            "machine": describe_machine(), "date": str(datetime.date.today()),
            "command": " ".join(sys.argv), "project": project_rows, "peer": peer_rows,
            "ratios": ratios})


if __name__ == "__main__":
    main()
