"""Seeded simulations of evalkit's gates (numpy only): the rates docs/gates.md states.

Every scenario draws paired scores for a baseline and a candidate whose true change is known,
and runs evalkit's own gate code on them (``paired_gates.judge``, or ``assess`` / ``adjust`` /
``decide`` for a Holm family, as ``evaluate_gates`` does). ``tests/test_stats_simulation.py``
runs them with few repetitions; ``bench/gate_statistics.py`` with many, for docs/gates.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from evalkit.paired_gates import Pairs, adjust, assess, decide, judge, rules_of
from evalkit.power import Spread, power_at
from evalkit.spec import GateSpec

ALPHA = 0.05
N_BOOT = 999  # the gates use 10,000; 999 keeps a simulation fast and changes p by ~1e-3


def binary_pairs(rng: np.random.Generator, n: int, up: float, down: float) -> Pairs:
    """0/1 scores: each pair goes 0->1 with probability ``up``, 1->0 with ``down``, else both
    sides agree (1 with probability 0.6). The true change is ``up - down``."""
    u = rng.random(n)
    went_up, went_down = u < up, (u >= up) & (u < up + down)
    base = (rng.random(n) < 0.6).astype(float)
    base[went_up], base[went_down] = 0.0, 1.0
    candidate = base.copy()
    candidate[went_up], candidate[went_down] = 1.0, 0.0
    return Pairs("sim", candidate, base)


def continuous_pairs(
    rng: np.random.Generator, n: int, change: float, *, noise: str = "normal", scale: float = 1.0
) -> Pairs:
    """Scores around 50 with a shared per-example difficulty (sd 15) and independent noise
    (sd 5 each side, or Student t with 3 degrees of freedom, scaled alike): the candidate's true
    mean is ``scale`` times the baseline's plus ``change``."""
    difficulty = 50.0 + 15.0 * rng.standard_normal(n)

    def noisy() -> np.ndarray:
        if noise == "t3":
            return 5.0 * rng.standard_t(3, n) / np.sqrt(3.0)
        return 5.0 * rng.standard_normal(n)

    base = difficulty + noisy()
    return Pairs("sim", scale * difficulty + change + noisy(), base)


@dataclass(frozen=True)
class Rate:
    """How often an event happened in ``runs`` seeded repetitions, with its Monte Carlo
    standard error."""

    hits: int
    runs: int

    @property
    def value(self) -> float:
        return self.hits / self.runs

    def standard_error(self, p: float) -> float:
        return float(np.sqrt(p * (1.0 - p) / self.runs))


def fail_rate(
    gate: GateSpec, draw: Callable[[np.random.Generator], Pairs], runs: int, seed: int = 0
) -> Rate:
    """How often ``gate`` fails on pairs from ``draw``."""
    rng = np.random.default_rng(seed)
    hits = sum(
        not all(c.passed for c in judge(gate, draw(rng), seed=i, n_boot=N_BOOT))
        for i in range(runs)
    )
    return Rate(hits, runs)


def family_fail_rate(
    gates: list[GateSpec], draw: Callable[[np.random.Generator], Pairs], runs: int, seed: int = 0
) -> Rate:
    """How often any of ``gates`` (each on its own candidate, all decided as one Holm family,
    as ``evaluate_gates`` does) fails."""
    rng = np.random.default_rng(seed)
    hits = 0
    for i in range(runs):
        assessed = [
            (gate, assess(gate, rule, draw(rng), seed=i, n_boot=N_BOOT))
            for gate in gates
            for rule in rules_of(gate)
        ]
        adjust(assessed, "holm")
        hits += any(decide(gate, c).failures for gate, c in assessed)
    return Rate(hits, runs)


def power_check(
    gate: GateSpec, draw: Callable[[np.random.Generator], Pairs], runs: int, change: float
) -> tuple[Rate, float]:
    """The simulated fail rate of a detection gate when the true change is ``change``, and the
    power each run's own estimate predicted for it (averaged over the runs)."""
    rng = np.random.default_rng(1)
    hits, predicted = 0, []
    for i in range(runs):
        (comparison,) = judge(gate, draw(rng), seed=i, n_boot=N_BOOT)
        hits += not comparison.passed
        assert comparison.allowed is not None
        power = comparison.power
        assert power is not None
        spread = Spread(power.sd or 0.0, power.discordant_rate)
        predicted.append(power_at(spread, power.n, change, comparison.allowed, gate.alpha))
    return Rate(hits, runs), float(np.mean(predicted))
