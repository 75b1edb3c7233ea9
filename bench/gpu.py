"""The GPU benchmark in one call: the project on Keras' JAX and PyTorch backends against the
PyTorch peer, training step and inference, in one run, written as one JSON with ratios.

Made for a machine with an NVIDIA GPU, PyTorch and JAX and no TensorFlow (`bench/gpu.sh` installs
the carried Keras wheels first, then runs this). Nothing here or in the children imports
TensorFlow. The measurements run in child processes (`--child`; `plan` lists them): Keras picks
its backend from KERAS_BACKEND at import, and a training measurement comes first in its process,
so its peak device memory is its own; the inference batch sizes follow the last training batch
in its process. A child prints one `RESULT {json}` line per measurement as it finishes.

Measurements (W32 256x192 COCO unless `--tiny`):
- `keras-jax` / `keras-torch`, train: `build_pose_model(32, (256, 192), "coco",
  dtype="mixed_bfloat16")`, `PoseTrainer(network, network.codec)` compiled with `FusedAdam`
  (Keras' Adam off TensorFlow) and Keras' default `jit_compile` (XLA on JAX, eager on PyTorch),
  `fit` on in-memory random uint8 images [N, H, W, 3] and keypoints [N, 17, 2] ((x, y)
  input pixels; no tf.data); targets are rendered inside the step. Images/s is the batch size
  over the median step time (each step's end synchronised by reading its loss); `first_step_s`
  is from `fit` to the end of the first step (tracing and compilation included); peak device
  memory from `device.memory_stats()["peak_bytes_in_use"]` (JAX) or
  `torch.cuda.max_memory_allocated()` (PyTorch).
- `keras-jax` / `keras-torch`, inference: the network's forward pass in inference mode on
  float32 images already on the device (JAX: `jax.jit` of `stateless_call`, what `predict`
  compiles; PyTorch: the eager call under `torch.no_grad`, Keras' default), median call time.
- `pytorch-peer`: `bench.peer.measure_train` / `measure_inference` in its best setting
  (channels_last + bf16 autocast, cuDNN autotuning on as the official code sets it), eager and
  with `torch.compile` (`--peer_compile`; on by default on CUDA only). The ratios use whichever
  of the two is faster for that batch size.

The run keeps to `--budget_s` (wall clock of all children): the most important measurements run
first, each child is stopped at the budget's end or at `--child_timeout_s`, and what did not
fit is listed as skipped with the reason.

    bash bench/gpu.sh                                   # on the GPU machine: the whole thing
    python -m bench.gpu --device cuda --out runs/gpu/gpu.json --budget_s 420
    python -m bench.gpu --device cpu --tiny             # the CPU path (tests/test_gpu_bench.py)
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENGINES = ("keras-jax", "keras-torch", "pytorch-peer")
KERAS_BACKENDS = {"keras-jax": "jax", "keras-torch": "torch"}
FULL = {"width": 32, "input_size": "256x192", "topology": "official", "train_batches": (32, 64),
        "inference_batches": (1, 64), "steps": 20}
TINY = {"width": 8, "input_size": "64x64", "topology": "tiny", "train_batches": (2,),
        "inference_batches": (1, 2), "steps": 2}
RESULT_PREFIX = "RESULT "
SCHEMA = "skelpose_tf.bench.gpu/1"


def _parse_size(text) -> tuple:
    height, width = (int(v) for v in str(text).lower().split("x"))
    return height, width


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _median(values) -> float:
    values = sorted(values)
    return values[len(values) // 2]


# --- children: one measurement each, in its own process -------------------------------------


def _accelerator(device):
    """The child's framework-level device check and memory reader for `device` ("cuda" or
    "cpu"): `(device name, peak_device_gb() -> float | None, synchronize())`. Raises
    RuntimeError when "cuda" was asked for and the framework does not see a GPU, so that a CPU
    fallback is never reported as a GPU figure."""
    backend = os.environ.get("KERAS_BACKEND", "torch")
    if backend == "jax":
        import jax

        platform_name = jax.default_backend()
        if device == "cuda" and platform_name != "gpu":
            raise RuntimeError(f"JAX runs on {platform_name!r}, not on a GPU")
        chip = jax.devices()[0]

        def peak():
            stats = chip.memory_stats() if device == "cuda" else None
            return stats["peak_bytes_in_use"] / 2**30 if stats else None

        return getattr(chip, "device_kind", str(chip)), peak, lambda: None
    import torch

    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("PyTorch sees no CUDA device")
        return (torch.cuda.get_device_name(0), lambda: torch.cuda.max_memory_allocated() / 2**30,
                torch.cuda.synchronize)
    return platform.processor() or "cpu", lambda: None, lambda: None


def _build_network(width, input_size, topology):
    from skelpose_tf.models.pose_model import TOPOLOGIES, build_pose_model

    return build_pose_model(width, _parse_size(input_size), "coco", dtype="mixed_bfloat16",
                            **TOPOLOGIES[topology])


def random_training_data(count, input_size, num_keypoints=17, seed=0):
    """`(images uint8 [count, H, W, 3], {"keypoints": float32 [count, K, 2] as (x, y) input
    pixels inside the crop, "visibility": float32 [count, K] of ones})`."""
    import numpy as np

    height, width = _parse_size(input_size)
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, height, width, 3), dtype=np.uint8)
    keypoints = rng.uniform(0, 1, (count, num_keypoints, 2)) * np.array([width - 1, height - 1])
    return images, {"keypoints": keypoints.astype(np.float32),
                    "visibility": np.ones((count, num_keypoints), np.float32)}


def measure_keras_train(width, input_size, topology, batch_size, steps, device) -> dict:
    """One Keras training run of `steps + 1` steps on the current backend (see the module
    docstring); the first step is reported apart and left out of the median."""
    import keras

    from skelpose_tf.training.optimizers import FusedAdam
    from skelpose_tf.training.trainer import PoseTrainer

    device_name, peak_device_gb, synchronize = _accelerator(device)
    started = time.perf_counter()
    network = _build_network(width, input_size, topology)
    trainer = PoseTrainer(network, network.codec)
    trainer.compile(optimizer=FusedAdam(1e-3))
    build_s = time.perf_counter() - started
    images, labels = random_training_data(batch_size * (steps + 1), input_size)
    ends = []

    class StepClock(keras.callbacks.Callback):
        """Times each step's end; reading the loss waits for the step to finish."""

        def on_train_batch_end(self, batch, logs=None):
            float(keras.ops.convert_to_numpy(logs["loss"]))
            synchronize()
            ends.append(time.perf_counter())

    fit_started = time.perf_counter()
    history = trainer.fit(images, labels, batch_size=batch_size, epochs=1, shuffle=False,
                          verbose=0, callbacks=[StepClock()])
    step_s = _median([b - a for a, b in zip(ends, ends[1:])])
    loss = float(history.history["loss"][-1])
    if not math.isfinite(loss):
        raise RuntimeError(f"the training loss is {loss}")
    result = {"images_per_s": batch_size / step_s, "step_s": step_s,
              "first_step_s": ends[0] - fit_started, "build_s": build_s,
              "steps": len(ends) - 1, "loss": loss, "jit_compile": bool(trainer.jit_compile),
              "device_name": device_name, "peak_rss_gb": _peak_rss_gb()}
    peak = peak_device_gb()
    if peak is not None:
        result["peak_device_gb"] = peak
    return result


