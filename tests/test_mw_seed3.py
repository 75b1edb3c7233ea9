"""`train.py --strategy=multi_worker` end to end: two processes on 127.0.0.1, a tiny model.

The cluster comes from TF_CONFIG (first test) or from Slurm's environment as `srun` sets it
(second test), exactly as the README's multi-worker commands do.
"""

import csv
import json
import os
import signal
import subprocess
import time

import numpy as np

from cluster_fixtures import free_consecutive_ports, free_ports
from pose_fixtures import REPO_ROOT, small_train_command
from skelpose_tf.model_loading import load_pose_model


def train_command(run_dir, data_dir, epochs, steps, batch_size, *extra):
    """`small_train_command`, validated and backed up every step, in float32 with deterministic
    data (so that two workers and one process can agree)."""
    return small_train_command(run_dir, data_dir, epochs, steps, f"--batch_size={batch_size}",
                               "--backup_every_steps=1", "--val_every_epochs=1",
                               "--mixed_precision=float32", "--deterministic_data", "--seed=3", *extra)


def tf_config_environments(count, tmp_path):
    workers = [f"127.0.0.1:{port}" for port in free_ports(count)]
    return [worker_environment(tmp_path, index, TF_CONFIG=json.dumps(
        {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}))
        for index in range(count)]


def slurm_environments(count, tmp_path):
    """What `srun --ntasks=COUNT` on one node sets (the resolver reads only these)."""
    port_base = free_consecutive_ports(count)
    return [worker_environment(tmp_path, index, SLURM_PROCID=str(index),
                               SLURM_STEP_NUM_TASKS=str(count), SLURM_STEP_NODELIST="localhost",
                               SLURM_STEP_TASKS_PER_NODE=str(count),
                               SKELPOSE_SLURM_PORT_BASE=str(port_base))
            for index in range(count)]


def worker_environment(tmp_path, index, **variables):
    """The environment of worker `index`: its own TMPDIR, to see what it leaves behind."""
    temporary = tmp_path / f"tmp{index}"
    temporary.mkdir(exist_ok=True)
    environment = {k: v for k, v in os.environ.items()
                   if k != "TF_CONFIG" and not k.startswith("SLURM_")}
    return {**environment, "TMPDIR": str(temporary), **variables}


def start_workers(command, environments):
    return [subprocess.Popen(command, cwd=REPO_ROOT, env=environment, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
            for environment in environments]


def finish(processes, timeout=600):
    outputs = [process.communicate(timeout=timeout)[0] for process in processes]
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-4000:]
    return outputs


def history_losses(run_dir):
    with open(os.path.join(run_dir, "history.csv")) as file:
        return np.array([[float(row[name]) for name in ("loss", "keypoint_loss",
                                                        "skeletal_loss")]
                         for row in csv.DictReader(file)])


def files_under(directory):
    return sorted(os.path.relpath(os.path.join(root, name), directory)
                  for root, _, names in os.walk(directory) for name in names)


