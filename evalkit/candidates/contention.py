"""Whether other work competed for the cores while something was timed.

A latency measured while other processes use the cores is longer and noisier than the model's
own. ``CoreWindow`` measures it: the machine's busy CPU time over the window (``/proc/stat``)
minus this process's own (``getrusage``: every thread, torch's included), in cores. Where
there is no ``/proc/stat`` it falls back to the 1-minute load average, which counts runnable
processes, ours included.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

COMPETING_SHARE = 0.25
"""Other work on at least this share of the cores is reported as competing."""


@dataclass(frozen=True)
class CoreUse:
    wall_s: float
    own_cores: float
    """This process's CPU time / wall time: how many cores it kept busy on average."""
    other_cores: float | None
    """Other processes' CPU time / wall time (None where it cannot be measured)."""
    cores: int
    load_average: float | None
    method: str

    @property
    def other_share(self) -> float | None:
        return None if self.other_cores is None else self.other_cores / max(self.cores, 1)

    @property
    def competing(self) -> bool:
        share = self.other_share
        if share is None:  # load average: runnable processes beyond what we run ourselves
            load = self.load_average
            return load is not None and load - self.own_cores > COMPETING_SHARE * self.cores
        return share >= COMPETING_SHARE

    def describe(self) -> str:
        if self.other_cores is not None:
            text = (
                f"other work used {self.other_cores:.2f} of {self.cores} cores while timing "
                f"(this process {self.own_cores:.2f})"
            )
        else:
            text = f"load average {self.load_average} on {self.cores} cores while timing"
        if self.competing:
            text += ": the cores were shared, so times are longer and noisier than the model's own"
        return text


def _busy_seconds() -> tuple[float, int] | None:
    """Busy CPU seconds of the whole machine since boot, and its number of CPUs."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    fields = [int(v) for v in lines[0].split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is inside user already)
    busy = sum(fields[:3]) + sum(fields[5:8])
    cpus = sum(1 for line in lines if line.startswith("cpu") and line[3:4].isdigit())
    return busy / os.sysconf("SC_CLK_TCK"), max(cpus, 1)


def _own_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CoreWindow:
    """``start()`` ... ``read()``: how the cores were used in between."""

    def __init__(self) -> None:
        self._wall = 0.0
        self._own = 0.0
        self._busy: tuple[float, int] | None = None

    def start(self) -> CoreWindow:
        self._wall = time.perf_counter()
        self._own = _own_seconds()
        self._busy = _busy_seconds()
        return self

    def read(self) -> CoreUse:
        wall = max(time.perf_counter() - self._wall, 1e-9)
        own = (_own_seconds() - self._own) / wall
        busy_now = _busy_seconds()
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        if self._busy is None or busy_now is None:
            cores = os.cpu_count() or 1
            return CoreUse(wall, own, None, cores, load, "load average")
        machine = (busy_now[0] - self._busy[0]) / wall
        # Clock ticks are coarse (10 ms): a short window can read slightly below our own use.
        other = max(machine - own, 0.0)
        return CoreUse(wall, own, other, busy_now[1], load, "/proc/stat minus own CPU time")
