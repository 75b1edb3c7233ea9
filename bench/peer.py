"""The PyTorch peer, timed in the same run as the project: training step and inference.

The peer is the official pose_hrnet topology in PyTorch (`bench/torch_hrnet.py`: in-place ReLUs
and residual additions as the official code) trained the official way: Adam, the JointsMSELoss
`0.5 * mean((w * (pred - target))^2)` over keypoint heatmaps with target weights, targets
given (the official data loader renders them on the CPU, outside the step, so the peer's step
does less work than the project's, which renders its targets inside the step).

Settings (`SETTINGS`):
- `default`: what a PyTorch user gets without trying: NCHW, float32;
- `best`: the fastest documented CPU/GPU setting: `channels_last` memory format and bfloat16
  autocast (`torch.autocast(device_type, torch.bfloat16)`); `compile=True` adds `torch.compile`.

Every measurement runs in a process of its own (clean peak memory, no warm caches from the
other side): `python -m bench.peer --child train:best --width 32 ...` prints one `RESULT {json}`
line, and `bench.train_step` starts these children alternately with its own. For inference,
`PeerServer` keeps one peer process per setting alive and times batches of calls on request,
so `bench.inference` can take turns between its own configurations and the peer's within one
run; while waiting for a request the peer's threads sleep and do not take CPU from the other
side.

    python -m bench.peer --mode train --setting best --width 32 --input_size 256x192 \
        --batch_size 16 --steps 5
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time

from bench.machine import peak_rss_gb

SETTINGS = {"default": {"channels_last": False, "bf16": False},
            "best": {"channels_last": True, "bf16": True}}
NUM_KEYPOINTS = 17
RESULT_PREFIX = "RESULT "


def torch_available() -> bool:
    """Whether PyTorch is importable (`pip install .[torch]`)."""
    return importlib.util.find_spec("torch") is not None


def _parse_size(text) -> tuple:
    height, width = (int(v) for v in str(text).lower().split("x"))
    return height, width


def _setup(width, input_size, batch_size, setting, device, threads, train):
    import torch

    from bench.torch_hrnet import TorchPoseHRNet

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    options = SETTINGS[setting]
    height, width_px = _parse_size(input_size)
    model = TorchPoseHRNet(width, NUM_KEYPOINTS).to(device)
    model.train(train)
    images = torch.randn(batch_size, 3, height, width_px, device=device)
    if options["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    return torch, model, images, options


def _synchronize(torch, device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _peak_memory_gb(torch, device) -> dict:
    result = {"peak_rss_gb": peak_rss_gb()}
    if str(device).startswith("cuda"):
        result["peak_device_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return result


def measure_train(width=32, input_size="256x192", batch_size=16, setting="best", steps=5,
                  device="cpu", threads=0, compile=False) -> dict:
    """The peer's training step: images/s (median of `steps` steps after the first), seconds
    to the end of the first step (from the start of the loop), peak memory."""
    torch, model, images, options = _setup(width, input_size, batch_size, setting, device,
                                           threads, train=True)
    height, width_px = _parse_size(input_size)
    targets = torch.rand(batch_size, NUM_KEYPOINTS, height // 4, width_px // 4, device=device)
    weights = torch.ones(batch_size, NUM_KEYPOINTS, 1, 1, device=device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    forward = torch.compile(model) if compile else model
    device_type = "cuda" if str(device).startswith("cuda") else "cpu"

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=options["bf16"]):
            outputs = forward(images)
        loss = 0.5 * torch.mean(torch.square(weights * (outputs.float() - targets)))
        loss.backward()
        optimizer.step()

    started = time.perf_counter()
    step()
    _synchronize(torch, device)
    ends = [time.perf_counter()]
    for _ in range(steps):
        step()
        _synchronize(torch, device)
        ends.append(time.perf_counter())
    step_s = sorted(b - a for a, b in zip(ends, ends[1:]))[steps // 2]
    return {"peer": "pytorch", "mode": "train", "setting": setting, "compile": compile,
            "width": width, "input_size": input_size, "batch_size": batch_size,
            "device": str(device), "threads": torch.get_num_threads(),
            "images_per_s": batch_size / step_s, "step_s": step_s,
            "first_step_s": ends[0] - started, **_peak_memory_gb(torch, device)}


def measure_inference(width=32, input_size="256x192", batch_size=16, setting="best", steps=5,
                      device="cpu", threads=0, compile=False) -> dict:
    """The peer's forward pass (eval mode, `inference_mode`): images/s, median of `steps`
    calls after one warm-up call."""
    torch, model, images, options = _setup(width, input_size, batch_size, setting, device,
                                           threads, train=False)
    forward = torch.compile(model) if compile else model
    device_type = "cuda" if str(device).startswith("cuda") else "cpu"
    times = []
    with torch.inference_mode(), torch.autocast(device_type, dtype=torch.bfloat16,
                                                enabled=options["bf16"]):
        for _ in range(steps + 1):
            begin = time.perf_counter()
            forward(images)
            _synchronize(torch, device)
            times.append(time.perf_counter() - begin)
    call_s = sorted(times[1:])[steps // 2]
    return {"peer": "pytorch", "mode": "inference", "setting": setting, "compile": compile,
            "width": width, "input_size": input_size, "batch_size": batch_size,
            "device": str(device), "threads": torch.get_num_threads(),
            "images_per_s": batch_size / call_s, "call_s": call_s, "first_call_s": times[0],
            **_peak_memory_gb(torch, device)}


def _serve(setting, width, input_size, threads):
    """The `--serve` loop: one eval-mode peer, then for each request line `{"batch", "calls",
    "warmup"}` on stdin one reply line `{"wall": [s...], "cpu": [s...]}` on stdout."""
    torch, model, _, options = _setup(width, input_size, 1, setting, "cpu", threads, train=False)
    height, width_px = _parse_size(input_size)
    print(json.dumps({"ready": True, "threads": torch.get_num_threads(),
                      "parameters": sum(p.numel() for p in model.parameters())}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        images = torch.randn(request["batch"], 3, height, width_px)
        if options["channels_last"]:
            images = images.contiguous(memory_format=torch.channels_last)
        wall, cpu = [], []
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16,
                                                    enabled=options["bf16"]):
            for index in range(request["warmup"] + request["calls"]):
                started_wall, started_cpu = time.perf_counter(), time.process_time()
                model(images)
                if index >= request["warmup"]:
                    wall.append(time.perf_counter() - started_wall)
                    cpu.append(time.process_time() - started_cpu)
        print(json.dumps({"wall": wall, "cpu": cpu}), flush=True)


class PeerServer:
    """A peer inference process kept alive (`--serve`): `time_calls(batch, calls, warmup)`
    returns the wall and CPU seconds of each timed call, measured inside the peer process.

    Attributes:
        setting: "default" or "best"; parameters: the peer's parameter count.
    """

    def __init__(self, setting, width=32, input_size="256x192", threads=0):
        self.setting = setting
        command = [sys.executable, "-m", "bench.peer", "--serve", setting, "--width", str(width),
                   "--input_size", str(input_size), "--threads", str(threads)]
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        ready = json.loads(self.process.stdout.readline() or "{}")
        if not ready.get("ready"):
            raise RuntimeError(f"The PyTorch peer ({setting}) did not start: {command}")
        self.parameters = ready["parameters"]
        self.threads = ready["threads"]

    def time_calls(self, batch, calls, warmup=0) -> tuple:
        self.process.stdin.write(json.dumps({"batch": batch, "calls": calls,
                                             "warmup": warmup}) + "\n")
        self.process.stdin.flush()
        reply = json.loads(self.process.stdout.readline())
        return reply["wall"], reply["cpu"]

    def close(self):
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(timeout=60)


def child_command(mode, setting, width, input_size, batch_size, steps, threads=0,
                  device="cpu", compile=False) -> list:
    """The command line of one peer measurement in its own process."""
    return [sys.executable, "-m", "bench.peer", "--child", f"{mode}:{setting}",
            "--width", str(width), "--input_size", str(input_size),
            "--batch_size", str(batch_size), "--steps", str(steps), "--threads", str(threads),
            "--device", device] + (["--compile"] if compile else [])


def run_child(command, environment=None) -> dict | None:
    """Runs a `--child` command; its `RESULT` dict, or None (its stderr tail printed)."""
    output = subprocess.run(command, capture_output=True, text=True,
                            env={**os.environ, **(environment or {})},
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    result = result_of(output.stdout)
    if result is None:
        print(f"{' '.join(command)} failed:\n{output.stderr[-2000:]}", file=sys.stderr)
    return result


def result_of(stdout) -> dict | None:
    """The dict of the last `RESULT {json}` line a `--child` process printed, or None."""
    lines = [line for line in stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    return json.loads(lines[-1][len(RESULT_PREFIX):]) if lines else None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("train", "inference"), default="train")
    parser.add_argument("--setting", choices=tuple(SETTINGS), default="best")
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--input_size", default="256x192")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: its default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--serve", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _serve(args.serve, args.width, args.input_size, args.threads)
        return
    mode, setting = args.child.split(":") if args.child else (args.mode, args.setting)
    measure = measure_train if mode == "train" else measure_inference
    result = measure(args.width, args.input_size, args.batch_size, setting, args.steps,
                     args.device, args.threads, args.compile)
    print((RESULT_PREFIX if args.child else "") + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
