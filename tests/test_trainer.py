"""PoseTrainer: on-device targets, masked losses, a few steps, one device vs two replicas."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from skelpose_tf.codec import HeatmapCodec
from skelpose_tf.losses import pose_loss
from cluster_fixtures import free_ports
from pose_fixtures import TESTS_DIR, freeze_batch_norm, tiny_batch, tiny_pose_model
from skelpose_tf.training.schedules import WarmupSchedule, epoch_boundaries
from skelpose_tf.training.trainer import PoseTrainer


def make_trainer(skeletal_attention=True, lr=1e-3):
    network = tiny_pose_model("coco", skeletal_attention)
    codec = HeatmapCodec((64, 64), "coco", sigma=2.0)
    trainer = PoseTrainer(network, codec)
    trainer.compile(optimizer=keras.optimizers.Adam(lr))
    return trainer


def test_test_step_equals_hand_assembled_loss():
    trainer = make_trainer()
    images, labels = tiny_batch()
    logs = trainer.evaluate(images, labels, batch_size=4, verbose=0, return_dict=True)
    targets = trainer.codec.encode(labels["keypoints"], labels["visibility"])
    total, keypoint_term, skeletal_term = pose_loss(trainer.network(images), targets, 0.2)
    np.testing.assert_allclose(logs["loss"], float(total), rtol=1e-5)
    np.testing.assert_allclose(logs["keypoint_loss"], float(keypoint_term), rtol=1e-5)
    np.testing.assert_allclose(logs["skeletal_loss"], float(skeletal_term), rtol=1e-5)
    np.testing.assert_allclose(float(total), float(keypoint_term) + 0.2 * float(skeletal_term),
                               rtol=1e-6)


def test_training_steps_reduce_the_loss():
    trainer = make_trainer(lr=3e-3)
    images, labels = tiny_batch()
    dataset = tf.data.Dataset.from_tensors((images, labels)).repeat()
    history = trainer.fit(dataset, epochs=4, steps_per_epoch=5, verbose=0, shuffle=False).history
    assert history["loss"][-1] < 0.75 * history["loss"][0]
    assert history["skeletal_loss"][-1] < history["skeletal_loss"][0]


def _one_batch_training(micro_batches, steps=2):
    """Initial and final weights and the logs of `steps` SGD steps on one batch of 8, with
    BatchNorm frozen (per-micro-batch statistics would differ legitimately)."""
    keras.utils.set_random_seed(0)
    network = freeze_batch_norm(tiny_pose_model("coco"))
    trainer = PoseTrainer(network, HeatmapCodec((64, 64), "coco"), micro_batches=micro_batches)
    trainer.compile(optimizer=keras.optimizers.SGD(0.5))
    images, labels = tiny_batch(batch=8, seed=3)
    start = np.concatenate([np.ravel(v.numpy()) for v in network.trainable_weights])
    history = trainer.fit(tf.data.Dataset.from_tensors((images, labels)).repeat(), epochs=1,
                          steps_per_epoch=steps, verbose=0, shuffle=False).history
    weights = np.concatenate([np.ravel(v.numpy()) for v in network.trainable_weights])
    return start, weights, history


def test_micro_batches_give_the_whole_batch_update():
    """Gradient accumulation over 4 micro-batches = one batch of 8 (BatchNorm frozen)."""
    start, whole_weights, whole_history = _one_batch_training(1)
    _, micro_weights, micro_history = _one_batch_training(4)
    for name in ("loss", "keypoint_loss", "skeletal_loss"):
        np.testing.assert_allclose(micro_history[name], whole_history[name], rtol=1e-5)
    np.testing.assert_allclose(micro_weights, whole_weights, rtol=1e-4, atol=1e-7)
    assert np.abs(micro_weights - start).max() > 1e-4


def _fit_weights_and_logs(one_graph, data, **fit_kwargs):
    """Weights and per-epoch logs after `fit` from seeded weights, with the one-graph train
    function or Keras' nested one."""
    keras.utils.set_random_seed(0)
    trainer = make_trainer()
    if not one_graph:
        trainer._uses_one_graph_step = lambda: False
    history = trainer.fit(data, verbose=0, shuffle=False, **fit_kwargs).history
    weights = np.concatenate([np.ravel(v.numpy()) for v in trainer.network.weights])
    return trainer, weights, history


def test_one_graph_train_function_equals_keras_nested_one():
    images, labels = tiny_batch(batch=4, seed=5)
    dataset = tf.data.Dataset.from_tensors((images, labels)).repeat()
    ours, weights, history = _fit_weights_and_logs(True, dataset, epochs=2, steps_per_epoch=3)
    keras_trainer, keras_weights, keras_history = _fit_weights_and_logs(
        False, dataset, epochs=2, steps_per_epoch=3)
    # One tf.function over the iterator here, Keras' tf.function calling a tf.function there.
    assert ours.train_function.__name__ == "train_function"
    assert keras_trainer.train_function.__name__ == "function"
    np.testing.assert_allclose(weights, keras_weights, rtol=1e-5, atol=1e-6)
    for name in ("loss", "keypoint_loss", "skeletal_loss"):
        np.testing.assert_allclose(history[name], keras_history[name], rtol=1e-5)


