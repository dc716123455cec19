"""Gate verdicts: absolute bounds on a metric mean, and regressions judged by a paired test.

A regression gate fails only when the change is larger than allowed AND the one-sided paired
bootstrap test says it is not noise (p < alpha); ``strict`` gates fail on the point estimate.
A missing baseline is a failure that says how to accept one, never a silent pass.

Run-level figures (tokens/s, peak memory) are one number per run: there is nothing to resample,
so their regression gates compare the two numbers directly (as ``strict`` would) and say so.
``lossless`` is evalkit's own equivalence check: a candidate whose outputs must equal another
candidate's (``candidates.base.Verifiable``, or ``equivalent_to`` in the suite) fails on more
mismatches than ``max_mismatch`` allows; with a log-prob tolerance, a difference at a near-tie
of the target model is reported but not counted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from evalkit.format import p_significant, precise, precise_signed
from evalkit.results import (
    Aggregate,
    CandidateRun,
    Comparison,
    EquivalenceCheck,
    EquivalenceMismatch,
    GateVerdict,
    WorstExample,
)
from evalkit.spec import GateSpec
from evalkit.stats import paired_comparison

N_WORST = 5
RUN_GATE = "run"
"""The check of a candidate in a suite that declares no gates: the run itself must work."""
EQUIVALENCE_GATE = "lossless"
"""The item name of the equivalence check (the name predates the general check)."""
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


def evaluate_gate(
    suite: str,
    gate_name: str,
    gate: GateSpec,
    run: CandidateRun,
    baseline: BaselineScores | None,
    *,
    seed: int = 0,
) -> GateVerdict:
    aggregate = run.aggregates.get(gate.metric)
    verdict = GateVerdict(
        suite=suite,
        candidate=run.name,
        gate=gate_name,
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
        return verdict
    verdict.mean = aggregate.mean
    if aggregate.level == "run":
        return _run_level(gate, aggregate, baseline, verdict)
    lines = [
        f"{gate.metric} mean {precise(aggregate.mean)} "
        f"(95% CI {precise(aggregate.ci_low)}..{precise(aggregate.ci_high)}, n={aggregate.n}"
        + (f", {aggregate.n_missing} examples without a score" if aggregate.n_missing else "")
        + ")"
    ]
    failures: list[str] = []
    if gate.min is not None and aggregate.mean < gate.min:
        failures.append(f"mean {precise(aggregate.mean)} is below min {gate.min:g}")
    if gate.max is not None and aggregate.mean > gate.max:
        failures.append(f"mean {precise(aggregate.mean)} is above max {gate.max:g}")
    if gate.is_regression:
        failures += _regression(gate, run, baseline, verdict, lines, seed)
    if failures:
        verdict.status = "failed"
        lines.insert(0, "FAILED: " + "; ".join(failures))
    verdict.worst = _worst(gate, run, baseline, aggregate.higher_is_better)
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


def _missing_reason(run: CandidateRun, column: str, aggregate: Aggregate | None) -> str | None:
    """Why a metric has no value: a run-level figure's error, else the first example's."""
    if aggregate is not None and aggregate.detail.get("error"):
        return str(aggregate.detail["error"])
    errors = (e.details.get(column, {}).get("error") for e in run.examples)
    return next((str(error) for error in errors if error), None)


def _bounds(gate: GateSpec, value: float) -> list[str]:
    failures = []
    if gate.min is not None and value < gate.min:
        failures.append(f"{precise(value)} is below min {gate.min:g}")
    if gate.max is not None and value > gate.max:
        failures.append(f"{precise(value)} is above max {gate.max:g}")
    return failures


def _run_level(
    gate: GateSpec, aggregate: Aggregate, baseline: BaselineScores | None, verdict: GateVerdict
) -> GateVerdict:
    """A gate on one figure per run: bounds, and changes judged on the two numbers alone."""
    value = aggregate.mean
    assert value is not None
    lines = [f"{gate.metric} {precise(value)} (one figure for the whole run)"]
    failures = _bounds(gate, value)
    if gate.is_regression:
        failures += _run_level_change(gate, value, baseline, verdict, lines)
    if failures:
        verdict.status = "failed"
        lines.insert(0, "FAILED: " + "; ".join(failures))
    verdict.message = "\n".join(lines)
    return verdict


def _run_level_change(
    gate: GateSpec,
    value: float,
    baseline: BaselineScores | None,
    verdict: GateVerdict,
    lines: list[str],
) -> list[str]:
    if baseline is None or baseline.missing_reason is not None:
        return [baseline.missing_reason if baseline else "no baseline to compare with"]
    base = baseline.run_value
    if base is None:
        return [f"{baseline.label} has no '{gate.metric}' figure to compare with"]
    failures: list[str] = []
    for direction, threshold in (("drop", gate.max_drop), ("increase", gate.max_increase)):
        if threshold is None:
            continue
        allowed = threshold.allowed(base)
        change = base - value if direction == "drop" else value - base
        verdict.comparison = Comparison(
            baseline=baseline.label,
            baseline_mean=base,
            candidate_mean=value,
            n_paired=1,
            mean_delta=value - base,
            allowed=allowed,
        )
        lines.append(
            f"vs {baseline.label} {precise(base)}: delta {precise_signed(value - base)}, allowed "
            f"{direction} {threshold} (= {precise(allowed)}); one figure per run, so no "
            "significance test is possible: judged on the two numbers"
        )
        if change > allowed:
            failures.append(f"{direction} of {precise(change)} exceeds {precise(allowed)}")
    return failures


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


def _regression(
    gate: GateSpec,
    run: CandidateRun,
    baseline: BaselineScores | None,
    verdict: GateVerdict,
    lines: list[str],
    seed: int,
) -> list[str]:
    if baseline is None or baseline.missing_reason is not None:
        reason = baseline.missing_reason if baseline else "no baseline to compare with"
        return [reason]
    current = {e.id: e.scores.get(gate.metric) for e in run.examples}
    paired = [
        (current[i], b)
        for i, b in baseline.scores.items()
        if i in current and current[i] is not None and b is not None
    ]
    unpaired = len(current) - len(paired)
    if not paired:
        return [f"no example has a '{gate.metric}' score in both {run.name} and {baseline.label}"]
    base_mean = sum(b for _, b in paired) / len(paired)
    cand_mean = sum(c for c, _ in paired) / len(paired)
    deltas = [c - b for c, b in paired]
    failures: list[str] = []
    for direction, threshold in (("drop", gate.max_drop), ("increase", gate.max_increase)):
        if threshold is None:
            continue
        allowed = threshold.allowed(base_mean)
        # The report computes its paired changes with this function too, over the same pairs in
        # the same (baseline) order and seed: it shows this delta and CI, not another draw's.
        test = paired_comparison(
            deltas,
            alternative="less" if direction == "drop" else "greater",
            margin=allowed,
            seed=seed,
        )
        change = -test.mean_delta if direction == "drop" else test.mean_delta
        verdict.comparison = Comparison(
            baseline=baseline.label,
            baseline_mean=base_mean,
            candidate_mean=cand_mean,
            n_paired=test.n,
            n_unpaired=unpaired,
            mean_delta=test.mean_delta,
            ci_low=test.ci_low,
            ci_high=test.ci_high,
            p_value=test.p_value,
            allowed=allowed,
        )
        exceeds = change > allowed
        significant = test.p_value < gate.alpha
        summary = (
            f"vs {baseline.label} {precise(base_mean)}: delta {precise_signed(test.mean_delta)} "
            f"(95% CI {precise_signed(test.ci_low)}..{precise_signed(test.ci_high)}), "
            f"p={p_significant(test.p_value)} one-sided, allowed {direction} {threshold} "
            f"(= {precise(allowed)}), n={test.n}"
            + (f", {unpaired} unpaired examples ignored" if unpaired else "")
        )
        if exceeds and (gate.strict or significant):
            why = "strict gate" if gate.strict else f"significant at alpha={gate.alpha:g}"
            failures.append(f"{direction} of {precise(change)} exceeds {precise(allowed)} ({why})")
        elif exceeds:
            summary += f" -> exceeds the allowance but is within noise (p >= {gate.alpha:g})"
        lines.append(summary)
    return failures


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
        if score is None:
            key = float("-inf")
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
