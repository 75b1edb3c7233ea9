"""Adam whose per-variable update is TensorFlow's fused `ResourceApplyAdam` kernel.

Keras 3's `Adam.update_step` writes the update with ~40 graph ops per variable (two `Pow`, two
`Sqrt`, the moment updates, three assigns, casts and constants). HRNet-W32 has 880 trainable
variables, so the optimizer alone adds ~35,000 ops to the training graph: most of the graph's
49,000 ops, most of the tracing and graph-optimisation time of the first step, and a few hundred
microseconds of executor overhead per variable and step. `FusedAdam` computes the same update
(Keras' and TensorFlow's Adam are the same formula: `alpha = lr * sqrt(1 - b2^t) / (1 - b1^t)`,
`m += (g - m)(1 - b1)`, `v += (g^2 - v)(1 - b2)`, `w -= alpha * m / (sqrt(v) + eps)`) with one
kernel per variable. BENCHMARKS.md has the measured effect.

Everything else is Keras' `Adam`: config, schedules, decoupled weight decay, `LossScaleOptimizer`
wrapping, distribution (the update runs per device inside `strategy.extended.update`). `amsgrad`
and non-TensorFlow backends fall back to Keras' update.
"""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="skelpose_tf")
class FusedAdam(keras.optimizers.Adam):
    """`keras.optimizers.Adam` applied with `ResourceApplyAdam` (one op per variable)."""

    def update_step(self, gradient, variable, learning_rate):
        if keras.backend.backend() != "tensorflow" or self.amsgrad:
            return super().update_step(gradient, variable, learning_rate)
        import tensorflow as tf

        index = self._get_variable_index(variable)
        beta1_power, beta2_power, lr, beta1, beta2, epsilon = self._step_scalars(
            learning_rate, variable.dtype)
        tf.raw_ops.ResourceApplyAdam(
            var=_handle(variable), m=_handle(self._momentums[index]),
            v=_handle(self._velocities[index]), beta1_power=beta1_power,
            beta2_power=beta2_power, lr=lr, beta1=beta1, beta2=beta2, epsilon=epsilon,
            grad=tf.cast(gradient, variable.dtype), use_locking=False)

    def _step_scalars(self, learning_rate, dtype):
        """`(b1^t, b2^t, lr, b1, b2, eps)` as `dtype` scalars, computed once per update.

        Every variable of one `apply` receives the same `learning_rate` (tensor or variable) in
        the same graph, so the scalars are cached against both while tracing; another trace or
        branch graph rebuilds them. Eager steps (where the graph never changes) do not cache.
        """
        import tensorflow as tf

        graph = tf.compat.v1.get_default_graph()
        cached = getattr(self, "_cached_step_scalars", None)
        if (cached is not None and not tf.executing_eagerly() and cached[0] is learning_rate
                and cached[1] is graph and cached[2] == dtype):
            return cached[3]
        step = tf.cast(self.iterations + 1, dtype)
        beta1 = tf.cast(self.beta_1, dtype)
        beta2 = tf.cast(self.beta_2, dtype)
        scalars = (tf.pow(beta1, step), tf.pow(beta2, step), tf.cast(learning_rate, dtype),
                   beta1, beta2, tf.cast(self.epsilon, dtype))
        self._cached_step_scalars = (learning_rate, graph, dtype, scalars)
        return scalars


def _handle(variable):
    """The resource handle of a Keras or TensorFlow variable (the current device's copy when
    called inside a distribution strategy's update)."""
    if isinstance(variable, keras.Variable):
        variable = variable.value
    return variable.handle
