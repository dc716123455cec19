"""Change rules on hand-built runs: non-inferiority, min_ratio, power and the underpowered
warning, not enough evidence, Holm across a run's detection gates, and the rules' spec."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats
from statsmodels.stats.multitest import multipletests
from suitefiles import CAPITALS, write_jsonl, write_suite

from evalkit.errors import SpecError
from evalkit.gates import BaselineScores, GateJob, evaluate_gate, evaluate_gates
from evalkit.mcnemar import tango_interval
from evalkit.results import Aggregate, CandidateRun, ExampleResult
from evalkit.spec import GateSpec, load_suite
from evalkit.stats import paired_ratio


def _run(
    scores: list[float | None], *, name: str = "cand", higher_is_better: bool = True
) -> CandidateRun:
    examples = [
        ExampleResult(
            id=f"e{i}", references=[f"ref {i}"], messages=[], output=f"out {i}", scores={"m": s}
        )
        for i, s in enumerate(scores)
    ]
    present = [s for s in scores if s is not None]
    mean = sum(present) / len(present)
    aggregate = Aggregate(metric="m", mean=mean, n=len(present), higher_is_better=higher_is_better)
    return CandidateRun(
        name=name,
        spec={},
        fingerprint={},
        fingerprint_hash="x",
        generation={},
        examples=examples,
        aggregates={"m": aggregate},
    )


def _baseline(scores: list[float | None]) -> BaselineScores:
    return BaselineScores(label="candidate:base", scores={f"e{i}": s for i, s in enumerate(scores)})


def _flips(n: int, up: int, down: int) -> tuple[list[float], list[float]]:
    """0/1 candidate and baseline scores with ``up`` pairs 0->1 and ``down`` pairs 1->0."""
    base = [0.0] * up + [1.0] * down + [float(i % 2) for i in range(n - up - down)]
    cand = [1.0] * up + [0.0] * down + base[up + down :]
    return cand, base


def test_noninferiority_passes_only_when_the_one_sided_bound_clears_the_margin() -> None:
    # nf4-like: 20 of 175 drop, 5 improve (-8.6 points).
    cand, base = _flips(175, 5, 20)
    gate = GateSpec(metric="m", max_drop=0.05, test="noninferiority")
    verdict = evaluate_gate("s", "m", gate, _run(cand), _baseline(base))
    comparison = verdict.comparison
    assert comparison is not None and comparison.test == "noninferiority"
    # The one-sided 95% bound is the lower end of Tango's two-sided 90% interval.
    lower, _ = tango_interval(5, 20, 175, 0.90)
    assert comparison.bound == pytest.approx(lower, abs=1e-9) and lower < -0.05
    assert verdict.status == "failed" and "non-inferiority not shown" in verdict.message
    assert comparison.p_value is None and comparison.power is None  # no detection statistics
    # int8-like: 2 drop, 1 improves: the bound clears -0.05.
    cand, base = _flips(175, 1, 2)
    ok = evaluate_gate("s", "m", gate, _run(cand), _baseline(base))
    assert ok.status == "passed" and ok.comparison is not None
    assert ok.comparison.bound == pytest.approx(tango_interval(1, 2, 175, 0.90)[0], abs=1e-9)
    assert "non-inferior: the lower bound of the change clears -0.05" in ok.message
    assert "95% CI: Tango score" in ok.message


def test_noninferiority_of_an_increase_uses_the_upper_bound() -> None:
    rng = np.random.default_rng(3)
    base = list(rng.normal(100, 10, 120))
    slower = [b + 1.0 + rng.normal(0, 2) for b in base]
    gate = GateSpec(metric="m", max_increase="5%", test="noninferiority")
    verdict = evaluate_gate("s", "m", gate, _run(slower, higher_is_better=False), _baseline(base))
    comparison = verdict.comparison
    assert comparison is not None and comparison.bound is not None
    deltas = np.array(slower) - np.array(base)
    t_bound = scipy_stats.t.interval(0.90, len(deltas) - 1, deltas.mean(), scipy_stats.sem(deltas))
    assert comparison.bound == pytest.approx(t_bound[1], rel=0.05)  # bootstrap vs t, n=120
    assert verdict.status == "passed" and comparison.bound < 0.05 * np.mean(base)
    assert "95% CI: paired bootstrap, expanded percentile" in verdict.message


def test_min_ratio_is_a_recovery_floor_with_a_paired_bootstrap_bound() -> None:
    rng = np.random.default_rng(7)
    base = list(rng.uniform(0.4, 0.9, 150))
    kept = [b * 0.99 + rng.normal(0, 0.02) for b in base]
    lost = [b * 0.85 + rng.normal(0, 0.02) for b in base]
    gate = GateSpec(metric="m", min_ratio=0.95, test="noninferiority")
    good = evaluate_gate("s", "m", gate, _run(kept), _baseline(base))
    bad = evaluate_gate("s", "m", gate, _run(lost), _baseline(base))
    assert good.status == "passed" and bad.status == "failed"
    assert good.comparison is not None and good.comparison.ratio is not None
    assert good.comparison.ratio == pytest.approx(np.mean(kept) / np.mean(base))
    assert good.comparison.bound is not None and good.comparison.bound >= 0.95
    assert "lower bound of the ratio" in bad.message and "is below 0.95" in bad.message
    # A floor on a lower-is-better metric, or a baseline mean of 0, is a clear error.
    latency = evaluate_gate("s", "m", gate, _run(kept, higher_is_better=False), _baseline(base))
    assert latency.status == "failed" and "use max_increase" in latency.message
    zero = evaluate_gate("s", "m", gate, _run([0.0] * 10), _baseline([0.0] * 10))
    assert "positive baseline mean" in zero.message


def test_a_ratio_bound_among_resamples_without_baseline_says_undefined() -> None:
    # 1 of 8 base examples scores 1: a resample misses it with probability (7/8)^8 = 34%, and
    # its ratio is undefined. The one-sided lower bound falls among those resamples.
    base, cand = [1.0] + [0.0] * 7, [1.0] + [0.0] * 7
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "invalid value" once leaked into the output
        ratio = paired_ratio(cand, base, threshold=0.95, seed=0)
    assert ratio.zero_baseline == pytest.approx((7 / 8) ** 8, abs=0.015)
    assert ratio.lower_bound == -math.inf and ratio.ci_low == -math.inf
    assert ratio.ratio == 1.0 and ratio.ci_high == 1.0
    gate = GateSpec(metric="m", min_ratio=0.95, test="noninferiority")
    verdict = evaluate_gate("s", "m", gate, _run(cand), _baseline(base))
    assert verdict.status == "failed" and "nan" not in verdict.message
    share = f"{ratio.zero_baseline:.1%}"
    assert f"lower bound of the ratio is undefined: the baseline's mean was 0 in {share}" in (
        verdict.message
    )
    assert "95% CI undefined..1)" in verdict.message
    comparison = verdict.comparison
    assert comparison is not None and comparison.bound is None and comparison.ratio_low is None
    assert comparison.ratio_undefined == ratio.zero_baseline
    # run.json stays valid JSON (no -Infinity) and a detection rule still gets its p.
    assert "Infinity" not in verdict.model_dump_json()
    detection = evaluate_gate(
        "s", "m", GateSpec(metric="m", min_ratio=0.95), _run(cand), _baseline(base)
    )
    assert detection.status == "passed" and "nan" not in detection.message


def test_an_underpowered_detection_gate_warns_with_the_examples_it_would_need() -> None:
    # 40 examples, 6 drop and 4 improve: a 5% allowance is below what 40 pairs can see.
    cand, base = _flips(40, 4, 6)
    gate = GateSpec(metric="m", max_drop=0.05)
    verdict = evaluate_gate("s", "m", gate, _run(cand), _baseline(base))
    power = verdict.comparison.power if verdict.comparison else None
    assert verdict.status == "passed" and power is not None and power.underpowered
    z = scipy_stats.norm.ppf(0.95) + scipy_stats.norm.ppf(0.8)
    rate = 10 / 40
    assert power.detectable == pytest.approx(
        z * math.sqrt((max(rate, power.detectable) - power.detectable**2) / 40), rel=1e-6
    )
    needed = math.ceil(z * z * (rate - 0.05**2) / 0.05**2)
    expected = (
        f"underpowered: cannot see a drop of 0.05 with 40 examples; about {needed} examples would"
    )
    assert verdict.warnings == [expected] and expected in verdict.message
    strict = GateSpec(metric="m", max_drop=0.05, underpowered="fail")
    failed = evaluate_gate("s", "m", strict, _run(cand), _baseline(base))
    assert failed.status == "failed" and "(underpowered: fail)" in failed.message
    # More examples than it said, at the same rates, see it: no warning.
    cand, base = _flips(640, 64, 96)
    assert not evaluate_gate("s", "m", gate, _run(cand), _baseline(base)).warnings


@pytest.mark.parametrize(
    ("cand", "base"),
    [
        ([0.0], [1.0]),  # one example
        ([0.2, 0.3], [0.9, 1.0]),  # two examples that both drop by 0.7
        ([0.1, None, None, 0.1, None, None, 0.2, None], [0.9] * 8),  # 5 of 8 scores missing
    ],
)
def test_too_few_pairs_are_never_significant(
    cand: list[float | None], base: list[float | None]
) -> None:
    gate = GateSpec(metric="m", max_drop=0.05)
    verdict = evaluate_gate("s", "m", gate, _run(cand), _baseline(base))
    assert verdict.status == "passed"
    assert "not enough evidence to test" in verdict.message and "at least 5" in verdict.message
    assert verdict.warnings and verdict.warnings[0].startswith("underpowered: not enough evidence")
    signoff = GateSpec(metric="m", max_drop=0.05, test="noninferiority")
    refused = evaluate_gate("s", "m", signoff, _run(cand), _baseline(base))
    assert refused.status == "failed" and "not enough evidence" in refused.message


def test_a_constant_shift_gets_the_sign_test() -> None:
    base = [float(v) for v in range(10, 30)]
    gate = GateSpec(metric="m", max_drop=0.05)
    verdict = evaluate_gate("s", "m", gate, _run([b - 0.5 for b in base]), _baseline(base))
    comparison = verdict.comparison
    assert comparison is not None and comparison.method == "exact sign test"
    expected = scipy_stats.binomtest(20, 20, 0.5, alternative="greater").pvalue
    assert comparison.p_value == pytest.approx(max(expected, 1 / 10_001))
    assert verdict.status == "failed"


def _dropped(base: list[float], drops: int, gains: int = 0) -> list[float]:
    """``base`` with its first ``drops`` ones set to 0 and first ``gains`` zeros set to 1."""
    cand = list(base)
    for i in [i for i, b in enumerate(base) if b == 1.0][:drops]:
        cand[i] = 0.0
    for i in [i for i, b in enumerate(base) if b == 0.0][:gains]:
        cand[i] = 1.0
    return cand


def _job(cand: list[float], base: list[float], name: str) -> GateJob:
    gate = GateSpec(metric="m", max_drop=0.0)
    return GateJob("m", gate, _run(cand, name=name), _baseline(base))


def test_holm_adjusts_a_runs_detection_gates_together() -> None:
    rng = np.random.default_rng(11)
    base = list((rng.random(175) < 0.6).astype(float))
    jobs = [
        _job(_dropped(base, d), base, name) for name, d in (("a", 9), ("b", 12), ("c", 0), ("d", 3))
    ]
    raw = evaluate_gates("s", jobs, multiple_comparisons="none")
    adjusted = evaluate_gates("s", jobs)
    assert all(v.comparison and v.comparison.p_adjusted is None for v in raw)
    # c: no pair changed, so no test could reject: it is left out of the family (Tarone).
    family = (0, 1, 3)
    p = [raw[i].comparison.p_value for i in family if raw[i].comparison]
    expected = multipletests(p, method="holm")[1]
    got = [adjusted[i].comparison.p_adjusted for i in family if adjusted[i].comparison]
    assert got == pytest.approx(list(expected), rel=1e-12)
    assert adjusted[2].comparison is not None and adjusted[2].comparison.p_adjusted is None
    # a (9 drops) and b (12) fail either way; d (3 drops, p = 0.125) never; c is unchanged.
    assert [v.status for v in raw] == ["failed", "failed", "passed", "passed"]
    assert [v.status for v in adjusted] == ["failed", "failed", "passed", "passed"]
    assert "Holm-adjusted" in adjusted[0].message and "over 3 tests" in adjusted[0].message


def test_holm_can_turn_a_raw_failure_into_a_pass() -> None:
    base = [1.0] * 50 + [0.0] * 50
    five = _dropped(base, 5)  # 5 drops, none gained: p = 1/32 alone
    others = [_job(_dropped(base, 2, gains=2), base, f"churn{i}") for i in range(3)]
    alone = evaluate_gates("s", [_job(five, base, "five")])
    together = evaluate_gates("s", [_job(five, base, "five"), *others])
    assert alone[0].status == "failed"
    # Three candidates that changed without a net drop join the family: 4 x 1/32 > 0.05.
    assert together[0].status == "passed" and "Holm-adjusted p >= 0.05" in together[0].message
    comparison = together[0].comparison
    assert comparison is not None and comparison.p_adjusted == pytest.approx(4 / 32)


def test_worst_examples_rank_unscored_examples_last() -> None:
    base = [100.0] * 8
    cand: list[float | None] = [None, 150.0, None, 120.0, 101.0, 140.0, 100.0, 180.0]
    gate = GateSpec(metric="m", max_increase=1.0, strict=True)
    verdict = evaluate_gate("s", "m", gate, _run(cand, higher_is_better=False), _baseline(base))
    assert [w.id for w in verdict.worst] == ["e7", "e1", "e5", "e3", "e4"]


def test_gate_rule_spec_errors_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="strict judges a detection rule"):
        GateSpec(metric="m", max_drop=0.1, strict=True, test="noninferiority")
    with pytest.raises(ValueError, match="min_ratio"):
        GateSpec(metric="m", min_ratio=0)
    write_jsonl(tmp_path / "golden.jsonl", CAPITALS)
    spec = {
        "suite": "s",
        "dataset": "golden.jsonl",
        "candidates": {"a": {"replay": "a.jsonl"}},
        "metrics": ["exact_match"],
        "gates": {"exact_match": {"max_drop": 0.1, "test": "noninferior"}},
    }
    path = write_suite(tmp_path / "s.yaml", spec)
    with pytest.raises(SpecError) as error:
        load_suite(path)
    assert "gates.exact_match.test" in str(error.value) and "s.yaml" in str(error.value)
    spec["gates"] = {"exact_match": {"max_drop": 0.1, "candidates": ["b"]}}
    with pytest.raises(SpecError, match="candidates b are not candidates of this suite"):
        load_suite(write_suite(path, spec))
    spec["gates"] = {"exact_match": {"max_drop": 0.1}}
    spec["multiple_comparisons"] = "bonferroni"
    with pytest.raises(SpecError, match="multiple_comparisons"):
        load_suite(write_suite(path, spec))
