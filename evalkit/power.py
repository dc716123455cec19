"""Power of a paired detection test: what change could it see, and how many examples would see
the change that matters.

A detection gate with allowance ``a`` fails when the data show the change exceeds ``a``. Its
resolution is the *detectable change* ``d80``: the smallest true change a one-sided test at
``alpha`` tells from no change 80% of the time, at this many pairs. The gate then fails 80% of
the time once the true change reaches ``a + d80``. When ``d80 > a`` the gate cannot tell a change
the size of its own allowance from none: it is underpowered, and ``examples_needed`` says how
many pairs would bring ``d80`` down to ``a``.

Normal approximations (the textbook sample-size formulas), with the spread estimated from the run:
- continuous scores: ``d80 = (z_alpha + z_power) * sd / sqrt(n)``, sd of the paired deltas;
- 0/1 scores: the per-pair variance of a change ``d`` is ``q - d**2`` where ``q`` is the
  discordant rate; a change ``d`` needs at least ``q >= d`` discordant pairs, so ``d80`` solves
  ``d = (z_alpha + z_power) * sqrt((max(q, d) - d**2) / n)``: a run with no discordant pair at
  all still gets an honest, non-zero ``d80``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

POWER = 0.8
_NORMAL = NormalDist()


def _z_sum(alpha: float, power: float) -> float:
    return _NORMAL.inv_cdf(1.0 - alpha) + _NORMAL.inv_cdf(power)


@dataclass(frozen=True)
class Spread:
    """What power is judged on: the deltas' sd, or (0/1 scores) the discordant rate."""

    sd: float
    discordant_rate: float | None = None

    @property
    def binary(self) -> bool:
        return self.discordant_rate is not None

    def describe(self) -> str:
        if self.discordant_rate is not None:
            return f"discordant rate {self.discordant_rate:.3g}"
        return f"sd of the paired deltas {self.sd:.3g}"

    def variance_at(self, change: float) -> float:
        """Per-pair variance of the delta when the true change is ``change``."""
        if self.discordant_rate is None:
            return self.sd**2
        rate = max(self.discordant_rate, abs(change))
        return max(rate - change * change, 0.0)


def detectable_change(spread: Spread, n: int, alpha: float, power: float = POWER) -> float:
    """The smallest true change a one-sided level-``alpha`` test tells from none with
    probability ``power``, at ``n`` pairs."""
    z = _z_sum(alpha, power)
    if not spread.binary:
        return z * spread.sd / math.sqrt(n)
    # d - z * sqrt(var(d) / n) rises with d on [0, 1]: bisect for its root.
    low, high = 0.0, 1.0
    for _ in range(40):  # to 1e-12
        middle = (low + high) / 2.0
        if middle - z * math.sqrt(spread.variance_at(middle) / n) < 0:
            low = middle
        else:
            high = middle
    return high


def examples_needed(spread: Spread, change: float, alpha: float, power: float = POWER) -> int:
    """Pairs for a one-sided level-``alpha`` test to see ``change`` with probability ``power``."""
    if change <= 0:
        raise ValueError("the change to detect must be positive")
    z = _z_sum(alpha, power)
    return max(1, math.ceil(z * z * spread.variance_at(change) / (change * change)))


def power_at(spread: Spread, n: int, change: float, allowance: float, alpha: float) -> float:
    """Probability that a one-sided level-``alpha`` test rejects "the change is at most
    ``allowance``" when the true change is ``change`` (normal approximation)."""
    variance = spread.variance_at(change)
    if variance == 0:
        return 1.0 if change > allowance else alpha
    shift = (change - allowance) / math.sqrt(variance / n)
    return _NORMAL.cdf(shift - _NORMAL.inv_cdf(1.0 - alpha))
