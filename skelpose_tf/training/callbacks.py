"""Callbacks of a long training run: step-level backups, validation AP, pictures, NaN guard."""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import tensorflow as tf

from skelpose_tf.drawing import draw_pose, heatmap_overlay, tile_images
from skelpose_tf.models.skeletal_attention import body_attention_maps

BACKUP_WEIGHTS = "backup.weights.h5"
BACKUP_STATE = "backup_state.json"


def _atomic_write_json(path, payload):
    temporary = f"{path}.tmp"
    with open(temporary, "w") as f:
        json.dump(payload, f, indent=2)
    os.replace(temporary, path)


class StepBackup(keras.callbacks.Callback):
    """Saves the trainer (weights and optimizer state) every `every_steps` optimizer steps.

    Keras' BackupAndRestore restores only epoch starts; this backup records the optimizer step,
    so a run killed with `kill -9` resumes (see `load_backup`) repeating at most the steps since
    the last backup. Files are written to a temporary name and renamed, so a kill during the
    write leaves the previous backup intact.

    Args:
        directory: the run's backup directory.
        every_steps: backup interval in optimizer steps (also at every epoch end).
        state: a dict of extra state to store (e.g. the best validation AP); the callback keeps
            a reference, so updates by other callbacks are saved too.
    """

    def __init__(self, directory, every_steps, state=None):
        super().__init__()
        if every_steps <= 0:
            raise ValueError(f"every_steps must be positive. Received: every_steps={every_steps}")
        self.directory = directory
        self.every_steps = int(every_steps)
        self.state = {} if state is None else state
        os.makedirs(directory, exist_ok=True)

    def _save(self, epoch_finished=None):
        step = int(self.model.optimizer.iterations.numpy())
        weights = os.path.join(self.directory, BACKUP_WEIGHTS)
        self.model.save_weights(f"{weights}.tmp.weights.h5")
        os.replace(f"{weights}.tmp.weights.h5", weights)
        if epoch_finished is not None:
            self.state["epochs_finished"] = epoch_finished
        self.state["step"] = step
        _atomic_write_json(os.path.join(self.directory, BACKUP_STATE), self.state)

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) % self.every_steps == 0:
            self._save()

    def on_epoch_end(self, epoch, logs=None):
        self._save(epoch_finished=epoch + 1)


def load_backup(trainer, directory):
    """Restore a `StepBackup`; returns its state dict (with `step`), or None if there is none.

    The trainer must be compiled; its optimizer variables are built before loading.
    """
    state_path = os.path.join(directory, BACKUP_STATE)
    weights_path = os.path.join(directory, BACKUP_WEIGHTS)
    if not (os.path.exists(state_path) and os.path.exists(weights_path)):
        return None
    with open(state_path) as f:
        state = json.load(f)
    trainer.optimizer.build(trainer.trainable_variables)
    trainer.load_weights(weights_path)
    restored = int(trainer.optimizer.iterations.numpy())
    if restored != state["step"]:
        raise ValueError(
            f"Backup in {directory} is inconsistent: state says step {state['step']} but the "
            f"weights file holds optimizer step {restored}. Delete the directory to start over."
        )
    return state


class NanGuard(keras.callbacks.Callback):
    """Stops training with a clear message as soon as the loss is not finite."""

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.all(np.isfinite(np.asarray(loss))):
            step = int(self.model.optimizer.iterations.numpy())
            self.model.stop_training = True
            raise FloatingPointError(
                f"The training loss became {float(np.ravel(loss)[0])} at optimizer step {step}. "
                "Typical causes: a learning rate too high for the batch size (try --lr smaller "
                "or --warmup_steps), mixed_float16 without loss scaling on custom code, or "
                "corrupt labels. The last backup before this step is intact; fix the cause and "
                "rerun the same command to resume from it."
            )


