"""Distribution strategies by name, the worker's role in a cluster, and its output directory.

Multi-worker runs follow the TensorFlow/Keras convention: every worker runs the same program
(and saves checkpoints, which may need collective ops), but only the chief writes the run
directory; the other workers write into a temporary directory that is deleted at the end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile

import tensorflow as tf


def make_strategy(name="default", cpu_replicas=0, tpu_address=""):
    """A `tf.distribute.Strategy` for `name`.

    Args:
        name: "default" (one device), "mirrored" (all local GPUs, or `cpu_replicas` logical
            CPUs), "multi_worker" (`MultiWorkerMirroredStrategy`; the cluster comes from the
            `TF_CONFIG` environment variable, or from Slurm (`SlurmClusterResolver`) when
            the process runs under `srun` without `TF_CONFIG`) or "tpu".
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
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=cluster_resolver())
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_address)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"Unknown strategy {name!r}: use default, mirrored, multi_worker or tpu.")


def cluster_resolver():
    """The cluster of a multi-worker run: `TF_CONFIG` if set, else Slurm's (under `srun`).

    Raises:
        ValueError: neither is there (one line saying what to set).
    """
    resolvers = tf.distribute.cluster_resolver
    if os.environ.get("TF_CONFIG"):
        try:
            json.loads(os.environ["TF_CONFIG"])
        except ValueError as error:
            raise ValueError(f"TF_CONFIG is not valid JSON ({error}).") from None
        return resolvers.TFConfigClusterResolver()
    if os.environ.get("SLURM_PROCID") and os.environ.get("SLURM_STEP_NODELIST"):
        port_base = int(os.environ.get("SKELPOSE_SLURM_PORT_BASE", 8888))
        if tf.config.list_physical_devices("GPU"):
            # Each task gets its share of the node's GPUs (CUDA_VISIBLE_DEVICES is set).
            return resolvers.SlurmClusterResolver(port_base=port_base)
        from tensorflow.python.distribute.cluster_resolver import slurm_cluster_resolver

        tasks_per_node = max(slurm_cluster_resolver.expand_tasks_per_node(
            os.environ.get("SLURM_STEP_TASKS_PER_NODE", "1")))
        # One notional device per task satisfies the resolver's bookkeeping; none is used.
        return _CpuSlurmClusterResolver(port_base=port_base, gpus_per_node=tasks_per_node,
                                        gpus_per_task=1, auto_set_gpu=False)
    raise ValueError("--strategy=multi_worker needs the cluster: set TF_CONFIG on every worker "
                     "(README, 'Several machines') or start the workers with Slurm's srun.")


class _CpuSlurmClusterResolver(tf.distribute.cluster_resolver.SlurmClusterResolver):
    """Slurm's cluster on machines without GPUs (the stock resolver runs `nvidia-smi`)."""

    def num_accelerators(self, task_type=None, task_id=None, config_proto=None):
        return {"GPU": 0}


def _in_multi_worker_mode(strategy) -> bool:
    """Whether `strategy` spans several processes (no public API says so)."""
    check = getattr(strategy.extended, "_in_multi_worker_mode", None)
    return bool(check is not None and check())


def barrier(strategy):
    """Wait until every worker of a multi-worker run reaches this point (one tiny all-reduce).

    Used at the end of a run, so that the other workers wait for the chief's final
    evaluation and export instead of exiting (which the chief's coordination service would
    report as a lost worker).
    """
    if _in_multi_worker_mode(strategy):
        tf.function(lambda: strategy.reduce(
            tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.ones([])), axis=None))()


def same_on_all_workers(strategy, value) -> bool:
    """Whether every worker of a multi-worker run passes the same number `value`.

    Every worker gets the same answer (from the sum and the sum of squares over all replicas:
    n * sum(x^2) == sum(x)^2 exactly when all x are equal). True outside multi-worker runs.
    """
    if not _in_multi_worker_mode(strategy):
        return True
    x = tf.constant([float(value), float(value) ** 2], tf.float64)
    total = tf.function(lambda: strategy.reduce(
        tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.identity(x)), axis=None))()
    total = total.numpy()
    return bool(strategy.num_replicas_in_sync * total[1] == total[0] ** 2)


@dataclasses.dataclass(frozen=True)
class WorkerRole:
    """This process's place in the run.

    Attributes:
        task_type: "worker" or "chief" ("worker" for a one-process run).
        task_id: index among the tasks of that type.
        num_workers: processes in the cluster (1 for a one-process run).
    """

    task_type: str = "worker"
    task_id: int = 0
    num_workers: int = 1

    @property
    def is_chief(self) -> bool:
        """The one process that writes the run directory."""
        return self.task_type == "chief" or (self.task_type == "worker" and self.task_id == 0
                                             and not self._has_chief)

    _has_chief: bool = False

    def __str__(self):
        return f"{self.task_type} {self.task_id} of {self.num_workers}" + (
            " (chief)" if self.is_chief else "")


def worker_role(strategy) -> WorkerRole:
    """The `WorkerRole` of this process under `strategy`."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return WorkerRole()
    spec = resolver.cluster_spec().as_dict()
    num_workers = sum(len(tasks) for kind, tasks in spec.items() if kind in ("chief", "worker"))
    return WorkerRole(resolver.task_type or "worker", int(resolver.task_id or 0), num_workers,
                      _has_chief="chief" in spec)


@contextlib.contextmanager
def worker_directory(run_dir, role: WorkerRole):
    """The directory this process writes: `run_dir` on the chief, a temporary directory
    (deleted on exit) on the other workers."""
    if role.is_chief:
        yield run_dir
        return
    directory = tempfile.mkdtemp(prefix=f"skelpose-{role.task_type}{role.task_id}-")
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)
