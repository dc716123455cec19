"""The change rules of a gate (``max_drop``, ``max_increase``, ``min_ratio``), judged on the
examples a candidate and its baseline both scored.

Each rule becomes one ``Comparison`` in two steps, so that a run can adjust its detection
p-values together (Holm-Bonferroni) before any verdict is written:

1. ``assess``: the statistics (``evalkit.stats``: exact McNemar for 0/1 scores, the paired
   bootstrap otherwise; ``evalkit.power`` for what a detection rule could see);
2. ``adjust``: Holm-adjusted p-values across the run's detection rules;
3. ``decide``: pass or fail, and the lines the pytest item, run.json and the report show.

``GateTest`` names what a rule asks: detection fails on evidence of harm beyond the allowance;
non-inferiority passes only on evidence that the change is within it (the one-sided
``1 - alpha`` bound of the paired change must clear the allowance).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from evalkit.format import p_significant, precise, precise_signed
from evalkit.power import Spread, detectable_change, examples_needed
from evalkit.results import Comparison, Power
from evalkit.spec import GateSpec, GateTest, Threshold
from evalkit.stats import (
    N_BOOTSTRAP,
    Method,
    PairedComparison,
    holm,
    is_binary,
    paired_comparison,
    paired_ratio,
)

RuleName = Literal["max_drop", "max_increase", "min_ratio"]


@dataclass(frozen=True)
class Pairs:
    """Scores of the examples both sides scored, in the baseline's order."""

    label: str
    candidate: np.ndarray
    baseline: np.ndarray
    n_unpaired: int = 0

    @property
    def binary(self) -> bool:
        return is_binary(self.candidate, self.baseline)

    @property
    def n(self) -> int:
        return len(self.candidate)


def ratio_problem(gate: GateSpec, pairs: Pairs, higher_is_better: bool) -> str | None:
    """Why ``min_ratio`` cannot be judged here (it is a floor on a quality score)."""
    if gate.min_ratio is None:
        return None
    if not higher_is_better:
        return (
            f"min_ratio bounds a score where higher is better; '{gate.metric}' is lower-is-better:"
            " use max_increase (e.g. '5%') instead"
        )
    base_mean = float(pairs.baseline.mean())
    if base_mean <= 0:
        return f"min_ratio needs a positive baseline mean; {pairs.label} has {base_mean:.4g}"
    return None


def rules_of(gate: GateSpec) -> list[RuleName]:
    names: list[RuleName] = ["max_drop", "max_increase", "min_ratio"]
    return [name for name in names if getattr(gate, name) is not None]


def judge(
    gate: GateSpec, pairs: Pairs, *, seed: int = 0, n_boot: int = N_BOOTSTRAP
) -> list[Comparison]:
    """Every change rule of ``gate`` on ``pairs``, decided at the gate's own alpha (no family):
    the whole route a gate takes, for callers (and simulations) that hold plain arrays."""
    comparisons = [assess(gate, rule, pairs, seed=seed, n_boot=n_boot) for rule in rules_of(gate)]
    for comparison in comparisons:
        decide(gate, comparison)
    return comparisons


def assess(
    gate: GateSpec, rule: RuleName, pairs: Pairs, *, seed: int = 0, n_boot: int = N_BOOTSTRAP
) -> Comparison:
    """The statistics of one rule; ``decide`` turns them into a verdict."""
    base_mean = float(pairs.baseline.mean())
    drop = rule != "max_increase"
    if rule == "min_ratio":
        assert gate.min_ratio is not None
        allowed = (1.0 - gate.min_ratio) * base_mean  # the drop that ratio allows
    else:
        threshold = getattr(gate, rule)
        assert isinstance(threshold, Threshold)
        allowed = threshold.allowed(base_mean)
    test = paired_comparison(
        pairs.candidate - pairs.baseline,
        binary=pairs.binary,
        alternative="less" if drop else "greater",
        margin=allowed,
        seed=seed,
        n_boot=n_boot,
        bound_alpha=gate.alpha,
    )
    detection = gate.test is GateTest.DETECTION
    comparison = Comparison(
        baseline=pairs.label,
        baseline_mean=base_mean,
        candidate_mean=float(pairs.candidate.mean()),
        n_paired=test.n,
        n_unpaired=pairs.n_unpaired,
        mean_delta=test.mean_delta,
        ci_low=test.ci_low,
        ci_high=test.ci_high,
        p_value=test.p_value if detection and test.untestable is None else None,
        allowed=allowed,
        rule=rule,
        test=gate.test.value,
        method=test.method.value,
        ci_method=test.method.ci_name,
        bound=None if detection else (test.lower_bound if drop else test.upper_bound),
        n_up=test.n_up if test.method is Method.EXACT else None,
        n_down=test.n_down if test.method is Method.EXACT else None,
        untestable=test.untestable,
        unchanged=test.unchanged,
        power=_power(test, allowed, gate.alpha) if detection else None,
    )
    if rule == "min_ratio":
        _assess_ratio(gate, pairs, comparison, seed=seed, n_boot=n_boot)
    return comparison


