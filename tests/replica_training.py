"""Runs a few PoseTrainer steps under a strategy and saves losses and weights (test helper).

    python tests/replica_training.py {default|mirrored|multi_worker} OUT.npz [sgd|adam|fused_adam]
        [MICRO_BATCHES]

`mirrored` uses 2 logical CPU devices; `multi_worker` reads TF_CONFIG (one process per worker;
only worker 0 writes OUT). BatchNorm is frozen (inference mode) so that per-replica batch
statistics cannot differ from the single-device run: the comparison is then exact up to float
error ("BN aside").
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def make_optimizer(name):
    """SGD(0.5) (default), Keras' Adam(1e-3) or the project's FusedAdam(1e-3)."""
    import keras

    from skelpose_tf.training.optimizers import FusedAdam

    return {"sgd": lambda: keras.optimizers.SGD(0.5), "adam": lambda: keras.optimizers.Adam(1e-3),
            "fused_adam": lambda: FusedAdam(1e-3)}[name]()


def main(strategy_name, out_path, optimizer_name="sgd", micro_batches="1"):
    import keras
    import tensorflow as tf

    from skelpose_tf.codec import HeatmapCodec
    from skelpose_tf.training.distribution import make_strategy
    from skelpose_tf.training.trainer import PoseTrainer
    from pose_fixtures import freeze_batch_norm, tiny_batch, tiny_pose_model

    strategy = make_strategy(strategy_name, cpu_replicas=2 if strategy_name == "mirrored" else 0)
    keras.utils.set_random_seed(0)
    images, labels = tiny_batch(8)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8).repeat()
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    dataset = dataset.with_options(options)
    with strategy.scope():
        keras.utils.set_random_seed(0)
        network = freeze_batch_norm(tiny_pose_model())
        multi_worker = strategy_name == "multi_worker"
        trainer = PoseTrainer(network, HeatmapCodec((64, 64), "coco"), vector_logs=multi_worker,
                              micro_batches=int(micro_batches))
        trainer.compile(optimizer=make_optimizer(optimizer_name))
        if multi_worker:
            trainer._maybe_symbolic_build = lambda *a, **k: None
    initial = np.concatenate([np.ravel(v.numpy()) for v in network.trainable_weights])
    history = trainer.fit(dataset, epochs=3, steps_per_epoch=1, verbose=0, shuffle=False).history
    losses = np.ravel(np.asarray(history["loss"], np.float64))
    weights = np.concatenate([np.ravel(v.numpy()) for v in network.trainable_weights])
    task = strategy.cluster_resolver.task_id if multi_worker else 0
    if task == 0:
        np.savez(out_path, losses=losses, weights=weights, initial=initial)


if __name__ == "__main__":
    main(*sys.argv[1:])
