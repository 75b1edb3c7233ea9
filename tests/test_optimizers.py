"""FusedAdam (one ResourceApplyAdam per variable) against Keras' Adam and a numpy Adam."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from skelpose_tf.training.optimizers import FusedAdam
from skelpose_tf.training.schedules import WarmupSchedule


def _numpy_adam(weights, gradients, lrs, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
    """Adam written from the paper's update (Kingma & Ba, algorithm 1, 'efficient' form)."""
    m = np.zeros_like(weights)
    v = np.zeros_like(weights)
    for t, (g, lr) in enumerate(zip(gradients, lrs), start=1):
        m = beta_1 * m + (1 - beta_1) * g
        v = beta_2 * v + (1 - beta_2) * g * g
        alpha = lr * np.sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t)
        weights = weights - alpha * m / (np.sqrt(v) + epsilon)
    return weights


def _gradients(steps, shape, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 1, shape).astype("float32") for _ in range(steps)]


@pytest.mark.parametrize("compiled", [False, True])
def test_matches_numpy_adam(compiled):
    start = np.random.default_rng(1).normal(0, 1, (3, 4)).astype("float32")
    gradients = _gradients(5, start.shape)
    variable = keras.Variable(start)
    optimizer = FusedAdam(0.01)
    optimizer.build([variable])

    def apply(gradient):
        optimizer.apply([gradient], [variable])

    apply = tf.function(apply) if compiled else apply
    for g in gradients:
        apply(tf.constant(g))
    expected = _numpy_adam(start.astype("float64"), gradients, [0.01] * 5)
    np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert int(optimizer.iterations.numpy()) == 5


def test_equals_keras_adam_with_schedule_and_weight_decay_in_a_traced_step():
    """A fit-like step (several variables, a warm-up schedule, decoupled weight decay)."""
    rng = np.random.default_rng(2)
    starts = [rng.normal(0, 1, shape).astype("float32") for shape in [(3, 3, 2, 4), (4,), (7,)]]
    results = []
    for optimizer_class in (keras.optimizers.Adam, FusedAdam):
        variables = [keras.Variable(s) for s in starts]
        schedule = WarmupSchedule(0.05, total_steps=6, decay="step", boundaries=[4],
                                  factor=0.1, warmup_steps=2)
        optimizer = optimizer_class(schedule, weight_decay=1e-2)
        optimizer.build(variables)

        @tf.function
        def step(gradients):
            optimizer.apply(gradients, variables)

        for t in range(6):
            step([tf.constant(_gradients(1, s.shape, seed=10 * t + i)[0])
                  for i, s in enumerate(starts)])
        results.append([v.numpy() for v in variables])
    for keras_value, fused_value, start in zip(*results, starts):
        np.testing.assert_allclose(fused_value, keras_value, rtol=1e-5, atol=2e-6)
        assert np.abs(fused_value - start).max() > 1e-3


def test_config_round_trip_and_amsgrad_fallback():
    optimizer = FusedAdam(0.003, beta_1=0.8, amsgrad=True)
    revived = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(revived, FusedAdam) and revived.get_config() == optimizer.get_config()
    start = np.ones((2, 2), "float32")
    gradients = _gradients(3, start.shape)
    variables = []
    for optimizer_class in (keras.optimizers.Adam, FusedAdam):
        variable = keras.Variable(start)
        optimizer = optimizer_class(0.01, amsgrad=True)
        for g in gradients:
            optimizer.apply([tf.constant(g)], [variable])
        variables.append(variable.numpy())
    np.testing.assert_allclose(variables[1], variables[0], rtol=1e-6)
