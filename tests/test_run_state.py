"""RunState: one checkpoint holds everything a resume needs; damaged files fall back by name.

In-process tests on a tiny trainer; `test_resume.py` kills real `train.py` processes.
"""

import glob
import json
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from skelpose_tf.atomic_files import keras_file_metadata
from skelpose_tf.model_loading import load_pose_model
from skelpose_tf.codec import HeatmapCodec
from skelpose_tf.training.callbacks import ValidationCallback
from skelpose_tf.training.optimizers import FusedAdam
from skelpose_tf.training.run_state import RunState, RunStateError, model_fingerprint
from skelpose_tf.training.trainer import PoseTrainer
from pose_fixtures import tiny_batch, tiny_pose_model


def make_trainer(seed=0, width=8):
    keras.utils.set_random_seed(seed)
    trainer = PoseTrainer(tiny_pose_model(width=width), HeatmapCodec((64, 64), "coco"))
    trainer.compile(optimizer=FusedAdam(1e-3))
    return trainer


def train_steps(trainer, steps, seed=0):
    images, labels = tiny_batch(4, seed=seed)
    labels["visibility"] = np.ones((4, 17), "float32")
    dataset = tf.data.Dataset.from_tensors((images, labels)).repeat()
    trainer.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)


def state_values(trainer):
    """Every variable a resume needs: weights, BN statistics, optimizer slots and step."""
    return [v.numpy() for v in trainer.network.weights + trainer.optimizer.variables]


def assert_same_state(a, b):
    values_a, values_b = state_values(a), state_values(b)
    assert len(values_a) == len(values_b)
    for x, y in zip(values_a, values_b):
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """A checkpoint directory with three checkpoints (steps 1, 2, 3) and the trainer's state
    at each."""
    directory = str(tmp_path_factory.mktemp("run") / "checkpoints")
    trainer = make_trainer()
    state = RunState(trainer, directory)
    assert not state.restore(model_fingerprint(trainer.network))
    snapshots = {}
    for step in (1, 2, 3):
        train_steps(trainer, 1, seed=step)
        state.progress.values["best"] = {"metric": "AP", "value": 0.1 * step, "epoch": step}
        state.save(epochs_closed=step)
        snapshots[step] = state_values(trainer)
    return directory, snapshots


def copy_run(saved_run, tmp_path):
    directory, snapshots = saved_run
    copy = str(tmp_path / "checkpoints")
    shutil.copytree(directory, copy)
    return copy, snapshots


def restore_into_fresh(directory, out=None):
    trainer = make_trainer(seed=1)
    state = RunState(trainer, directory, **({} if out is None else {"out": out}))
    return trainer, state, state.restore(model_fingerprint(trainer.network))


def assert_state_equals(trainer, snapshot):
    for x, y in zip(state_values(trainer), snapshot):
        np.testing.assert_array_equal(x, y)


def test_restore_gives_back_weights_slots_step_and_progress(saved_run, tmp_path):
    directory, snapshots = copy_run(saved_run, tmp_path)
    trainer, state, resumed = restore_into_fresh(directory)
    assert resumed
    assert state.step == 3 and int(trainer.optimizer.iterations.numpy()) == 3
    assert state.progress.values["epochs_closed"] == 3
    assert state.progress.values["best"]["value"] == pytest.approx(0.3)
    assert_state_equals(trainer, snapshots[3])
    # Training goes on from there exactly as the original would have.
    original = make_trainer(seed=1)
    RunState(original, directory).restore(model_fingerprint(original.network))
    train_steps(trainer, 2, seed=9)
    train_steps(original, 2, seed=9)
    assert_same_state(trainer, original)


