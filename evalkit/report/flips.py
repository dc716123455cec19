"""The report's flips table: per 0/1 metric, the examples a candidate changed against the
baseline candidate, regressions (pass -> fail) first, with both outputs (the page marks their
word diff with the same routine as the examples view)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from evalkit.repeats import parse_derived
from evalkit.results import ExampleResult, RunResult

MAX_ROWS = 300
"""Rows per suite; the counts above the table are always complete (run.json has every id)."""


@dataclass(frozen=True)
class FlipRow:
    candidate: str
    metric: str
    kind: Literal["regression", "fix"]
    id: str
    reference: str
    baseline_output: str | None
    output: str | None


@dataclass(frozen=True)
class FlipCount:
    candidate: str
    metric: str
    n_paired: int
    pass_to_fail: int
    fail_to_pass: int


def flip_counts(run: RunResult) -> list[FlipCount]:
    return [
        FlipCount(name, metric, f.n_paired, f.n_pass_to_fail, f.n_fail_to_pass)
        for name, cand in run.candidates.items()
        for metric, f in cand.flips.items()
    ]


def flip_rows(run: RunResult, limit: int = MAX_ROWS) -> list[FlipRow]:
    """Regressions of every candidate and metric first, then fixes; within each, candidates and
    metrics in run order and examples in golden order."""
    if run.compare_to is None or run.compare_to not in run.candidates:
        return []
    base = {e.id: e for e in run.candidates[run.compare_to].examples}
    rows: list[FlipRow] = []
    for kind in ("regression", "fix"):
        for name, cand in run.candidates.items():
            mine = {e.id: e for e in cand.examples}
            for metric, f in cand.flips.items():
                ids = f.pass_to_fail if kind == "regression" else f.fail_to_pass
                for example_id in ids:
                    example, other = mine.get(example_id), base.get(example_id)
                    rows.append(
                        FlipRow(
                            candidate=name,
                            metric=metric,
                            kind=kind,  # type: ignore[arg-type]
                            id=example_id,
                            reference=other.references[0] if other and other.references else "",
                            baseline_output=other.output if other else None,
                            output=_shown_output(example, metric, kind),
                        )
                    )
    return rows[:limit]


def _shown_output(example: ExampleResult | None, column: str, kind: str) -> str | None:
    """The output that shows the flip: for a column over samples (``X@pass^5``), a sample that
    failed (a regression) or passed (a fix), not merely the first sample."""
    if example is None:
        return None
    derived = parse_derived(column)
    if derived is None or not example.samples:
        return example.output
    for sample in example.samples:
        value = sample.scores.get(derived.base)
        if value is not None and (value < 0.5) == (kind == "regression"):
            return sample.output
    return example.output