def test_two_workers_equal_one_process_and_only_the_chief_writes(tmp_path, synthetic_train_dir):
    multi_dir, single_dir = str(tmp_path / "multi"), str(tmp_path / "single")
    # Global batch 4: two workers of 2, against one process of 4 in two micro-batches of 2, so
    # that BatchNorm normalises the same halves in both runs.
    workers = start_workers(
        train_command(multi_dir, synthetic_train_dir, 2, 3, 2, "--strategy=multi_worker"),
        tf_config_environments(2, tmp_path))
    chief_output, worker_output = finish(workers)
    single = subprocess.run(
        train_command(single_dir, synthetic_train_dir, 2, 3, 4, "--micro_batches=2"),
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stdout[-3000:] + single.stderr[-3000:]

    assert "worker 0 of 2 (chief)" in chief_output and "worker 1 of 2" in worker_output
    # The two workers decode exactly the people of the one-process batches, bit for bit
    # (test_pipeline: test_training_shards_are_disjoint_slices_of_the_global_batch). What
    # remains is float32 summation order: the all-reduce adds two half-batch gradients where
    # the one process adds two micro-batches, and Adam turns a gradient near zero into a
    # full-size step whatever its rounding. Over 6 steps the weights drift apart by up to
    # ~5e-5 and the mean losses by ~1e-4 relative, depending on the seed. A worker that trained
    # on its own gradients or on the other worker's people would be off by whole Adam steps (the
    # demo learning rate, 2e-3): the tolerances below sit between the two.
    np.testing.assert_allclose(history_losses(multi_dir), history_losses(single_dir), rtol=1e-3)
    multi_model, _ = load_pose_model(os.path.join(multi_dir, "last.keras"))
    single_model, _ = load_pose_model(os.path.join(single_dir, "last.keras"))
    for a, b in zip(multi_model.trainable_weights, single_model.trainable_weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-3, atol=2e-4, err_msg=a.path)
    assert json.load(open(os.path.join(multi_dir, "summary.json")))["steps"] == 6

    # Only the chief wrote: the run directory holds what a one-process run writes, no second
    # set of TensorBoard events, and the other worker left nothing in its temporary directory.
    def names(directory):
        return {name.split(".")[0] if name.startswith("tensorboard") else name
                for name in files_under(directory)}
    assert names(multi_dir) == names(single_dir)
    events = [name for name in files_under(multi_dir) if "tfevents" in name]
    assert len(events) == len(
        [name for name in files_under(single_dir) if "tfevents" in name])
    assert files_under(str(tmp_path / "tmp1")) == []
    assert "validation after epoch" in chief_output
    assert "validation after epoch" not in worker_output


def test_a_dead_worker_stops_the_other_and_both_resume(tmp_path, synthetic_train_dir):
    """Kill worker 1 mid-run: worker 0 stops with a clear message in bounded time; rerunning
    the same command on both (here under Slurm's environment) resumes."""
    run_dir = str(tmp_path / "run")
    command = train_command(run_dir, synthetic_train_dir, 3, 4, 2, "--strategy=multi_worker")
    environments = slurm_environments(2, tmp_path)
    chief, worker = start_workers(command, environments)
    checkpoints = os.path.join(run_dir, "checkpoints")
    deadline = time.time() + 600
    while time.time() < deadline and chief.poll() is None:
        if len([n for n in os.listdir(checkpoints) if n.endswith(".index")]
               if os.path.isdir(checkpoints) else []) >= 3:
            break
        time.sleep(0.1)
    assert chief.poll() is None, chief.communicate()[0][-3000:]
    os.kill(worker.pid, signal.SIGKILL)
    killed_at = time.time()
    worker.communicate()
    output = chief.communicate(timeout=120)[0]
    assert chief.returncode != 0
    assert time.time() - killed_at < 60
    assert "lost contact with another worker" in output and "rerun the same command" in output
    assert "Traceback" not in output

    # A worker that cannot see the chief's run directory (no shared storage) is refused by
    # both, in one line, before any step.
    elsewhere = [a if not a.startswith("--run_dir=") else f"--run_dir={tmp_path / 'elsewhere'}"
                 for a in command]
    processes = [subprocess.Popen(c, cwd=REPO_ROOT, env=e, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
                 for c, e in zip((command, elsewhere), environments)]
    for process in processes:
        output = process.communicate(timeout=300)[0]
        assert process.returncode != 0 and "The workers restored different steps" in output
        assert "Traceback" not in output
    assert not (tmp_path / "elsewhere").exists()

    chief, worker = start_workers(command, environments)
    chief_output, worker_output = finish([chief, worker])
    assert "resuming at step" in chief_output and "resuming at step" in worker_output
    assert json.load(open(os.path.join(run_dir, "summary.json")))["steps"] == 12
    assert [json.loads(line)["epoch"]
            for line in open(os.path.join(run_dir, "validation.jsonl"))] == [1, 2, 3]
