"""Callbacks of a long training run: step-level checkpoints, validation AP, pictures, NaN guard."""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import tensorflow as tf

from skelpose_tf.atomic_files import (atomic_write, keras_file_metadata, save_keras_atomic,
                                      write_text_atomic)
from skelpose_tf.drawing import pose_panels

class RunCheckpoint(keras.callbacks.Callback):
    """Writes the run's checkpoint (`RunState.save`) every `every_steps` optimizer steps and
    after each epoch's end-of-epoch work.

    Place it last in the callback list: the epoch-end checkpoint then records that the epoch's
    validation and `last.keras` are done (`epochs_closed`), so a resume neither repeats nor
    skips them. A run killed with `kill -9` resumes repeating at most the steps since the last
    checkpoint.

    Args:
        run_state: the run's `RunState`.
        every_steps: checkpoint interval in optimizer steps.
    """

    def __init__(self, run_state, every_steps):
        super().__init__()
        if every_steps <= 0:
            raise ValueError(f"every_steps must be positive. Received: every_steps={every_steps}")
        self.run_state = run_state
        self.every_steps = int(every_steps)

    def on_train_batch_end(self, batch, logs=None):
        if self.run_state.step % self.every_steps == 0:
            self.run_state.save()

    def on_epoch_end(self, epoch, logs=None):
        self.run_state.save(epochs_closed=epoch + 1)


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
                "corrupt labels. The last checkpoint before this step is intact; fix the cause "
                "and rerun the same command to resume from it."
            )


class ValidationCallback(keras.callbacks.Callback):
    """Runs the real evaluator every `every_epochs` epochs and keeps the best network.

    Every file is written under a temporary name and renamed into place. `best.keras` carries
    its own validation result inside the archive (`atomic_files.keras_file_metadata`), so the
    best value survives a kill between writing it and the next checkpoint, and a resumed run
    never replaces it by a worse model.

    Args:
        evaluate_fn: `evaluate_fn(network) -> dict` of metrics (e.g. {"AP": ..., ...}); it is
            given the trainer's network.
        run_dir: the run directory; `best.keras` (the network with the best `monitor` value),
            `last.keras` (every epoch) and `validation.jsonl` (one line per evaluation) go here.
        every_epochs: evaluation interval in epochs (the last epoch is always evaluated).
        total_epochs: the run's number of epochs.
        progress: the checkpointed progress dict (`RunProgress.values`); this callback keeps
            `best` ({"metric", "value", "epoch"}) and `validations` (list of dicts) in it.
        monitor: the metric that selects the best checkpoint (higher is better).
    """

    def __init__(self, evaluate_fn, run_dir, every_epochs, total_epochs, progress, monitor="AP"):
        super().__init__()
        self.evaluate_fn = evaluate_fn
        self.run_dir = run_dir
        self.every_epochs = max(1, int(every_epochs))
        self.total_epochs = int(total_epochs)
        self.progress = progress
        self.monitor = monitor
        saved = keras_file_metadata(os.path.join(run_dir, "best.keras"))
        best = progress.get("best")
        if saved and saved.get("metric") == monitor and (
                best is None or saved["value"] > best["value"]):
            progress["best"] = {k: saved[k] for k in ("metric", "value", "epoch")}

    @property
    def best_value(self):
        best = self.progress.get("best")
        return -np.inf if best is None else best["value"]

    def on_epoch_end(self, epoch, logs=None):
        network = self.model.network
        save_keras_atomic(network, os.path.join(self.run_dir, "last.keras"),
                          {"epoch": epoch + 1})
        if (epoch + 1) % self.every_epochs and epoch + 1 != self.total_epochs:
            return
        metrics = self.evaluate_fn(network)
        if logs is not None:
            logs[f"val_{self.monitor}"] = metrics[self.monitor]
        value = float(metrics[self.monitor])
        improved = value > self.best_value
        if improved:
            best = {"metric": self.monitor, "value": value, "epoch": epoch + 1}
            save_keras_atomic(network, os.path.join(self.run_dir, "best.keras"),
                              {**best, "metrics": metrics})
            self.progress["best"] = best
        validations = [v for v in self.progress.get("validations", []) if v["epoch"] != epoch + 1]
        self.progress["validations"] = validations + [{"epoch": epoch + 1, **metrics}]
        write_text_atomic(os.path.join(self.run_dir, "validation.jsonl"), "".join(
            json.dumps(v, default=float) + "\n" for v in self.progress["validations"]))
        print(f"validation after epoch {epoch + 1}: {self.monitor} {value:.4f}"
              f"{' (best so far, saved best.keras)' if improved else ''}", flush=True)


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

        outputs = self.model.network(self.images, training=False)
        keypoints, scores = self.codec.decode(outputs["heatmaps"])
        panels = pose_panels(self.images, keypoints, scores, outputs["heatmaps"],
                             self.codec.keypoint_set, outputs.get("skeletal_heatmaps"))
        with self.writer.as_default():
            for name, panel in panels.items():
                tf.summary.image(name, panel[None], step=epoch + 1)
        self.writer.flush()
        if self.png_dir:
            os.makedirs(self.png_dir, exist_ok=True)
            for name, panel in panels.items():
                with atomic_write(os.path.join(self.png_dir, f"{name}.png")) as temporary:
                    cv2.imwrite(temporary, panel[..., ::-1])