def measure_keras_inference(width, input_size, topology, batch_size, steps, device) -> dict:
    """The network's inference-mode forward pass at one batch size (see the module
    docstring): median of `steps` calls after the first (`first_call_s`, compilation
    included)."""
    import keras
    import numpy as np

    device_name, _, synchronize = _accelerator(device)
    network = _build_network(width, input_size, topology)
    height, width_px = _parse_size(input_size)
    images = keras.ops.convert_to_tensor(
        np.random.default_rng(0).uniform(0, 255, (batch_size, height, width_px, 3))
        .astype(np.float32))
    if keras.backend.backend() == "jax":
        import jax

        trainable = [v.value for v in network.trainable_variables]
        non_trainable = [v.value for v in network.non_trainable_variables]
        forward = jax.jit(lambda x: network.stateless_call(trainable, non_trainable, x,
                                                           training=False)[0])

        def call():
            jax.block_until_ready(forward(images))
    else:
        import torch

        def call():
            with torch.no_grad():
                network(images, training=False)
            synchronize()

    times = []
    for _ in range(steps + 1):
        begin = time.perf_counter()
        call()
        times.append(time.perf_counter() - begin)
    call_s = _median(times[1:])
    return {"images_per_s": batch_size / call_s, "call_s": call_s, "first_call_s": times[0],
            "steps": steps, "device_name": device_name}


