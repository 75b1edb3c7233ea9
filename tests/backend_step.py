"""One backend's view of a tiny pose model, for tests/test_backends.py (run as a subprocess:
Keras picks its backend once, at import, from KERAS_BACKEND).

    KERAS_BACKEND=jax python tests/backend_step.py WEIGHTS.weights.h5 BATCH.npz OUT_DIR

Loads the W8 64x64 tiny-topology COCO model's weights, then writes `OUT_DIR/result.npz`:
inference heatmaps and skeletal heatmaps, the codec's targets and decoded keypoints (every
decoder), the losses and the gradients of one training-mode batch (before any update), the
loss after each of `STEPS` optimizer steps (`PoseTrainer.fit`), the trained model's inference
heatmaps; and the trained model as `OUT_DIR/trained.keras`. Imports no TensorFlow unless the
backend is TensorFlow.
"""

import os
import sys

import keras
import numpy as np

from skelpose_tf.codec import DECODERS
from skelpose_tf.losses import pose_loss
from skelpose_tf.models.pose_model import TOPOLOGIES, build_pose_model
from skelpose_tf.training.optimizers import FusedAdam
from skelpose_tf.training.trainer import PoseTrainer

STEPS = 4


def build(weights):
    network = build_pose_model(8, (64, 64), "coco", **TOPOLOGIES["tiny"])
    network.load_weights(weights)
    return network


def decoded(codec, heatmaps, method):
    """float32 [B, K, 3]: the decoded `(x, y, score)` per keypoint."""
    keypoints, scores = (keras.ops.convert_to_numpy(v) for v in codec.decode(heatmaps, method))
    return np.concatenate([keypoints, scores[..., None]], -1)


def loss_and_gradients(network, images, labels):
    """`(losses [3], gradients: list of arrays)` of the total loss, training mode."""
    backend = keras.backend.backend()

    def losses_of(outputs):
        targets = network.codec.encode(labels["keypoints"], labels["visibility"])
        return pose_loss(outputs, targets, 0.2)

    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            losses = losses_of(network(images, training=True))
        gradients = tape.gradient(losses[0], network.trainable_variables)
    elif backend == "jax":
        import jax

        def total(trainable):
            outputs, _ = network.stateless_call(
                trainable, [v.value for v in network.non_trainable_variables], images,
                training=True)
            losses = losses_of(outputs)
            return losses[0], losses

        (_, losses), gradients = jax.value_and_grad(total, has_aux=True)(
            [v.value for v in network.trainable_variables])
    else:
        losses = losses_of(network(images, training=True))
        losses[0].backward()
        gradients = [v.value.grad for v in network.trainable_variables]
    return ([float(keras.ops.convert_to_numpy(v)) for v in losses],
            [keras.ops.convert_to_numpy(g) for g in gradients])


def main(weights, batch_file, out_dir):
    batch = np.load(batch_file)
    images = batch["images"]
    labels = {"keypoints": batch["keypoints"], "visibility": batch["visibility"]}
    network = build(weights)
    outputs = network(images, training=False)
    heatmaps = keras.ops.convert_to_numpy(outputs["heatmaps"])
    result = {
        "heatmaps": heatmaps,
        "skeletal_heatmaps": keras.ops.convert_to_numpy(outputs["skeletal_heatmaps"]),
        **{f"target_{name}": keras.ops.convert_to_numpy(value) for name, value in
           network.codec.encode(labels["keypoints"], labels["visibility"]).items()},
        **{f"decoded_{name}": decoded(network.codec, heatmaps, name) for name in DECODERS},
    }
    losses, gradients = loss_and_gradients(network, images, labels)
    result["losses"] = np.asarray(losses)
    result["gradient_names"] = np.asarray([v.path for v in network.trainable_variables])
    for index, gradient in enumerate(gradients):
        result[f"gradient_{index}"] = gradient

    network = build(weights)  # the gradient pass moved the BatchNorm moving statistics
    trainer = PoseTrainer(network, network.codec)
    trainer.compile(optimizer=FusedAdam(1e-3))
    history = trainer.fit(images, labels, batch_size=len(images), epochs=STEPS, shuffle=False,
                          verbose=0)
    result["history"] = np.asarray(history.history["loss"], np.float64).reshape(-1)
    result["trained_heatmaps"] = keras.ops.convert_to_numpy(
        network(images, training=False)["heatmaps"])
    network.save(os.path.join(out_dir, "trained.keras"))
    np.savez(os.path.join(out_dir, "result.npz"), **result)
    print(f"{keras.backend.backend()}: losses {losses}, history {result['history'].tolist()}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
