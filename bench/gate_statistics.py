"""The gates' error rates and power, measured: the figures of docs/gates.md ("Gates and the
statistics behind them").

    .venv/bin/python bench/gate_statistics.py [--runs 2000]

Two kinds of figure, both seeded and numpy-only (no model):

- simulated: evalkit's own gate code (``paired_gates``) on pairs whose true change is known,
  ``--runs`` repetitions each (the scenarios of tests/gatesim.py, which the tests run small);
- exact (0/1 scores): every possible outcome of n pairs enumerated with its probability, so the
  rate has no Monte Carlo error.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from gatesim import (
    ALPHA,
    Rate,
    binary_pairs,
    continuous_pairs,
    fail_rate,
    family_fail_rate,
    power_check,
)

from evalkit.mcnemar import exact_p_value, tango_interval
from evalkit.paired_gates import Pairs
from evalkit.spec import GateSpec


def _binomial_pmf(k: int, n: int, p: float) -> float:
    if p <= 0.0 or p >= 1.0:
        return float(k == (n if p >= 1.0 else 0))
    log = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
    return math.exp(log + k * math.log(p) + (n - k) * math.log1p(-p))


def exact_rate(n: int, up: float, down: float, event: str, margin: float) -> float:
    """P(event) over all outcomes of n pairs that go up / down with these probabilities:
    ``detect``: a detection gate with this allowance fails; ``noninferior``: a
    non-inferiority gate with this margin passes."""
    total, rate = 0.0, up + down
    for d in range(n + 1):
        p_d = _binomial_pmf(d, n, rate)
        if p_d < 1e-13:
            continue
        for w in range(d + 1):  # w of the d discordant pairs went down
            p = p_d * _binomial_pmf(w, d, down / rate)
            if p < 1e-15:
                continue
            u = d - w
            if event == "detect":
                hit = (w - u) / n > margin and exact_p_value(u, w, n, "less", margin) < ALPHA
            else:
                hit = tango_interval(u, w, n, 1 - 2 * ALPHA)[0] > -margin
            total += p * hit
    return total


def _passes(gate: GateSpec, draw: Callable[[np.random.Generator], Pairs], runs: int) -> Rate:
    failed = fail_rate(gate, draw, runs)
    return Rate(failed.runs - failed.hits, failed.runs)


def _line(what: str, rate: Rate | float, note: str = "") -> str:
    if isinstance(rate, Rate):
        se = rate.standard_error(max(rate.value, 1e-3))
        value = f"{rate.value:.3f} ± {se:.3f} ({rate.runs} runs)"
    else:
        value = f"{rate:.4f} (exact)"
    return f"| {what} | {value} | {note} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    args = parser.parse_args()
    runs, started = args.runs, time.perf_counter()
    detect = GateSpec(metric="m", max_drop=0.0)
    print("| scenario | rate | expected |\n|---|---|---|")
    rows = [
        ("false alarms, identical 0/1 scores, n=175, allowance 0",
         fail_rate(detect, lambda r: binary_pairs(r, 175, 0.1, 0.1), runs), "<= 0.05"),
        ("false alarms, identical continuous scores, n=175",
         fail_rate(detect, lambda r: continuous_pairs(r, 175, 0.0), runs), "<= 0.05"),
        ("false alarms, identical continuous scores, n=12, heavy tails (t3)",
         fail_rate(detect, lambda r: continuous_pairs(r, 12, 0.0, noise="t3"), runs), "<= 0.05"),
        ("false alarms, 4 identical candidates as one Holm family, 0/1, n=175",
         family_fail_rate([detect] * 4, lambda r: binary_pairs(r, 175, 0.1, 0.1), runs // 2),
         "<= 0.05 together"),
        ("detection at its allowance (true drop 0.05 = allowance), 0/1, n=175",
         exact_rate(175, 0.075, 0.125, "detect", 0.05), "<= 0.05"),
        ("non-inferiority passes at the margin (true drop 0.05), 0/1, n=175, 15% discordant",
         exact_rate(175, 0.05, 0.10, "noninferior", 0.05), "<= 0.05"),
        ("non-inferiority passes at the margin, 0/1, n=40, 30% discordant",
         exact_rate(40, 0.125, 0.175, "noninferior", 0.05), "<= 0.05"),
        ("non-inferiority passes at the margin (true drop 1.0), continuous, n=175",
         _passes(GateSpec(metric="m", max_drop=1.0, test="noninferiority"),
                 lambda r: continuous_pairs(r, 175, -1.0), runs), "<= 0.05"),
        ("min_ratio 0.95 passes at a true ratio of 0.95, continuous, n=175",
         _passes(GateSpec(metric="m", min_ratio=0.95, test="noninferiority"),
                 lambda r: continuous_pairs(r, 175, 0.0, scale=0.95), runs // 2), "<= 0.05"),
    ]  # fmt: skip
    for what, rate, expected in rows:
        print(_line(what, rate, expected))
    for what, gate, draw, change in (
        ("power, 0/1, n=175, allowance 0.02, true drop 0.10, 20% discordant",
         GateSpec(metric="m", max_drop=0.02), lambda r: binary_pairs(r, 175, 0.05, 0.15), 0.10),
        ("power, continuous, n=175, allowance 0.5, true drop 1.8, sd 7.07",
         GateSpec(metric="m", max_drop=0.5), lambda r: continuous_pairs(r, 175, -1.8), 1.8),
    ):  # fmt: skip
        simulated, predicted = power_check(gate, draw, runs // 2, change)
        print(_line(what, simulated, f"predicted {predicted:.3f} (mean of each run's estimate)"))
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
