"""Collection time of the demo suites against pytest collecting nothing, in one script.

    .venv/bin/python bench/collection.py [--rounds 3]

``pytest --collect-only -q suites/`` (evalkit validates every suite, golden file, template and
metric, without importing torch) against ``pytest --collect-only -q`` of an empty folder (pytest
and its plugins starting up, evalkit's included), each in a fresh process, alternating; medians
over the rounds. Target: under 2 s wall for the suites.

Two figures per side: wall time, which load from other jobs stretches, and CPU time (user +
system, from wait4), which is what the process needs of one otherwise idle core: on a shared
machine it is the estimate of the idle wall time. The children run with bytecode caching as a
user's Python has it: PYTHONDONTWRITEBYTECODE is removed from their environment and one
collection runs first to write the caches (without them every evalkit module is compiled, and
assertion-rewritten by pytest, on every run: about 1.5 s more here).

A third figure leaves out the plugins of evalkit's ``[dev]`` extra that a user's install does
not have: hypothesis's pytest plugin imports all of hypothesis at the end of every session
(0.3-0.4 s CPU here; ``-p no:xdist`` is on every run).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

from _measure import REPO, Child, load_average, run_child

DEV_ONLY = ["-p", "no:hypothesispytest"]


def collect(target: str, cwd: Path, extra: tuple[str, ...] = ()) -> Child:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    command = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:xdist", *extra,
               target]  # fmt: skip
    done = run_child(command, env=env, cwd=cwd)
    if done.returncode not in (0, 5):  # 5: nothing collected (the empty folder)
        raise SystemExit(f"collection failed:\n{done.stdout}{done.stderr}")
    return done


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    suites: list[Child] = []
    empty: list[Child] = []
    user: list[Child] = []
    with tempfile.TemporaryDirectory(prefix="evalkit-collect-") as tmp:
        collect("suites/", REPO)  # writes the bytecode caches, as any first run does
        for _ in range(args.rounds):  # alternating, so load drift hits both alike
            suites.append(collect("suites/", REPO))
            empty.append(collect(tmp, Path(tmp)))
            user.append(collect("suites/", REPO, tuple(DEV_ONLY)))

    def median(runs: list[Child], cpu: bool = False) -> float:
        return statistics.median(r.cpu_seconds if cpu else r.seconds for r in runs)

    print(f"collection: median of {args.rounds} rounds ({load_average()})")
    print(f"  pytest --collect-only suites/   {median(suites):6.2f} s wall, "
          f"{median(suites, True):5.2f} s CPU  (target < 2 s)")  # fmt: skip
    print(f"  pytest --collect-only (empty)   {median(empty):6.2f} s wall, "
          f"{median(empty, True):5.2f} s CPU")  # fmt: skip
    print(f"  ... without [dev]-only plugins  {median(user):6.2f} s wall, "
          f"{median(user, True):5.2f} s CPU  (a user's install)")  # fmt: skip
    share = median(suites, True) - median(empty, True)
    print(f"  collecting the suites           {share:6.2f} s CPU beyond pytest's start-up")


if __name__ == "__main__":
    main()
