"""How many CPUs this process may use: the sweep's worker count and FFCV's thread count both need it."""

import os


def available_cpus() -> int:
    """CPUs in this process's affinity mask (``os.cpu_count`` counts the machine's and ignores containers)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
