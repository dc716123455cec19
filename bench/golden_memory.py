"""Memory and time of a whole run as the golden file grows, and of ``--limit 5`` on the largest.

Each size is a fresh ``evalkit run`` in a subprocess (so its peak RSS is its own): a golden JSONL
file of N examples, two replay candidates with one output per example, exact_match and
edit_similarity scored for every example, and a gate (so the paired statistics run too).
Printed: wall time and peak RSS per size, the RSS each extra example costs (the slope between
the two largest sizes), and each RSS divided by the smallest run's, the baseline.

    .venv/bin/python bench/golden_memory.py [--sizes 1000,10000,100000] [--keep DIR]

A 1M-example run needs about ten times the largest figure printed for 100k; ``--sizes
1000,1000000`` measures it directly (several minutes on a 2-core machine).
Numbers only, no assertions: the tests check behaviour (tests/test_hostile_files.py reads only
what ``--limit`` needs), this script measures it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

MB = 1024 * 1024
WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
]

SUITE = """suite: scale
dataset: golden.jsonl
prompt: "{{ question }}"
candidates:
  base: {replay: base.jsonl}
  vendor: {replay: vendor.jsonl}
metrics: [exact_match, edit_similarity]
gates:
  exact_match: {max_drop: 0.05}
compare_to: base
"""


def write_files(folder: Path, n: int) -> Path:
    """The suite, an N-line golden file and two replay files (the vendor's differs on 1 in 7)."""
    folder.mkdir(parents=True, exist_ok=True)
    with (
        open(folder / "golden.jsonl", "w") as golden,
        open(folder / "base.jsonl", "w") as base,
        open(folder / "vendor.jsonl", "w") as vendor,
    ):
        for i in range(n):
            answer = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(1 + i % 5))
            question = f"Question {i}: which words come after {WORDS[i % len(WORDS)]}?"
            golden.write(json.dumps({"id": f"q{i}", "question": question, "reference": answer}))
            golden.write("\n")
            base.write(json.dumps({"id": f"q{i}", "output": answer}) + "\n")
            other = answer if i % 7 else answer.upper()
            vendor.write(json.dumps({"id": f"q{i}", "output": other}) + "\n")
    suite = folder / "scale.yaml"
    suite.write_text(SUITE)
    return suite


def run(suite: Path, limit: int | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one ``evalkit run`` in its own process."""
    cmd = [sys.executable, "-m", "evalkit.cli", "run", str(suite), "--no-cache",
           "--report-dir", str(suite.parent / "reports")]  # fmt: skip
    if limit is not None:
        cmd += ["--limit", str(limit)]
    script = (
        "import resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        "rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode\n"
        "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, rc)"
    )
    out = subprocess.run([sys.executable, "-c", script, *cmd], capture_output=True, text=True)
    wall, rss_kb, rc = out.stdout.split()
    if rc not in ("0", "1"):  # 1: a gate failed, which is still a complete run
        raise SystemExit(f"evalkit run failed ({rc}): {out.stderr[-2000:]}")
    return float(wall), int(rss_kb) * 1024 / MB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--keep", type=Path, help="keep the generated files in this folder")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    root = args.keep or Path(tempfile.mkdtemp(prefix="evalkit-bench-golden-"))
    print(f"{'examples':>10} {'wall s':>8} {'peak RSS MB':>12} {'x smallest':>11}")
    rows = []
    try:
        for n in sizes:
            suite = write_files(root / str(n), n)
            wall, rss = run(suite)
            rows.append((n, wall, rss))
            print(f"{n:>10,} {wall:>8.1f} {rss:>12.0f} {rss / rows[0][2]:>11.2f}")
        (n1, _, r1), (n2, _, r2) = rows[-2:] if len(rows) > 1 else (rows[0], rows[0])
        if n2 > n1:
            print(f"each extra example costs {(r2 - r1) * MB / (n2 - n1) / 1024:.2f} KB of RSS")
        wall, rss = run(root / str(sizes[-1]) / "scale.yaml", limit=5)
        print(f"--limit 5 on the {sizes[-1]:,}-example file: {wall:.1f} s, {rss:.0f} MB peak RSS "
              f"({rss / rows[-1][2]:.2f}x the full run's)")  # fmt: skip
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
