"""What a report shows, computed from a RunResult alone: verdicts, per-metric changes vs the
baseline candidate with their statistics, and the rankings the HTML and Markdown renderings share.

The report never runs a model: everything here is arithmetic on a saved run. Metrics are found
generically (whatever columns the candidates' aggregates hold), so new metrics appear without any
change here; columns named ``latency.*``, ``memory.*`` or ``cost.*`` are resource figures.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from evalkit.report.verdicts import verdict_line
from evalkit.results import Aggregate, CandidateRun, GateVerdict, RunResult
from evalkit.stats import PairedComparison, is_binary, paired_comparisons

RESOURCE_PREFIXES = ("latency.", "memory.", "cost.")
ALPHA = 0.05
"""Significance level of the report's colours (two-sided paired bootstrap); gates keep their own."""

Change = Literal["regression", "improvement", "noise", "untested", "baseline", "n/a"]


@dataclass(frozen=True)
class MetricInfo:
    name: str
    higher_is_better: bool
    signature: str
    version: str
    gated: bool

    @property
    def resource(self) -> bool:
        return self.name.startswith(RESOURCE_PREFIXES)


@dataclass(frozen=True)
class MetricRow:
    """One candidate x metric cell of the table, with its change vs the baseline candidate."""

    candidate: str
    metric: MetricInfo
    aggregate: Aggregate
    change: PairedComparison | None
    status: Change
    baseline_mean: float | None
    gates: tuple[GateVerdict, ...] = ()

    @property
    def relative(self) -> float | None:
        """The change as a fraction of the baseline's paired mean (to rank across scales)."""
        if self.change is None or self.baseline_mean is None or self.baseline_mean == 0:
            return None
        return self.change.mean_delta / abs(self.baseline_mean)

    @property
    def gate_failed(self) -> bool:
        return any(not g.passed for g in self.gates)

    @property
    def gate_lines(self) -> list[str]:
        """Each gate on this cell: verdict, test, numbers, and why it reads differently from
        the change's colour where it does."""
        return [verdict_line(g, self.status) for g in self.gates]

    @property
    def severity(self) -> float:
        """How much worse, comparable across metrics: relative change where defined."""
        if self.change is None:
            return 0.0
        size = self.relative if self.relative is not None else self.change.mean_delta
        return -size if self.metric.higher_is_better else size


@dataclass
class SuiteView:
    run: RunResult
    slug: str
    baseline: str | None
    candidates: list[str]
    metrics: list[MetricInfo]
    rows: list[MetricRow]
    gate_status: Literal["passed", "failed", "no gates"]
    failed_gates: list[GateVerdict] = field(default_factory=list)
    seed: int = 0

    @property
    def name(self) -> str:
        return self.run.suite

    def row(self, candidate: str, metric: str) -> MetricRow | None:
        return next(
            (r for r in self.rows if r.candidate == candidate and r.metric.name == metric), None
        )

    @property
    def regressions(self) -> list[MetricRow]:
        """Significant regressions: those a gate failed on first, then by relative size."""
        found = [r for r in self.rows if r.status == "regression"]
        return sorted(found, key=lambda r: (not r.gate_failed, -r.severity))

    @property
    def quality_metrics(self) -> list[MetricInfo]:
        return [m for m in self.metrics if not m.resource]


