"""Latency gates that do not flap: interleaved, repeated, paired timing against compare_to.

Timing each candidate on its own, minutes apart, lets the machine's drift (another job, a
thermal limit, a cold cache) land on one side only, so two runs of an unchanged model can give
different verdicts. Here a latency regression gate of a candidate B against its compare_to A is
decided on timings taken together: for every example of the latency sample, A, then B, then A
again, round after round. B is paired with the mean of the two A timings around it, which
cancels any drift that is linear over the triple; the second A minus the first is an A-vs-A
comparison, the noise floor the report shows beside the difference.

Rounds repeat until every gated column is decided (the paired 95% CI of B - A lies wholly on
one side of the allowance), or precise enough (its half-width within ``precision`` of A's
mean), or the ``budget_s`` of the latency metric runs out (one round always runs).
The gate then tests the per-example mean differences with the usual paired test. Whether other
work competed for the cores meanwhile is measured and said (``candidates.contention``).
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field

from evalkit.candidates import make_candidate
from evalkit.candidates.base import (
    Candidate,
    GenerationRequest,
    LatencyProbe,
    LatencySample,
    ProbeAware,
)
from evalkit.candidates.contention import CoreWindow
from evalkit.candidates.timing import timing_sample
from evalkit.format import precise, precise_signed
from evalkit.gates import BaselineScores
from evalkit.metrics.latency import LatencySettings, PerRequestLatency
from evalkit.results import CandidateRun, GateVerdict, PairedLatency, PairedLatencyColumn
from evalkit.run.prepare import PreparedSuite, gate_plan
from evalkit.spec import GateSpec, GenerationSpec
from evalkit.stats import mean_ci, paired_comparison

MIN_ROUNDS = 1
"""One round is a paired comparison over the latency sample already; more rounds only narrow
it. Measured on the units demo (SmolLM2-135M, 16 examples, loaded 2-core CPU): a round of
A, B, A took 160 s, so a second round is spent only where the first did not decide."""
MAX_ROUNDS = 50
N_BOOT_WHILE_TIMING = 2_000
"""Resamples of the stopping check after each round (the gate itself uses the full count)."""


@dataclass(frozen=True)
class LatencyGate:
    column: str
    metric: PerRequestLatency
    gate: GateSpec


def latency_gates(prepared: PreparedSuite, candidate: str) -> list[LatencyGate]:
    """The regression gates of ``candidate`` on per-request latency columns that compare with
    the compare_to candidate of the run (accepted baselines cannot be timed again)."""
    spec = prepared.loaded.spec
    if spec.compare_to is None or candidate == spec.compare_to:
        return []
    found = []
    for name in gate_plan(prepared, candidate):
        gate = spec.gates.get(name)
        metric = prepared.metrics.get(gate.metric) if gate is not None else None
        timed = isinstance(metric, PerRequestLatency) and metric.settings.interleave
        if gate is not None and gate.is_regression and timed:
            found.append(LatencyGate(gate.metric, metric, gate))  # type: ignore[arg-type]
    return found


@dataclass
class _Series:
    """One column's timings so far, per example id (ms)."""

    a: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    b: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    noise: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def add(self, example_id: str, first: float, middle: float, last: float) -> None:
        self.a[example_id].append((first + last) / 2)
        self.b[example_id].append(middle)
        self.noise[example_id].append(last - first)

    def summary(self, n_boot: int = 10_000) -> PairedLatencyColumn:
        ids = [i for i in self.b if self.b[i]]
        column = PairedLatencyColumn(
            baseline_ms={i: statistics.fmean(self.a[i]) for i in ids},
            candidate_ms={i: statistics.fmean(self.b[i]) for i in ids},
        )
        if not ids:
            return column
        column.baseline_mean = statistics.fmean(column.baseline_ms.values())
        delta = paired_comparison(
            [column.candidate_ms[i] - column.baseline_ms[i] for i in ids], n_boot=n_boot
        )
        noise = paired_comparison([statistics.fmean(self.noise[i]) for i in ids], n_boot=n_boot)
        column.mean_delta, column.ci_low, column.ci_high = (
            delta.mean_delta, delta.ci_low, delta.ci_high
        )  # fmt: skip
        column.noise_delta, column.noise_ci_low, column.noise_ci_high = (
            noise.mean_delta, noise.ci_low, noise.ci_high
        )  # fmt: skip
        return column


