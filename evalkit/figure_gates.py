"""Gates on one figure per run (tokens/s, peak memory): bounds, and changes judged on the two
numbers alone. There is nothing to resample, so no test is possible, and the item says so."""

from __future__ import annotations

from dataclasses import dataclass

from evalkit.format import precise, precise_signed
from evalkit.results import Aggregate, Comparison, GateVerdict
from evalkit.spec import GateSpec

ONE_FIGURE = "one figure per run, so no significance test is possible: judged on the two numbers"


@dataclass(frozen=True)
class Figure:
    """The baseline's figure of the gated column (None: it has none)."""

    label: str
    value: float | None


def bounds(gate: GateSpec, value: float) -> list[str]:
    """``min`` / ``max`` failures of a value (a mean, or a run's one figure)."""
    failures = []
    if gate.min is not None and value < gate.min:
        failures.append(f"{precise(value)} is below min {gate.min:g}")
    if gate.max is not None and value > gate.max:
        failures.append(f"{precise(value)} is above max {gate.max:g}")
    return failures


def figure_verdict(
    gate: GateSpec, aggregate: Aggregate, verdict: GateVerdict, baseline: Figure | str
) -> GateVerdict:
    """A gate on one figure per run; ``baseline`` is the baseline's figure or why it has none."""
    value = aggregate.mean
    assert value is not None
    lines = [f"{gate.metric} {precise(value)} (one figure for the whole run)"]
    failures = bounds(gate, value)
    if gate.is_regression:
        failures += _changes(gate, value, baseline, verdict, lines)
    if failures:
        verdict.status = "failed"
        lines.insert(0, "FAILED: " + "; ".join(failures))
    verdict.message = "\n".join(lines)
    return verdict


def _changes(
    gate: GateSpec, value: float, baseline: Figure | str, verdict: GateVerdict, lines: list[str]
) -> list[str]:
    if isinstance(baseline, str):
        return [baseline]
    base = baseline.value
    if base is None:
        return [f"{baseline.label} has no '{gate.metric}' figure to compare with"]
    failures: list[str] = []
    for direction, threshold in (("drop", gate.max_drop), ("increase", gate.max_increase)):
        if threshold is None:
            continue
        allowed = threshold.allowed(base)
        change = base - value if direction == "drop" else value - base
        verdict.comparisons.append(_comparison(baseline.label, base, value, allowed, direction))
        lines.append(
            f"vs {baseline.label} {precise(base)}: delta {precise_signed(value - base)}, allowed "
            f"{direction} {threshold} (= {precise(allowed)}); {ONE_FIGURE}"
        )
        if change > allowed:
            failures.append(f"{direction} of {precise(change)} exceeds {precise(allowed)}")
    if gate.min_ratio is not None:
        failures += _ratio(gate.min_ratio, value, baseline.label, base, verdict, lines)
    return failures


def _ratio(
    min_ratio: float, value: float, label: str, base: float, verdict: GateVerdict, lines: list[str]
) -> list[str]:
    if base <= 0:
        return [f"min_ratio needs a positive baseline figure; {label} has {precise(base)}"]
    ratio = value / base
    comparison = _comparison(label, base, value, (1 - min_ratio) * base, "ratio")
    comparison.ratio = ratio
    verdict.comparisons.append(comparison)
    lines.append(
        f"vs {label} {precise(base)}: ratio {precise(ratio)}, min_ratio {min_ratio:g}; {ONE_FIGURE}"
    )
    return [f"ratio {precise(ratio)} is below {min_ratio:g}"] if ratio < min_ratio else []


def _comparison(label: str, base: float, value: float, allowed: float, rule: str) -> Comparison:
    return Comparison(
        baseline=label,
        baseline_mean=base,
        candidate_mean=value,
        n_paired=1,
        mean_delta=value - base,
        allowed=allowed,
        rule="min_ratio" if rule == "ratio" else f"max_{rule}",
        method="two figures, no test",
    )
