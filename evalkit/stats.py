"""Confidence intervals and paired significance tests by the bootstrap.

Scores of two candidates on the same examples are paired: the per-example delta removes the
example difficulty that dominates the variance, which is what makes small regressions detectable.
All resampling is seeded, so a verdict is reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

N_BOOTSTRAP = 10_000
_MAX_CELLS = 2_000_000  # resample in chunks so 5,000 examples x 10,000 draws stays small


def _bootstrap_means(values: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = len(values)
    step = max(1, _MAX_CELLS // max(n, 1))
    means = np.empty(n_boot)
    for start in range(0, n_boot, step):
        count = min(step, n_boot - start)
        means[start : start + count] = values[rng.integers(0, n, size=(count, n))].mean(axis=1)
    return means


@dataclass(frozen=True)
class Estimate:
    mean: float
    ci_low: float
    ci_high: float
    n: int


def mean_ci(
    values: Sequence[float], *, seed: int = 0, n_boot: int = N_BOOTSTRAP, confidence: float = 0.95
) -> Estimate:
    """Mean and percentile-bootstrap confidence interval."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        raise ValueError("no values to summarize")
    means = _bootstrap_means(data, n_boot, seed)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return Estimate(float(data.mean()), float(low), float(high), int(data.size))


@dataclass(frozen=True)
class PairedTest:
    """Change of candidate vs baseline (candidate minus baseline) and its one-sided test."""

    n: int
    mean_delta: float
    ci_low: float
    ci_high: float
    p_value: float
    direction: Literal["drop", "increase"]
    margin: float


def paired_test(
    deltas: Sequence[float],
    *,
    direction: Literal["drop", "increase"],
    margin: float = 0.0,
    seed: int = 0,
    n_boot: int = N_BOOTSTRAP,
    confidence: float = 0.95,
) -> PairedTest:
    """One-sided paired bootstrap test of a change beyond ``margin``.

    For ``drop`` the alternative is mean(delta) < -margin; for ``increase`` it is
    mean(delta) > margin. The null distribution is the bootstrap distribution of the mean delta
    shifted to the boundary of the null (the shift method of Efron & Tibshirani, ch. 16), and
    p = (1 + #{null draws at least as extreme as observed}) / (n_boot + 1).
    """
    data = np.asarray(deltas, dtype=float)
    if data.size == 0:
        raise ValueError("no paired examples to compare")
    observed = float(data.mean())
    means = _bootstrap_means(data, n_boot, seed)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    boundary = -margin if direction == "drop" else margin
    null = means - observed + boundary
    # Tolerance: all-equal deltas give draws equal to the observed value up to rounding.
    eps = 1e-12 * max(1.0, abs(observed))
    extreme = null <= observed + eps if direction == "drop" else null >= observed - eps
    p_value = (1.0 + float(extreme.sum())) / (n_boot + 1.0)
    return PairedTest(
        n=int(data.size),
        mean_delta=observed,
        ci_low=float(low),
        ci_high=float(high),
        p_value=min(1.0, p_value),
        direction=direction,
        margin=margin,
    )
