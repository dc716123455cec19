"""The suite x candidate x gate verdict table printed by pytest and the CLI."""

from __future__ import annotations

from collections.abc import Iterable

from evalkit.results import GateVerdict

HEADER = ("suite", "candidate", "gate", "verdict", "mean", "delta vs baseline (95% CI)", "p")


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def verdict_row(verdict: GateVerdict) -> tuple[str, ...]:
    comparison = verdict.comparison
    delta = p = ""
    if comparison is not None and comparison.mean_delta is not None:
        interval = (
            f" [{comparison.ci_low:+.3f}, {comparison.ci_high:+.3f}]"
            if comparison.ci_low is not None and comparison.ci_high is not None
            else ""  # run-level figures: one number, no interval
        )
        delta = f"{comparison.mean_delta:+.3f}{interval} vs {comparison.baseline}"
        p = f"{comparison.p_value:.3g}" if comparison.p_value is not None else ""
    elif verdict.rules.get("max_drop") or verdict.rules.get("max_increase"):
        delta = "no baseline" if verdict.status != "passed" else ""
    return (
        verdict.suite,
        verdict.candidate,
        verdict.gate,
        verdict.status.upper(),
        _num(verdict.mean),
        delta,
        p,
    )


def format_table(verdicts: Iterable[GateVerdict]) -> str:
    rows = [HEADER, *(verdict_row(v) for v in verdicts)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)
