"""Learning-rate schedules over optimizer steps (restored exactly on resume).

Step decay follows the official HRNet code (`tools/train.py`): `MultiStepLR(milestones=[170,
200], gamma=0.1)` with `lr_scheduler.step()` called at the *start* of every epoch, before that
epoch trains. With PyTorch >= 1.1 semantics (the constructor already counts one step), 0-indexed
epoch e trains at base x gamma^(number of milestones <= e + 1), so each drop takes effect one
epoch before its milestone: 1e-3 for epochs 0-168, 1e-4 for 169-198, 1e-5 for 199-209
(169 / 30 / 11 epochs; `shared/reference/hrnet-reference.md`, checked with torch 2.13).
`epoch_boundaries` turns milestones given as epochs (`TrainConfig.lr_steps`) into the optimizer
steps where `WarmupSchedule` drops, with that convention.
"""

from __future__ import annotations

import math

import keras
from keras import ops


def epoch_boundaries(lr_steps, steps_per_epoch):
    """Optimizer steps where the step decay applies, for milestones given in epochs.

    Milestone m (an epoch count, as in the official `MultiStepLR(milestones=[170, 200])`)
    takes effect at the first step of 0-indexed epoch m - 1, as in the official loop, which
    calls `lr_scheduler.step()` before training each epoch (module docstring). A milestone
    below 1 applies from step 0.

    Args:
        lr_steps: milestones in epochs (ints or floats, e.g. `(170, 200)`).
        steps_per_epoch: optimizer steps per epoch.

    Returns:
        A list of ints, e.g. `[169 * steps_per_epoch, 199 * steps_per_epoch]` for (170, 200).

    Example:
        >>> epoch_boundaries((170, 200), 1000)
        [169000, 199000]
    """
    if steps_per_epoch <= 0:
        raise ValueError(
            f"steps_per_epoch must be positive. Received: steps_per_epoch={steps_per_epoch}")
    return [max(0, round((float(m) - 1.0) * steps_per_epoch)) for m in lr_steps]


@keras.saving.register_keras_serializable(package="skelpose_tf")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up, then multi-step decay (official HRNet) or cosine annealing.

    Args:
        base_lr: learning rate after the warm-up.
        total_steps: length of training in optimizer steps (cosine anneals to 0 there).
        decay: "step" (multiply by `factor` from each of `boundaries` on) or "cosine".
        boundaries: optimizer steps where the step decay applies: the learning rate is
            multiplied by `factor` for every boundary <= step. For milestones in epochs use
            `epoch_boundaries`, which places HRNet's 170 and 200 at the starts of 0-indexed
            epochs 169 and 199, as the official code does.
        factor: multiplier at each boundary (0.1 in HRNet).
        warmup_steps: steps of linear warm-up from `warmup_start * base_lr` (0: none).
        warmup_start: fraction of `base_lr` at step 0 of the warm-up.

    Example: HRNet's recipe, 1,000 steps per epoch:
    `WarmupSchedule(1e-3, 210_000, "step", boundaries=epoch_boundaries((170, 200), 1000))`,
    i.e. boundaries (169_000, 199_000).
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
