"""Temporal smoothing of keypoints: the One-Euro filter, one state per track id.

The One-Euro filter (Casiez, Roussel and Vogel, "1 Euro Filter: A Simple Speed-based Low-pass
Filter for Noisy Input in Interactive Systems", CHI 2012) is a first-order low-pass filter
whose cut-off frequency rises with the signal's speed: slow keypoints are smoothed hard (jitter
goes), fast ones lightly (little lag). For a sample x at time t, dt seconds after the last one:

    alpha(f) = 1 / (1 + tau / dt),     tau = 1 / (2 pi f)
    dx       = (x - x_hat_prev) / dt                      (pixels per second)
    dx_hat   = alpha(d_cutoff) dx + (1 - alpha(d_cutoff)) dx_hat_prev
    f_c      = min_cutoff + beta |dx_hat|
    x_hat    = alpha(f_c) x + (1 - alpha(f_c)) x_hat_prev

The first sample passes through (x_hat = x, dx_hat = 0). `OneEuroFilter` runs it on an array of
independent signals (here every x and y of every keypoint), each with its own last-update time,
so it is frame rate aware: dt comes from the frames' time stamps, a camera that drops frames
just gives a larger dt.

Units: min_cutoff and d_cutoff in Hz, beta in 1/pixel (f_c grows by beta Hz per pixel/s).
The defaults (min_cutoff 1 Hz, beta 0.1 per pixel, d_cutoff 1 Hz) were chosen on the
synthetic clip of `skelpose_tf.data.synthetic_video` (people 60-100 px tall walking at ~45
px/s, 25 frames/s) with 1.5 px of keypoint noise: the frame-to-frame jitter (mean |second
difference|) drops from 3.0 to 1.1 px, the mean error from 1.9 to 1.6 px, at a lag of ~1 px
along the motion (tests/test_smoothing.py). Speeds are in pixels, so for people N times larger
in pixels beta can be N times smaller for the same behaviour.

Low-score keypoints. A keypoint whose score is at or below `score_threshold` is not a
measurement: it does not update its filter (neither value nor speed nor last-update time), so
a keypoint the model lost for a few frames cannot drag the smoothed position towards wherever
its heatmap maximum wandered. Its output is the raw value with its (low) score, i.e. what the
model said, which drawing and the JSON show as unreliable by the score. When it scores again,
the filter resumes from its last confident value with dt = the time since that value, which
weighs the new measurement more the longer the gap.

`PoseSmoother` keeps one `OneEuroFilter` per track id (`PersonPose.track_id`): a track id it
has not seen starts a fresh filter (the tracker never reuses ids, so a new person never
inherits another's state); filters of ids absent for more than `forget_after` frames are
dropped.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np


def smoothing_factor(cutoff, dt):
    """The exponential smoothing factor alpha = 1 / (1 + tau / dt), tau = 1 / (2 pi cutoff)."""
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff, np.float64))
    return 1.0 / (1.0 + tau / np.asarray(dt, np.float64))


class OneEuroFilter:
    """The One-Euro filter on an array of independent signals (module docstring).

    Args:
        min_cutoff: the cut-off frequency at zero speed, Hz (lower = smoother, more lag).
        beta: how fast the cut-off rises with speed, Hz per (unit per second).
        d_cutoff: the cut-off frequency of the speed estimate, Hz.

    Call arguments (`__call__`):
        x: float [...] the new samples (a fixed shape for the filter's life).
        t: the time stamp in seconds (increasing).
        valid: optional bool [...] (broadcast to x): False entries are not measurements; they
            leave their state alone and are returned unchanged.

    Returns:
        float64 [...], the filtered samples.

    Example:
        f = OneEuroFilter(min_cutoff=1.0, beta=0.0)
        f(np.array([0.0]), 0.0)    # [0.0]
        f(np.array([1.0]), 0.1)    # alpha = 1 / (1 + 1 / (2 pi 0.1)) = 0.3859 -> [0.3859]
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.1, d_cutoff: float = 1.0):
        for name, value in (("min_cutoff", min_cutoff), ("d_cutoff", d_cutoff)):
            if not value > 0:
                raise ValueError(f"{name} must be > 0 Hz. Received: {name}={value}")
        if not beta >= 0:
            raise ValueError(f"beta must be >= 0. Received: beta={beta}")
        self.min_cutoff, self.beta, self.d_cutoff = float(min_cutoff), float(beta), float(d_cutoff)
        self._x = self._dx = self._t = None  # per-entry state; NaN time = never measured

    def __call__(self, x, t, valid=None):
        x = np.asarray(x, np.float64)
        valid = np.ones(x.shape, bool) if valid is None else np.broadcast_to(valid, x.shape)
        if self._x is None:
            self._x, self._dx = x.copy(), np.zeros_like(x)
            self._t = np.full(x.shape, np.nan)
        if x.shape != self._x.shape:
            raise ValueError(f"OneEuroFilter got samples of shape {x.shape} after {self._x.shape}.")
        first = valid & np.isnan(self._t)
        update = valid & ~np.isnan(self._t)
        dt = np.where(update, float(t) - np.nan_to_num(self._t), 1.0)
        if np.any(dt[update] <= 0):
            raise ValueError(f"OneEuroFilter time stamps must increase. Received t={t}.")
        a_d = smoothing_factor(self.d_cutoff, dt)
        dx_hat = a_d * (x - self._x) / dt + (1.0 - a_d) * self._dx
        a = smoothing_factor(self.min_cutoff + self.beta * np.abs(dx_hat), dt)
        x_hat = a * x + (1.0 - a) * self._x
        self._x = np.where(update, x_hat, np.where(first, x, self._x))
        self._dx = np.where(update, dx_hat, np.where(first, 0.0, self._dx))
        self._t = np.where(valid, float(t), self._t)
        return np.where(valid, self._x, x)


