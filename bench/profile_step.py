"""Where the training step's time and memory go, project and PyTorch peer side by side.

    python -m bench.profile_step --width 32 --input_size 256x192 --batch_size 16

The profile behind issue 14's CPU goals (BENCHMARKS.md "Where the gaps to the peer come from").
Every part runs in a process of its own, the project's and the peer's alternating:
1. **First step**, split into its phases: building the model and optimizer, tracing the step
   (`tf.function` concrete function; graph op count), the first call (grappler, whose passes'
   times come from TensorFlow's `meta_optimizer` log, then executor setup and the first run),
   and, for comparison, the step run eagerly (no tracing at all: the fastest route TensorFlow
   has to a first step). The peer's first step is one eager PyTorch step.
2. **Memory**: resident memory after each phase, and the peak bytes TensorFlow's CPU
   allocator held for tensors (`tf.config.experimental.get_memory_info`), so that tensors and
   the runtime can be told apart.
3. **Steady step, by op type**: the TensorFlow profiler's per-op times over `--steps` steps
   (summed over the inter-op threads, so above the wall time when ops overlap) and
   `torch.profiler`'s self CPU times for the peer.
4. **oneDNN primitives**: `ONEDNN_VERBOSE=1` over one steady step on each side, summed by
   primitive and propagation kind: both frameworks call the same oneDNN kernels for the
   convolutions, so this compares like with like.
5. **bfloat16 element-wise kernels** (ReLU, its gradient, add) on one HRNet-W32 stage-1
   activation, TensorFlow against PyTorch.

The peer parts need PyTorch (`pip install .[torch]`); without it only the project's columns
are filled.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
import time

from bench import peer
from bench.machine import (describe_machine, hide_jax_from_tensorflow, load_average,
                           peak_rss_gb)
from skelpose_tf.atomic_files import write_json_atomic

MARK = "PROFILE_STEP_MARK"
ELEMENTWISE_SHAPE = (16, 64, 48, 256)  # HRNet-W32 stage 1 at 256x192, batch 16, NHWC
GRAPPLER_TIME = re.compile(r"\] (\S[^:]*): Graph size after: .* time = ([0-9.]+)ms")


def _rss_gb() -> float:
    with open("/proc/self/status") as status:
        return int(status.read().split("VmRSS:")[1].split()[0]) / 2**20


def _project_setup(args):
    """`(tf, trainer, data)`: the real `PoseTrainer` on random images, phases timed."""
    phases = {}
    hide_jax_from_tensorflow()
    started = time.perf_counter()
    import keras  # noqa: F401
    import numpy as np
    import tensorflow as tf

    phases["import"] = (time.perf_counter() - started, _rss_gb())
    from skelpose_tf.codec import HeatmapCodec
    from skelpose_tf.models.pose_model import TOPOLOGIES, build_pose_model, parse_input_size
    from skelpose_tf.training.optimizers import FusedAdam
    from skelpose_tf.training.trainer import PoseTrainer

    started = time.perf_counter()
    size = parse_input_size(args.input_size)
    topology = TOPOLOGIES["tiny" if args.tiny_topology else "official"]
    network = build_pose_model(args.width, size, "coco", dtype=args.precision, **topology)
    trainer = PoseTrainer(network, HeatmapCodec(size, "coco"))
    trainer.compile(optimizer=FusedAdam(1e-3))
    phases["build model + optimizer"] = (time.perf_counter() - started, _rss_gb())
    rng = np.random.default_rng(0)
    images = tf.constant(rng.integers(0, 256, (args.batch_size, *size, 3)).astype("uint8"))
    labels = {"keypoints": tf.constant(rng.uniform(0, min(size), (args.batch_size, 17, 2)),
                                       tf.float32),
              "visibility": tf.ones((args.batch_size, 17))}
    return tf, trainer, (images, labels), phases


def project_child(args) -> dict:
    tf, trainer, data, phases = _project_setup(args)
    step = tf.function(trainer.train_step)
    started = time.perf_counter()
    graph_ops = len(step.get_concrete_function(data).graph.get_operations())
    phases["trace the step"] = (time.perf_counter() - started, _rss_gb())
    started = time.perf_counter()
    float(step(data)["loss"])
    phases["first call (grappler, setup, run)"] = (time.perf_counter() - started, _rss_gb())
    times = []
    for _ in range(args.steps):
        started = time.perf_counter()
        float(step(data)["loss"])
        times.append(time.perf_counter() - started)
    allocator_peak = tf.config.experimental.get_memory_info("CPU:0")["peak"] / 2**30
    peak_rss = peak_rss_gb()  # before the profiler and the eager steps add their own
    with tempfile.TemporaryDirectory() as trace_dir:
        tf.profiler.experimental.start(trace_dir)
        for _ in range(args.steps):
            float(step(data)["loss"])
        tf.profiler.experimental.stop()
        op_types = _tf_op_times(trace_dir, args.steps)
    eager = []
    for _ in range(2):
        started = time.perf_counter()
        float(trainer.train_step(data)["loss"])
        eager.append(time.perf_counter() - started)
    return {"phases": phases, "graph_ops": graph_ops, "step_s": sorted(times)[len(times) // 2],
            "allocator_peak_gb": allocator_peak, "peak_rss_gb": peak_rss,
            "op_types": op_types, "eager_steps_s": eager}


def _tf_op_times(trace_dir, steps) -> dict:
    """`{op type: [ms per step, ops per step]}` from the profiler's XSpace (executor threads)."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    path = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)[0]
    with open(path, "rb") as file:
        space.ParseFromString(file.read())
    totals = collections.defaultdict(lambda: [0.0, 0.0])
    for plane in space.planes:
        if plane.name != "/host:CPU":
            continue
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                metadata = plane.event_metadata[event.metadata_id]
                if ":" not in metadata.name or "::" in metadata.name:
                    continue  # executor and thread-pool regions, not ops
                total = totals[metadata.display_name or metadata.name.rsplit(":", 1)[-1]]
                total[0] += event.duration_ps / 1e9 / steps
                total[1] += 1 / steps
    return dict(totals)


