"""Bootstrap CIs and paired tests, checked against independent computations (scipy, hand math)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as scipy_stats

from evalkit.stats import mean_ci, paired_comparison


def test_mean_ci_matches_scipy_percentile_bootstrap() -> None:
    data = np.random.default_rng(3).normal(0.6, 0.25, 300)
    ours = mean_ci(data, seed=0)
    ref = scipy_stats.bootstrap(
        (data,),
        np.mean,
        method="percentile",
        n_resamples=10_000,
        random_state=np.random.default_rng(1),
    ).confidence_interval
    assert ours.mean == pytest.approx(data.mean(), rel=1e-12)
    # Two independent bootstrap runs agree to Monte-Carlo error (~1% of the width).
    width = ref.high - ref.low
    assert ours.ci_low == pytest.approx(ref.low, abs=0.03 * width)
    assert ours.ci_high == pytest.approx(ref.high, abs=0.03 * width)


def test_mean_ci_is_seeded_and_degenerate_data_has_zero_width() -> None:
    data = [1.0, 0.0, 1.0, 1.0, 0.0, 1.0]
    assert mean_ci(data, seed=5) == mean_ci(data, seed=5)
    flat = mean_ci([0.5] * 10)
    assert (flat.mean, flat.ci_low, flat.ci_high) == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="no values"):
        mean_ci([])


def test_paired_test_p_value_agrees_with_paired_t_test_on_normal_deltas() -> None:
    rng = np.random.default_rng(7)
    deltas = rng.normal(-0.02, 0.15, 400)
    ours = paired_comparison(deltas, alternative="less", margin=0.0)
    t = scipy_stats.ttest_1samp(deltas, 0.0, alternative="less")
    assert ours.p_value == pytest.approx(t.pvalue, abs=0.01)
    # With a margin the test asks "is the drop larger than the margin?"
    ours_margin = paired_comparison(deltas, alternative="less", margin=0.01)
    t_margin = scipy_stats.ttest_1samp(deltas, -0.01, alternative="less")
    assert ours_margin.p_value == pytest.approx(t_margin.pvalue, abs=0.01)
    increase = paired_comparison(-deltas, alternative="greater", margin=0.0)
    assert increase.p_value == pytest.approx(t.pvalue, abs=0.01)


def test_paired_test_degenerate_cases() -> None:
    same = paired_comparison([0.0] * 50, alternative="less", margin=0.03)
    assert (same.mean_delta, same.ci_low, same.ci_high, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    all_worse = paired_comparison([-1.0] * 50, alternative="less", margin=0.03, n_boot=999)
    assert all_worse.p_value == pytest.approx(1 / 1000)
    # A drop within the margin is never significant however consistent it is.
    small = paired_comparison([-0.01] * 50, alternative="less", margin=0.03)
    assert small.p_value == 1.0


def test_paired_test_one_changed_example_in_forty_is_noise() -> None:
    # P(a bootstrap resample holds the bad example at least twice) = P(Bin(40, 1/40) >= 2).
    deltas = [0.0] * 39 + [-1.0]
    result = paired_comparison(deltas, alternative="less", margin=0.0)
    n, q = 40, 1 / 40
    expected = 1 - (1 - q) ** n - n * q * (1 - q) ** (n - 1)
    assert result.p_value == pytest.approx(expected, abs=0.015)


def test_large_inputs_are_resampled_in_chunks() -> None:
    data = np.random.default_rng(0).random(5000)
    result = mean_ci(data, n_boot=2000)
    assert result.ci_low < data.mean() < result.ci_high