def _assess_ratio(
    gate: GateSpec, pairs: Pairs, comparison: Comparison, *, seed: int, n_boot: int
) -> None:
    """Candidate mean / baseline mean by the paired bootstrap (the same resamples as the
    deltas'); a detection ratio rule's p is the percentile bootstrap's."""
    assert gate.min_ratio is not None
    ratio = paired_ratio(
        pairs.candidate,
        pairs.baseline,
        threshold=gate.min_ratio,
        seed=seed,
        n_boot=n_boot,
        bound_alpha=gate.alpha,
    )
    # A bound among resamples with no baseline mean is -inf (stats): stored as None, said so.
    comparison.ratio, comparison.ratio_low, comparison.ratio_high = (
        ratio.ratio,
        _finite(ratio.ci_low),
        _finite(ratio.ci_high),
    )
    comparison.ratio_undefined = ratio.zero_baseline or None
    comparison.method = f"{Method.BOOTSTRAP.value} of the ratio of means"
    comparison.n_up = comparison.n_down = None  # not a test on the discordant pairs
    comparison.ci_method = "paired bootstrap, expanded percentile"
    if gate.test is GateTest.DETECTION:
        comparison.p_value = ratio.p_below if comparison.untestable is None else None
    else:
        comparison.bound = _finite(ratio.lower_bound)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _power(test: PairedComparison, allowed: float, alpha: float) -> Power:
    if test.untestable is not None:
        return Power(n=test.n, basis=test.untestable, underpowered=True)
    binary = test.method is Method.EXACT
    if test.sd == 0.0 and not binary:
        what = "no pair changed" if test.mean_delta == 0.0 else "every pair changed alike"
        return Power(n=test.n, basis=f"{what}: no spread to judge power by")
    spread = Spread(test.sd, test.discordant_rate if binary else None)
    detectable = detectable_change(spread, test.n, alpha)
    return Power(
        detectable=detectable,
        fails_at=allowed + detectable,
        n=test.n,
        n_needed=examples_needed(spread, allowed, alpha) if allowed > 0 else None,
        basis=spread.describe(),
        sd=None if binary else test.sd,
        discordant_rate=test.discordant_rate if binary else None,
        underpowered=allowed > 0 and detectable > allowed,
    )


# -- many rules at once -----------------------------------------------------------------------


def adjust(
    assessed: Sequence[tuple[GateSpec, Comparison]], method: Literal["holm", "none"]
) -> None:
    """Holm-Bonferroni across the detection rules that have a p-value (strict rules judge the
    point estimate, untestable ones nothing): each one's ``p_adjusted`` is then compared with
    its gate's alpha, and the chance that any of them fails on identical candidates stays at
    most alpha."""
    family = [c for gate, c in assessed if not gate.strict and _in_family(c)]
    if method == "none" or len(family) < 2:  # one test: its adjusted p is its p
        return
    for comparison, adjusted in zip(family, holm([c.p_value or 1.0 for c in family]), strict=True):
        comparison.p_adjusted = adjusted
        comparison.n_tests = len(family)


def _in_family(comparison: Comparison) -> bool:
    """Detection rules with a p-value, except those no test could reject whatever the data's
    signs: no pair changed at all (Tarone's refinement for discrete tests). A base compared
    with its own accepted baseline is usually that, and would only dilute the others."""
    return (
        comparison.test == GateTest.DETECTION.value
        and comparison.p_value is not None
        and comparison.untestable is None
        and not comparison.unchanged
    )


# -- verdicts ---------------------------------------------------------------------------------


