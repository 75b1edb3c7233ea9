"""The GPU benchmark's CPU path (`bench/gpu.py --device cpu --tiny`), so that it cannot rot
before a GPU is lent: the whole run (Keras on JAX, Keras on PyTorch, the PyTorch peer; training
and inference; ratios) with TensorFlow made unfindable, as on the GPU machine, and the time
budget's skip and stop rules without running a model.

Needs `jax` and `torch` (requirements-backends.txt; `.ci/run` runs it in the backends step).
"""

import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest

from bench import gpu
from pose_fixtures import REPO_ROOT

MISSING = [name for name in ("jax", "torch") if importlib.util.find_spec(name) is None]
pytestmark = [pytest.mark.backends,
              pytest.mark.skipif(bool(MISSING), reason=f"{', '.join(MISSING)} not installed "
                                 "(pip install -r requirements-backends.txt)")]

# Imported at start-up from PYTHONPATH: the path finder no longer finds `tensorflow`, so that
# `import tensorflow` fails and `importlib.util.find_spec("tensorflow")` is None, as where it is
# not installed.
NO_TENSORFLOW = '''import importlib.machinery

_find_spec = importlib.machinery.PathFinder.find_spec.__func__


def _without_tensorflow(cls, name, path=None, target=None):
    if name.split(".")[0] == "tensorflow":
        return None
    return _find_spec(cls, name, path, target)


importlib.machinery.PathFinder.find_spec = classmethod(_without_tensorflow)
'''
MEASUREMENTS = {(engine, mode, batch) for engine in gpu.ENGINES
                for mode, batch in (("train", 2), ("inference", 1), ("inference", 2))}


def _environment(guard_dir):
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(guard_dir), REPO_ROOT]),
            "TF_CPP_MIN_LOG_LEVEL": "3"}


@pytest.fixture(scope="module")
def guard_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("no_tensorflow")
    (directory / "sitecustomize.py").write_text(NO_TENSORFLOW)
    return directory


@pytest.fixture(scope="module")
def run(guard_dir, tmp_path_factory):
    """`(report dict, printed output)` of the tiny CPU run without TensorFlow."""
    out = tmp_path_factory.mktemp("gpu") / "gpu.json"
    output = subprocess.run(
        [sys.executable, "-m", "bench.gpu", "--device", "cpu", "--tiny", "--budget_s", "900",
         "--out", str(out)], cwd=REPO_ROOT, env=_environment(guard_dir), capture_output=True,
        text=True, timeout=900)
    assert output.returncode == 0, output.stdout[-3000:] + output.stderr[-3000:]
    with open(out) as file:
        return json.load(file), output.stdout


def test_the_guard_hides_tensorflow(guard_dir):
    probe = ("import importlib.util\n"
             "assert importlib.util.find_spec('tensorflow') is None\n"
             "try:\n    import tensorflow\nexcept ImportError:\n    print('blocked')\n")
    output = subprocess.run([sys.executable, "-c", probe], env=_environment(guard_dir),
                            capture_output=True, text=True, timeout=60)
    assert output.returncode == 0 and output.stdout.strip() == "blocked", output.stderr


def test_every_measurement_runs_without_tensorflow_with_positive_finite_figures(run):
    report, _ = run
    assert report["schema"] == gpu.SCHEMA and report["device"] == "cpu"
    assert report["skipped"] == []
    results = report["results"]
    assert {(r["engine"], r["mode"], r["batch_size"]) for r in results} == MEASUREMENTS
    assert len(results) == len(MEASUREMENTS)
    for r in results:
        assert r["status"] == "ok", r
        names = (("images_per_s", "step_s", "first_step_s", "peak_rss_gb")
                 if r["mode"] == "train" else ("images_per_s", "call_s", "first_call_s"))
        for name in names + ("wall_s",):
            assert math.isfinite(r[name]) and r[name] > 0, (r, name)
        # images/s is the batch over the median step or call
        seconds = r["step_s"] if r["mode"] == "train" else r["call_s"]
        assert r["images_per_s"] * seconds == pytest.approx(r["batch_size"])
        assert "peak_device_gb" not in r  # no device: no device memory figure
    trains = {r["engine"]: r for r in results if r["mode"] == "train"}
    assert trains["keras-jax"]["jit_compile"] is True  # XLA on JAX
    assert trains["keras-torch"]["jit_compile"] is False  # Keras' eager PyTorch default
    for engine in ("keras-jax", "keras-torch"):
        assert math.isfinite(trains[engine]["loss"]) and trains[engine]["loss"] > 0
        assert trains[engine]["steps"] == report["config"]["steps"] == 2
    assert all(r["compile"] is False for r in results if r["engine"] == "pytorch-peer")
    assert report["versions"]["keras"] and report["versions"]["jax"]


