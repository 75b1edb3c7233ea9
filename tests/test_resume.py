"""train.py end to end on a tiny synthetic set: a run killed with SIGKILL resumes at its backup."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory):
    from skelpose_tf.data.synthetic import generate_dataset

    root = str(tmp_path_factory.mktemp("synthetic"))
    generate_dataset(root, 24, 6, seed=0, image_size=(160, 120))
    return root


def train_command(run_dir, data_dir, epochs, steps):
    return [sys.executable, os.path.join(ROOT, "train.py"), "--flagfile=configs/demo.cfg",
            f"--run_dir={run_dir}", f"--data_dir={data_dir}", "--width=8", "--input_size=64x64",
            f"--epochs={epochs}", f"--steps_per_epoch={steps}", "--batch_size=4",
            "--backup_every_steps=2", "--val_every_epochs=100", "--val_max_people=8",
            "--export=false", "--verbose=2", "--tiny_topology=true"]


def read_state(run_dir):
    try:
        with open(os.path.join(run_dir, "backup", "backup_state.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def test_killed_run_resumes_from_its_last_backup(tmp_path, synthetic_dir):
    run_dir = str(tmp_path / "run")
    command = train_command(run_dir, synthetic_dir, epochs=3, steps=4)
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 600
    while time.time() < deadline and process.poll() is None:
        state = read_state(run_dir)
        if state and state["step"] >= 6:
            break
        time.sleep(0.2)
    assert process.poll() is None, process.communicate()[0][-3000:]
    os.kill(process.pid, signal.SIGKILL)
    process.communicate()
    saved_step = read_state(run_dir)["step"]
    assert 6 <= saved_step < 12

    resumed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"resuming at step {saved_step}" in resumed.stdout
    summary = json.load(open(os.path.join(run_dir, "summary.json")))
    # Exactly the planned number of optimizer steps: nothing before the backup was repeated.
    assert summary["steps"] == 3 * 4
    assert 0.0 <= summary["ground_truth_boxes"]["AP"] <= 1.0
    assert "ground-truth boxes" in summary["ground_truth_boxes"]["box_source"]
    for name in ("flags.cfg", "last.keras", "history.csv", "pictures/skeletons.png"):
        assert os.path.exists(os.path.join(run_dir, name)), name
    assert re.search(r"--run_dir=", open(os.path.join(run_dir, "flags.cfg")).read())


def test_training_from_tfrecord_shards(tmp_path, synthetic_dir):
    from skelpose_tf.data.coco import read_coco_keypoints
    from skelpose_tf.data.tfrecords import write_tfrecords

    paths = os.path.join(synthetic_dir, "annotations", "person_keypoints_train.json")
    records = read_coco_keypoints(paths, os.path.join(synthetic_dir, "images", "train"), "coco",
                                  (64, 64))
    shards = str(tmp_path / "shards")
    meta = write_tfrecords(records, shards, 2, "coco", (64, 64))
    run_dir = str(tmp_path / "run")
    command = train_command(run_dir, synthetic_dir, epochs=1, steps=0) + [
        f"--train_tfrecords={shards}"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"data: {meta['num_records']} training people" in result.stdout
    summary = json.load(open(os.path.join(run_dir, "summary.json")))
    assert summary["steps"] == meta["num_records"] // 4  # one pass at batch 4
