"""Collection time of the demo suites against pytest collecting nothing, in one script.

    .venv/bin/python bench/collection.py [--rounds 3]

``pytest --collect-only -q suites/`` (evalkit validates every suite, golden file, template and
metric, without importing torch) against ``pytest --collect-only -q`` of an empty folder (pytest
and its plugins starting up), each in a fresh process; medians over the rounds. Target: under
2 s wall for the suites.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def collect(target: str, cwd: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:xdist", target],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
    )
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 5):  # 5: nothing collected (the empty folder)
        raise SystemExit(f"collection failed:\n{done.stdout}{done.stderr}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    suites, empty = [], []
    with tempfile.TemporaryDirectory(prefix="evalkit-collect-") as tmp:
        for _ in range(args.rounds):  # alternating, so load drift hits both alike
            suites.append(collect("suites/", REPO))
            empty.append(collect(tmp, Path(tmp)))
    ours, bare = statistics.median(suites), statistics.median(empty)
    print(f"collection: median of {args.rounds} rounds")
    print(f"  pytest --collect-only suites/   {ours:6.2f} s  (target < 2 s)")
    print(f"  pytest --collect-only (empty)   {bare:6.2f} s")
    print(f"  evalkit's share                 {ours - bare:6.2f} s, ratio {ours / bare:.2f}")


if __name__ == "__main__":
    main()