def _settled(gate: LatencyGate, column: PairedLatencyColumn) -> str | None:
    """'decided' when the CI of B - A lies on one side of every allowance of the gate,
    'precise' when it is narrow enough anyway, else None (time another round)."""
    if column.baseline_mean is None or column.ci_low is None or column.ci_high is None:
        return None
    base = abs(column.baseline_mean)
    decided = True
    for threshold, sign in ((gate.gate.max_increase, 1.0), (gate.gate.max_drop, -1.0)):
        if threshold is not None:
            bound = sign * threshold.allowed(base)
            decided &= column.ci_low > bound or column.ci_high < bound
    if decided:
        return "decided"
    precision = gate.metric.settings.precision
    return "precise" if (column.ci_high - column.ci_low) / 2 <= precision * base else None


def _one(
    candidate: LatencyProbe, request: GenerationRequest, params: GenerationSpec
) -> LatencySample:
    return candidate.measure_latency([request], params, warmup=0)[0]


def measure_pair(
    a: LatencyProbe,
    b: LatencyProbe,
    requests_a: Mapping[str, GenerationRequest],
    requests_b: Mapping[str, GenerationRequest],
    params: tuple[GenerationSpec, GenerationSpec],
    gates: Sequence[LatencyGate],
    against: str,
) -> PairedLatency:
    """Time A, B, A for each example of the latency sample, in rounds, until settled."""
    settings: LatencySettings = gates[0].metric.settings
    chosen = [r.id for r in timing_sample(list(requests_b.values()), settings.sample)]
    ids = [i for i in chosen if i in requests_a]
    for example_id in ids[: settings.warmup]:  # untimed: first calls pay one-off costs
        _one(a, requests_a[example_id], params[0])
        _one(b, requests_b[example_id], params[1])
    series = {g.column: _Series() for g in gates}
    started, window = time.perf_counter(), CoreWindow().start()
    rounds, stopped = 0, "max_rounds"
    while rounds < MAX_ROUNDS:
        round_started = time.perf_counter()
        for example_id in ids:
            first = _one(a, requests_a[example_id], params[0])
            middle = _one(b, requests_b[example_id], params[1])
            last = _one(a, requests_a[example_id], params[0])
            for gate in gates:
                values = [gate.metric.value_of(t).value for t in (first, middle, last)]
                if all(v is not None for v in values):
                    series[gate.column].add(example_id, *values)  # type: ignore[arg-type]
        rounds += 1
        if rounds < MIN_ROUNDS:
            continue
        states = [_settled(g, series[g.column].summary(N_BOOT_WHILE_TIMING)) for g in gates]
        if all(states):
            stopped = "decided" if all(s == "decided" for s in states) else "precise"
            break
        elapsed, last_round = time.perf_counter() - started, time.perf_counter() - round_started
        if elapsed + last_round > settings.budget_s:
            stopped = "budget"
            break
    cores = window.read()
    return PairedLatency(
        against=against,
        rounds=rounds,
        n_examples=len(ids),
        seconds=time.perf_counter() - started,
        stopped=stopped,
        columns={g.column: series[g.column].summary() for g in gates},
        other_cores=cores.other_cores,
        cores=cores.cores,
        contention=cores.describe(),
    )


