"""What the bench scripts share: a process's peak RSS, children timed one at a time with their
own peak RSS, and the bench venv that holds the peers.

Peak RSS. ``getrusage(RUSAGE_SELF).ru_maxrss`` is not a child's own figure on Linux: a process
started by vfork (as Python's subprocess does) keeps its parent's high-water mark across exec,
so a child started by a parent holding a 1.4 GB model reports at least 1.4 GB whatever it does.
``VmHWM`` in /proc/self/status is the high-water mark of the process's own memory map, and
``os.wait4`` gives it for a child, from the kernel, once the child ends.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH_VENV = REPO / ".venv-bench"


def peak_rss_mb() -> float:
    """This process's own peak RSS in MB (VmHWM), else ru_maxrss where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale / 1024


def load_average() -> str:
    return f"load average {os.getloadavg()[0]:.1f}"


@dataclass(frozen=True)
class Child:
    seconds: float
    cpu_seconds: float
    """user + system time: what the child needs of one otherwise idle core"""
    peak_mb: float
    returncode: int
    stdout: str
    stderr: str


def run_child(command: list[str], *, env: dict[str, str] | None = None, cwd: Path = REPO) -> Child:
    """Run one process to its end: wall seconds, its peak RSS (from wait4) and its output.

    The output goes to files, not pipes, so a chatty child never blocks on a full pipe while we
    wait for it; the parent stays small, so what the child inherits before exec is small too.
    """
    out_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"evalkit-bench-{os.getpid()}"
    with open(f"{out_path}.out", "w+") as out, open(f"{out_path}.err", "w+") as err:
        start = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    for suffix in (".out", ".err"):
        Path(f"{out_path}{suffix}").unlink(missing_ok=True)
    scale = 1 if sys.platform == "darwin" else 1024
    cpu = usage.ru_utime + usage.ru_stime
    return Child(seconds, cpu, usage.ru_maxrss * scale / 2**20, process.returncode, stdout, stderr)


def bench_python() -> Path | None:
    """The bench venv's python (``make bench-env``), where the peers are installed."""
    python = Path(os.environ.get("EVALKIT_BENCH_PYTHON", BENCH_VENV / "bin" / "python"))
    return python if python.is_file() else None
