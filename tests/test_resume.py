"""train.py end to end on a tiny synthetic set: runs killed with SIGKILL at any instant resume."""

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time


from pose_fixtures import REPO_ROOT, TESTS_DIR, small_train_command
from skelpose_tf.atomic_files import keras_file_metadata
from skelpose_tf.model_loading import load_pose_model


def train_command(run_dir, data_dir, epochs, steps):
    """`small_train_command` of the tiny topology at batch 4, backed up every 2 steps, with no
    validation unless the test adds it."""
    return small_train_command(run_dir, data_dir, epochs, steps, "--batch_size=4",
                               "--backup_every_steps=2", "--val_every_epochs=100",
                               "--tiny_topology=true")


def latest_step(run_dir):
    """The step of the newest checkpoint the index names (None before the first)."""
    import tensorflow as tf

    from skelpose_tf.training.run_state import RunProgress

    try:
        prefix = tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints"))
        if prefix is None:
            return None
        progress = RunProgress()
        tf.train.Checkpoint(progress=progress).read(prefix).expect_partial()
        return progress.values["step"]
    except Exception:  # noqa: BLE001 - a checkpoint being replaced while we look
        return None


def run_killed(command, kill_point, timeout=600):
    """Run `command` through tests/killing_train.py with SKELPOSE_KILL=kill_point."""
    environment = {**os.environ, "SKELPOSE_KILL": kill_point}
    result = subprocess.run([sys.executable, os.path.join(TESTS_DIR, "killing_train.py"),
                             *command[2:]], cwd=REPO_ROOT, env=environment, capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == -signal.SIGKILL, (kill_point, result.stdout[-3000:],
                                                  result.stderr[-3000:])
    return result.stdout


def validations_printed(stdout):
    return [float(v) for v in re.findall(r"validation after epoch \d+: AP ([0-9.]+)", stdout)]


def test_run_killed_again_and_again_finishes_like_an_uninterrupted_one(
        tmp_path, synthetic_train_dir):
    """Kill -9 inside checkpoint saves, inside the best.keras save and at a random step, then
    resume with the README's command each time; nothing is repeated, skipped or lost."""
    run_dir = str(tmp_path / "run")
    epochs, steps = 3, 4
    first = train_command(run_dir, synthetic_train_dir, epochs=epochs, steps=steps) + [
        "--backup_every_steps=1", "--val_every_epochs=1"]
    resume = [sys.executable, os.path.join(REPO_ROOT, "train.py"),
              f"--flagfile={os.path.join(run_dir, 'flags.cfg')}"]
    outputs = [run_killed(first, "checkpoint_index:3")]
    assert latest_step(run_dir) == 2  # the third save's files exist but no index names them
    outputs.append(run_killed(resume, "best_keras:1"))
    # Those files were complete (their checksums pass), so the resume uses them.
    assert "resuming at step 3" in outputs[-1]
    outputs.append(run_killed(resume, f"checkpoint_random:{random.randint(2, 4)}"))

    # An outside kill at a random step of the next run.
    process = subprocess.Popen(resume, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    start = latest_step(run_dir)
    target = random.randint(start + 1, epochs * steps - 1)
    deadline = time.time() + 600
    while time.time() < deadline and process.poll() is None:
        if (latest_step(run_dir) or 0) >= target:
            break
        time.sleep(0.1)
    assert process.poll() is None, process.communicate()[0][-3000:]
    os.kill(process.pid, signal.SIGKILL)
    outputs.append(process.communicate()[0])

    final = subprocess.run(resume, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert final.returncode == 0, final.stdout[-3000:] + final.stderr[-3000:]
    outputs.append(final.stdout)
    for output in outputs[1:]:
        assert re.search(r"resuming at step \d+", output), output[-2000:]

    summary = json.load(open(os.path.join(run_dir, "summary.json")))
    assert summary["steps"] == epochs * steps  # exactly the planned steps: none repeated
    validations = [json.loads(line) for line in open(os.path.join(run_dir, "validation.jsonl"))]
    assert [v["epoch"] for v in validations] == [1, 2, 3], "\n=====\n".join(outputs)
    best = keras_file_metadata(os.path.join(run_dir, "best.keras"))
    seen = [v for output in outputs for v in validations_printed(output)]
    assert best["value"] >= max(seen) and best["value"] >= max(v["AP"] for v in validations)
    load_pose_model(os.path.join(run_dir, "best.keras"))  # whole and loadable
    leftovers = [name for name in os.listdir(run_dir) if ".partial-" in name]
    assert not leftovers, leftovers
    for name in ("flags.cfg", "last.keras", "history.csv", "pictures/skeletons.png"):
        assert os.path.exists(os.path.join(run_dir, name)), name
    assert "test_random_seed" not in open(os.path.join(run_dir, "flags.cfg")).read()

    # Results without any checkpoint: a one-line refusal, not a silent fresh start.
    shutil.rmtree(os.path.join(run_dir, "checkpoints"))
    refused = subprocess.run(resume, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert refused.returncode != 0
    assert "Traceback" not in refused.stderr
    assert "--restart" in refused.stderr and "best.keras" in refused.stderr
    best_bytes = open(os.path.join(run_dir, "best.keras"), "rb").read()
    # --restart moves the old run aside whole, then starts from step 0.
    restarted = subprocess.run(resume + ["--restart", "--epochs=1", "--steps_per_epoch=1"],
                               cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert restarted.returncode == 0, restarted.stdout[-3000:] + restarted.stderr[-3000:]
    aside = re.search(r"moved the previous run to (\S+)", restarted.stdout).group(1)
    assert open(os.path.join(aside, "best.keras"), "rb").read() == best_bytes
    assert json.load(open(os.path.join(run_dir, "summary.json")))["steps"] == 1
    assert "--restart" not in open(os.path.join(run_dir, "flags.cfg")).read()


def test_resume_with_another_architecture_is_a_short_message(tmp_path, synthetic_train_dir):
    run_dir = str(tmp_path / "run")
    command = train_command(run_dir, synthetic_train_dir, epochs=1, steps=1)
    assert subprocess.run(command, cwd=REPO_ROOT, capture_output=True, timeout=900).returncode == 0
    flags_before = open(os.path.join(run_dir, "flags.cfg")).read()
    changed = subprocess.run(command + ["--width=16", "--epochs=2"], cwd=REPO_ROOT,
                             capture_output=True, text=True, timeout=900)
    assert changed.returncode != 0 and "Traceback" not in changed.stderr
    message = changed.stderr[changed.stderr.index("train.py: error:"):].strip()
    assert "another architecture" in message and len(message.splitlines()) <= 5, message
    # The run's own flags are kept, so its README resume command still works.
    assert open(os.path.join(run_dir, "flags.cfg")).read() == flags_before


def test_training_from_tfrecord_shards(tmp_path, synthetic_train_dir):
    from skelpose_tf.data.coco import read_coco_keypoints
    from skelpose_tf.data.tfrecords import write_tfrecords

    paths = os.path.join(synthetic_train_dir, "annotations", "person_keypoints_train.json")
    records = read_coco_keypoints(paths, os.path.join(synthetic_train_dir, "images", "train"),
                                  "coco", (64, 64))
    shards = str(tmp_path / "shards")
    meta = write_tfrecords(records, shards, 2, "coco", (64, 64))
    run_dir = str(tmp_path / "run")
    command = train_command(run_dir, synthetic_train_dir, epochs=1, steps=0) + [
        f"--train_tfrecords={shards}"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"data: {meta['num_records']} training people" in result.stdout
    summary = json.load(open(os.path.join(run_dir, "summary.json")))
    assert summary["steps"] == meta["num_records"] // 4  # one pass at batch 4
