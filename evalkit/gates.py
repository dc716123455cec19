"""Gate verdicts: absolute bounds on a metric mean, and changes against a baseline.

Change rules (``max_drop``, ``max_increase``, ``min_ratio``) are judged on paired examples by
``evalkit.paired_gates``: detection rules fail on evidence of harm beyond the allowance (exact
McNemar for 0/1 scores, the paired bootstrap otherwise), non-inferiority rules pass only on
evidence that the change is within it. A run's detection rules are one family (Holm-Bonferroni),
so ``evaluate_gates`` assesses every item first and decides them together. A missing baseline is
a failure that says how to accept one, never a silent pass.

Run-level figures (tokens/s, peak memory) are one number per run: ``evalkit.figure_gates``
compares the two numbers directly and says so.
``lossless`` is evalkit's own equivalence check: a candidate whose outputs must equal another
candidate's (``candidates.base.Verifiable``, or ``equivalent_to`` in the suite) fails on more
mismatches than ``max_mismatch`` allows; with a log-prob tolerance, a difference at a near-tie
of the target model is reported but not counted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from evalkit import figure_gates, paired_gates
from evalkit.format import precise
from evalkit.gate_spec import EQUIVALENCE_GATE as EQUIVALENCE_GATE  # defined with the rules
from evalkit.gate_spec import RUN_GATE as RUN_GATE
from evalkit.results import (
    Aggregate,
    CandidateRun,
    EquivalenceCheck,
    EquivalenceMismatch,
    GateVerdict,
    WorstExample,
)
from evalkit.spec import GateSpec

N_WORST = 5
N_MISMATCHES_SHOWN = 10
N_IDS_LISTED = 20
"""Differing ids the failure headline names (run.json keeps them all)."""


@dataclass(frozen=True)
class BaselineScores:
    """Per-example scores of whatever a candidate is compared with, for one metric column."""

    label: str
    scores: Mapping[str, float | None]
    outputs: Mapping[str, str | None] = field(default_factory=dict)
    missing_reason: str | None = None
    """Set when there is no baseline: the gate fails with this text."""
    run_value: float | None = None
    """The baseline's figure for run-level metrics (tokens/s, peak memory)."""


@dataclass(frozen=True)
class GateJob:
    """One planned gate item: a gate of the suite, on one candidate's run."""

    name: str
    gate: GateSpec
    run: CandidateRun
    baseline: BaselineScores | None = None


@dataclass
class _Assessment:
    """A verdict before its change rules are decided (they wait for the run's Holm step)."""

    job: GateJob
    verdict: GateVerdict
    lines: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    final: bool = False
    higher_is_better: bool = True


def evaluate_gates(
    suite: str,
    jobs: Sequence[GateJob],
    *,
    multiple_comparisons: Literal["holm", "none"] = "holm",
    seed: int = 0,
) -> list[GateVerdict]:
    """The verdicts of a run's gate items. Their detection rules are one family: with
    ``holm`` each is decided on its Holm-adjusted p (shown beside the raw one)."""
    assessed = [_assess(suite, job, seed) for job in jobs]
    paired_gates.adjust(
        [(a.job.gate, c) for a in assessed if not a.final for c in a.verdict.comparisons],
        multiple_comparisons,
    )
    return [a.verdict if a.final else _conclude(a) for a in assessed]


def evaluate_gate(
    suite: str,
    gate_name: str,
    gate: GateSpec,
    run: CandidateRun,
    baseline: BaselineScores | None,
    *,
    seed: int = 0,
) -> GateVerdict:
    """One gate alone (its rules are the only family)."""
    return evaluate_gates(suite, [GateJob(gate_name, gate, run, baseline)], seed=seed)[0]


def _assess(suite: str, job: GateJob, seed: int) -> _Assessment:
    gate, run = job.gate, job.run
    aggregate = run.aggregates.get(gate.metric)
    verdict = GateVerdict(
        suite=suite,
        candidate=run.name,
        gate=job.name,
        metric=gate.metric,
        status="passed",
        message="",
        rules=gate.model_dump(mode="json", exclude_none=True),
    )
    if aggregate is None or aggregate.mean is None:
        verdict.status = "error"
        first_error = next((e.error for e in run.examples if e.error), None)
        verdict.message = f"{run.name}: no '{gate.metric}' scores to gate on" + (
            f" ({run.n_errors} examples failed to generate; first error: {first_error})"
            if run.n_errors
            else ""
        )
        reason = _missing_reason(run, gate.metric, aggregate)
        if reason:
            verdict.message += f": {reason}"
        return _Assessment(job, verdict, final=True)
    verdict.mean = aggregate.mean
    if aggregate.level == "run":
        figure = figure_gates.figure_verdict(gate, aggregate, verdict, _figure(job.baseline))
        return _Assessment(job, figure, final=True)
    line = (
        f"{gate.metric} mean {precise(aggregate.mean)} "
        f"(95% CI {precise(aggregate.ci_low)}..{precise(aggregate.ci_high)}, n={aggregate.n}"
        + (f", {aggregate.n_missing} examples without a score" if aggregate.n_missing else "")
        + ")"
    )
    bounds = [f"mean {failure}" for failure in figure_gates.bounds(gate, aggregate.mean)]
    assessment = _Assessment(
        job, verdict, [line], bounds, higher_is_better=aggregate.higher_is_better
    )
    if gate.is_regression:
        pairs = _pairs(gate, run, job.baseline)
        problem = (
            pairs
            if isinstance(pairs, str)
            else paired_gates.ratio_problem(gate, pairs, aggregate.higher_is_better)
        )
        if problem is not None:
            assessment.failures.append(problem)
        else:
            assert isinstance(pairs, paired_gates.Pairs)
            verdict.comparisons = [
                paired_gates.assess(gate, rule, pairs, seed=seed)
                for rule in paired_gates.rules_of(gate)
            ]
    return assessment


