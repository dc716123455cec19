"""Exact tests, intervals, multiplicity and power, against independent computations: scipy's
binomtest and distributions, statsmodels' mcnemar, multipletests and TTestPower, and a direct
maximization of Tango's restricted likelihood."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize
from scipy import stats as scipy_stats
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower

from evalkit import distributions, stats
from evalkit.mcnemar import _tango_statistic, exact_p_value, tango_interval
from evalkit.power import Spread, detectable_change, examples_needed
from evalkit.stats import MIN_PAIRS, Method, holm, paired_comparison, paired_ratio

# (went up, went down, pairs): the issue's case first (4 of 175 drop, none improve)
COUNTS = [(0, 4, 175), (3, 9, 100), (10, 2, 50), (0, 0, 20), (7, 7, 30), (1, 12, 40), (0, 5, 5)]


def _pairs(up: int, down: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """0/1 scores with ``up`` pairs 0->1, ``down`` pairs 1->0 and the rest agreeing."""
    base = np.array([0.0] * up + [1.0] * down + [1.0, 0.0] * n)[:n]
    candidate = base.copy()
    candidate[:up], candidate[up : up + down] = 1.0, 0.0
    return candidate, base


@pytest.mark.parametrize(("up", "down", "n"), COUNTS)
def test_exact_mcnemar_equals_scipy_and_statsmodels(up: int, down: int, n: int) -> None:
    candidate, base = _pairs(up, down, n)
    result = paired_comparison(candidate - base, binary=True, alternative="less")
    assert result.method is Method.EXACT and (result.n_up, result.n_down) == (up, down)
    d = up + down
    one_sided = scipy_stats.binomtest(down, d, 0.5, alternative="greater").pvalue if d else 1.0
    assert result.p_value == pytest.approx(one_sided, rel=1e-9)
    # statsmodels' table: rows baseline 1/0, columns candidate 1/0.
    table = [[n - up - down, down], [up, 0]]
    two_sided = paired_comparison(candidate - base, binary=True)
    assert two_sided.p_value == pytest.approx(mcnemar(table, exact=True).pvalue, rel=1e-9)
    increase = paired_comparison(base - candidate, binary=True, alternative="greater")
    assert increase.p_value == pytest.approx(one_sided, rel=1e-9)


def test_the_issues_four_drops_are_not_significant_any_more() -> None:
    candidate, base = _pairs(0, 4, 175)
    p = paired_comparison(candidate - base, binary=True, alternative="less").p_value
    assert p == pytest.approx(scipy_stats.binomtest(4, 4, 0.5, alternative="greater").pvalue)
    assert p > 0.05  # the bootstrap gave 0.047 here


def test_a_margin_moves_the_null_share_of_harmful_discordant_pairs() -> None:
    # "the drop is at most m" at its boundary: a discordant pair is harmful with 1/2 + m n / 2d.
    for up, down, n in [(3, 9, 100), (1, 12, 40), (2, 20, 175)]:
        for margin in (0.01, 0.05):
            null = 0.5 + margin * n / (2 * (up + down))
            expected = scipy_stats.binomtest(down, up + down, null, alternative="greater").pvalue
            assert exact_p_value(up, down, n, "less", margin) == pytest.approx(expected, rel=1e-9)
    assert exact_p_value(0, 3, 100, "less", 0.05) == 1.0  # 3 drops can never exceed 5 of 100


def _restricted_p_down(up: int, down: int, n: int, delta: float) -> float:
    """Tango's p(down) under H0: p(up) - p(down) = delta, by maximizing the likelihood."""
    same = n - up - down

    def negative_log_likelihood(p: float) -> float:
        return -(up * math.log(p + delta) + down * math.log(p) + same * math.log(1 - 2 * p - delta))

    low, high = max(1e-12, -delta + 1e-12), (1 - delta) / 2 - 1e-12
    return optimize.minimize_scalar(
        negative_log_likelihood, bounds=(low, high), method="bounded", options={"xatol": 1e-12}
    ).x


@pytest.mark.parametrize(("up", "down", "n"), [c for c in COUNTS if c[0] + c[1] > 0])
def test_tango_interval_solves_the_score_equation_with_the_restricted_mle(
    up: int, down: int, n: int
) -> None:
    low, high = tango_interval(up, down, n, 0.95)
    z = scipy_stats.norm.ppf(0.975)
    assert low <= (up - down) / n <= high  # equal only at -1 or 1 (every pair changed)
    for bound, target in ((low, z), (high, -z)):
        if abs(bound) == 1.0:
            continue
        p_down = _restricted_p_down(up, down, n, bound)
        direct = (up - down - n * bound) / math.sqrt(n * (2 * p_down + bound * (1 - bound)))
        assert direct == pytest.approx(target, abs=1e-5)
        assert _tango_statistic(up, down, n, bound) == pytest.approx(target, abs=1e-9)


def test_tango_interval_without_discordant_pairs_has_its_closed_form() -> None:
    # With no discordant pair the score interval is +-z^2 / (n + z^2).
    for n in (5, 20, 175):
        z = scipy_stats.norm.ppf(0.975)
        low, high = tango_interval(0, 0, n, 0.95)
        assert high == pytest.approx(z * z / (n + z * z), rel=1e-9) and low == pytest.approx(-high)