def measure_peer(mode, width, input_size, batch_size, steps, device, compile) -> dict:
    """`bench.peer`'s measurement in its best setting on `device`, cuDNN autotuning on (a
    no-op on the CPU)."""
    import torch

    from bench import peer

    device_name, _, _ = _accelerator(device)
    torch.backends.cudnn.benchmark = True
    measure = peer.measure_train if mode == "train" else peer.measure_inference
    result = measure(width, input_size, batch_size, "best", steps, device, 0, compile)
    keep = ("images_per_s", "step_s", "first_step_s", "peak_rss_gb", "peak_device_gb")
    if mode == "inference":  # its process may have trained first: no memory figure
        keep = ("images_per_s", "call_s", "first_call_s")
    return {**{k: result[k] for k in keep if k in result}, "steps": steps,
            "device_name": device_name, "cudnn_benchmark": True}


def run_child(args):
    """Runs one job's measurements in this process, printing a `RESULT {json}` line after
    each, so that a child stopped at the time budget keeps what it finished."""
    engine = args.child
    measurements = [("train", args.train_batch)] if args.train_batch else []
    measurements += [("inference", int(b)) for b in args.inference_batches.split(",") if b]
    for mode, batch in measurements:
        if engine == "pytorch-peer":
            result = measure_peer(mode, args.width, args.input_size, batch, args.steps,
                                  args.device, args.peer_compile == "on")
        else:
            measure = measure_keras_train if mode == "train" else measure_keras_inference
            result = measure(args.width, args.input_size, args.topology, batch, args.steps,
                             args.device)
        print(RESULT_PREFIX + json.dumps({"mode": mode, "batch_size": batch, **result}),
              flush=True)


# --- the parent: plan, run within the budget, collect, compare --------------------------------


def plan(config, device, peer_compile) -> list:
    """The jobs (one child process each) in the order they run, most important first: dicts of
    `engine`, `train_batch` (or None), `inference_batches` and `compile` (the peer's
    torch.compile; None for Keras). A training measurement comes first in its process, so its
    peak device memory is its own; the inference batches share the process of the last
    training batch (their memory is not reported)."""
    compiled = peer_compile == "on" or (peer_compile == "auto" and device == "cuda")
    *first, last = config["train_batches"]
    variants = [("keras-jax", None), ("keras-torch", None), ("pytorch-peer", False)]
    jobs = [{"engine": engine, "train_batch": batch, "inference_batches": (), "compile": c}
            for batch in first for engine, c in variants]
    jobs += [{"engine": engine, "train_batch": last,
              "inference_batches": tuple(config["inference_batches"]), "compile": c}
             for engine, c in variants]
    if compiled:
        jobs += [{"engine": "pytorch-peer", "train_batch": batch, "inference_batches": (),
                  "compile": True} for batch in first]
        jobs.append({"engine": "pytorch-peer", "train_batch": last,
                     "inference_batches": tuple(config["inference_batches"]), "compile": True})
    return jobs


def _measurements(job) -> list:
    """The (mode, batch size) pairs a job measures, in order."""
    return ([("train", job["train_batch"])] if job["train_batch"] else []) + [
        ("inference", batch) for batch in job["inference_batches"]]


def child_command(job, config, device) -> tuple:
    """`(argv, environment)` of one job's child process."""
    argv = [sys.executable, "-m", "bench.gpu", "--child", job["engine"],
            "--device", device, "--width", str(config["width"]),
            "--input_size", config["input_size"], "--topology", config["topology"],
            "--train_batch", str(job["train_batch"] or 0),
            "--inference_batches", ",".join(str(b) for b in job["inference_batches"]),
            "--steps", str(config["steps"]),
            "--peer_compile", "on" if job["compile"] else "off"]
    environment = {**os.environ, "KERAS_BACKEND": KERAS_BACKENDS.get(job["engine"], "torch"),
                   "PYTHONUNBUFFERED": "1",
                   "PYTHONPATH": os.pathsep.join(
                       p for p in (REPO_ROOT, os.environ.get("PYTHONPATH")) if p)}
    if device == "cpu":
        # One intra-op thread by default: PyTorch's OpenMP threads spinning against each other
        # on a shared 2-core machine made a tiny step 100 times slower.
        environment.update(CUDA_VISIBLE_DEVICES="", JAX_PLATFORMS="cpu",
                           OMP_NUM_THREADS=str(config.get("cpu_threads", 1)))
    return argv, environment


def _missing_framework(engine) -> str | None:
    needed = ("jax",) if engine == "keras-jax" else ("torch",)
    needed += ("keras",) if engine.startswith("keras") else ()
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    return f"{', '.join(missing)} not installed" if missing else None