def test_ratios_are_project_over_the_peer_of_the_same_run(run):
    report, printed = run
    by_key = {(r["engine"], r["mode"], r["batch_size"]): r for r in report["results"]}
    expected = {(engine, mode, batch, figure)
                for engine in ("keras-jax", "keras-torch")
                for mode, batch in (("train", 2), ("inference", 1), ("inference", 2))
                for figure in (("images_per_s", "first_step_s") if mode == "train"
                               else ("images_per_s",))}
    rows = report["ratios"]
    assert {(r["engine"], r["mode"], r["batch_size"], r["figure"]) for r in rows} == expected
    for row in rows:
        project = by_key[(row["engine"], row["mode"], row["batch_size"])][row["figure"]]
        peer = by_key[("pytorch-peer", row["mode"], row["batch_size"])][row["figure"]]
        assert row["ratio"] == pytest.approx(project / peer)
        assert math.isfinite(row["ratio"]) and row["ratio"] > 0
    for r in report["results"]:
        assert gpu._label(r) in printed


def test_the_full_plan_puts_training_first_and_the_compiled_peer_last():
    jobs = gpu.plan(gpu.FULL, "cuda", "auto")
    engines = [(j["engine"], j["train_batch"], j["inference_batches"], j["compile"])
               for j in jobs]
    assert engines == [("keras-jax", 32, (), None), ("keras-torch", 32, (), None),
                       ("pytorch-peer", 32, (), False),
                       ("keras-jax", 64, (1, 64), None), ("keras-torch", 64, (1, 64), None),
                       ("pytorch-peer", 64, (1, 64), False),
                       ("pytorch-peer", 32, (), True), ("pytorch-peer", 64, (1, 64), True)]
    assert not any(j["compile"] for j in gpu.plan(gpu.FULL, "cpu", "auto"))


def test_what_does_not_fit_the_budget_is_skipped_or_stopped():
    config = {**gpu.TINY, "cpu_threads": 1}
    jobs = gpu.plan(config, "cpu", "off")
    skipped = gpu.run_all(jobs, config, "cpu", budget_s=5, child_timeout_s=60,
                          report=lambda line: None)
    assert {(r["engine"], r["mode"], r["batch_size"]) for r in skipped} == MEASUREMENTS
    assert all(r["status"] == "skipped" and r["reason"].startswith("time budget")
               for r in skipped)
    # a child stopped at its time limit: each of its measurements says so
    stopped = gpu.run_job(jobs[0], config, "cpu", timeout_s=0.5)
    assert [(r["mode"], r["batch_size"], r["status"]) for r in stopped] == [
        ("train", 2, "timed_out"), ("inference", 1, "timed_out"), ("inference", 2, "timed_out")]
    assert all("stopped after" in r["reason"] for r in stopped)


def test_a_cuda_run_without_a_gpu_fails_instead_of_measuring_the_cpu():
    job = {"engine": "keras-jax", "train_batch": 2, "inference_batches": (1,), "compile": None}
    rows = gpu.run_job(job, gpu.TINY, "cuda", timeout_s=300)
    if rows[0]["status"] == "ok":
        pytest.skip("JAX sees a GPU here")
    assert [(r["mode"], r["status"]) for r in rows] == [("train", "failed"),
                                                        ("inference", "failed")]
    assert all(r["reason"] == "exit status 1: RuntimeError: JAX runs on 'cpu', not on a GPU"
               for r in rows), rows[0]["reason"]
