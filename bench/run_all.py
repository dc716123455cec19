"""``make bench``: every ratio of the performance targets, each measured against its baseline
in the same run, printed one block per script (bench/README.md records the figures).

    .venv/bin/python bench/run_all.py [--quick] [--device cuda]

Each script runs in its own process, one after another (two torch processes on the same cores
would slow each other). ``--quick`` uses smaller samples (a smoke run: ratios are noisier).
``peer_lm_eval.py`` needs lm-evaluation-harness in .venv-bench (``make bench-env``); without it
the script says so and the others run as usual. ``--device cuda`` reaches the scripts that
load a model in their own process (engine overhead, perplexity loop, the peer).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def scripts(quick: bool, device: list[str]) -> list[list[str]]:
    small = quick
    return [
        ["collection.py", "--rounds", "1" if small else "3"],
        ["warm_rerun.py", "--limit", "4" if small else "8"],
        ["engine_overhead.py", "--limit", "16" if small else "32", *device],
        ["perplexity_loop.py", *(["--max-length", "256", "--rounds", "1"] if small else []),
         *device],
        ["lexical_scale.py", "--pairs", "2000" if small else "10000",
         "--semantic", "500" if small else "2000", "--memory", "20000" if small else "100000"],
        ["xdist_threads.py", "--limit", "1" if small else "2", "--serial-one-thread"],
        # the peer (lm-evaluation-harness) runs from .venv-bench; it says so and skips without
        ["peer_lm_eval.py", *(["--limit", "32"] if small else []), *device],
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default=None, help="cpu or cuda (engine overhead)")
    parser.add_argument("--only", default=None, help="comma-separated script names")
    args = parser.parse_args()
    device = ["--device", args.device] if args.device else []
    wanted = set(args.only.split(",")) if args.only else None
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    failed = []
    for command in scripts(args.quick, device):
        if wanted and command[0].removesuffix(".py") not in wanted and command[0] not in wanted:
            continue
        start = time.perf_counter()
        done = subprocess.run([sys.executable, str(BENCH / command[0]), *command[1:]])
        took = time.perf_counter() - start
        load = os.getloadavg()[0]
        print(f"  ({command[0]}: {took:.0f} s, load average {load:.1f})\n", flush=True)
        if done.returncode != 0:
            failed.append(command[0])
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