@dataclasses.dataclass
class _State:
    filter: OneEuroFilter
    last_seen: int


class PoseSmoother:
    """One-Euro smoothing of each tracked person's keypoints (module docstring).

    Args:
        min_cutoff, beta, d_cutoff: the `OneEuroFilter` settings (Hz, 1/pixel, Hz).
        score_threshold: keypoints scoring at or below this do not update the filter.
        forget_after: frames after which the state of an absent track id is dropped.

    Call arguments (`update`):
        persons: list of `PersonPose` with track ids (`tracking.PoseTracker`); a person
            without one is returned unsmoothed.
        t: the frame's time in seconds.

    Returns:
        New `PersonPose`s (the inputs are not modified) whose keypoints [K, 3] have smoothed
        (x, y) in image pixels and the original scores; box, score and ids unchanged.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.1, d_cutoff: float = 1.0,
                 score_threshold: float = 0.3, forget_after: int = 30):
        OneEuroFilter(min_cutoff, beta, d_cutoff)  # checks the settings
        self.settings = {"min_cutoff": min_cutoff, "beta": beta, "d_cutoff": d_cutoff}
        self.score_threshold = float(score_threshold)
        self.forget_after = int(forget_after)
        self.reset()

    def reset(self):
        """Forget every track's state (a new video)."""
        self._states: dict = {}
        self._frame = 0

    def update(self, persons, t) -> list:
        self._frame += 1
        smoothed = []
        for person in persons:
            if person.track_id is None:
                smoothed.append(person)
                continue
            state = self._states.get(person.track_id)
            if state is None:
                state = self._states[person.track_id] = _State(OneEuroFilter(**self.settings), 0)
            state.last_seen = self._frame
            keypoints = person.keypoints.copy()
            valid = (keypoints[:, 2] > self.score_threshold)[:, None]
            keypoints[:, :2] = state.filter(keypoints[:, :2], t, valid)
            smoothed.append(dataclasses.replace(person, keypoints=keypoints))
        self._states = {track: state for track, state in self._states.items()
                        if self._frame - state.last_seen <= self.forget_after}
        return smoothed

