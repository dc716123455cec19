"""``pytest -n 2`` against a serial run of the same suites, in one script: wall time, and what
sharing the cores does to the latency figures (each xdist worker gets cores / workers torch
threads, see evalkit/_threads.py).

    .venv/bin/python bench/xdist_threads.py [--limit 4] [--candidates base,lookup]

Runs ``pytest suites/units.yaml suites/corpus.yaml --evalkit-limit N --evalkit-no-cache``
serially, then with ``-n 2 --dist loadfile`` (one suite per worker), each in a fresh process
and report folder, and prints both wall times and the units suite's mean TTFT/TPOT per candidate
from each run.json, with the cores other processes kept busy while they were timed
(``other_cores_busy``, which evalkit reports beside every latency figure; under xdist the other
worker is one of them). OMP_NUM_THREADS
is removed from the children's environment so that evalkit chooses the threads: torch's default
(every core) serially, cores / workers under xdist. ``--serial-one-thread`` adds a serial run
with one torch thread, which tells the gain of parallel workers from the cost of spinning
OpenMP threads on a loaded machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _measure import load_average

REPO = Path(__file__).resolve().parents[1]
SUITES = ["suites/units.yaml", "suites/corpus.yaml"]


def run(extra: list[str], reports: Path, limit: int, candidates: str, threads: str = "") -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env.update(PYTHONPATH=str(REPO), EVALKIT_PROGRESS="0", HF_HUB_OFFLINE="1")
    if threads:
        env["OMP_NUM_THREADS"] = threads
    command = [sys.executable, "-m", "pytest", *SUITES, "-q", "--evalkit-no-cache",
               f"--evalkit-limit={limit}", f"--evalkit-candidates={candidates}",
               f"--evalkit-report-dir={reports}", *extra]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env)
    if done.returncode not in (0, 1):
        raise SystemExit(f"pytest failed ({done.returncode}):\n{done.stdout[-3000:]}")
    return time.perf_counter() - start


def latency(reports: Path) -> dict[str, tuple[float, float, float]]:
    """Per candidate: mean TTFT, mean TPOT (ms), and the cores other processes kept busy."""
    run = json.loads((reports / "units" / "run.json").read_text(encoding="utf-8"))
    figures = {}
    for name, candidate in run["candidates"].items():
        ttft, tpot = (candidate["aggregates"].get(c) or {} for c in LATENCY)
        busy = (ttft.get("extra") or {}).get("other_cores_busy")
        figures[name] = (ttft.get("mean") or 0.0, tpot.get("mean") or 0.0, busy or 0.0)
    return figures


LATENCY = ("latency.ttft_ms", "latency.tpot_ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=4)
    parser.add_argument("--candidates", default="base,lookup")
    parser.add_argument("--serial-one-thread", action="store_true")
    args = parser.parse_args()
    runs: dict[str, tuple[float, dict[str, tuple[float, float, float]]]] = {}
    plan = [("serial", ["-p", "no:xdist"], ""), ("-n 2", ["-n", "2", "--dist", "loadfile"], "")]
    if args.serial_one_thread:
        plan.append(("serial, 1 thread", ["-p", "no:xdist"], "1"))
    with tempfile.TemporaryDirectory(prefix="evalkit-xdist-") as tmp:
        for label, extra, threads in plan:
            folder = Path(tmp) / str(len(runs))
            seconds = run(extra, folder, args.limit, args.candidates, threads)
            runs[label] = (seconds, latency(folder))
    print(f"xdist: {' '.join(SUITES)}, first {args.limit} examples, {args.candidates} "
          f"({load_average()})")  # fmt: skip
    serial = runs["serial"][0]
    for label, (seconds, _) in runs.items():
        print(f"  {label:<18} {seconds:8.2f} s   serial / this {serial / seconds:5.2f}")
    for label, (_, figures) in runs.items():
        for name, (ttft, tpot, busy) in figures.items():
            print(f"  units/{name:<8} {label:<18} TTFT {ttft:7.0f} ms  TPOT {tpot:6.1f} ms  "
                  f"other processes used {busy:.2f} cores while timed")  # fmt: skip


if __name__ == "__main__":
    main()