def pair_latency(
    prepared: PreparedSuite,
    runs: Mapping[str, CandidateRun],
    requests_for: Callable[[str], Sequence[GenerationRequest]],
    wanted: Sequence[str] | None,
    device: str | None,
) -> dict[str, PairedLatency]:
    """The interleaved comparison of every candidate that has latency gates against
    compare_to; both models are loaded together for it and freed after."""
    spec = prepared.loaded.spec
    pairs: dict[str, PairedLatency] = {}
    for name in runs:
        gates = latency_gates(prepared, name)
        if not gates or (wanted is not None and name not in wanted) or spec.compare_to is None:
            continue
        pairs[name] = _compare(prepared, name, spec.compare_to, gates, requests_for, device)
    return pairs


def _compare(
    prepared: PreparedSuite,
    name: str,
    against: str,
    gates: Sequence[LatencyGate],
    requests_for: Callable[[str], Sequence[GenerationRequest]],
    device: str | None,
) -> PairedLatency:
    spec, folder = prepared.loaded.spec, prepared.loaded.path.parent
    build: Callable[[str], Candidate] = lambda n: make_candidate(  # noqa: E731
        n, spec.candidates[n], folder, device=device
    )
    with ExitStack() as stack:
        a, b = build(against), build(name)
        stack.callback(a.close)
        stack.callback(b.close)
        if not isinstance(a, LatencyProbe) or not isinstance(b, LatencyProbe):
            return PairedLatency(against=against, skipped="one of the two has no model to time")
        for candidate in (a, b):
            if isinstance(candidate, ProbeAware):
                stack.enter_context(candidate.probing())
        params = tuple(
            spec.generation.merged(spec.candidates[n].generation) for n in (against, name)
        )
        return measure_pair(
            a,
            b,
            {r.id: r for r in requests_for(against)},
            {r.id: r for r in requests_for(name)},
            params,  # type: ignore[arg-type]
            gates,
            against,
        )


def paired_inputs(
    run: CandidateRun, baseline: BaselineScores | None, column: str
) -> tuple[CandidateRun, BaselineScores | None]:
    """What a latency gate is decided on: the interleaved timings of both candidates, in place
    of the ones each took alone (those stay in run.json as they were)."""
    pair = run.latency_pairs
    timed = pair.columns.get(column) if pair is not None else None
    if pair is None or timed is None or not timed.candidate_ms:
        return run, baseline
    examples = [
        e.model_copy(update={"scores": {**e.scores, column: timed.candidate_ms.get(e.id)}})
        for e in run.examples
    ]
    estimate = mean_ci(list(timed.candidate_ms.values()))
    aggregate = run.aggregates[column].model_copy(
        update={"mean": estimate.mean, "ci_low": estimate.ci_low, "ci_high": estimate.ci_high,
                "n": estimate.n, "n_missing": len(run.examples) - estimate.n}
    )  # fmt: skip
    shadow = run.model_copy(
        update={"examples": examples, "aggregates": {**run.aggregates, column: aggregate}}
    )
    label = f"candidate:{pair.against} (timed interleaved)"
    outputs = baseline.outputs if baseline is not None else {}
    return shadow, BaselineScores(label=label, scores=timed.baseline_ms, outputs=outputs)


def pairing_note(verdict: GateVerdict, run: CandidateRun, column: str) -> GateVerdict:
    """How the latency gate's figures were taken: schedule, rounds, noise floor, contention."""
    pair = run.latency_pairs
    timed = pair.columns.get(column) if pair is not None else None
    if pair is None or timed is None or timed.noise_delta is None:
        return verdict
    base = timed.baseline_mean or 0.0
    share = f" ({timed.noise_delta / base:+.1%} of {precise(base)} ms)" if base else ""
    rounds = f"{pair.rounds} round{'s' if pair.rounds > 1 else ''}"
    verdict.message += (
        f"\ntimed interleaved with {pair.against} ({pair.schedule}): {rounds} of "
        f"{pair.n_examples} examples in {pair.seconds:.1f} s, stopped: {pair.stopped}; "
        f"noise floor (A vs A): {precise_signed(timed.noise_delta)} ms{share}, 95% CI "
        f"{precise_signed(timed.noise_ci_low)}..{precise_signed(timed.noise_ci_high)}; "
        f"{pair.contention}"
    )
    return verdict
