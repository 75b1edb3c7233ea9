"""What a benchmark reports about the machine it ran on (for BENCHMARKS.md)."""

import os
import platform
import resource
import subprocess
import sys


def describe_machine():
    """CPU model name and logical core count, e.g. "Intel(R) Xeon(R) Processor, 2 logical cores"."""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in lscpu.splitlines()
                     if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        model = platform.processor() or "unknown CPU"
    return f"{model}, {os.cpu_count()} logical cores"


def load_average():
    """The 1, 5 and 15 minute load averages as one string."""
    with open("/proc/loadavg") as file:
        return " ".join(file.read().split()[:3])


def peak_rss_gb() -> float:
    """The peak resident memory of this process so far, GB (GiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def hide_jax_from_tensorflow():
    """Makes `import jax` fail in this process, before TensorFlow is imported.

    TensorFlow's TFLite helpers import JAX whenever it is installed (0.1 GB of memory and 0.4 s
    at `import tensorflow`). The benchmark environment has JAX for the Keras backends' tests;
    a TensorFlow install of the project (requirements.txt) does not. The project's benchmark
    processes call this so that they measure that install. TensorFlow treats the failed import
    as JAX being absent.
    """
    if "tensorflow" not in sys.modules and os.environ.get("KERAS_BACKEND", "tensorflow") == \
            "tensorflow":
        sys.modules["jax"] = None
