"""Sentinel examples: golden examples marked ``sentinel: true`` must never flip.

A regression gate on a 0/1 column (or a column derived from one, ``X@pass^5``) fails when a
sentinel example that passed in the baseline fails in the candidate, whatever its statistics
say: a team marks the examples it cannot afford to lose, and no average can buy them back.
For a candidate with ``samples: k``, a sentinel fails when any of its k samples fails: "never"
means in no sample. A sentinel with no score (its generation failed) counts as failing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evalkit.gates import BaselineScores
from evalkit.repeats import is_zero_one, parse_derived
from evalkit.results import CandidateRun, GateVerdict
from evalkit.run.samples import sample_values
from evalkit.spec import GateSpec

N_LISTED = 20


def sentinel_flips(
    gate: GateSpec,
    run: CandidateRun,
    baseline: BaselineScores | None,
    metrics: Mapping[str, Any],
) -> list[str]:
    """Ids of sentinel examples that passed in the baseline and fail (in any sample) here."""
    sentinels = [e for e in run.examples if e.sentinel]
    if not sentinels or baseline is None or baseline.missing_reason is not None:
        return []
    derived = parse_derived(gate.metric) if gate.metric not in metrics else None
    column = derived.base if derived else gate.metric
    if not _zero_one(metrics.get(column), run, column):
        return []
    flipped = []
    for example in sentinels:
        before = baseline.scores.get(example.id)
        if before is None or before < 0.5:
            continue  # it did not pass before: nothing to lose
        values = sample_values(example, column)
        if any(v is None or v < 0.5 for v in values):
            flipped.append(example.id)
    return flipped


def _zero_one(metric: Any, run: CandidateRun, column: str) -> bool:
    declared = getattr(metric, "binary", None)
    if declared is not None:
        return bool(declared)
    return is_zero_one([v for e in run.examples for v in sample_values(e, column)])


def enforce_sentinels(verdict: GateVerdict, flipped: list[str], label: str) -> GateVerdict:
    """Fail ``verdict`` on flipped sentinels, saying which and why."""
    if not flipped:
        return verdict
    verdict.sentinel_flips = flipped
    ids = ", ".join(flipped[:N_LISTED]) + (
        f" and {len(flipped) - N_LISTED} more" if len(flipped) > N_LISTED else ""
    )
    line = (
        f"FAILED: {len(flipped)} sentinel example{'s' if len(flipped) > 1 else ''} flipped from "
        f"pass to fail against {label}: {ids} (sentinels must never flip, whatever the "
        "statistics say)"
    )
    if verdict.status != "error":
        verdict.status = "failed"
    verdict.message = f"{line}\n{verdict.message}" if verdict.message else line
    return verdict