@dataclass
class Decision:
    """What one rule adds to a verdict."""

    lines: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def decide(gate: GateSpec, comparison: Comparison) -> Decision:
    """Pass or fail one assessed rule, and say why in words (``comparison.outcome``)."""
    if comparison.test == GateTest.NONINFERIORITY.value:
        decision = _noninferiority(gate, comparison)
    else:
        decision = _detection(gate, comparison)
    decision.lines.append("  " + _method_line(gate, comparison))
    if comparison.power is not None and comparison.untestable is None:
        decision.lines.append("  " + _power_line(comparison))
    comparison.passed = not decision.failures
    return decision


def _a(noun: str) -> str:
    return f"an {noun}" if noun[0] in "aeiou" else f"a {noun}"


def _direction(comparison: Comparison) -> str:
    return "increase" if comparison.rule == "max_increase" else "drop"


def _threshold_text(gate: GateSpec, comparison: Comparison) -> str:
    if comparison.rule == "min_ratio":
        return f"min_ratio {gate.min_ratio:g} (= drop {precise(comparison.allowed)})"
    threshold = getattr(gate, comparison.rule)
    return f"allowed {_direction(comparison)} {threshold} (= {precise(comparison.allowed)})"


def _head(comparison: Comparison) -> str:
    """'vs <baseline> <mean>: delta d (95% CI l..h)' and, for ratio rules, the ratio."""
    assert comparison.mean_delta is not None
    text = (
        f"vs {comparison.baseline} {precise(comparison.baseline_mean)}: delta "
        f"{precise_signed(comparison.mean_delta)} (95% CI {precise_signed(comparison.ci_low or 0)}"
        f"..{precise_signed(comparison.ci_high or 0)})"
    )
    if comparison.ratio is not None:
        text += (
            f", ratio {precise(comparison.ratio)} (95% CI {_ratio_text(comparison.ratio_low)}.."
            f"{_ratio_text(comparison.ratio_high)})"
        )
    return text


def _ratio_text(value: float | None) -> str:
    """A ratio bound: None where it falls among resamples with no baseline mean."""
    return "undefined" if value is None else precise(value)


def _undefined_ratio(comparison: Comparison) -> str:
    share = comparison.ratio_undefined or 0.0
    return (
        f"undefined: the baseline's mean was 0 in {share:.1%} of the resamples, too few "
        "examples score above 0 to bound a ratio (more examples, or max_drop, would)"
    )


def _tail(comparison: Comparison) -> str:
    unpaired = comparison.n_unpaired
    return f", n={comparison.n_paired}" + (
        f", {unpaired} unpaired examples ignored" if unpaired else ""
    )


def _detection(gate: GateSpec, comparison: Comparison) -> Decision:
    assert comparison.mean_delta is not None and comparison.allowed is not None
    decision = Decision()
    ratio_rule = comparison.rule == "min_ratio"
    if ratio_rule:
        assert comparison.ratio is not None and gate.min_ratio is not None
        exceeds = comparison.ratio < gate.min_ratio
        change_text = f"ratio {precise(comparison.ratio)} is below {gate.min_ratio:g}"
    else:
        change = (
            -comparison.mean_delta if _direction(comparison) == "drop" else comparison.mean_delta
        )
        exceeds = change > comparison.allowed
        change_text = (
            f"{_direction(comparison)} of {precise(change)} exceeds {precise(comparison.allowed)}"
        )
    p, adjusted = comparison.p_value, comparison.p_adjusted
    summary = _head(comparison) + (
        ", no test" if p is None else f", p={p_significant(p)} one-sided"
    )
    if adjusted is not None:
        summary += f" (Holm-adjusted {p_significant(adjusted)} over {comparison.n_tests} tests)"
    summary += f", {_threshold_text(gate, comparison)}{_tail(comparison)}"
    p_used = adjusted if adjusted is not None else p
    significant = p_used is not None and p_used < gate.alpha
    if exceeds and gate.strict:
        comparison.outcome = "strict"
        decision.failures.append(f"{change_text} (strict gate)")
    elif exceeds and significant:
        comparison.outcome = "significant"
        holm_p = (
            f" by its Holm-adjusted p={p_significant(adjusted)}" if adjusted is not None else ""
        )
        decision.failures.append(f"{change_text} (significant at alpha={gate.alpha:g}){holm_p}")
    elif exceeds and comparison.untestable is not None:
        comparison.outcome = "not enough evidence to test"
        summary += (
            f" -> exceeds the allowance, but not enough evidence to test: {comparison.untestable}"
        )
    elif exceeds:
        comparison.outcome = "within noise"
        which = "Holm-adjusted p" if adjusted is not None else "p"
        summary += f" -> exceeds the allowance but is within noise ({which} >= {gate.alpha:g})"
    else:
        comparison.outcome = "within the allowance"
    decision.lines.append(summary)
    _underpowered(gate, comparison, decision)
    return decision


