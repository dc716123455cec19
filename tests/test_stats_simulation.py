"""The gates' guarantees, checked as statistics: seeded simulations (numpy only) run evalkit's own
gate code on pairs whose true change is known (tests/gatesim.py).

- detection gates fail identical candidates at most alpha of the time (plus Monte Carlo error),
  alone and as a Holm family of four;
- non-inferiority gates pass at most alpha of the time when the true drop equals the margin;
- the power a detection gate reports predicts its simulated power within 10 points.

Few repetitions keep this file fast; ``bench/gate_statistics.py`` runs the same scenarios with
many more for the figures in docs/gates.md.
"""

from __future__ import annotations

import pytest
from gatesim import (
    ALPHA,
    binary_pairs,
    continuous_pairs,
    fail_rate,
    family_fail_rate,
    power_check,
)

from evalkit.spec import GateSpec


def _at_most_alpha(rate: float, runs: int) -> bool:
    """At most alpha, allowing three Monte Carlo standard errors of a rate of alpha (a true
    rate of alpha exceeds that in 0.1% of seeds)."""
    return rate <= ALPHA + 3 * (ALPHA * (1 - ALPHA) / runs) ** 0.5


def test_detection_on_identical_01_scores_fails_at_most_alpha() -> None:
    # 175 examples (the capitals suite), 20% of pairs discordant in either direction.
    gate = GateSpec(metric="m", max_drop=0.0)
    rate = fail_rate(gate, lambda rng: binary_pairs(rng, 175, 0.1, 0.1), runs=800)
    assert _at_most_alpha(rate.value, rate.runs), rate


def test_detection_at_its_allowance_fails_01_scores_at_most_alpha() -> None:
    # The true drop equals the allowance (0.05): 12.5% of pairs go down, 7.5% up.
    gate = GateSpec(metric="m", max_drop=0.05)
    rate = fail_rate(gate, lambda rng: binary_pairs(rng, 175, 0.075, 0.125), runs=800)
    assert _at_most_alpha(rate.value, rate.runs), rate


@pytest.mark.parametrize(("n", "noise"), [(60, "normal"), (12, "t3")])
def test_detection_on_identical_continuous_scores_fails_at_most_alpha(n: int, noise: str) -> None:
    gate = GateSpec(metric="m", max_drop=0.0)
    rate = fail_rate(gate, lambda rng: continuous_pairs(rng, n, 0.0, noise=noise), runs=400)
    assert _at_most_alpha(rate.value, rate.runs), rate


def test_holm_keeps_four_detection_gates_at_alpha_together() -> None:
    gates = [GateSpec(metric="m", max_drop=0.0)] * 4
    together = family_fail_rate(gates, lambda rng: binary_pairs(rng, 175, 0.1, 0.1), runs=400)
    assert _at_most_alpha(together.value, together.runs), together


def test_noninferiority_at_the_margin_passes_01_scores_at_most_alpha() -> None:
    # The true drop is the margin, 0.05: 15% of pairs discordant, 10% down and 5% up.
    gate = GateSpec(metric="m", max_drop=0.05, test="noninferiority")
    failed = fail_rate(gate, lambda rng: binary_pairs(rng, 175, 0.05, 0.10), runs=800)
    assert _at_most_alpha(1 - failed.value, failed.runs), failed


def test_noninferiority_at_the_margin_passes_continuous_scores_at_most_alpha() -> None:
    gate = GateSpec(metric="m", max_drop=1.0, test="noninferiority")
    failed = fail_rate(gate, lambda rng: continuous_pairs(rng, 60, -1.0), runs=400)
    assert _at_most_alpha(1 - failed.value, failed.runs), failed


def test_min_ratio_at_the_threshold_passes_at_most_alpha() -> None:
    # The candidate's true mean is 0.95 of the baseline's, exactly the floor.
    gate = GateSpec(metric="m", min_ratio=0.95, test="noninferiority")
    failed = fail_rate(gate, lambda rng: continuous_pairs(rng, 60, 0.0, scale=0.95), runs=400)
    assert _at_most_alpha(1 - failed.value, failed.runs), failed


def test_reported_power_predicts_simulated_power_for_01_scores() -> None:
    # allowance 0.02, true drop 0.10, 20% of pairs discordant: about 80% predicted.
    gate = GateSpec(metric="m", max_drop=0.02)
    simulated, predicted = power_check(
        gate, lambda rng: binary_pairs(rng, 175, 0.05, 0.15), runs=500, change=0.10
    )
    assert 0.6 < predicted < 0.95
    assert abs(simulated.value - predicted) <= 0.10, (simulated, predicted)


def test_reported_power_predicts_simulated_power_for_continuous_scores() -> None:
    # sd of the deltas 7.07, n 60: the gate reports a detectable change of 2.27 at 80%.
    gate = GateSpec(metric="m", max_drop=0.5)
    simulated, predicted = power_check(
        gate, lambda rng: continuous_pairs(rng, 60, -2.77), runs=300, change=2.77
    )
    assert 0.6 < predicted < 0.95
    assert abs(simulated.value - predicted) <= 0.10, (simulated, predicted)
