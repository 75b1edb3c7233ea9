"""One-Euro filter against hand-computed values, low-score keypoints, and the gain of
PoseSmoother on noisy ground truth of the synthetic video."""

import numpy as np
import pytest

from skelpose_tf.data.synthetic_video import render_video
from skelpose_tf.person_pose import PersonPose
from skelpose_tf.smoothing import OneEuroFilter, PoseSmoother, smoothing_factor
from video_fixtures import GroundTruthEstimator


def test_smoothing_factor_by_hand():
    # tau = 1 / (2 pi 1 Hz) = 0.159155 s; alpha = 1 / (1 + tau / 0.1 s) = 1 / 2.591549.
    assert smoothing_factor(1.0, 0.1) == pytest.approx(0.3858695, abs=1e-7)


def test_one_euro_without_beta_is_a_low_pass_filter_by_hand():
    f = OneEuroFilter(min_cutoff=1.0, beta=0.0, d_cutoff=1.0)
    outputs = [float(f(np.array([x]), t)[0]) for x, t in ((0.0, 0.0), (1.0, 0.1), (1.0, 0.2))]
    # 0 passes; then x_hat = a * 1 + (1 - a) * x_hat_prev with a = 0.3858695:
    # 0.3858695, then 0.3858695 + 0.3858695 * 0.6141305 = 0.6228438.
    np.testing.assert_allclose(outputs, [0.0, 0.3858695, 0.6228438], atol=1e-7)


def test_one_euro_with_beta_and_uneven_time_steps_by_hand():
    f = OneEuroFilter(min_cutoff=1.0, beta=0.5, d_cutoff=1.0)
    outputs = [float(f(np.array([x]), t)[0]) for x, t in ((0.0, 0.0), (1.0, 0.1), (1.0, 0.3))]
    # Step 2 (dt 0.1): dx = 10, dx_hat = 0.3858695 * 10 = 3.858695, f_c = 1 + 0.5 * 3.858695
    #   = 2.929348 Hz, a = 1 / (1 + 1 / (2 pi 2.929348 0.1)) = 0.6479572 = x_hat.
    # Step 3 (dt 0.2): a_d = 1 / (1 + 1 / (2 pi 0.2)) = 0.5568627; dx = (1 - 0.6479572) / 0.2
    #   = 1.760214; dx_hat = 0.5568627 * 1.760214 + 0.4431373 * 3.858695 = 2.690129;
    #   f_c = 2.345065 Hz; a = 1 / (1 + 1 / (2 pi 2.345065 0.2)) = 0.7466363;
    #   x_hat = 0.7466363 + 0.2533637 * 0.6479572 = 0.9108051.
    np.testing.assert_allclose(outputs, [0.0, 0.6479572, 0.9108051], atol=1e-6)


def test_filter_is_vectorised_over_independent_entries():
    together = OneEuroFilter(beta=0.5)
    alone = [OneEuroFilter(beta=0.5) for _ in range(3)]
    rng = np.random.default_rng(0)
    for t in (0.0, 0.04, 0.1, 0.13):
        x = rng.normal(0, 5, size=3)
        np.testing.assert_allclose(together(x, t),
                                   [f(x[i:i + 1], t)[0] for i, f in enumerate(alone)])


def test_an_invalid_sample_leaves_the_state_alone():
    f = OneEuroFilter(beta=0.5)
    f(np.array([0.0, 0.0]), 0.0)
    wild = f(np.array([50.0, 1.0]), 0.1, valid=np.array([False, True]))
    assert wild[0] == 50.0  # returned as given, not filtered
    after = f(np.array([1.0, 1.0]), 0.3)
    # Entry 0 continues as if it had seen only 0 at t=0 and 1 at t=0.3 (dt 0.3).
    reference = OneEuroFilter(beta=0.5)
    reference(np.array([0.0]), 0.0)
    assert after[0] == pytest.approx(reference(np.array([1.0]), 0.3)[0])
    with pytest.raises(ValueError, match="increase"):
        f(np.array([1.0, 1.0]), 0.3)


