"""Distribution strategies by name, including logical CPU replicas for testing on one machine."""

from __future__ import annotations

import tensorflow as tf


def make_strategy(name="default", cpu_replicas=0, tpu_address=""):
    """A `tf.distribute.Strategy` for `name`.

    Args:
        name: "default" (one device), "mirrored" (all local GPUs, or `cpu_replicas` logical
            CPUs), "multi_worker" (`MultiWorkerMirroredStrategy`; the cluster comes from the
            `TF_CONFIG` environment variable, set before TensorFlow starts) or "tpu".
        cpu_replicas: split the CPU into this many logical devices (> 1) for a mirrored run
            without GPUs; must be called before any other TensorFlow operation.
        tpu_address: TPU name or address for "tpu" ("" = the local TPU).

    Returns:
        The strategy; `strategy.num_replicas_in_sync` is the replica count.
    """
    if cpu_replicas > 1:
        cpus = tf.config.list_physical_devices("CPU")
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration()] * cpu_replicas)
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = None
        if cpu_replicas > 1 and not tf.config.list_physical_devices("GPU"):
            devices = [f"/cpu:{i}" for i in range(cpu_replicas)]
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_address)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"Unknown strategy {name!r}: use default, mirrored, multi_worker or tpu.")