def _conclude(assessment: _Assessment) -> GateVerdict:
    gate, verdict = assessment.job.gate, assessment.verdict
    lines, failures = assessment.lines, assessment.failures
    for comparison in verdict.comparisons:
        decision = paired_gates.decide(gate, comparison)
        lines += decision.lines
        failures += decision.failures
        verdict.warnings += decision.warnings
    lines += verdict.warnings
    if failures:
        verdict.status = "failed"
        lines.insert(0, "FAILED: " + "; ".join(failures))
    baseline = assessment.job.baseline
    verdict.worst = _worst(gate, assessment.job.run, baseline, assessment.higher_is_better)
    if failures and verdict.worst:
        lines.append(f"worst {len(verdict.worst)} examples:")
        for item in verdict.worst:
            base = (
                f" | baseline {precise(item.baseline_score)}: {_shown(item.baseline_output)}"
                if baseline and baseline.missing_reason is None
                else ""
            )
            lines.append(
                f"  - {item.id}: score {precise(item.score)} | reference "
                f"{_shown(item.reference)} | output {_shown(item.output)}{base}"
            )
    verdict.message = "\n".join(lines)
    return verdict


def _figure(baseline: BaselineScores | None) -> figure_gates.Figure | str:
    if baseline is None or baseline.missing_reason is not None:
        return baseline.missing_reason if baseline else "no baseline to compare with"
    return figure_gates.Figure(baseline.label, baseline.run_value)


def _missing_reason(run: CandidateRun, column: str, aggregate: Aggregate | None) -> str | None:
    """Why a metric has no value: a run-level figure's error, else the first example's."""
    if aggregate is not None and aggregate.detail.get("error"):
        return str(aggregate.detail["error"])
    errors = (e.details.get(column, {}).get("error") for e in run.examples)
    return next((str(error) for error in errors if error), None)


def run_verdict(suite: str, run: CandidateRun) -> GateVerdict:
    """A suite without gates still fails when a candidate produced nothing at all: every
    example failed (a wrong model name, a server that is down), which no score would show."""
    verdict = GateVerdict(
        suite=suite, candidate=run.name, gate=RUN_GATE, metric=RUN_GATE, status="passed", message=""
    )
    if run.examples and run.n_errors == len(run.examples):
        verdict.status = "failed"
        verdict.message = f"{run.name}: every example failed; first error: {run.examples[0].error}"
    return verdict


def equivalence_verdict(suite: str, run: CandidateRun) -> GateVerdict:
    """A candidate's outputs must equal its equivalence target's: more mismatches than allowed
    fail, and the message lists the examples."""
    verdict = GateVerdict(
        suite=suite,
        candidate=run.name,
        gate=EQUIVALENCE_GATE,
        metric=EQUIVALENCE_GATE,
        status="passed",
        message="",
    )
    check = run.equivalence
    if check is None or check.skipped is not None or check.checked == 0:
        target = check.target if check is not None and check.target else "its target"
        verdict.status = "error"
        verdict.message = f"{run.name}: no outputs to compare with {target}" + (
            f" ({check.skipped})" if check is not None and check.skipped else ""
        )
        return verdict
    same = check.checked - len(check.mismatches)
    verdict.mean = same / check.checked
    verdict.rules = {"equivalent_to": check.target, "max_mismatch": check.max_mismatch}
    if check.logprob_tolerance is not None:
        verdict.rules["logprob_tolerance"] = check.logprob_tolerance
    lines = [
        f"{same} of {check.checked} outputs ({verdict.mean:.1%}) equal those of {check.target}"
    ]
    if check.unchecked:
        lines[0] += f" ({check.unchecked} examples failed to generate, not compared)"
    if check.target_cached:
        lines[0] += f"; {check.target_cached} of its outputs from the cache"
    if ties := len(check.mismatches) - len(check.failing):
        lines.append(
            f"{ties} differ only at a near-tie (log-prob gap <= {check.logprob_tolerance:g})"
        )
    if check.note:
        lines.append(check.note)
    if check.mismatches:
        if headline := _headline(check):
            verdict.status = "failed" if headline.startswith("FAILED") else verdict.status
            lines.insert(0, headline)
        lines += _mismatches(run, verdict)
    verdict.message = "\n".join(lines)
    return verdict


