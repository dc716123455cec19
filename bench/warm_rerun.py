"""A fully cached re-run against the cold run of the same suite, in the same script.

    .venv/bin/python bench/warm_rerun.py [--suite suites/capitals.yaml] [--limit 8]
                                         [--candidates base,nf4]

Runs `evalkit run` twice in fresh subprocesses on an empty cache folder (a temporary one, so
the project's .evalkit_cache is neither used nor touched): the first run generates and scores
everything, the second finds it all in the cache. Prints both wall times, their ratio (target:
at most 5% without latency metrics, which are measured afresh by design), and whether the
second run imported torch or transformers (it should import neither: no weights are loaded and
the fingerprint reads the device type without torch).
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

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import json, sys
from evalkit.cli import main
code = main(sys.argv[1:])
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "transformers"})
print("HEAVY " + json.dumps(heavy))
raise SystemExit(code)
"""


def run_once(args: list[str]) -> tuple[float, list[str], str]:
    env = {**os.environ, "EVALKIT_PROGRESS": "0", "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", PROBE, "run", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
    )
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 1):  # 1: a gate failed, which is a result, not an error
        raise SystemExit(f"evalkit run failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    heavy = next(line for line in done.stdout.splitlines() if line.startswith("HEAVY "))
    summary = [line for line in done.stdout.splitlines() if " examples, " in line]
    return seconds, json.loads(heavy.removeprefix("HEAVY ")), "\n".join(summary)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--suite", default="suites/capitals.yaml")
    parser.add_argument("--limit", type=int, default=8)
    parser.add_argument("--candidates", default="base,nf4")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="evalkit-warm-") as tmp:
        common = [
            args.suite,
            "--limit",
            str(args.limit),
            "--candidates",
            args.candidates,
            "--cache-dir",
            str(Path(tmp) / "cache"),
            "--report-dir",
            str(Path(tmp) / "reports"),
        ]
        cold, cold_heavy, _ = run_once(common)
        warm, warm_heavy, summary = run_once(common)
    print(f"warm re-run: {args.suite}, first {args.limit} examples, candidates {args.candidates}")
    print(f"  cold run (empty cache)        {cold:8.2f} s  imported {', '.join(cold_heavy)}")
    imported = ", ".join(warm_heavy) or "neither torch nor transformers"
    print(f"  warm run (everything cached)  {warm:8.2f} s  imported {imported}")
    print(f"  warm / cold                   {warm / cold:8.3f}  (target <= 0.05)")
    print("  " + summary.replace("\n", "\n  "))


if __name__ == "__main__":
    main()