def run_job(job, config, device, timeout_s) -> list:
    """Runs one job's child: one row per measurement, each the job's `engine` and `compile`,
    `mode`, `batch_size`, `status` ("ok", "failed", "timed_out"), `wall_s` (the whole
    child's) and the figures or a `reason`."""
    argv, environment = child_command(job, config, device)
    started = time.perf_counter()
    # A session of its own, so that a stop also ends the processes the child started
    # (torch.compile's compile workers).
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=environment, cwd=REPO_ROOT, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
        failure = None
        if process.returncode != 0:
            failure = ("failed", f"exit status {process.returncode}")
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        failure = ("timed_out", f"stopped after {timeout_s:.0f} s (budget or --child_timeout_s)")
    wall_s = time.perf_counter() - started
    done = {}
    for line in stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            result = json.loads(line[len(RESULT_PREFIX):])
            done[(result["mode"], result["batch_size"])] = result
    tail = (stderr or stdout or "").strip().splitlines()[-12:]
    if failure and failure[0] == "failed":  # the reason: the child's last line, the exception
        failure = ("failed", failure[1] + (": " + tail[-1] if tail else ""))
    rows = []
    for mode, batch in _measurements(job):
        row = {"engine": job["engine"], "compile": job["compile"], "mode": mode,
               "batch_size": batch, "wall_s": wall_s}
        if (mode, batch) in done:
            row.update(status="ok", **done[(mode, batch)])
        else:
            row.update(status=failure[0] if failure else "failed",
                       reason=failure[1] if failure else "the child printed no result",
                       log_tail=tail)
        rows.append(row)
    return rows


def run_all(jobs, config, device, budget_s, child_timeout_s, min_start_s=15.0,
            report=print) -> list:
    """Runs `jobs` in order within `budget_s` seconds; a job that cannot start with at least
    `min_start_s` left, or whose framework is missing, is `skipped` with the reason. One row
    per measurement (see `run_job`)."""
    started = time.perf_counter()
    results = []
    for job in jobs:
        left = budget_s - (time.perf_counter() - started)
        missing = _missing_framework(job["engine"])
        if missing or left < min_start_s:
            reason = missing or f"time budget: {max(left, 0):.0f} s of {budget_s:.0f} s left"
            rows = [{"engine": job["engine"], "compile": job["compile"], "mode": mode,
                     "batch_size": batch, "status": "skipped", "reason": reason}
                    for mode, batch in _measurements(job)]
        else:
            rows = run_job(job, config, device, min(left, child_timeout_s))
        for row in rows:
            report(f"{_label(row)}: {row['status']}"
                   + (f" (process {row['wall_s']:.1f} s)" if "wall_s" in row else "")
                   + (f" - {row['reason']}" if "reason" in row else ""))
        results += rows
    return results


def _label(result) -> str:
    compiled = " +compile" if result.get("compile") else ""
    return f"{result['engine']} {result['mode']} b{result['batch_size']}{compiled}"


FIGURES = {"train": (("images_per_s", "higher"), ("first_step_s", "lower"),
                     ("peak_device_gb", "lower")),
           "inference": (("images_per_s", "higher"),)}


def ratios(results) -> list:
    """project / peer for every figure where both ran: for each mode and batch size the peer
    reference is its faster (images/s) variant, eager or compiled."""
    rows = []
    ok = [r for r in results if r["status"] == "ok"]
    for mode, figures in FIGURES.items():
        for batch in sorted({r["batch_size"] for r in ok if r["mode"] == mode}):
            peers = [r for r in ok if r["engine"] == "pytorch-peer" and r["mode"] == mode
                     and r["batch_size"] == batch]
            if not peers:
                continue
            peer = max(peers, key=lambda r: r["images_per_s"])
            for project in (r for r in ok if r["mode"] == mode and r["batch_size"] == batch
                            and r["engine"] != "pytorch-peer"):
                for figure, better in figures:
                    if figure in project and figure in peer:
                        rows.append({"engine": project["engine"], "mode": mode,
                                     "batch_size": batch, "figure": figure, "better": better,
                                     "project": project[figure], "peer": peer[figure],
                                     "peer_compile": peer["compile"],
                                     "ratio": project[figure] / peer[figure]})
    return rows


def gpu_description(results, device) -> str:
    """nvidia-smi's name, memory and driver of the first GPU, else what the children saw."""
    if device == "cuda" and shutil.which("nvidia-smi"):
        query = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                                "--format=csv,noheader"], capture_output=True, text=True)
        if query.returncode == 0 and query.stdout.strip():
            name, memory, driver = (part.strip() for part in
                                    query.stdout.strip().splitlines()[0].split(","))
            return f"{name}, {memory}, driver {driver}"
    names = sorted({r["device_name"] for r in results if r.get("device_name")})
    if device == "cpu":
        from bench.machine import describe_machine

        return describe_machine()
    return ", ".join(names) or "unknown"


