"""FusedBatchNormalization: numpy reference, equivalence with Keras' layer, shared checks."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from layer_test_case import run_layer_test
from skelpose_tf.models.batch_norm import FusedBatchNormalization

EPSILON = 1e-5


def _features(shape=(3, 5, 4, 6), seed=0):
    return np.random.default_rng(seed).normal(2.0, 3.0, shape).astype("float32")


def _layer(cls, x, dtype=None, seed=1):
    layer = cls(momentum=0.9, epsilon=EPSILON, dtype=dtype)
    layer.build(x.shape)
    rng = np.random.default_rng(seed)
    layer.gamma.assign(rng.normal(1.0, 0.2, x.shape[-1]))
    layer.beta.assign(rng.normal(0.0, 0.5, x.shape[-1]))
    layer.moving_mean.assign(rng.normal(0.0, 1.0, x.shape[-1]))
    layer.moving_variance.assign(rng.uniform(0.5, 2.0, x.shape[-1]))
    return layer


def test_layer_checks(tmp_path):
    run_layer_test(FusedBatchNormalization, {"momentum": 0.9, "epsilon": EPSILON},
                   _features(), (3, 5, 4, 6), 2, tmp_path)


def test_training_step_against_numpy():
    x = _features()
    layer = _layer(FusedBatchNormalization, x)
    gamma, beta = layer.gamma.numpy(), layer.beta.numpy()
    old_mean, old_variance = layer.moving_mean.numpy(), layer.moving_variance.numpy()
    y = np.asarray(layer(x, training=True))
    mean = x.mean(axis=(0, 1, 2))
    biased = x.var(axis=(0, 1, 2))
    unbiased = x.var(axis=(0, 1, 2), ddof=1)
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(biased + EPSILON) * gamma + beta,
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layer.moving_mean.numpy(), 0.9 * old_mean + 0.1 * mean,
                               rtol=1e-5, atol=1e-6)
    # PyTorch / official HRNet convention: the running variance takes the unbiased estimate.
    np.testing.assert_allclose(layer.moving_variance.numpy(),
                               0.9 * old_variance + 0.1 * unbiased, rtol=1e-5)


def test_inference_uses_moving_statistics():
    x = _features()
    layer = _layer(FusedBatchNormalization, x)
    expected = ((x - layer.moving_mean.numpy()) / np.sqrt(layer.moving_variance.numpy() + EPSILON)
                * layer.gamma.numpy() + layer.beta.numpy())
    np.testing.assert_allclose(np.asarray(layer(x, training=False)), expected, rtol=1e-5,
                               atol=1e-5)
    frozen = _layer(FusedBatchNormalization, x)
    frozen.trainable = False
    np.testing.assert_allclose(np.asarray(frozen(x, training=True)), expected, rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_array_equal(frozen.moving_mean.numpy(), layer.moving_mean.numpy())


@pytest.mark.parametrize("dtype,tolerance", [(None, 1e-4), ("mixed_bfloat16", 0.05)])
def test_outputs_and_gradients_equal_keras_batch_normalization(dtype, tolerance):
    """Same normalisation, same gradients as Keras' unfused layer (graph mode, as in fit)."""
    x = tf.constant(_features())
    upstream = tf.constant(np.random.default_rng(3).normal(0, 1, x.shape).astype("float32"))
    results = []
    for cls in (keras.layers.BatchNormalization, FusedBatchNormalization):
        layer = _layer(cls, x, dtype=dtype)

        @tf.function
        def forward_backward(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x, training=True)
                objective = tf.reduce_sum(tf.cast(y, "float32") * upstream)
            return y, tape.gradient(objective, [x, layer.gamma, layer.beta])

        y, gradients = forward_backward(x)
        assert y.dtype == layer.compute_dtype
        results.append([np.asarray(tf.cast(t, "float32")) for t in (y, *gradients)])
        assert not np.allclose(results[-1][2], 0)
    for keras_value, fused_value in zip(*results):
        scale = np.abs(keras_value).max()
        np.testing.assert_allclose(fused_value, keras_value, atol=tolerance * scale)


def test_model_graph_has_one_fused_op_per_layer():
    inputs = keras.Input((8, 8, 4))
    outputs = FusedBatchNormalization()(FusedBatchNormalization()(inputs))
    model = keras.Model(inputs, outputs)
    graph = tf.function(lambda x: model(x, training=True)).get_concrete_function(
        tf.TensorSpec((2, 8, 8, 4))).graph
    types = [op.type for op in graph.get_operations()]
    assert types.count("FusedBatchNormV3") == 2
    assert "Mean" not in types and "SquaredDifference" not in types
