"""`PoseTrainer`: the custom `train_step` that renders targets on the accelerator.

The data pipeline delivers only images and keypoint coordinates; the trainer renders the
keypoint and skeletal target heatmaps with the `HeatmapCodec` inside the step (on the device,
vectorised over the batch, also under XLA), runs the network and computes the
visibility-masked losses `l = l_k + lambda * l_s` (docs/design.md section 3).

It trains on all three Keras backends from the same `compute_losses`: on TensorFlow with a
`GradientTape` step (and micro-batches in a `tf.while_loop`); on JAX with a stateless step
(`jax.value_and_grad` over `stateless_call`, Keras' JAX trainer contract); on PyTorch with
`backward()`. TensorFlow is imported only on its backend, so the JAX and PyTorch backends run
where TensorFlow is not installed (the GPU benchmark, `bench/gpu.py`).
"""

from __future__ import annotations

import keras
from keras import ops

from skelpose_tf.codec import HeatmapCodec
from skelpose_tf.losses import pose_loss

LOSS_NAMES = ("loss", "keypoint_loss", "skeletal_loss")


class PoseTrainer(keras.Model):
    """Trains a pose network with on-device targets and the paper's losses.

    Args:
        network: a pose model (`PoseHRNet`) mapping raw RGB pixels to `{"heatmaps", ...}`.
        codec: the `HeatmapCodec` that renders the targets (same input size and keypoint set).
        skeletal_loss_weight: lambda of `l = l_k + lambda * l_s` (0.2 in the paper). A network
            without the skeletal module trains the HRNet baseline with `l = l_k`.
        vector_logs: return the logs as shape-[1] tensors (needed by Keras 3.15's
            MultiWorkerMirroredStrategy reduction, docs/design.md section 7.2).
        micro_batches: split every training batch into this many equal micro-batches that run
            forward and backward one after the other (a `tf.while_loop`), summing their
            gradients before the single optimizer update: gradient accumulation inside one step.
            Peak activation memory is that of batch / micro_batches; the loss and gradient are
            those of the whole batch, except that BatchNorm normalises each micro-batch with its
            own statistics (as per-replica BatchNorm does across GPUs). The batch size must be
            divisible by it. TensorFlow backend only.
        **kwargs: standard `keras.Model` arguments.

    Data (`fit`, `evaluate`): batches `(images uint8 [B, H, W, 3], {"keypoints": float32
    [B, K, 2] in input-crop pixels, "visibility": float32 [B, K]})`.

    Logs: `loss`, `keypoint_loss`, `skeletal_loss` (unscaled, per replica averaged).

    Under a distribution strategy the loss is divided by the number of replicas before the
    gradient (Keras sums replica gradients); under `mixed_float16` the optimizer is a
    `LossScaleOptimizer` and `optimizer.scale_loss` scales it (identity otherwise).
    """

    def __init__(self, network, codec: HeatmapCodec, skeletal_loss_weight=0.2,
                 vector_logs=False, micro_batches=1, **kwargs):
        super().__init__(**kwargs)
        if codec.keypoint_set.num_keypoints != network.output["heatmaps"].shape[-1]:
            raise ValueError(
                f"The codec's keypoint set {codec.keypoint_set.name!r} has "
                f"{codec.keypoint_set.num_keypoints} keypoints but the network predicts "
                f"{network.output['heatmaps'].shape[-1]} heatmaps."
            )
        self.network = network
        self.codec = codec
        self.skeletal_loss_weight = float(skeletal_loss_weight)
        self.vector_logs = bool(vector_logs)
        if int(micro_batches) != micro_batches or micro_batches < 1:
            raise ValueError(
                f"micro_batches must be a positive integer. Received: {micro_batches!r}")
        self.micro_batches = int(micro_batches)
        if self.micro_batches > 1 and keras.backend.backend() != "tensorflow":
            raise ValueError("micro_batches > 1 needs the TensorFlow backend. Received: "
                             f"micro_batches={micro_batches} on {keras.backend.backend()}.")
        self.trackers = {name: keras.metrics.Mean(name=name) for name in LOSS_NAMES}
        # The wrapped functional network is built already, so the trainer is too (saving and
        # BackupAndRestore-style restores require a built model).
        self.built = True

    def compile(self, *args, **kwargs):
        """`keras.Model.compile`, then the optimizer's slot variables are built eagerly.

        Left to `fit`, Keras builds them inside the first traced step: every Adam slot becomes a
        lifted variable with its own initialiser `cond`, and the step is traced twice, which
        made up ~30 s of HRNet-W32's first step (BENCHMARKS.md). Call inside the strategy scope.
        """
        super().compile(*args, **kwargs)
        self.optimizer.build(self.trainable_variables)

    def make_train_function(self, force=False):
        """Keras' train function, except under TensorFlow's default strategy (one device, the
        usual CPU or single-GPU run) with one step per execution: there it is one `tf.function`
        over the iterator that runs `train_step`, instead of Keras' `tf.function` calling a
        second `tf.function`. Same step, same logs; TensorFlow then traces, optimises and
        instantiates one graph instead of two nested ones, ~2.3 s less first step for HRNet-W32
        (BENCHMARKS.md "Where the gaps to the peer come from"). Distribution strategies,
        `steps_per_execution > 1`, XLA (`jit_compile`: XLA cannot compile the iterator's
        `get_next`, so Keras compiles only the inner function) and eager runs keep Keras'
        function."""
        if self.train_function is not None and not force:
            return self.train_function
        if not self._uses_one_graph_step():
            super().make_train_function(force)
            return self.train_function
        import tensorflow as tf

        def compiled(function):
            return tf.function(function, reduce_retracing=True, autograph=False)

        step_on_iterator = compiled(lambda iterator: self.train_step(iterator.get_next()))
        step_on_data = compiled(self.train_step)

        def train_function(iterator):
            if isinstance(iterator, tf.data.Iterator):
                try:
                    return step_on_iterator(iterator)
                except tf.errors.OutOfRangeError:
                    raise StopIteration from None
            for data in iterator:  # a Python iterable of batches: one step per call
                return step_on_data(data)
            raise StopIteration

        self.train_function = train_function
        return train_function

    def _uses_one_graph_step(self) -> bool:
        if keras.backend.backend() != "tensorflow" or self.run_eagerly:
            return False
        if self.steps_per_execution != 1 or self.jit_compile:
            return False
        # The default strategy is the one `tf.distribute.get_strategy()` returns outside every
        # strategy scope; Keras records the strategy in force when the model was made.
        return type(self.distribute_strategy).__name__ == "_DefaultDistributionStrategy"

    @property
    def metrics(self):
        return list(self.trackers.values())

    def call(self, images, training=False):
        return self.network(images, training=training)

    def compute_losses(self, images, labels, training):
        """`(total, keypoint_loss, skeletal_loss, outputs)` for one batch, float32 scalars."""
        outputs = self.network(images, training=training)
        return (*self.losses_of(outputs, labels), outputs)

    def losses_of(self, outputs, labels):
        """`(total, keypoint_loss, skeletal_loss)` of the network's `outputs`: targets rendered
        from `labels` by the codec, then the visibility-masked losses."""
        targets = self.codec.encode(labels["keypoints"], labels["visibility"])
        return pose_loss(outputs, targets, self.skeletal_loss_weight)

    def train_step(self, *args):
        """One optimizer step: `train_step(data)` on TensorFlow and PyTorch, the stateless
        `train_step(state, data) -> (logs, state)` on JAX."""
        backend = keras.backend.backend()
        if backend == "jax":
            return self._jax_train_step(*args)
        if backend == "torch":
            return self._torch_train_step(*args)
        return self._tf_train_step(*args)

    def _tf_train_step(self, data):
        import tensorflow as tf

        images, labels = data
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if self.micro_batches == 1:
            gradients, losses = self._loss_gradients(images, labels, replicas)
        else:
            gradients, losses = self._accumulated_gradients(images, labels, replicas)
        self.optimizer.apply(gradients, self.trainable_variables)
        return self._update_logs(*losses)

    def _torch_train_step(self, data):
        import torch

        images, labels = data
        self.zero_grad()
        losses = self.compute_losses(images, labels, True)[:3]
        self.optimizer.scale_loss(losses[0]).backward()
        gradients = [variable.value.grad for variable in self.trainable_variables]
        with torch.no_grad():
            self.optimizer.apply(gradients, self.trainable_variables)
        return self._update_logs(*(loss.detach() for loss in losses))

    def _jax_train_step(self, state, data):
        import jax

        trainable, non_trainable, optimizer_variables, metric_variables = state
        images, labels = data

        def scaled_loss(trainable, non_trainable):
            outputs, non_trainable = self.stateless_call(
                trainable, non_trainable, images, training=True)
            losses = self.losses_of(outputs, labels)
            return self.optimizer.scale_loss(losses[0]), (losses, non_trainable)

        (_, (losses, non_trainable)), gradients = jax.value_and_grad(
            scaled_loss, has_aux=True)(trainable, non_trainable)
        trainable, optimizer_variables = self.optimizer.stateless_apply(
            optimizer_variables, gradients, trainable)
        logs, start, updated = {}, 0, []
        for name, value in zip(LOSS_NAMES, losses):
            tracker = self.trackers[name]
            variables = metric_variables[start:start + len(tracker.variables)]
            start += len(tracker.variables)
            variables = tracker.stateless_update_state(variables, value)
            logs[name] = self._log_value(tracker.stateless_result(variables))
            updated += list(variables)
        return logs, (trainable, non_trainable, optimizer_variables, updated)

    def _loss_gradients(self, images, labels, divisor):
        """Gradients of `total / divisor` (loss-scaled) and `(total, keypoint, skeletal)`."""
        import tensorflow as tf

        with tf.GradientTape() as tape:
            losses = self.compute_losses(images, labels, True)[:3]
            scaled = self.optimizer.scale_loss(losses[0] / divisor)
        return tape.gradient(scaled, self.trainable_variables), losses

    def _accumulated_gradients(self, images, labels, replicas):
        """Gradients and mean losses of the batch, computed micro-batch by micro-batch.

        The micro-batches run in a `tf.while_loop`, so one micro-batch's activations are
        released before the next forward pass starts, and the step's graph holds one copy of
        the network.
        """
        import tensorflow as tf

        count = self.micro_batches
        batch = images.shape[0]
        if batch is not None and batch % count:
            raise ValueError(f"micro_batches={count} does not divide the batch size {batch}.")
        size = tf.shape(images)[0] // count

        def body(index, gradient_sums, loss_sums):
            def part(tensor):
                return tensor[index * size:(index + 1) * size]

            gradients, losses = self._loss_gradients(
                part(images), tf.nest.map_structure(part, labels), replicas * count)
            gradient_sums = [total if gradient is None else total + gradient
                             for total, gradient in zip(gradient_sums, gradients)]
            return index + 1, gradient_sums, loss_sums + tf.stack(losses) / count

        zeros = [tf.zeros(v.shape, v.dtype) for v in self.trainable_variables]
        initial = (tf.constant(0), zeros, tf.zeros([3]))
        _, gradients, loss_means = tf.while_loop(
            lambda index, *_: index < count, body, initial, parallel_iterations=1)
        return gradients, tf.unstack(loss_means)

    def test_step(self, data):
        images, labels = data
        total, keypoint_term, skeletal_term, _ = self.compute_losses(images, labels, False)
        return self._update_logs(total, keypoint_term, skeletal_term)

    def _update_logs(self, *values):
        logs = {}
        for name, value in zip(LOSS_NAMES, values):
            self.trackers[name].update_state(value)
            logs[name] = self._log_value(self.trackers[name].result())
        return logs

    def _log_value(self, result):
        return ops.reshape(result, [1]) if self.vector_logs else result
