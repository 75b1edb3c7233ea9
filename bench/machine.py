"""What a benchmark reports about the machine it ran on (for BENCHMARKS.md)."""

import os
import platform
import subprocess


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