class ValidationCallback(keras.callbacks.Callback):
    """Runs the real evaluator every `every_epochs` epochs and keeps the best network.

    Args:
        evaluate_fn: `evaluate_fn(network) -> dict` of metrics (e.g. {"AP": ..., ...}); it is
            given the trainer's network.
        run_dir: the run directory; `best.keras` (the network with the best `monitor` value),
            `last.keras` (every epoch) and `validation.jsonl` (one line per evaluation) go here.
        every_epochs: evaluation interval in epochs (the last epoch is always evaluated).
        total_epochs: the run's number of epochs.
        state: shared dict (saved by `StepBackup`) holding `best_<monitor>` across restarts.
        monitor: the metric that selects the best checkpoint (higher is better).
    """

    def __init__(self, evaluate_fn, run_dir, every_epochs, total_epochs, state, monitor="AP"):
        super().__init__()
        self.evaluate_fn = evaluate_fn
        self.run_dir = run_dir
        self.every_epochs = max(1, int(every_epochs))
        self.total_epochs = int(total_epochs)
        self.state = state
        self.monitor = monitor

    def on_epoch_end(self, epoch, logs=None):
        network = self.model.network
        network.save(os.path.join(self.run_dir, "last.keras"))
        if (epoch + 1) % self.every_epochs and epoch + 1 != self.total_epochs:
            return
        metrics = self.evaluate_fn(network)
        if logs is not None:
            logs[f"val_{self.monitor}"] = metrics[self.monitor]
        best_key = f"best_{self.monitor}"
        value = metrics[self.monitor]
        improved = value > self.state.get(best_key, -np.inf)
        if improved:
            self.state[best_key] = value
            self.state["best_epoch"] = epoch + 1
            network.save(os.path.join(self.run_dir, "best.keras"))
        with open(os.path.join(self.run_dir, "validation.jsonl"), "a") as f:
            f.write(json.dumps({"epoch": epoch + 1, **metrics}) + "\n")
        print(f"validation after epoch {epoch + 1}: {self.monitor} {value:.4f}"
              f"{' (best so far, saved best.keras)' if improved else ''}", flush=True)


def pose_panels(network, codec, images, max_images=4):
    """Pictures of the model's predictions on crops, as RGB uint8 arrays.

    Args:
        network: the pose network.
        codec: its `HeatmapCodec`.
        images: uint8 `[B, H, W, 3]` input crops.
        max_images: how many crops to draw.

    Returns:
        Dict of uint8 `[H', W', 3]` panels: `skeletons` (decoded keypoints drawn on the crops),
        `keypoint_heatmaps` (max over keypoints), and, for a model with the skeletal module,
        `skeletal_heatmaps` (max over links) and `attention` (upper | lower | full-body maps,
        paper Fig. 1-2), one row per crop.
    """
    images = np.asarray(images[:max_images])
    outputs = network(images, training=False)
    keypoints, scores = codec.decode(outputs["heatmaps"])
    keypoints, scores = np.asarray(keypoints), np.asarray(scores)
    heatmaps = np.asarray(outputs["heatmaps"])
    keypoint_set = codec.keypoint_set
    panels = {
        "skeletons": tile_images(
            [draw_pose(img, kp, sc, keypoint_set, threshold=0.2)
             for img, kp, sc in zip(images, keypoints, scores)], cols=len(images)),
        "keypoint_heatmaps": tile_images(
            [heatmap_overlay(img, hm.max(axis=-1)) for img, hm in zip(images, heatmaps)],
            cols=len(images)),
    }
    if "skeletal_heatmaps" in outputs:
        skeletal = outputs["skeletal_heatmaps"]
        upper, lower, full = (np.asarray(m)[..., 0] for m in body_attention_maps(
            skeletal, keypoint_set.upper_link_indices, keypoint_set.lower_link_indices))
        skeletal = np.asarray(skeletal)
        panels["skeletal_heatmaps"] = tile_images(
            [heatmap_overlay(img, sk.max(axis=-1)) for img, sk in zip(images, skeletal)],
            cols=len(images))
        tiles, captions = [], []
        for i, img in enumerate(images):
            for name, maps in (("upper", upper), ("lower", lower), ("full", full)):
                peak = max(float(maps[i].max()), 1e-6)
                tiles.append(heatmap_overlay(img, maps[i], value_range=(0.0, peak)))
                captions.append(name)
        panels["attention"] = tile_images(tiles, cols=3, captions=captions)
    return panels


class ImageLogger(keras.callbacks.Callback):
    """Writes prediction pictures to TensorBoard (and PNGs) every `every_epochs` epochs.

    Args:
        log_dir: TensorBoard directory (images go to its `images` subfolder).
        images: uint8 `[N, H, W, 3]` fixed validation crops to draw.
        codec: the network's `HeatmapCodec`.
        every_epochs: interval in epochs.
        png_dir: where `<panel>.png` of the latest epoch are written (None: no PNGs).
    """

    def __init__(self, log_dir, images, codec, every_epochs=1, png_dir=None):
        super().__init__()
        self.writer = tf.summary.create_file_writer(os.path.join(log_dir, "images"))
        self.images = np.asarray(images)
        self.codec = codec
        self.every_epochs = max(1, int(every_epochs))
        self.png_dir = png_dir

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_epochs:
            return
        import cv2

        panels = pose_panels(self.model.network, self.codec, self.images)
        with self.writer.as_default():
            for name, panel in panels.items():
                tf.summary.image(name, panel[None], step=epoch + 1)
        self.writer.flush()
        if self.png_dir:
            os.makedirs(self.png_dir, exist_ok=True)
            for name, panel in panels.items():
                cv2.imwrite(os.path.join(self.png_dir, f"{name}.png"), panel[..., ::-1])
