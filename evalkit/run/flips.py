"""Flips: for every 0/1 metric, which examples changed between ``compare_to`` and a candidate.

A mean can hide churn: 5 examples lost and 5 gained read as no change. Flips list both
directions by id, so a reviewer sees what a variant broke (pass -> fail) and what it fixed.

A column is 0/1 when its metric says so (``binary = True``: exact_match, contains, regex) or,
for metrics that say nothing (plugins), when every value of both candidates is 0 or 1. A metric
with ``binary = False`` never gets flips.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evalkit.results import CandidateRun, Flips


def is_binary(metric: Any, runs: Mapping[str, CandidateRun], column: str) -> bool:
    declared = getattr(metric, "binary", None)
    if declared is not None:
        return bool(declared)
    values = [e.scores.get(column) for run in runs.values() for e in run.examples]
    present = [v for v in values if v is not None]
    return bool(present) and all(v in (0.0, 1.0) for v in present)


def flips(run: CandidateRun, base: CandidateRun, column: str) -> Flips:
    """Examples both scored, whose 0/1 value differs, in the base's example order."""
    mine = {e.id: e.scores.get(column) for e in run.examples}
    result = Flips(against=base.name)
    for example in base.examples:
        before, after = example.scores.get(column), mine.get(example.id)
        if before is None or after is None:
            continue
        result.n_paired += 1
        if before >= 0.5 > after:
            result.pass_to_fail.append(example.id)
        elif after >= 0.5 > before:
            result.fail_to_pass.append(example.id)
    return result


def record_flips(
    runs: Mapping[str, CandidateRun], compare_to: str | None, metrics: Mapping[str, Any]
) -> None:
    """Fill ``CandidateRun.flips`` of every candidate but ``compare_to``."""
    if compare_to is None or compare_to not in runs:
        return
    base = runs[compare_to]
    columns = [c for c, metric in metrics.items() if is_binary(metric, runs, c)]
    for name, run in runs.items():
        if name != compare_to:
            run.flips = {column: flips(run, base, column) for column in columns}
