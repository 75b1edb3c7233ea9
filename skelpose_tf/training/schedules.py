"""Learning-rate schedules over optimizer steps (restored exactly on resume)."""

from __future__ import annotations

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="skelpose_tf")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up, then multi-step decay (official HRNet) or cosine annealing.

    Args:
        base_lr: learning rate after the warm-up.
        total_steps: length of training in optimizer steps (cosine anneals to 0 there).
        decay: "step" (multiply by `factor` at each of `boundaries`) or "cosine".
        boundaries: optimizer steps where the step decay applies (e.g. epochs 170 and 200 of
            210, times the steps per epoch).
        factor: multiplier at each boundary (0.1 in HRNet).
        warmup_steps: steps of linear warm-up from `warmup_start * base_lr` (0: none).
        warmup_start: fraction of `base_lr` at step 0 of the warm-up.

    Example: HRNet's recipe, 1,000 steps per epoch:
    `WarmupSchedule(1e-3, 210_000, "step", boundaries=(169_000, 199_000))`.
    """

    def __init__(self, base_lr, total_steps, decay="step", boundaries=(), factor=0.1,
                 warmup_steps=0, warmup_start=0.001):
        if decay not in ("step", "cosine"):
            raise ValueError(f"decay must be 'step' or 'cosine'. Received: decay={decay!r}")
        if base_lr <= 0 or total_steps <= 0:
            raise ValueError(
                f"base_lr and total_steps must be positive. Received: {base_lr}, {total_steps}")
        self.base_lr = float(base_lr)
        self.total_steps = int(total_steps)
        self.decay = decay
        self.boundaries = tuple(int(b) for b in boundaries)
        self.factor = float(factor)
        self.warmup_steps = int(warmup_steps)
        self.warmup_start = float(warmup_start)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        if self.decay == "step":
            lr = ops.convert_to_tensor(self.base_lr, "float32")
            for boundary in self.boundaries:
                lr = ops.where(step >= boundary, lr * self.factor, lr)
        else:
            progress = ops.clip(step / float(self.total_steps), 0.0, 1.0)
            lr = 0.5 * self.base_lr * (1.0 + ops.cos(math.pi * progress))
        if self.warmup_steps > 0:
            fraction = ops.clip(step / float(self.warmup_steps), 0.0, 1.0)
            lr = lr * (self.warmup_start + (1.0 - self.warmup_start) * fraction)
        return lr

    def get_config(self):
        return {
            "base_lr": self.base_lr, "total_steps": self.total_steps, "decay": self.decay,
            "boundaries": list(self.boundaries), "factor": self.factor,
            "warmup_steps": self.warmup_steps, "warmup_start": self.warmup_start,
        }
