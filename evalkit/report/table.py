"""The suite x candidate x gate verdict table printed by pytest and the CLI."""

from __future__ import annotations

from collections.abc import Iterable

from evalkit.format import fixed, fixed_signed, p_significant
from evalkit.results import GateVerdict

HEADER = ("suite", "candidate", "gate", "verdict", "mean", "delta vs baseline (95% CI)", "p")


def verdict_row(verdict: GateVerdict) -> tuple[str, ...]:
    comparison = verdict.comparison
    delta = p = ""
    if comparison is not None and comparison.mean_delta is not None:
        interval = (
            f" [{fixed_signed(comparison.ci_low)}, {fixed_signed(comparison.ci_high)}]"
            if comparison.ci_low is not None and comparison.ci_high is not None
            else ""  # run-level figures: one number, no interval
        )
        delta = f"{fixed_signed(comparison.mean_delta)}{interval} vs {comparison.baseline}"
        p = p_significant(comparison.p_value) if comparison.p_value is not None else ""
        if comparison.p_adjusted is not None:
            p += f" (Holm {p_significant(comparison.p_adjusted)})"
    elif verdict.rules.get("max_drop") or verdict.rules.get("max_increase"):
        delta = "no baseline" if verdict.status != "passed" else ""
    return (
        verdict.suite,
        verdict.candidate,
        verdict.gate,
        verdict.status.upper() + (" (underpowered)" if _underpowered(verdict) else ""),
        fixed(verdict.mean),
        delta,
        p,
    )


def _underpowered(verdict: GateVerdict) -> bool:
    return any(c.power is not None and c.power.underpowered for c in verdict.comparisons)


def format_table(verdicts: Iterable[GateVerdict]) -> str:
    rows = [HEADER, *(verdict_row(v) for v in verdicts)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)