def versions() -> dict:
    found = {}
    for name in ("keras", "jax", "jaxlib", "torch", "numpy"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def table(report) -> str:
    """The report's results and ratios as two plain-text tables."""
    lines = [f"{'measurement':36} {'status':9} {'img/s':>9} {'step ms':>9} {'first s':>8} "
             f"{'peak GB':>8}"]
    for r in report["results"]:
        step = r.get("step_s", r.get("call_s"))
        first = r.get("first_step_s", r.get("first_call_s"))
        cells = [f"{r['images_per_s']:9.1f}" if "images_per_s" in r else f"{'-':>9}",
                 f"{step * 1e3:9.1f}" if step else f"{'-':>9}",
                 f"{first:8.1f}" if first else f"{'-':>8}",
                 f"{r['peak_device_gb']:8.2f}" if "peak_device_gb" in r else f"{'-':>8}"]
        lines.append(f"{_label(r):36} {r['status']:9} {' '.join(cells)}")
    lines += ["", f"{'project / peer (best)':36} {'figure':14} {'ratio':>7}  better"]
    for row in report["ratios"]:
        label = f"{row['engine']} {row['mode']} b{row['batch_size']}"
        lines.append(f"{label:36} {row['figure']:14} {row['ratio']:7.2f}  {row['better']}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--tiny", action="store_true",
                        help="width 8, 64x64 tiny topology, batch 2, 2 steps (the CPU test)")
    parser.add_argument("--budget_s", type=float, default=420.0,
                        help="wall-clock seconds for all measurements together")
    parser.add_argument("--child_timeout_s", type=float, default=240.0,
                        help="the most seconds one measurement may take")
    parser.add_argument("--peer_compile", choices=("auto", "on", "off"), default="auto",
                        help="also time the peer under torch.compile (auto: on CUDA only)")
    parser.add_argument("--steps", type=int, default=0, help="timed steps (0: 20, tiny 2)")
    parser.add_argument("--cpu_threads", type=int, default=1,
                        help="OMP_NUM_THREADS of the children with --device cpu")
    parser.add_argument("--out", default=os.path.join("runs", "gpu", "gpu.json"))
    # a child's own arguments
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--width", type=int, default=32, help=argparse.SUPPRESS)
    parser.add_argument("--input_size", default="256x192", help=argparse.SUPPRESS)
    parser.add_argument("--topology", default="official", help=argparse.SUPPRESS)
    parser.add_argument("--train_batch", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--inference_batches", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_child(args)
        return

    from skelpose_tf.atomic_files import write_json_atomic

    config = dict(TINY if args.tiny else FULL)
    if args.steps:
        config["steps"] = args.steps
    if args.device == "cpu":
        config["cpu_threads"] = args.cpu_threads
    if args.tiny:
        config["note"] = ("tiny: the project's tiny topology against the peer's official one, "
                          "a check that the path runs; its ratios compare nothing")
    started = time.perf_counter()
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    jobs = plan(config, args.device, args.peer_compile)
    print(f"{len(jobs)} processes, budget {args.budget_s:.0f} s", flush=True)
    results = run_all(jobs, config, args.device, args.budget_s, args.child_timeout_s,
                      report=lambda line: print(line, flush=True))
    report = {"schema": SCHEMA, "date": date, "device": args.device,
              "hardware": gpu_description(results, args.device), "host": platform.node(),
              "python": platform.python_version(), "versions": versions(),
              "config": {**config, "dtype": "mixed_bfloat16", "keypoint_set": "coco",
                         "budget_s": args.budget_s, "child_timeout_s": args.child_timeout_s,
                         "peer_setting": "best (channels_last + bf16 autocast)"},
              "results": results, "ratios": ratios(results),
              "skipped": [f"{_label(r)}: {r['reason']}" for r in results if r["status"] != "ok"],
              "elapsed_s": time.perf_counter() - started}
    write_json_atomic(args.out, report, indent=1)
    print(table(report))
    print(f"wrote {args.out} ({report['hardware']}, {report['elapsed_s']:.0f} s)")
    if not any(r["status"] == "ok" for r in results):
        sys.exit("gpu.py: no measurement succeeded (see the reasons above and in the JSON)")


if __name__ == "__main__":
    main()