def test_truncated_newest_checkpoint_falls_back_to_the_previous_one(saved_run, tmp_path, capsys):
    directory, snapshots = copy_run(saved_run, tmp_path)
    data = glob.glob(os.path.join(directory, "ckpt-3.data-*"))[0]
    with open(data, "r+b") as file:
        file.truncate(os.path.getsize(data) // 2)
    trainer, state, resumed = restore_into_fresh(directory)
    output = capsys.readouterr().out
    assert resumed and state.step == 2
    assert_state_equals(trainer, snapshots[2])
    assert "ckpt-3" in output and "damaged" in output and "Resuming from ckpt-2" in output
    assert os.path.exists(os.path.join(directory, "damaged", os.path.basename(data)))
    # The index now points at the intact checkpoint, and the next save gets a new number.
    assert tf.train.latest_checkpoint(directory).endswith("ckpt-2")
    assert state.save().endswith("ckpt-4")


def test_corrupted_bytes_are_caught_by_the_checksums(saved_run, tmp_path):
    directory, snapshots = copy_run(saved_run, tmp_path)
    data = glob.glob(os.path.join(directory, "ckpt-3.data-*"))[0]
    with open(data, "r+b") as file:
        file.seek(os.path.getsize(data) // 2)
        file.write(b"\xff" * 64)
    trainer, state, _ = restore_into_fresh(directory)
    assert state.step == 2
    assert_state_equals(trainer, snapshots[2])


def test_missing_index_file_uses_the_checkpoint_files(saved_run, tmp_path, capsys):
    directory, snapshots = copy_run(saved_run, tmp_path)
    os.remove(os.path.join(directory, "checkpoint"))
    trainer, state, resumed = restore_into_fresh(directory)
    output = capsys.readouterr().out
    assert resumed and state.step == 3
    assert_state_equals(trainer, snapshots[3])
    assert "checkpoint is missing" in output
    assert tf.train.latest_checkpoint(directory).endswith("ckpt-3")


def test_checkpoint_listed_in_the_index_but_missing(saved_run, tmp_path, capsys):
    directory, snapshots = copy_run(saved_run, tmp_path)
    os.remove(os.path.join(directory, "ckpt-3.index"))
    trainer, state, _ = restore_into_fresh(directory)
    output = capsys.readouterr().out
    assert state.step == 2
    assert_state_equals(trainer, snapshots[2])
    assert "lists ckpt-3, whose files are missing" in output
    # Its orphaned data file is moved aside, reported by name.
    assert "ckpt-3.index is missing" in output and "Resuming from ckpt-2" in output
    assert not glob.glob(os.path.join(directory, "ckpt-3.*"))
    assert glob.glob(os.path.join(directory, "damaged", "ckpt-3.data-*"))


def test_no_intact_checkpoint_is_an_error_naming_every_file(saved_run, tmp_path):
    directory, _ = copy_run(saved_run, tmp_path)
    for data in glob.glob(os.path.join(directory, "ckpt-*.data-*")):
        with open(data, "r+b") as file:
            file.truncate(10)
    with pytest.raises(RunStateError) as error:
        restore_into_fresh(directory)
    message = str(error.value)
    assert all(f"ckpt-{n}" in message for n in (1, 2, 3)) and "--restart" in message
    # Nothing was moved: the user decides.
    assert len(glob.glob(os.path.join(directory, "ckpt-*.index"))) == 3


def test_another_architecture_gets_a_short_message(saved_run, tmp_path):
    directory, _ = copy_run(saved_run, tmp_path)
    trainer = make_trainer(width=16)
    with pytest.raises(RunStateError) as error:
        RunState(trainer, directory).restore(model_fingerprint(trainer.network))
    message = str(error.value)
    assert len(message.splitlines()) <= 5 and len(message) < 800
    assert "pose_hrnet_w8" in message and "pose_hrnet_w16" in message


def test_read_only_restore_moves_nothing(saved_run, tmp_path):
    directory, snapshots = copy_run(saved_run, tmp_path)
    os.remove(os.path.join(directory, "ckpt-3.index"))
    before = sorted(os.listdir(directory))
    trainer = make_trainer(seed=1)
    state = RunState(trainer, directory)
    assert state.restore(model_fingerprint(trainer.network), read_only=True)
    assert state.step == 2
    assert sorted(os.listdir(directory)) == before


class FakeTrainer:
    def __init__(self, network):
        self.network = network


def test_best_keras_is_never_replaced_by_a_worse_model(tmp_path):
    """A kill after best.keras was written but before the checkpoint recorded its AP: the
    resumed run re-validates that epoch lower and must keep the better file."""
    run_dir = str(tmp_path)
    network = tiny_pose_model()
    scores = iter([0.5, 0.7])
    first = ValidationCallback(lambda net: {"AP": next(scores)}, run_dir, 1, 5,
                               progress={})
    first.set_model(FakeTrainer(network))
    first.on_epoch_end(0)
    first.on_epoch_end(1)
    assert keras_file_metadata(os.path.join(run_dir, "best.keras"))["value"] == 0.7
    # The checkpoint the resumed run restores predates epoch 2's validation.
    stale_progress = {"best": {"metric": "AP", "value": 0.5, "epoch": 1},
                      "validations": [{"epoch": 1, "AP": 0.5}]}
    resumed = ValidationCallback(lambda net: {"AP": 0.6}, run_dir, 1, 5, stale_progress)
    resumed.set_model(FakeTrainer(network))
    assert resumed.best_value == 0.7
    resumed.on_epoch_end(1)
    best = keras_file_metadata(os.path.join(run_dir, "best.keras"))
    assert best["value"] == 0.7 and best["epoch"] == 2
    lines = [json.loads(line) for line in open(os.path.join(run_dir, "validation.jsonl"))]
    assert lines == [{"epoch": 1, "AP": 0.5}, {"epoch": 2, "AP": 0.6}]
    assert load_pose_model(os.path.join(run_dir, "best.keras"))[0].name == network.name


def test_truncated_keras_file_is_reported_as_corrupt_not_missing(tmp_path):
    from skelpose_tf.atomic_files import DamagedFileError, save_keras_atomic

    path = str(tmp_path / "best.keras")
    save_keras_atomic(tiny_pose_model(), path)
    with open(path, "r+b") as file:
        file.truncate(os.path.getsize(path) // 2)
    with pytest.raises(DamagedFileError, match="corrupt") as error:
        load_pose_model(path)
    assert path in str(error.value) and "not exist" not in str(error.value)
    # The run directory form (what evaluate.py / export_tflite.py take) says the same.
    with pytest.raises(DamagedFileError, match="corrupt"):
        load_pose_model(str(tmp_path))
