"""BatchNormalization that runs TensorFlow's fused kernel (one op forward, one backward).

Keras 3's `BatchNormalization` computes the statistics and the normalisation with separate ops
(`tf.nn.moments` + `tf.nn.batch_normalization`) and, under `mixed_bfloat16`, first casts the whole
activation to float32. On HRNet-W32 (303 BN layers) that is ~15 extra ops per layer in the forward
graph and ~30 in its gradient, float32 copies of every bfloat16 activation kept for the backward
pass, and memory-bound passes that oneDNN cannot fuse. `FusedBatchNormalization` keeps the Keras
layer's variables, names, config and inference maths, and on the TensorFlow backend computes the
layer with `FusedBatchNormV3` instead: bfloat16 in, bfloat16 out, float32 statistics inside the
kernel. BENCHMARKS.md has the measured effect on the W32 training step.

One numerical difference from Keras' layer, on purpose: the moving variance is updated with the
unbiased batch variance (`n / (n - 1)`, as PyTorch and the official HRNet do); the batch itself is
normalised with the biased variance, as in both frameworks.

Feature maps are channels-last `[B, H, W, C]`. Other layouts and the JAX and PyTorch backends
compute the same maths with `keras.ops` (`_keras_ops_training_call` in training, Keras' own
inference): the same variables and the same unbiased moving-variance update, so weights trained
on one backend load and continue on another.
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="skelpose_tf")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` computed by TensorFlow's `FusedBatchNormV3` kernel.

    Same constructor, variables (`gamma`, `beta`, `moving_mean`, `moving_variance`) and config as
    the Keras layer. Input `[B, H, W, C]` in the layer's compute dtype (float32 or bfloat16;
    float16 too); output the same shape and dtype.
    """

    def _uses_fused_kernel(self, inputs, mask):
        return (keras.backend.backend() == "tensorflow" and mask is None and len(inputs.shape) == 4
                and self.axis in (-1, 3) and not self.renorm and not self.synchronized
                and self.scale and self.center)

    def call(self, inputs, training=None, mask=None):
        if not self._uses_fused_kernel(inputs, mask):
            if (training and self.trainable and mask is None and not self.renorm
                    and not self.synchronized and self.scale and self.center):
                return self._keras_ops_training_call(inputs)
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        training = bool(training and self.trainable)
        # Training: the kernel normalises with the batch statistics and returns the moving
        # averages already updated, (1 - f) * moving + f * batch with f = 1 - momentum.
        # Inference: it normalises with the moving statistics and returns them unchanged.
        outputs, moving_mean, moving_variance, *_ = tf.raw_ops.FusedBatchNormV3(
            x=tf.cast(inputs, self.compute_dtype), scale=tf.cast(self.gamma, "float32"),
            offset=tf.cast(self.beta, "float32"), mean=tf.cast(self.moving_mean, "float32"),
            variance=tf.cast(self.moving_variance, "float32"), epsilon=self.epsilon,
            exponential_avg_factor=1.0 - self.momentum if training else 1.0,
            data_format="NHWC", is_training=training)
        if training:
            self.moving_mean.assign(moving_mean)
            self.moving_variance.assign(moving_variance)
        return outputs

    def _keras_ops_training_call(self, inputs):
        """The fused kernel's training maths in `keras.ops` (any backend, any layout): normalise
        with the biased batch statistics in float32, update the moving variance with the
        unbiased one (`n / (n - 1)`)."""
        x = ops.cast(inputs, "float32")
        axis = self.axis % len(x.shape)
        reduced = [i for i in range(len(x.shape)) if i != axis]
        mean, variance = ops.moments(x, reduced)
        count = ops.cast(ops.size(x) // ops.shape(x)[axis], "float32")
        unbiased = variance * count / ops.maximum(count - 1.0, 1.0)
        factor = 1.0 - self.momentum
        self.moving_mean.assign(
            ops.cast(self.moving_mean, "float32") * self.momentum + mean * factor)
        self.moving_variance.assign(
            ops.cast(self.moving_variance, "float32") * self.momentum + unbiased * factor)
        outputs = ops.batch_normalization(
            x, mean, variance, axis=self.axis, offset=ops.cast(self.beta, "float32"),
            scale=ops.cast(self.gamma, "float32"), epsilon=self.epsilon)
        return ops.cast(outputs, self.compute_dtype)