def test_one_graph_train_function_ends_the_epoch_with_the_data():
    """A finite dataset ends the epoch after its last batch (3 steps), as in Keras' function;
    a dataset of numpy arrays (a Keras-made iterator) trains as well."""
    images, labels = tiny_batch(batch=4, seed=6)
    finite = tf.data.Dataset.from_tensors((images, labels)).repeat(3)
    _, weights, history = _fit_weights_and_logs(True, finite, epochs=2)
    _, keras_weights, keras_history = _fit_weights_and_logs(False, finite, epochs=2)
    np.testing.assert_allclose(weights, keras_weights, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(history["loss"], keras_history["loss"], rtol=1e-5)
    counter = []

    class CountSteps(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            counter.append(batch)

    keras.utils.set_random_seed(0)
    make_trainer().fit(finite, epochs=1, verbose=0, callbacks=[CountSteps()])
    assert counter == [0, 1, 2]
    arrays = make_trainer().fit(images, labels, batch_size=2, epochs=1, verbose=0).history
    assert np.isfinite(arrays["loss"][0])
    # Called directly with a Python iterable of batches: one step, then StopIteration.
    trainer = make_trainer()
    trainer.make_train_function()
    before = trainer.optimizer.iterations.numpy()
    assert np.isfinite(float(trainer.train_function([(images, labels)])["loss"]))
    assert trainer.optimizer.iterations.numpy() == before + 1
    with pytest.raises(StopIteration):
        trainer.train_function([])


def test_xla_and_multi_step_runs_keep_keras_train_function():
    """XLA cannot compile the iterator's `get_next` and several steps per execution need Keras'
    loop, so both keep Keras' function, and train."""
    images, labels = tiny_batch(batch=4, seed=7)
    dataset = tf.data.Dataset.from_tensors((images, labels)).repeat()
    for compile_kwargs in ({"jit_compile": True}, {"steps_per_execution": 2}):
        trainer = PoseTrainer(tiny_pose_model("coco"), HeatmapCodec((64, 64), "coco", sigma=2.0))
        trainer.compile(optimizer=keras.optimizers.Adam(1e-3), **compile_kwargs)
        history = trainer.fit(dataset, epochs=1, steps_per_epoch=2, verbose=0).history
        assert trainer.train_function.__name__ == "function", compile_kwargs
        assert np.isfinite(history["loss"][0]) and trainer.optimizer.iterations.numpy() == 2


def test_micro_batches_must_divide_the_batch():
    trainer = PoseTrainer(tiny_pose_model("coco"), HeatmapCodec((64, 64), "coco"),
                          micro_batches=3)
    trainer.compile(optimizer=keras.optimizers.SGD(0.1))
    images, labels = tiny_batch(batch=4)
    with pytest.raises(ValueError, match="micro_batches=3 does not divide the batch size 4"):
        trainer.fit(images, labels, batch_size=4, epochs=1, verbose=0)


def test_baseline_trains_with_keypoint_loss_only():
    trainer = make_trainer(skeletal_attention=False)
    images, labels = tiny_batch()
    logs = trainer.fit(images, labels, batch_size=4, epochs=1, verbose=0).history
    assert logs["skeletal_loss"] == [0.0]
    np.testing.assert_allclose(logs["loss"], logs["keypoint_loss"])


def test_mismatched_codec_is_rejected():
    network = tiny_pose_model("mpii")
    try:
        PoseTrainer(network, HeatmapCodec((64, 64), "coco"))
    except ValueError as error:
        assert "16 heatmaps" in str(error)
    else:
        raise AssertionError("expected a ValueError")


def test_warmup_step_schedule_values():
    schedule = WarmupSchedule(1e-3, 1000, "step", boundaries=(600, 900), factor=0.1,
                              warmup_steps=100, warmup_start=0.0)
    values = [float(schedule(s)) for s in (0, 50, 100, 599, 600, 899, 900)]
    np.testing.assert_allclose(values, [0.0, 5e-4, 1e-3, 1e-3, 1e-4, 1e-4, 1e-5], rtol=1e-5)
    cosine = WarmupSchedule(1.0, 100, "cosine")
    np.testing.assert_allclose([float(cosine(s)) for s in (0, 50, 100)], [1.0, 0.5, 0.0],
                               atol=1e-6)


def test_step_decay_drops_at_the_official_hrnet_epochs():
    # Official HRNet: MultiStepLR([170, 200], 0.1) stepped before each epoch trains, so
    # 0-indexed epochs 0-168 train at 1e-3, 169-198 at 1e-4 and 199-209 at 1e-5.
    steps_per_epoch = 10
    assert epoch_boundaries((170, 200), steps_per_epoch) == [1690, 1990]
    schedule = WarmupSchedule(1e-3, 210 * steps_per_epoch, "step",
                              boundaries=epoch_boundaries((170.0, 200.0), steps_per_epoch))
    expected = {168: 1e-3, 169: 1e-4, 170: 1e-4, 198: 1e-4, 199: 1e-5, 200: 1e-5, 209: 1e-5}
    for epoch, lr in expected.items():
        first, last = epoch * steps_per_epoch, epoch * steps_per_epoch + steps_per_epoch - 1
        np.testing.assert_allclose([float(schedule(first)), float(schedule(last))], [lr, lr],
                                   rtol=1e-6, err_msg=f"epoch {epoch}")
    assert epoch_boundaries((0.5, 1, 2.5), 4) == [0, 0, 6]


def _replica_command(*args):
    return [sys.executable, os.path.join(TESTS_DIR, "replica_training.py"), *args]


def _environment(**extra):
    path = os.pathsep.join(p for p in (TESTS_DIR, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


def _run_replica_script(strategy, out, optimizer="sgd", micro_batches=1):
    result = subprocess.run(_replica_command(strategy, out, optimizer, str(micro_batches)),
                            capture_output=True,
                            text=True, timeout=600, env=_environment())
    assert result.returncode == 0, result.stderr[-3000:]
    return np.load(out)


def test_mirrored_two_cpu_replicas_match_one_device(tmp_path):
    single = _run_replica_script("default", str(tmp_path / "single.npz"))
    mirrored = _run_replica_script("mirrored", str(tmp_path / "mirrored.npz"))
    np.testing.assert_allclose(mirrored["losses"], single["losses"], rtol=1e-4)
    np.testing.assert_allclose(mirrored["weights"], single["weights"], rtol=1e-3, atol=1e-6)
    assert single["losses"][-1] < single["losses"][0]


def test_micro_batches_under_mirrored_strategy_match_one_device(tmp_path):
    """Each replica accumulates its half of the batch in 2 micro-batches of 2."""
    single = _run_replica_script("default", str(tmp_path / "single.npz"))
    micro = _run_replica_script("mirrored", str(tmp_path / "micro.npz"), "sgd", 2)
    np.testing.assert_allclose(micro["losses"], single["losses"], rtol=1e-4)
    np.testing.assert_allclose(micro["weights"], single["weights"], rtol=1e-3, atol=1e-6)


def test_fused_adam_equals_keras_adam_under_mirrored_strategy(tmp_path):
    """The fused kernel must update each replica's own copy of every variable and slot."""
    keras_adam = _run_replica_script("mirrored", str(tmp_path / "adam.npz"), "adam")
    fused_adam = _run_replica_script("mirrored", str(tmp_path / "fused.npz"), "fused_adam")
    np.testing.assert_allclose(fused_adam["losses"], keras_adam["losses"], rtol=1e-5)
    np.testing.assert_allclose(fused_adam["weights"], keras_adam["weights"], rtol=1e-4,
                               atol=1e-7)
    assert np.abs(fused_adam["weights"] - fused_adam["initial"]).max() > 1e-4


def test_multi_worker_two_processes_match_one_device(tmp_path):
    single = _run_replica_script("default", str(tmp_path / "single.npz"))
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    out = str(tmp_path / "multi.npz")
    processes = [
        subprocess.Popen(
            _replica_command("multi_worker", out), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
            env=_environment(TF_CONFIG=json.dumps(
                {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})))
        for index in range(2)
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-3000:]
    multi = np.load(out)
    # Two workers with the same global batch of 8: each replica sees 4 samples, the gradients are
    # all-reduced, so losses and weights equal the single-device run.
    np.testing.assert_allclose(multi["losses"], single["losses"], rtol=1e-4)
    np.testing.assert_allclose(multi["weights"], single["weights"], rtol=1e-3, atol=1e-6)


def test_nan_guard_stops_with_a_clear_message():
    from types import SimpleNamespace

    from skelpose_tf.training.callbacks import NanGuard

    guard = NanGuard()
    guard.set_model(SimpleNamespace(optimizer=SimpleNamespace(iterations=tf.Variable(7)),
                                    stop_training=False))
    guard.on_train_batch_end(0, {"loss": 0.5})
    assert not guard.model.stop_training
    try:
        guard.on_train_batch_end(1, {"loss": float("nan")})
    except FloatingPointError as error:
        assert "step 7" in str(error) and "resume" in str(error)
    else:
        raise AssertionError("expected FloatingPointError")
    assert guard.model.stop_training