def test_holm_equals_statsmodels_multipletests() -> None:
    rng = np.random.default_rng(4)
    for size in (1, 2, 7, 30):
        p = np.round(rng.random(size) ** 3, 3)  # rounding makes ties
        expected = multipletests(p, method="holm")[1]
        assert holm(list(p)) == pytest.approx(list(expected), abs=1e-12)


def test_distribution_functions_equal_scipys() -> None:
    rng = np.random.default_rng(0)
    for _ in range(300):
        n, p = int(rng.integers(1, 400)), float(rng.random())
        k = int(rng.integers(0, n + 2))
        expected = scipy_stats.binom.sf(k - 1, n, p) if k > 0 else 1.0
        assert distributions.binomial_tail(k, n, p) == pytest.approx(expected, rel=1e-9, abs=1e-300)
        df, t, q = float(rng.integers(1, 3000)), float(rng.normal() * 4), float(rng.random())
        assert distributions.t_cdf(t, df) == pytest.approx(scipy_stats.t.cdf(t, df), abs=1e-10)
        assert distributions.t_quantile(q, df) == pytest.approx(scipy_stats.t.ppf(q, df), abs=1e-8)


def test_the_expanded_percentile_level_is_hesterbergs() -> None:
    for n in (5, 12, 175):
        for level in (0.025, 0.05):
            expected = scipy_stats.norm.cdf(
                math.sqrt(n / (n - 1)) * scipy_stats.t.ppf(level, n - 1)
            )
            assert stats._expanded_level(level, n) == pytest.approx(expected, rel=1e-9)


def test_few_pairs_are_untestable_and_a_constant_shift_gets_the_sign_test() -> None:
    few = paired_comparison([-1.0, -1.0], alternative="less")
    assert few.untestable is not None and f"at least {MIN_PAIRS}" in few.untestable
    three = paired_comparison([-0.5, -0.2, -0.9], alternative="less")
    assert three.untestable is not None
    flat = paired_comparison([-0.1] * 8, alternative="less", margin=0.05)
    assert flat.untestable is None and flat.method is Method.SIGN
    assert flat.p_value == pytest.approx(scipy_stats.binomtest(8, 8, 0.5, "greater").pvalue)
    within = paired_comparison([-0.01] * 8, alternative="less", margin=0.05)
    assert within.p_value == 1.0  # every pair changed, all within the margin
    unchanged = paired_comparison([0.0] * 30, alternative="less")
    assert unchanged.unchanged and unchanged.p_value == 1.0


def test_paired_ratio_matches_a_scipy_paired_bootstrap() -> None:
    rng = np.random.default_rng(2)
    base = rng.uniform(0.3, 0.9, 150)
    candidate = np.clip(base * 0.95 + rng.normal(0, 0.05, 150), 0, 1)
    ours = paired_ratio(candidate, base, threshold=0.97, seed=0)
    ref = scipy_stats.bootstrap(
        (candidate, base),
        lambda c, b: c.mean() / b.mean(),
        paired=True,
        vectorized=False,
        method="percentile",
        n_resamples=4000,
        random_state=np.random.default_rng(1),
    ).confidence_interval
    assert ours.ratio == pytest.approx(candidate.mean() / base.mean())
    width = ref.high - ref.low
    assert ours.ci_low == pytest.approx(ref.low, abs=0.05 * width)
    assert ours.ci_high == pytest.approx(ref.high, abs=0.05 * width)
    assert ours.ci_low < ours.lower_bound < ours.ratio < ours.upper_bound < ours.ci_high
    with pytest.raises(ValueError, match="positive baseline mean"):
        paired_ratio([1.0, 0.0], [0.0, 0.0], threshold=0.9)


def test_detectable_change_and_examples_needed_agree_with_statsmodels() -> None:
    # Continuous: the one-sided one-sample (paired) power formula; statsmodels solves the
    # t-test's, which the normal approximation matches within a percent at these sizes.
    sd, alpha = 7.0, 0.05
    for n in (60, 175, 1000):
        effect = TTestPower().solve_power(nobs=n, alpha=alpha, power=0.8, alternative="larger")
        ours = detectable_change(Spread(sd), n, alpha)
        assert ours == pytest.approx(effect * sd, rel=0.015)
        z = scipy_stats.norm.ppf(0.95) + scipy_stats.norm.ppf(0.8)
        assert ours == pytest.approx(z * sd / math.sqrt(n), rel=1e-9)
    needed = TTestPower().solve_power(
        effect_size=1.0 / sd, alpha=alpha, power=0.8, alternative="larger"
    )
    assert abs(examples_needed(Spread(sd), 1.0, alpha) - needed) <= 3
    # 0/1: the change d solves d = z * sqrt((max(q, d) - d^2) / n), q the discordant rate.
    for q, n in ((0.2, 175), (0.0, 175), (0.05, 40)):
        d = detectable_change(Spread(0.0, q), n, alpha)
        z = scipy_stats.norm.ppf(0.95) + scipy_stats.norm.ppf(0.8)
        assert d == pytest.approx(z * math.sqrt((max(q, d) - d * d) / n), rel=1e-9)
        assert d > 0