def _underpowered(gate: GateSpec, comparison: Comparison, decision: Decision) -> None:
    power = comparison.power
    if power is None or not power.underpowered:
        return
    if power.detectable is None:
        text = f"underpowered: not enough evidence to test ({power.basis})"
    else:
        text = (
            f"underpowered: cannot see {_a(_direction(comparison))} of "
            f"{precise(comparison.allowed)} with {power.n} examples; about "
            f"{power.n_needed} examples would"
        )
    decision.warnings.append(text)
    if gate.underpowered == "fail":
        decision.failures.append(f"{text} (underpowered: fail)")


def _noninferiority(gate: GateSpec, comparison: Comparison) -> Decision:
    assert comparison.allowed is not None
    decision = Decision()
    level = f"one-sided {100 * (1 - gate.alpha):g}%"
    drop = _direction(comparison) == "drop"
    side = "lower" if drop else "upper"
    bound = comparison.bound
    assert bound is not None or comparison.rule == "min_ratio"  # an undefined ratio bound
    if comparison.rule == "min_ratio":
        assert gate.min_ratio is not None
        clears = bound is not None and bound >= gate.min_ratio
        what, limit = f"{side} bound of the ratio", f"{gate.min_ratio:g}"
    else:
        assert bound is not None
        clears = bound > -comparison.allowed if drop else bound < comparison.allowed
        what = f"{side} bound of the change"
        limit = precise_signed(-comparison.allowed if drop else comparison.allowed)
    summary = (
        f"{_head(comparison)}, {level} {side} bound {_ratio_text(bound)}, "
        f"{_threshold_text(gate, comparison)}{_tail(comparison)}"
    )
    too_few = comparison.untestable is not None
    if too_few:
        comparison.outcome = "not enough evidence to test"
        decision.failures.append(
            f"non-inferiority not shown: not enough evidence to test ({comparison.untestable})"
        )
    elif clears:
        comparison.outcome = "non-inferior"
        summary += f" -> non-inferior: the {what} clears {limit}"
    else:
        comparison.outcome = "non-inferiority not shown"
        beyond = "below" if drop or comparison.rule == "min_ratio" else "above"
        decision.failures.append(
            f"non-inferiority not shown: the {level} {what} is {_undefined_ratio(comparison)}"
            if bound is None
            else f"non-inferiority not shown: the {level} {what}, {precise(bound)}, is "
            f"{beyond} {limit}"
        )
    if comparison.method == Method.SIGN.value:
        summary += " (every pair changed by the same amount: the bound is that change)"
    decision.lines.append(summary)
    return decision


def _method_line(gate: GateSpec, comparison: Comparison) -> str:
    test = f"test: {comparison.test}, {comparison.method}"
    if comparison.n_up is not None and comparison.n_down is not None:
        pairs = comparison.n_up + comparison.n_down
        test += (
            f" on {pairs} discordant pairs ({comparison.n_down} went 1->0, "
            f"{comparison.n_up} went 0->1)"
        )
    elif comparison.method.startswith(Method.BOOTSTRAP.value):
        test += f" ({N_BOOTSTRAP:,} resamples)"
    return f"{test}; 95% CI: {comparison.ci_method}; alpha={gate.alpha:g}"


def _power_line(comparison: Comparison) -> str:
    power = comparison.power
    assert power is not None
    direction = _direction(comparison)
    if power.detectable is None or power.fails_at is None:
        return f"power: unknown ({power.basis})"
    text = (
        f"power: 80% to tell {_a(direction)} of {precise(power.detectable)} from none with "
        f"{power.n} examples ({power.basis})"
    )
    if comparison.allowed:  # beyond a non-zero allowance, the rule needs that much more
        text += f"; this rule fails 80% of the time at {_a(direction)} of {precise(power.fails_at)}"
    return text
