"""How the report states a gate's verdict and the test behind it, and squares it with the "what
changed" colours.

The colours answer "did anything change?" (two-sided, no allowance); a gate answers "is the
change beyond its allowance?" (detection) or "is it shown to be within it?" (non-inferiority).
Both can be right at once, e.g. a significant change that is within the allowance. Wherever
they read differently, the report says why in one line, so a reviewer never sees two answers
to one question.
"""

from __future__ import annotations

from evalkit.format import p_value, short, short_signed
from evalkit.results import Comparison, GateVerdict


def test_text(comparison: Comparison) -> str:
    """'detection · exact McNemar on 12 discordant pairs' and the like."""
    method = comparison.method or "two figures, no test"
    if comparison.n_up is not None and comparison.n_down is not None:
        method += f" on {comparison.n_up + comparison.n_down} discordant pairs"
    return f"{comparison.test} · {method}" if comparison.test else method


def numbers_text(comparison: Comparison) -> str:
    """What the rule judged: its bound, ratio or p (Holm-adjusted beside the raw one)."""
    parts = []
    if comparison.ratio is not None:
        parts.append(f"ratio {short(comparison.ratio)}")
    if comparison.bound is not None:
        bound = (
            short(comparison.bound)
            if comparison.ratio is not None
            else short_signed(comparison.bound)
        )
        parts.append(f"one-sided bound {bound}")
    elif comparison.ratio_undefined and comparison.test == "noninferiority":
        parts.append("one-sided bound undefined (baseline mean 0 in some resamples)")
    if comparison.p_value is not None:
        text = f"p={p_value(comparison.p_value)} (one-sided)"
        if comparison.p_adjusted is not None:
            text += f", Holm {p_value(comparison.p_adjusted)} over {comparison.n_tests}"
        parts.append(text)
    return ", ".join(parts)


def reconcile(verdict: GateVerdict, change: str) -> str | None:
    """Why a gate reads differently from the change's colour (``regression``, ``noise``,
    ``improvement``), or None when they agree."""
    outcomes = {c.outcome for c in verdict.comparisons}
    if change == "regression" and verdict.passed:
        if "non-inferior" in outcomes:
            return "significant change, within the allowance: shown non-inferior"
        if "within the allowance" in outcomes:
            return "significant change, within the allowance"
        if "within noise" in outcomes:
            return "significant change, but not shown to exceed the allowance"
        if "not enough evidence to test" in outcomes:
            return "significant change, but the gate had not enough evidence to test"
        return "significant change, but this gate bounds something else (its rules pass)"
    if change != "regression" and not verdict.passed:
        if "non-inferiority not shown" in outcomes or "not enough evidence to test" in outcomes:
            return "no significant change, but the data cannot show it is within the allowance"
        if any(c.power is not None and c.power.underpowered for c in verdict.comparisons):
            return "no significant change, but the gate cannot see a change of its allowance"
        if not verdict.comparisons:
            return "the gate fails on a bound of the mean, not on the change"
    return None


def verdict_line(verdict: GateVerdict, change: str | None) -> str:
    """One line per gate for the report: status, test, numbers, and why it reads differently
    from the change's colour, if it does; warnings (underpowered) follow."""
    parts = [f"{verdict.gate}: {verdict.status.upper()}"]
    for comparison in verdict.comparisons:
        rule = f"{comparison.rule} — {test_text(comparison)}" if comparison.rule else ""
        numbers = numbers_text(comparison)
        outcome = f" → {comparison.outcome}" if comparison.outcome else ""
        parts.append(f"{rule}{', ' + numbers if numbers else ''}{outcome}".strip())
    if not verdict.comparisons and not verdict.passed:
        parts.append(verdict.message.splitlines()[0].removeprefix("FAILED: "))
    why = reconcile(verdict, change) if change else None
    if why:
        parts.append(f"({why})")
    return " · ".join(p for p in parts if p) + "".join(f" · {w}" for w in verdict.warnings)
