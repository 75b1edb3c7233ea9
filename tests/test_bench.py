"""The benchmark scripts run (so that they cannot rot unnoticed) and report consistent figures.

Tiny configurations only: these tests check that every script runs end to end and that its JSON
is complete and self-consistent (ratios are the quotients of the figures they quote), never a
speed. The PyTorch peer's tests need torch (the `backends` step of `.ci/run`).
"""

import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest

from pose_fixtures import REPO_ROOT, save_tiny_model

HAS_TORCH = importlib.util.find_spec("torch") is not None


def run_module(module, *args, timeout=900):
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
                   "PYTHONPATH": os.pathsep.join([REPO_ROOT, os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO_ROOT,
                            env=environment, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.parametrize("baseline", [False, True])
def test_train_step_bench(tmp_path, baseline):
    out = tmp_path / "train_step.json"
    run_module("bench.train_step", "--width", 8, "--input_size", "64x64", "--batch_size", 2,
               "--steps", 1, "--rounds", 1, "--precisions", "float32", "--tiny_topology",
               "--peer", "false", "--json_out", out, *(["--baseline"] if baseline else []))
    report = json.loads(out.read_text())
    [row] = report["project"]
    assert row["precision"] == "float32" and row["batch_size"] == 2
    assert row["baseline"] is baseline
    for key in ("images_per_s", "first_step_s", "peak_rss_gb", "render_ms"):
        assert positive(row[key]), (key, row)
    assert report["peer"] == {} and report["ratios"] == []


def _profile_step(tmp_path):
    out = tmp_path / "profile.json"
    run_module("bench.profile_step", "--width", 8, "--input_size", "64x64", "--batch_size", 2,
               "--steps", 1, "--tiny_topology", "--json_out", out)
    return json.loads(out.read_text())


def _check_project_profile(report):
    project = report["project"]
    assert list(project["phases"]) == ["import", "build model + optimizer", "trace the step",
                                       "first call (grappler, setup, run)"]
    for seconds, rss in project["phases"].values():
        assert positive(seconds) and positive(rss)
    assert project["graph_ops"] > 100 and positive(project["step_s"])
    assert all(positive(s) for s in project["eager_steps_s"])
    # Tensors the allocator held are part of the process's resident memory.
    assert 0 < project["allocator_peak_gb"] < project["peak_rss_gb"]
    # Grappler's passes, read from TensorFlow's log: the usual ones ran and took time.
    assert {"remapper", "constant_folding", "model_pruner"} <= set(report["grappler_ms"])
    assert all(ms >= 0 for ms in report["grappler_ms"].values())
    # The profiler saw the step's convolutions and Adam updates.
    op_types = project["op_types"]
    assert any("Conv2DBackpropFilter" in name for name in op_types), sorted(op_types)
    assert any("ApplyAdam" in name for name in op_types), sorted(op_types)
    if os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1") != "0":
        kinds = {key.split()[0] for key in report["onednn"]["onednn_project"]}
        assert "convolution" in kinds, kinds
    assert set(report["elementwise_tf"]) == {"relu", "relu gradient", "add"}
    assert all(positive(ms) for ms in report["elementwise_tf"].values())


@pytest.mark.skipif(HAS_TORCH, reason="the peer's columns are checked in the backends step")
def test_profile_step_bench_project_only(tmp_path):
    report = _profile_step(tmp_path)
    _check_project_profile(report)
    assert "peer" not in report and "onednn_peer" not in report["onednn"]


@pytest.mark.backends
@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
def test_profile_step_bench_with_the_peer(tmp_path):
    report = _profile_step(tmp_path)
    _check_project_profile(report)
    peer = report["peer"]
    assert positive(peer["step_s"]) and positive(peer["phases"]["first step (eager)"][0])
    assert any("convolution" in name for name in peer["op_types"])
    kinds = {key.split()[0] for key in report["onednn"]["onednn_peer"]}
    assert "convolution" in kinds, kinds
    assert set(report["elementwise_torch"]) == {"relu", "relu gradient", "add"}


def test_inference_bench(tmp_path, synthetic_eval_dir):
    run_dir = tmp_path / "run"
    save_tiny_model(str(run_dir))
    out = tmp_path / "inference.json"
    run_module("bench.inference", f"--weights={run_dir}", "--now32", "--batch_sizes=1",
               "--calls=1", "--repeats=1", "--warmup=1", "--quantizations=float32",
               f"--data_dir={synthetic_eval_dir}", "--num_calibration=2",
               f"--out_json={out}")
    report = json.loads(out.read_text())
    configs = {row["config"] for row in report["rows"]}
    assert configs == {"keras fp32", "keras bf16", "saved_model", "tflite float32"}
    for row in report["rows"]:
        assert positive(row["batch1_img_s"]) and positive(row["size_mb"]), row


@pytest.mark.backends
@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
@pytest.mark.parametrize("mode", ["train", "inference"])
@pytest.mark.parametrize("setting", ["default", "best"])
def test_the_peer_measures(mode, setting):
    from bench import peer

    measure = peer.measure_train if mode == "train" else peer.measure_inference
    result = measure(8, "64x64", 2, setting, steps=1, threads=1)
    assert result["setting"] == setting and result["mode"] == mode
    assert positive(result["images_per_s"]) and positive(result["peak_rss_gb"])
    assert result["images_per_s"] == pytest.approx(
        2 / result["step_s" if mode == "train" else "call_s"])


@pytest.mark.backends
@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
def test_peer_server_times_calls_in_its_process():
    from bench import peer

    server = peer.PeerServer("best", 8, "64x64", threads=1)
    try:
        wall, cpu = server.time_calls(batch=2, calls=3, warmup=1)
        assert len(wall) == len(cpu) == 3 and all(positive(t) for t in wall)
        assert server.parameters > 0 and server.threads == 1
    finally:
        server.close()
    assert server.process.returncode == 0


@pytest.mark.backends
@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
def test_train_step_bench_reports_ratios_to_the_peer(tmp_path):
    out = tmp_path / "train_step.json"
    result = run_module("bench.train_step", "--width", 8, "--input_size", "64x64",
                        "--batch_size", 2, "--steps", 1, "--rounds", 1, "--precisions",
                        "mixed_bfloat16", "--peer_settings", "best", "--peer_threads", 1,
                        "--json_out", out)
    report = json.loads(out.read_text())
    [row], peer_row = report["project"], report["peer"]["best"]
    [ratio] = report["ratios"]
    assert ratio["images_per_s"] == pytest.approx(row["images_per_s"] / peer_row["images_per_s"])
    assert ratio["peak_rss"] == pytest.approx(row["peak_rss_gb"] / peer_row["peak_rss_gb"])
    assert ratio["first_step"] == pytest.approx(row["first_step_s"] / peer_row["first_step_s"])
    assert "goals (mixed_bfloat16 vs the peer's best)" in result.stdout


def test_video_bench(tmp_path):
    run_dir = tmp_path / "run"
    save_tiny_model(str(run_dir))
    out = tmp_path / "video.json"
    run_module("bench.video", f"--weights={run_dir}", "--formats=keras", "--detector=none",
               "--frames=3", "--size=160x120", "--repeats=1", f"--json_out={out}")
    [row] = json.loads(out.read_text())["rows"]
    assert row["format"] == "keras" and row["people_per_frame"] == 1.0
    assert positive(row["fps"]) and positive(row["pose_ms"]) and row["detector_ms"] >= 0
    # The parts cannot take longer than the whole frame.
    assert row["pose_ms"] + row["detector_ms"] < 1e3 / row["fps"]


@pytest.mark.backends
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax not installed")
def test_benchmarks_measure_tensorflow_without_jax():
    """TensorFlow imports JAX when it is installed; the project's benchmark processes hide it, so
    they measure a TensorFlow install of the project."""
    probe = ("import sys{hide}; import tensorflow; "
             "print(type(sys.modules.get('jax')).__name__)")
    hide = "; from bench.machine import hide_jax_from_tensorflow; hide_jax_from_tensorflow()"
    imported = run_module_code(probe.format(hide=""))
    hidden = run_module_code(probe.format(hide=hide))
    assert imported == "module" and hidden == "NoneType", (imported, hidden)


def run_module_code(code) -> str:
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow",
                   "PYTHONPATH": os.pathsep.join([REPO_ROOT, os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=environment,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]
