"""Pinned, calibrated judges: every judge column records who scored it, and a judge calibrated
on human labels that misses its agreement floor makes its gates advisory.

``{judge: {..., calibration: labels.jsonl, min_kappa: 0.6}}`` scores the labelled answers with
the suite's judge (as ``evalkit judge-agreement`` does) and compares with the human scores by
quadratic-weighted Cohen's kappa on the judge's score rounded to the scale. The result is cached
by the judge's signature and the labels file's content, so a run measures it once per judge
and labels, and a later run reads it. Below ``min_kappa``, a gate on that column is reported
(its figures, what it would have said) but never fails, and its item says why.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from evalkit.agreement import load_labels, measure
from evalkit.cache import Cache, make_key
from evalkit.format import fixed
from evalkit.metrics import AnyMetric
from evalkit.metrics.judge_identity import calibration_file, judge_identity
from evalkit.repeats import parse_derived
from evalkit.results import Aggregate, CandidateRun, GateVerdict

NAMESPACE = "judge_calibration"


class JudgeChecks:
    """Identity and calibration of the judge columns of one suite run."""

    def __init__(self, metrics: Mapping[str, AnyMetric], cache: Cache) -> None:
        self.metrics = metrics
        self.cache = cache
        self._calibrations: dict[str, dict[str, Any]] = {}

    def annotate(self, aggregates: Mapping[str, Aggregate]) -> None:
        """Record the judge's identity on each judge column, its calibration when it has
        labels, and why its gates are advisory when it misses the floor."""
        for column, metric in self.metrics.items():
            aggregate = aggregates.get(column)
            identity = judge_identity(metric)
            if aggregate is None or identity is None:
                continue
            labels = calibration_file(metric)
            if labels is not None:
                calibration = self.calibration(column, metric, labels)
                identity["calibration"] = calibration
                aggregate.advisory = advisory_reason(column, calibration)
            aggregate.judge = identity

    def calibration(self, column: str, metric: Any, labels: Path) -> dict[str, Any]:
        if column in self._calibrations:
            return self._calibrations[column]
        digest = hashlib.sha256(labels.read_bytes()).hexdigest()[:16]
        key = make_key(kind=NAMESPACE, judge=metric.signature(), labels=digest)
        figures = self.cache.get_many(NAMESPACE, [key]).get(key)
        cached = figures is not None
        if figures is None:
            agreement = measure(load_labels(labels), metric)
            figures = {
                "n": agreement.n,
                "n_missing": agreement.n_missing,
                "kappa": agreement.kappa_rounded,
                "kappa_argmax": agreement.kappa_argmax,
                "spearman": agreement.spearman,
                "exact": agreement.exact_rounded,
            }
            if agreement.n:  # a judge that scored nothing (an outage) is not remembered
                self.cache.put_many(NAMESPACE, {key: figures})
        result = {
            **figures,
            "labels": str(labels),
            "labels_sha256": digest,
            "min_kappa": metric.options.min_kappa,
            "method": "quadratic-weighted Cohen's kappa, judge score rounded to the scale",
            "cached": cached,
        }
        self._calibrations[column] = result
        return result


def advisory_reason(column: str, calibration: Mapping[str, Any]) -> str | None:
    """Why gates on a judge column cannot fail, or None when the judge meets its floor."""
    kappa, floor = calibration.get("kappa"), calibration["min_kappa"]
    if kappa is not None and kappa >= floor:
        return None
    name = Path(str(calibration["labels"])).name
    measured = "could not be measured" if kappa is None else f"is {fixed(kappa)}"
    return (
        f"judge '{column}' is not calibrated: its agreement with the human labels of {name} "
        f"(quadratic-weighted kappa, n={calibration.get('n', 0)}) {measured}, below "
        f"min_kappa {floor:g}; its gates are advisory (reported, never failing) until it "
        "reaches the floor"
    )


def make_advisory(verdict: GateVerdict, run: CandidateRun, column: str) -> GateVerdict:
    """A gate on an uncalibrated judge's column reports what it found and passes."""
    derived = parse_derived(column) if column not in run.aggregates else None
    aggregate = run.aggregates.get(derived.base if derived else column)
    reason = aggregate.advisory if aggregate is not None else None
    if reason is None or verdict.status == "error":
        return verdict
    would = "would have FAILED" if verdict.status == "failed" else "would pass"
    verdict.advisory = reason
    # A passing item still says it was not enforced (the pytest line, the report, summary.md).
    verdict.warnings.append(f"advisory, not enforced ({would}): {reason}")
    verdict.status = "passed"
    body = verdict.message.removeprefix("FAILED: ")
    verdict.message = f"ADVISORY ({would}; not enforced): {reason}\n{body}"
    return verdict
