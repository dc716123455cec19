"""CPU threads for torch when several processes share the machine's cores.

OpenMP threads spin while they wait: two processes that each run torch with every core slow each
other far more than 2x (measured on 2 cores: speculative generation went from about 0.5 s to 15 s
per example). So a pytest-xdist worker, one of N, gets cores / N threads.
"""

from __future__ import annotations

import os
import sys


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def share_cores(workers: int) -> int | None:
    """Give this process ``cores // workers`` threads (at least 1), before or after torch is
    imported. Returns the count, or None when there is nothing to share or the user already
    chose with OMP_NUM_THREADS (their choice stands)."""
    if workers <= 1 or os.environ.get("OMP_NUM_THREADS"):
        return None
    threads = max(1, available_cores() // workers)
    # Read by torch (and MKL) when they are imported, which happens later, on a cache miss.
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ.setdefault("MKL_NUM_THREADS", str(threads))
    torch = sys.modules.get("torch")
    if torch is not None:  # imported already (by a conftest.py): set it directly
        torch.set_num_threads(threads)
    return threads