@pytest.fixture(scope="module")
def noisy_clip():
    video = render_video(seed=0, num_frames=24, image_size=(160, 120))
    est = GroundTruthEstimator(video, noise_px=1.5, seed=3)
    noisy = np.stack([[est.noisy_pose(t, p) for p in range(video.num_people)]
                      for t in range(video.num_frames)])
    return video, noisy


def _smoothed(video, noisy, smoother):
    """Run `smoother` over the [T, P, K, 3] poses, one track per person; same layout back."""
    out = np.zeros_like(noisy)
    for t in range(video.num_frames):
        persons = [PersonPose(video.boxes[t, p], 0.9, noisy[t, p], track_id=p + 1)
                   for p in range(video.num_people)]
        out[t] = np.stack([person.keypoints for person in smoother.update(persons, t / video.fps)])
    return out


def test_smoothing_reduces_jitter_without_moving_off_the_truth(noisy_clip):
    video, noisy = noisy_clip
    smooth = _smoothed(video, noisy, PoseSmoother())
    truth, labelled = video.keypoints, video.keypoints[..., 2] > 0

    def jitter(x):  # mean |x[t+1] - 2 x[t] + x[t-1]| over labelled keypoints and both axes
        second = np.abs(x[2:, ..., :2] - 2 * x[1:-1, ..., :2] + x[:-2, ..., :2]).mean(-1)
        return second[labelled[2:] & labelled[1:-1] & labelled[:-2]].mean()

    def error(x):
        return np.linalg.norm(x[..., :2] - truth[..., :2], axis=-1)[labelled].mean()

    # Measured: jitter 3.0 -> 1.1 px (truth 0.6), error 1.9 -> 1.6 px.
    assert jitter(smooth) < jitter(noisy) / 2.0
    assert error(smooth) <= error(noisy)
    # Lag of the walking people 0 (moving right) and 1 (moving left), after 5 frames: the
    # mean error along the motion, behind the truth by ~1 px (45 px/s, i.e. 1.8 px per frame).
    direction = np.array([1.0, -1.0])[None, :, None]
    behind = -((smooth[5:, :2, :, 0] - truth[5:, :2, :, 0]) * direction)[labelled[5:, :2]]
    assert 0.0 < behind.mean() < 1.5
    # The scores are passed through.
    np.testing.assert_array_equal(smooth[..., 2], noisy[..., 2])


def test_low_score_keypoints_do_not_drag_the_filter(noisy_clip):
    video, noisy = noisy_clip
    lost = noisy.copy()
    wrist = 9  # person 0's left wrist: lost by the model in frames 10-12, heatmap peak at (0, 0)
    lost[10:13, 0, wrist] = (0.0, 0.0, 0.05)
    truth = video.keypoints[13, 0, wrist, :2]
    guarded = _smoothed(video, lost, PoseSmoother())[13, 0, wrist, :2]
    unguarded = _smoothed(video, lost, PoseSmoother(score_threshold=-1.0))[13, 0, wrist, :2]
    assert np.linalg.norm(guarded - truth) < 4.0  # measured 2.5 (noise alone: 1.8)
    assert np.linalg.norm(unguarded - truth) > 10.0  # measured 21.6: what the guard prevents


def test_a_new_track_starts_a_fresh_filter():
    smoother = PoseSmoother()
    keypoints = np.array([[10.0, 10.0, 0.9], [20.0, 20.0, 0.9]], np.float32)
    smoother.update([PersonPose([0, 0, 30, 30], 1.0, keypoints, track_id=1)], 0.0)
    moved = keypoints + np.array([5.0, 5.0, 0.0], np.float32)
    same, new = smoother.update([PersonPose([0, 0, 30, 30], 1.0, moved, track_id=1),
                                 PersonPose([0, 0, 30, 30], 1.0, moved, track_id=2)], 0.04)
    assert np.all(same.keypoints[:, :2] < moved[:, :2])  # pulled towards its past
    np.testing.assert_array_equal(new.keypoints, moved)  # first sample passes through