def _headline(check: EquivalenceCheck) -> str | None:
    """The first line when outputs differ: FAILED and the ids beyond ``max_mismatch``, or how
    many differ of how many allowed; None when all that differ are near-ties."""
    failing = check.failing
    if not failing:
        return None
    headline = check.headline.format(n=len(failing), target=check.target)
    if len(failing) <= check.max_mismatch:
        return f"{headline}; {check.max_mismatch} allowed"
    ids = ", ".join(m.id for m in failing[:N_IDS_LISTED])
    more = f" and {len(failing) - N_IDS_LISTED} more" if len(failing) > N_IDS_LISTED else ""
    return f"FAILED: {headline} (max_mismatch {check.max_mismatch}): {ids}{more}"


SHOWN_CHARS = 300
"""Longest text a gate message quotes: a 1 MB output must not become a 1 MB line in CI logs."""


def _shown(text: str | None) -> str:
    if text is None or len(text) <= SHOWN_CHARS:
        return repr(text)
    return f"{text[:SHOWN_CHARS]!r}… ({len(text):,} characters; all of it in run.json)"


def _mismatches(run: CandidateRun, verdict: GateVerdict) -> list[str]:
    """Lines naming the first mismatching examples; they also become the verdict's worst."""
    check = run.equivalence
    assert check is not None
    references = {e.id: e.references for e in run.examples}
    lines = []
    for item in check.mismatches[:N_MISMATCHES_SHOWN]:
        tie = " [near-tie]" if item.near_tie else ""
        lines.append(
            f"  - {item.id}{tie}: {check.output_name} {_shown(item.output)} | "
            f"{check.target_name} {_shown(item.target_output)}{_where(item)}"
        )
        verdict.worst.append(
            WorstExample(
                id=item.id,
                reference=(references.get(item.id) or [""])[0],
                output=item.output,
                baseline_output=item.target_output,
                score=0.0,
                baseline_score=1.0,
            )
        )
    if len(check.mismatches) > N_MISMATCHES_SHOWN:
        hidden = len(check.mismatches) - N_MISMATCHES_SHOWN
        lines.append(f"  ... and {hidden} more (run.json)")
    return lines


def _where(item: EquivalenceMismatch) -> str:
    """Where the two outputs part: word (always), token and the target's log-prob gap (with a
    log-prob tolerance)."""
    if item.first_word is None:
        return ""
    where = f" (first differs at word {item.first_word}"
    if item.first_token is not None and item.logprob_gap is not None:
        where += f", token {item.first_token}, log-prob gap {precise(item.logprob_gap)}"
    return where + ")"


def _pairs(
    gate: GateSpec, run: CandidateRun, baseline: BaselineScores | None
) -> paired_gates.Pairs | str:
    """The examples both sides scored, in the baseline's order (the report pairs the same way,
    so it draws the same resamples), or why there are none."""
    if baseline is None or baseline.missing_reason is not None:
        return baseline.missing_reason if baseline else "no baseline to compare with"
    current = {e.id: e.scores.get(gate.metric) for e in run.examples}
    paired = [
        (current[i], b)
        for i, b in baseline.scores.items()
        if i in current and current[i] is not None and b is not None
    ]
    if not paired:
        return f"no example has a '{gate.metric}' score in both {run.name} and {baseline.label}"
    values = np.array(paired, dtype=float)
    return paired_gates.Pairs(
        label=baseline.label,
        candidate=values[:, 0],
        baseline=values[:, 1],
        n_unpaired=len(current) - len(paired),
    )


def _worst(
    gate: GateSpec, run: CandidateRun, baseline: BaselineScores | None, higher_is_better: bool
) -> list[WorstExample]:
    """The examples that hurt most: largest loss vs the baseline, else lowest scores."""
    usable = baseline is not None and baseline.missing_reason is None
    sign = 1.0 if higher_is_better else -1.0
    ranked = []
    for example in run.examples:
        score = example.scores.get(gate.metric)
        base = baseline.scores.get(example.id) if usable and baseline else None
        if score is None:  # no score (no latency measured, a failed example): nothing to rank
            key = float("inf")
        elif base is not None:
            key = sign * (score - base)
        else:
            key = sign * score
        ranked.append((key, example, base))
    ranked.sort(key=lambda item: item[0])
    return [
        WorstExample(
            id=example.id,
            reference=example.references[0] if example.references else "",
            output=example.output if example.error is None else f"[error] {example.error}",
            baseline_output=baseline.outputs.get(example.id) if usable and baseline else None,
            score=example.scores.get(gate.metric),
            baseline_score=base,
        )
        for _, example, base in ranked[:N_WORST]
    ]