def project_onednn_child(args) -> None:
    """Warm steps, then `MARK` and one step: the parent reads oneDNN's log after the mark."""
    tf, trainer, data, _ = _project_setup(args)
    step = tf.function(trainer.train_step)
    for _ in range(3):
        float(step(data)["loss"])
    sys.stdout.flush()
    os.write(1, f"{MARK}\n".encode())
    float(step(data)["loss"])


def _peer_setup(args):
    phases = {}
    started = time.perf_counter()
    import torch

    phases["import"] = (time.perf_counter() - started, _rss_gb())
    from bench.torch_hrnet import TorchPoseHRNet

    started = time.perf_counter()
    torch.manual_seed(0)
    height, width = (int(v) for v in args.input_size.split("x"))
    model = TorchPoseHRNet(args.width, 17).train().to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    phases["build model + optimizer"] = (time.perf_counter() - started, _rss_gb())
    images = torch.randn(args.batch_size, 3, height, width).contiguous(
        memory_format=torch.channels_last)
    targets = torch.rand(args.batch_size, 17, height // 4, width // 4)

    def step():  # bench/peer.py's "best" setting: channels_last + bf16 autocast
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outputs = model(images)
        loss = 0.5 * torch.mean(torch.square(outputs.float() - targets))
        loss.backward()
        optimizer.step()

    return torch, step, phases


def peer_child(args) -> dict:
    torch, step, phases = _peer_setup(args)
    started = time.perf_counter()
    step()
    phases["first step (eager)"] = (time.perf_counter() - started, _rss_gb())
    times = []
    for _ in range(args.steps):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    peak_rss = peak_rss_gb()  # before the profiler adds its own
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        for _ in range(args.steps):
            step()
    op_types = {event.key: [event.self_cpu_time_total / 1e3 / args.steps,
                            event.count / args.steps] for event in profile.key_averages()}
    return {"phases": phases, "step_s": sorted(times)[len(times) // 2],
            "peak_rss_gb": peak_rss, "op_types": op_types}


def peer_onednn_child(args) -> None:
    _, step, _ = _peer_setup(args)
    for _ in range(3):
        step()
    sys.stdout.flush()
    os.write(1, f"{MARK}\n".encode())
    step()


def elementwise_child(args) -> dict:
    """Median ms of bf16 ReLU, ReLU gradient and add on one stage-1 activation."""
    if args.child == "elementwise_tf":
        import tensorflow as tf

        first = tf.cast(tf.random.normal(ELEMENTWISE_SHAPE), tf.bfloat16)
        second = tf.cast(tf.random.normal(ELEMENTWISE_SHAPE), tf.bfloat16)
        kernels = {"relu": lambda: tf.nn.relu(first),
                   "relu gradient": lambda: tf.raw_ops.ReluGrad(gradients=first,
                                                                features=second),
                   "add": lambda: first + second}
        # One element of the result is read back, so that nothing is pruned; no copy out.
        calls = {name: tf.function(lambda kernel=kernel: tf.reshape(kernel(), [-1])[0])
                 for name, kernel in kernels.items()}
    else:
        import torch

        batch, height, width, channels = ELEMENTWISE_SHAPE
        first, second = (torch.randn(batch, channels, height, width).to(torch.bfloat16)
                         .contiguous(memory_format=torch.channels_last) for _ in range(2))
        calls = {"relu": lambda: torch.relu(first),
                 "relu gradient": lambda: torch.ops.aten.threshold_backward(first, second, 0),
                 "add": lambda: first + second}
    result = {}
    for name, call in calls.items():
        call()
        times = []
        for _ in range(20):
            started = time.perf_counter()
            call()
            times.append(time.perf_counter() - started)
        result[name] = 1e3 * sorted(times)[10]
    return result


def _run(args, child, environment=None) -> tuple:
    """Runs one `--child` part; `(stdout, stderr)`."""
    command = [sys.executable, "-m", "bench.profile_step", "--child", child,
               "--width", str(args.width), "--input_size", args.input_size,
               "--batch_size", str(args.batch_size), "--steps", str(args.steps),
               "--precision", args.precision] + (
                   ["--tiny_topology"] if args.tiny_topology else [])
    output = subprocess.run(command, capture_output=True, text=True,
                            env={**os.environ, **(environment or {})},
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if output.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{output.stderr[-3000:]}")
    return output.stdout, output.stderr


def onednn_times(log) -> dict:
    """`{(primitive, propagation): [ms, calls]}` of oneDNN `exec` lines after the last mark."""
    totals = collections.defaultdict(lambda: [0.0, 0])
    for line in log.split(MARK)[-1].splitlines():
        fields = line.strip().split(",")
        if not line.startswith("onednn_verbose") or "exec" not in fields[:4]:
            continue
        at = fields.index("exec")
        key = (fields[at + 2], fields[at + 4])
        totals[key][0] += float(fields[-1])
        totals[key][1] += 1
    return dict(totals)


def grappler_times(log) -> dict:
    """`{pass: ms}` summed over the meta-optimizer's iterations, from its log on stderr."""
    totals = collections.Counter()
    for name, milliseconds in GRAPPLER_TIME.findall(log):
        totals[name.split("{")[0]] += float(milliseconds)
    return dict(totals)


def profile(args) -> dict:
    with_peer = peer.torch_available()
    stdout, stderr = _run(args, "project", {"TF_CPP_MIN_LOG_LEVEL": "0",
                                            "TF_CPP_VMODULE": "meta_optimizer=1"})
    report = {"project": peer.result_of(stdout), "grappler_ms": grappler_times(stderr)}
    if with_peer:
        report["peer"] = peer.result_of(_run(args, "peer")[0])
    verbose = {"ONEDNN_VERBOSE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    report["onednn_project"] = onednn_times(_run(args, "project_onednn", verbose)[0])
    if with_peer:
        report["onednn_peer"] = onednn_times(_run(args, "peer_onednn", verbose)[0])
    report["elementwise_tf"] = peer.result_of(_run(args, "elementwise_tf")[0])
    if with_peer:
        report["elementwise_torch"] = peer.result_of(_run(args, "elementwise_torch")[0])
    return report


def print_report(args, report):
    project, other = report["project"], report.get("peer")
    print(f"\n`python -m bench.profile_step {' '.join(sys.argv[1:])}` on {describe_machine()}, "
          f"{datetime.date.today()}, load average {load_average()}\n")
    print("First step and memory, by phase (seconds, resident GB after the phase):\n")
    print("| phase | project s | project RSS | peer s | peer RSS |")
    print("|---|---|---|---|---|")
    for name, (seconds, rss) in project["phases"].items():
        theirs = (other or {}).get("phases", {}).get(name)
        print(f"| {name} | {seconds:.2f} | {rss:.2f} | "
              + (f"{theirs[0]:.2f} | {theirs[1]:.2f} |" if theirs else "| |"))
    if other:
        seconds, rss = other["phases"]["first step (eager)"]
        print(f"| peer first step (eager) | | | {seconds:.2f} | {rss:.2f} |")
    eager = project["eager_steps_s"]
    print(f"\nproject: traced step graph {project['graph_ops']} ops; grappler "
          f"{sum(report['grappler_ms'].values()) / 1e3:.2f} s of the first call; the step run "
          f"eagerly (no tracing) {eager[0]:.2f} s, then {eager[1]:.2f} s; steady step "
          f"{project['step_s']:.3f} s" + (f" (peer {other['step_s']:.3f} s)" if other else ""))
    print(f"memory: project peak RSS over the steady steps {project['peak_rss_gb']:.2f} GB, "
          f"of which TensorFlow's allocator held at most {project['allocator_peak_gb']:.2f} GB "
          "of tensors"
          + (f"; peer peak RSS {other['peak_rss_gb']:.2f} GB" if other else ""))
    print("\ngrappler passes (ms, both iterations): " + ", ".join(
        f"{name} {ms:.0f}" for name, ms in sorted(report["grappler_ms"].items(),
                                                   key=lambda item: -item[1])))
    print("\noneDNN primitives over one steady step (ms summed over calls; calls):\n")
    print("| primitive | propagation | project ms | calls | peer ms | calls |")
    print("|---|---|---|---|---|---|")
    theirs = report.get("onednn_peer", {})
    for key in sorted(set(report["onednn_project"]) | set(theirs),
                      key=lambda k: -report["onednn_project"].get(k, [0])[0]):
        ours = report["onednn_project"].get(key, [0.0, 0])
        peer_row = theirs.get(key, [0.0, 0])
        print(f"| {key[0]} | {key[1]} | {ours[0]:.1f} | {ours[1]} | {peer_row[0]:.1f} | "
              f"{peer_row[1]} |")
    for side, key in (("project (TensorFlow op types)", "project"),
                      ("peer (ATen ops, self time)", "peer")):
        if key not in report:
            continue
        print(f"\nsteady step by op, {side}: ms per step (summed over threads), calls\n")
        rows = sorted(report[key]["op_types"].items(), key=lambda item: -item[1][0])[:12]
        print("| op | ms per step | calls per step |")
        print("|---|---|---|")
        for name, (ms, count) in rows:
            print(f"| {name} | {ms:.1f} | {count:.0f} |")
    print(f"\nbfloat16 element-wise kernels on {list(ELEMENTWISE_SHAPE)} (median ms):\n")
    print("| kernel | TensorFlow | PyTorch |")
    print("|---|---|---|")
    for name, ms in report["elementwise_tf"].items():
        torch_ms = report.get("elementwise_torch", {}).get(name)
        print(f"| {name} | {ms:.2f} | " + (f"{torch_ms:.2f} |" if torch_ms else "|"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--input_size", default="256x192")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--precision", default="mixed_bfloat16")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--tiny_topology", action="store_true",
                        help="the project's one-module topology (tests); the peer keeps HRNet's")
    parser.add_argument("--json_out", default="")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    children = {"project": project_child, "peer": peer_child,
                "elementwise_tf": elementwise_child, "elementwise_torch": elementwise_child}
    if args.child in ("project_onednn", "peer_onednn"):
        (project_onednn_child if args.child == "project_onednn" else peer_onednn_child)(args)
        return
    if args.child:
        print(peer.RESULT_PREFIX + json.dumps(children[args.child](args)), flush=True)
        return
    report = profile(args)
    print_report(args, report)
    if args.json_out:
        write_json_atomic(args.json_out, {
            "machine": describe_machine(), "date": str(datetime.date.today()),
            "command": " ".join(sys.argv),
            **{k: v for k, v in report.items() if not k.startswith("onednn")},
            "onednn": {side: {" ".join(k): v for k, v in report[side].items()}
                       for side in report if side.startswith("onednn")}})


if __name__ == "__main__":
    main()
