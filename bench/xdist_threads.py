"""``pytest -n 2`` against a serial run of the same suites, in one script: wall time, and what
sharing the cores does to the latency figures (each xdist worker gets cores / workers torch
threads, see evalkit/_threads.py).

    .venv/bin/python bench/xdist_threads.py [--limit 4] [--candidates base,lookup]

Runs ``pytest suites/units.yaml suites/corpus.yaml --evalkit-limit N --evalkit-no-cache``
serially, then with ``-n 2 --dist loadfile`` (one suite per worker), each in a fresh process
and report folder, and prints both wall times and the units suite's mean TTFT/TPOT per candidate
from each run.json. OMP_NUM_THREADS is removed from the children's environment so that evalkit
chooses the threads.
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

REPO = Path(__file__).resolve().parents[1]
SUITES = ["suites/units.yaml", "suites/corpus.yaml"]


def run(extra: list[str], reports: Path, limit: int, candidates: str) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env.update(PYTHONPATH=str(REPO), EVALKIT_PROGRESS="0", HF_HUB_OFFLINE="1")
    command = [sys.executable, "-m", "pytest", *SUITES, "-q", "--evalkit-no-cache",
               f"--evalkit-limit={limit}", f"--evalkit-candidates={candidates}",
               f"--evalkit-report-dir={reports}", *extra]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env)
    if done.returncode not in (0, 1):
        raise SystemExit(f"pytest failed ({done.returncode}):\n{done.stdout[-3000:]}")
    return time.perf_counter() - start


def latency(reports: Path) -> dict[str, tuple[float | None, float | None]]:
    run = json.loads((reports / "units" / "run.json").read_text(encoding="utf-8"))
    figures = {}
    for name, candidate in run["candidates"].items():
        means = [
            (candidate["aggregates"].get(column) or {}).get("mean")
            for column in ("latency.ttft_ms", "latency.tpot_ms")
        ]
        figures[name] = (means[0], means[1])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=4)
    parser.add_argument("--candidates", default="base,lookup")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="evalkit-xdist-") as tmp:
        serial_dir, parallel_dir = Path(tmp) / "serial", Path(tmp) / "parallel"
        serial = run(["-p", "no:xdist"], serial_dir, args.limit, args.candidates)
        parallel = run(["-n", "2", "--dist", "loadfile"], parallel_dir, args.limit, args.candidates)
        alone, shared = latency(serial_dir), latency(parallel_dir)
    print(f"xdist: {' '.join(SUITES)}, first {args.limit} examples, {args.candidates}")
    print(f"  serial            {serial:8.2f} s")
    print(f"  -n 2 (loadfile)   {parallel:8.2f} s   serial / parallel {serial / parallel:.2f}")
    for name in alone:
        (ttft_a, tpot_a), (ttft_s, tpot_s) = alone[name], shared.get(name, (None, None))
        print(f"  units/{name}: TTFT {ttft_a or 0:.0f} ms alone, {ttft_s or 0:.0f} ms beside "
              f"another worker; TPOT {tpot_a or 0:.1f} / {tpot_s or 0:.1f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
