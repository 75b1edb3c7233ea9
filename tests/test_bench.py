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


def test_train_step_bench(tmp_path):
    out = tmp_path / "train_step.json"
    run_module("bench.train_step", "--width", 8, "--input_size", "64x64", "--batch_size", 2,
               "--steps", 1, "--rounds", 1, "--precisions", "float32", "--tiny_topology",
               "--peer", "false", "--json_out", out)
    report = json.loads(out.read_text())
    [row] = report["project"]
    assert row["precision"] == "float32" and row["batch_size"] == 2
    for key in ("images_per_s", "first_step_s", "peak_rss_gb", "render_ms"):
        assert positive(row[key]), (key, row)
    assert report["peer"] == {} and report["ratios"] == []


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
