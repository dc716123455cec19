"""The Markdown summary for CI: verdicts per suite, failed gates, biggest regressions.

Written to ``<report dir>/summary.md`` always, and appended to ``$GITHUB_STEP_SUMMARY`` when
GitHub Actions sets it, so a pull request's checks page answers "what got worse" without
downloading the HTML report. Every string from a run is escaped for Markdown tables and HTML.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path

from evalkit._files import write_atomic
from evalkit.format import counted, p_equals, short, short_signed
from evalkit.format import p_value as p_text
from evalkit.report.view import ALPHA, MetricRow, SuiteView, overall_status
from evalkit.results import GateVerdict

N_REGRESSIONS = 10
N_WORST = 3
MAX_CELL = 80
ICONS = {
    "passed": "✅ PASSED",
    "failed": "❌ FAILED",
    "no gates": "➖ NO GATES",
    "error": "⚠️ ERROR",
}


def cell(text: object, limit: int = MAX_CELL) -> str:
    """One Markdown table cell: one line, no pipe, no raw HTML, cut at ``limit`` characters."""
    value = " ".join(str(text).split())
    if len(value) > limit:
        value = value[: limit - 1] + "…"
    return html.escape(value, quote=False).replace("|", "\\|").replace("`", "\\`")


def _suite_line(view: SuiteView) -> str:
    gates = view.run.gates
    passed = sum(v.passed for v in gates)
    worst = view.regressions[:1]
    biggest = _regression_text(worst[0]) if worst else "none significant"
    counts = f"{passed}/{len(gates)}" if gates else "—"
    return f"| {cell(view.name)} | {ICONS[view.gate_status]} | {counts} | {biggest} |"


def _regression_text(row: MetricRow) -> str:
    change = row.change
    assert change is not None
    relative = f" ({row.relative * 100:+.1f}%)" if row.relative is not None else ""
    return (
        f"{cell(row.candidate)} {cell(row.metric.name)} "
        f"{short_signed(change.mean_delta)}{relative}, p{p_equals(change.p_value)}"
    )


def _failed_gate_rows(verdict: GateVerdict) -> str:
    comparison = verdict.comparison
    delta = p = ""
    if comparison is not None and comparison.mean_delta is not None:
        delta = (
            f"{short_signed(comparison.mean_delta)} [{short_signed(comparison.ci_low)}, "
            f"{short_signed(comparison.ci_high)}] vs {cell(comparison.baseline, 40)}"
        )
        p = p_text(comparison.p_value, missing="")
    reason = verdict.message.splitlines()[0].removeprefix("FAILED: ") if verdict.message else ""
    return (
        f"| {cell(verdict.candidate)} | {cell(verdict.gate)} | {verdict.status} | "
        f"{short(verdict.mean)} | {delta} | {p} | {cell(reason, 120)} |"
    )


def _worst_examples(verdict: GateVerdict) -> list[str]:
    lines = []
    for item in verdict.worst[:N_WORST]:
        base = (
            f" · baseline {short(item.baseline_score)}: {cell(item.baseline_output or '', 60)}"
            if item.baseline_output is not None
            else ""
        )
        lines.append(
            f"  - `{cell(item.id, 40)}` score {short(item.score)} · reference "
            f"{cell(item.reference, 40)} · output {cell(item.output or '', 60)}{base}"
        )
    return lines


def _failed_sections(views: Sequence[SuiteView]) -> list[str]:
    """Per suite with failures: its failed gates, then each one's worst examples."""
    lines: list[str] = []
    for view in views:
        if not view.failed_gates:
            continue
        lines += [
            "",
            f"### {cell(view.name)}: failed gates",
            "",
            "| candidate | gate | status | mean | Δ vs baseline [95% CI] | p (one-sided) | why |",
            "|---|---|---|---|---|---|---|",
            *(_failed_gate_rows(v) for v in view.failed_gates),
        ]
        for verdict in view.failed_gates:
            worst = _worst_examples(verdict)
            if worst:
                lines += [
                    "",
                    f"Worst examples of `{cell(verdict.candidate)}::{cell(verdict.gate)}`:",
                ]
                lines += worst
    return lines


def _warning_section(views: Sequence[SuiteView]) -> list[str]:
    """Gates that passed but said something a reviewer must see (e.g. underpowered)."""
    warned = [v for view in views for v in view.run.gates if v.passed and v.warnings]
    if not warned:
        return []
    return ["", "### Passed, with a warning", ""] + [
        f"- `{cell(v.suite)}::{cell(v.candidate)}::{cell(v.gate)}`: {cell(w, 200)}"
        for v in warned
        for w in v.warnings
    ]


def render_summary(views: Sequence[SuiteView], report: str | None = None) -> str:
    status = overall_status(views)
    failed = sum(v.gate_status == "failed" for v in views)
    lines = [
        f"## evalkit: {ICONS[status]}"
        + (
            f" ({failed} of {counted(len(views), 'suite')} failed)"
            if failed
            else f" ({counted(len(views), 'suite')})"
        ),
        "",
        "| suite | verdict | gates passed | biggest significant regression |",
        "|---|---|---|---|",
        *(_suite_line(v) for v in views),
    ]
    lines += _failed_sections(views) + _warning_section(views)
    regressions = sorted(
        ((v, r) for v in views for r in v.regressions), key=lambda vr: vr[1].severity, reverse=True
    )
    tests = "exact McNemar for 0/1 scores, paired bootstrap otherwise"
    lines += ["", f"### Biggest regressions (two-sided: {tests}; α={ALPHA})", ""]
    if regressions:
        lines += [
            "| suite | candidate | metric | baseline | candidate | Δ [95% CI] | Δ % | p |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for view, row in regressions[:N_REGRESSIONS]:
            change = row.change
            assert change is not None
            relative = f"{row.relative * 100:+.1f}%" if row.relative is not None else ""
            lines.append(
                f"| {cell(view.name)} | {cell(row.candidate)} | {cell(row.metric.name)} | "
                f"{short(row.baseline_mean)} | {short(row.aggregate.mean)} | "
                f"{short_signed(change.mean_delta)} [{short_signed(change.ci_low)}, "
                f"{short_signed(change.ci_high)}] | {relative} | {p_text(change.p_value)} |"
            )
        if len(regressions) > N_REGRESSIONS:
            lines.append(f"\n… and {len(regressions) - N_REGRESSIONS} more in the report.")
    else:
        lines.append("No metric got significantly worse than its baseline candidate.")
    if report:
        lines += ["", f"Full report: `{cell(report, 200)}`"]
    return "\n".join(lines) + "\n"


def write_summary(views: Sequence[SuiteView], report_dir: Path, report: str | None) -> Path:
    """``<dir>/summary.md``; also appended to ``$GITHUB_STEP_SUMMARY`` when that is set."""
    text = render_summary(views, report)
    path = report_dir / "summary.md"
    write_atomic(path, text)
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary:
        with open(step_summary, "a", encoding="utf-8") as handle:
            handle.write(text)
    return path
