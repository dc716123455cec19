"""How many examples each column needs to tell a variant from the base, by subsampling a run.

    .venv/bin/python bench/fidelity_power.py reports/capitals/run.json [--alpha 0.01]

Reads a finished run of a suite with ``compare_to`` (e.g. the capitals demo) and, for each
variant and each of ``kl_divergence`` and ``contains`` (and any other column given with
``--columns``), finds:

- first N: the smallest N such that the first N examples (in file order) already give a paired
  one-sided p-value below ``alpha`` for a change in the column's bad direction (KL up,
  ``contains`` down), with two tests: the gates' own (``stats.paired_comparison``, shifted paired
  bootstrap) and the exact sign test (scipy ``binomtest`` on the examples that changed; for a
  0/1 column that is the exact McNemar test);
- power by subsampling: for sizes N, the share of ``--draws`` random subsets of N examples
  (seeded) in which the test gives p < alpha; the smallest N where it reaches 90%.

The mean KL (per-example mean, and token-weighted) and top-1 agreement of each variant are
printed too. A column that never reaches p < alpha within the run is reported as such.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import binomtest

from evalkit.stats import paired_comparison

SIZES = (2, 3, 5, 7, 10, 15, 20, 30, 50, 75, 100, 125, 150, 175)


def deltas(run: dict, variant: str, column: str, base: str) -> list[float]:
    """Per-example (variant - base) for examples both scored, in file order."""
    mine = {e["id"]: e["scores"].get(column) for e in run["candidates"][variant]["examples"]}
    theirs = {e["id"]: e["scores"].get(column) for e in run["candidates"][base]["examples"]}
    ids = [e["id"] for e in run["candidates"][base]["examples"]]
    return [
        mine[i] - theirs[i] for i in ids if mine.get(i) is not None and theirs.get(i) is not None
    ]


def bootstrap_p(values: Sequence[float], higher_is_better: bool, seed: int) -> float:
    alternative = "less" if higher_is_better else "greater"  # as gates.py asks it
    return paired_comparison(values, alternative=alternative, seed=seed, n_boot=2000).p_value


def sign_p(values: Sequence[float], higher_is_better: bool, seed: int) -> float:
    worse = sum(v < 0 if higher_is_better else v > 0 for v in values)
    better = sum(v > 0 if higher_is_better else v < 0 for v in values)
    if worse + better == 0:
        return 1.0
    return float(binomtest(worse, worse + better, 0.5, alternative="greater").pvalue)


TESTS = {"bootstrap (gates)": bootstrap_p, "sign test (exact)": sign_p}


def first_n(values: Sequence[float], higher_is_better: bool, alpha: float, test: Any) -> int | None:
    for n in range(2, len(values) + 1):
        if test(values[:n], higher_is_better, seed=0) < alpha:
            return n
    return None


def power(
    values: Sequence[float], higher_is_better: bool, alpha: float, draws: int, test: Any
) -> dict[int, float]:
    rng = np.random.default_rng(0)
    data = np.asarray(values)
    out: dict[int, float] = {}
    for n in SIZES:
        if n > len(data):
            break
        hits = 0
        for draw in range(draws):
            subset = rng.choice(len(data), size=n, replace=False)
            hits += test(data[subset].tolist(), higher_is_better, seed=draw) < alpha
        out[n] = hits / draws
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_json", type=Path)
    parser.add_argument("--alpha", type=float, default=0.01)
    parser.add_argument("--draws", type=int, default=100)
    parser.add_argument("--columns", nargs="*", default=["kl_divergence", "contains"])
    args = parser.parse_args()
    run = json.loads(args.run_json.read_text())
    base = run["compare_to"]
    for variant, candidate in run["candidates"].items():
        if variant == base:
            continue
        aggregates = candidate["aggregates"]
        kl, top1 = aggregates.get("kl_divergence", {}), aggregates.get("top1_agreement", {})
        print(
            f"{variant}: mean KL {kl.get('mean')} (token-weighted {kl.get('corpus')}, "
            f"p99 {kl.get('extra', {}).get('p99')}, max tail bound "
            f"{kl.get('extra', {}).get('tail_bound_max')}); top-1 agreement {top1.get('mean')}"
        )
        for column in args.columns:
            higher = bool(aggregates[column]["higher_is_better"])
            values = deltas(run, variant, column, base)
            mean_delta = float(np.mean(values)) if values else float("nan")
            print(f"  {column}: mean delta {mean_delta:+.4g} over {len(values)}")
            for label, test in TESTS.items():
                n = first_n(values, higher, args.alpha, test)
                curve = power(values, higher, args.alpha, args.draws, test)
                enough = next((size for size, share in curve.items() if share >= 0.9), None)
                print(
                    f"    {label}: first N with p<{args.alpha}: "
                    f"{n if n is not None else 'none within the run'}; 90% power at N="
                    f"{enough if enough is not None else '>' + str(len(values))}; "
                    + ", ".join(f"{size}:{share:.2f}" for size, share in curve.items())
                )


if __name__ == "__main__":
    main()
