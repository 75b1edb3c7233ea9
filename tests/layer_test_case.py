"""Shared checks run on every custom Keras layer of the project (STYLE.md section 5).

`run_layer_test` checks, for one layer class and one input:
- get_config / from_config and serialize / deserialize round trips;
- a symbolic call on KerasTensors and an eager call, with the expected output shapes;
- the number of trainable weights;
- a `.keras` save / load under `safe_mode=True` inside a functional model (same outputs);
- one training step in graph mode (gradients reach every trainable weight and change it);
- the output and variable dtypes under a mixed-precision policy.
"""

import os

import keras
import numpy as np
import tensorflow as tf
from keras import tree


def _as_inputs(input_data):
    """KerasTensors matching `input_data` (an array or a list of arrays), batch dim free."""
    if isinstance(input_data, (list, tuple)):
        return [keras.Input(x.shape[1:], dtype=str(x.dtype)) for x in input_data]
    return keras.Input(input_data.shape[1:], dtype=str(input_data.dtype))


def _shapes(outputs):
    return tree.map_structure(lambda t: tuple(t.shape), outputs)


def run_layer_test(layer_cls, init_kwargs, input_data, expected_output_shape,
                   expected_num_trainable_weights, tmp_path,
                   mixed_precision_policy="mixed_bfloat16"):
    """Run the shared layer checks; raises AssertionError on the first failure.

    Args:
        layer_cls: the layer class.
        init_kwargs: constructor arguments.
        input_data: numpy array or list of arrays, with a batch dimension.
        expected_output_shape: output shape (tuple) or a dict/list of shapes, batch included.
        expected_num_trainable_weights: int.
        tmp_path: a directory for the `.keras` file.
        mixed_precision_policy: policy whose compute dtype floating outputs must have.
    """
    # Config round trips.
    layer = layer_cls(**init_kwargs)
    config = layer.get_config()
    assert layer_cls.from_config(config).get_config() == config
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(revived, layer_cls) and revived.get_config() == config

    # Symbolic call: shapes with a free batch dimension.
    symbolic = layer_cls(**init_kwargs)(_as_inputs(input_data))
    _assert_shapes(_shapes(symbolic), expected_output_shape, batch_free=True)

    # Eager call.
    layer = layer_cls(**init_kwargs)
    eager = layer(input_data)
    _assert_shapes(_shapes(eager), expected_output_shape, batch_free=False)
    assert len(layer.trainable_weights) == expected_num_trainable_weights

    # .keras round trip under safe mode.
    inputs = _as_inputs(input_data)
    model = keras.Model(inputs, layer_cls(**init_kwargs)(inputs))
    reference = model(input_data)
    path = os.path.join(str(tmp_path), f"{layer_cls.__name__}.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    tree.map_structure(
        lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6),
        reference, loaded(input_data),
    )

    # One training step in graph mode.
    if expected_num_trainable_weights:
        _assert_training_step(model, input_data)

    # Mixed precision.
    policy = keras.dtype_policies.DTypePolicy(mixed_precision_policy)
    mixed = layer_cls(**init_kwargs, dtype=policy)
    outputs = mixed(input_data)
    for output in tree.flatten(outputs):
        if output.dtype.is_floating:
            assert output.dtype.name == policy.compute_dtype, (output.dtype, policy.compute_dtype)
    for variable in mixed.weights:
        assert variable.dtype == policy.variable_dtype


def _assert_shapes(actual, expected, batch_free):
    """Compare one shape, a list or a dict of shapes; `batch_free` expects a None batch dim."""
    if isinstance(expected, dict):
        assert sorted(actual) == sorted(expected), (sorted(actual), sorted(expected))
        pairs = [(actual[key], expected[key]) for key in expected]
    elif isinstance(expected, list):
        pairs = list(zip(actual, expected))
    else:
        pairs = [(actual, expected)]
    for got, want in pairs:
        want = ((None,) + tuple(want[1:])) if batch_free else tuple(want)
        assert tuple(got) == want, (got, want)


def _assert_training_step(model, input_data):
    optimizer = keras.optimizers.SGD(learning_rate=1.0)
    before = [np.array(v) for v in model.trainable_weights]

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            outputs = model(x, training=True)
            loss = tf.add_n([tf.reduce_mean(tf.square(tf.cast(o, "float32")))
                             for o in tree.flatten(outputs)])
        grads = tape.gradient(loss, model.trainable_weights)
        assert all(g is not None for g in grads), "a trainable weight gets no gradient"
        optimizer.apply(grads, model.trainable_weights)
        return loss

    loss = step(input_data)
    assert np.isfinite(float(loss))
    after = [np.array(v) for v in model.trainable_weights]
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))