def slugify(name: str) -> str:
    """A file- and anchor-safe name for a suite (suite names are user text)."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.")
    return slug or "suite"


def _metrics(run: RunResult) -> list[MetricInfo]:
    gated = {v.metric for v in run.gates}
    seen: dict[str, MetricInfo] = {}
    for cand in run.candidates.values():
        for name, agg in cand.aggregates.items():
            if name not in seen:
                seen[name] = MetricInfo(
                    name, agg.higher_is_better, agg.signature, agg.version, name in gated
                )
    # Quality metrics first (in the suite's order), resource figures after.
    return sorted(seen.values(), key=lambda m: m.resource)


def _status(change: PairedComparison | None, higher_is_better: bool) -> Change:
    if change is None:
        return "n/a"
    if change.untestable is not None:  # too few pairs, or no spread: never significant
        return "untested"
    if change.p_value >= ALPHA or change.mean_delta == 0:
        return "noise"
    better = (change.mean_delta > 0) == higher_is_better
    return "improvement" if better else "regression"


def _paired(
    cand: CandidateRun, base: CandidateRun, metrics: Sequence[MetricInfo]
) -> tuple[np.ndarray, list[float | None], list[bool]]:
    """Per-example deltas in the baseline's example order (examples x metrics; NaN where either
    side has no score), the baseline's mean over the same pairs, and whether those pairs' scores
    are all 0/1 (tested exactly, as a gate on them is)."""
    cand_by_id = {e.id: e for e in cand.examples}
    deltas = np.full((len(base.examples), len(metrics)), np.nan)
    base_scores = np.full_like(deltas, np.nan)
    for i, other in enumerate(base.examples):
        example = cand_by_id.get(other.id)
        if example is None:
            continue
        for j, metric in enumerate(metrics):
            c, b = example.scores.get(metric.name), other.scores.get(metric.name)
            if c is not None and b is not None:
                deltas[i, j] = c - b
                base_scores[i, j] = b
    base_means: list[float | None] = []
    binary = []
    for j in range(len(metrics)):
        present = ~np.isnan(deltas[:, j])
        b = base_scores[present, j]
        base_means.append(float(b.mean()) if b.size else None)
        binary.append(is_binary(b, b + deltas[present, j]))
    return deltas, base_means, binary


def _changes(
    run: RunResult, baseline: str, names: list[str], metrics: list[MetricInfo], seed: int
) -> dict[tuple[str, str], tuple[PairedComparison | None, float | None]]:
    """(candidate, metric) -> paired change vs the baseline and the baseline's paired mean.
    One call for all candidates and metrics: columns with the same pairs share resamples, and a
    regression gate on the same pairs (same seed) drew exactly these, so the report shows the
    delta and CI the gate judged."""
    base = run.candidates[baseline]
    blocks, keys, base_means, binary = [], [], [], []
    for name in names:
        cand = run.candidates[name]
        if name == baseline:
            continue
        present = [m for m in metrics if m.name in cand.aggregates]
        deltas, means, flags = _paired(cand, base, present)
        blocks.append(deltas)
        keys += [(name, m.name) for m in present]
        base_means += means
        binary += flags
    if not keys:
        return {}
    changes = paired_comparisons(np.hstack(blocks), binary=binary, seed=seed)
    return dict(zip(keys, zip(changes, base_means, strict=True), strict=True))


def build_suite_view(run: RunResult, *, seed: int = 0) -> SuiteView:
    baseline = run.compare_to if run.compare_to in run.candidates else None
    names = list(run.candidates)
    if baseline is not None:  # the baseline leads every table and chart
        names.remove(baseline)
        names.insert(0, baseline)
    metrics = _metrics(run)
    changes = _changes(run, baseline, names, metrics, seed) if baseline else {}
    rows = []
    for name in names:
        for metric in metrics:
            aggregate = run.candidates[name].aggregates.get(metric.name)
            if aggregate is None:
                continue
            change, base_mean = changes.get((name, metric.name), (None, None))
            status: Change = (
                "baseline" if name == baseline else _status(change, metric.higher_is_better)
            )
            gates = tuple(v for v in run.gates if v.candidate == name and v.metric == metric.name)
            rows.append(MetricRow(name, metric, aggregate, change, status, base_mean, gates))
    failed = [v for v in run.gates if not v.passed]
    status: Literal["passed", "failed", "no gates"] = (
        "no gates" if not run.gates else ("failed" if failed else "passed")
    )
    return SuiteView(
        run=run,
        slug=slugify(run.suite),
        baseline=baseline,
        candidates=names,
        metrics=metrics,
        rows=rows,
        gate_status=status,
        failed_gates=failed,
        seed=seed,
    )


def overall_status(views: Sequence[SuiteView]) -> Literal["passed", "failed", "no gates"]:
    if any(v.gate_status == "failed" for v in views):
        return "failed"
    if all(v.gate_status == "no gates" for v in views):
        return "no gates"
    return "passed"
