"""Latency and memory as metrics any suite can gate on, measured afresh in every run.

``latency`` in a suite's metrics list is shorthand for all five columns (options ``sample``,
``warmup``); each column can also be listed alone:

=====================  ========  ==================================================================
column                 level     value
=====================  ========  ==================================================================
latency.ttft_ms        example   time to the first generated token of a request run alone, ms
latency.tpot_ms        example   (end-to-end - TTFT) / (generated tokens - 1): ms per output token
latency.e2e_ms         example   end-to-end time of a request run alone, ms
latency.tokens_per_s   run       answer tokens / wall time of one batched ``generate`` over the
                                 sample (the suite's batch_size, or what the candidate batches)
memory.peak_mb         run       peak memory during that batched run: CUDA peak allocated, or the
                                 process's peak RSS on CPU (reset first via /proc/self/clear_refs)
=====================  ========  ==================================================================

The sample is ``sample`` examples chosen by a hash of their ids, so every candidate of a suite
times the same examples and per-example gates pair them by id; the first ``warmup`` of them run
once untimed first. Examples outside the sample have no value (reason given). The per-example
columns also report p50/p95 in ``Aggregate.extra``. One measurement of the single requests
feeds the three per-request columns; the batched run happens only when ``latency.tokens_per_s``
or ``memory.peak_mb`` is listed, after the single requests.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

from evalkit.candidates.base import (
    Candidate,
    GenerationRequest,
    LatencyProbe,
    LatencySample,
    LocalModel,
    OnDevice,
    ProbeAware,
)
from evalkit.metrics.base import RunFigures, RunValue, Sample, Score, Scored, register
from evalkit.spec import GenerationSpec

NOT_SAMPLED = "not in the latency sample"


@dataclass(frozen=True)
class LatencySettings:
    sample: int = 16
    warmup: int = 2
    interleave: bool = True
    """Regression gates against compare_to time both candidates interleaved (A, B, A per
    example) and gate on the paired difference (``evalkit.run.latency_pairing``)."""
    budget_s: float = 60.0
    """Seconds one interleaved comparison may take (one round always runs)."""
    precision: float = 0.05
    """Stop repeating once the paired CI's half-width is within this share of the baseline."""

    def __post_init__(self) -> None:
        if isinstance(self.sample, bool) or not isinstance(self.sample, int) or self.sample < 1:
            raise ValueError(f"sample must be a whole number >= 1, got {self.sample!r}")
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or self.warmup < 0:
            raise ValueError(f"warmup must be a whole number >= 0, got {self.warmup!r}")
        if not isinstance(self.interleave, bool):
            raise ValueError(f"interleave must be true or false, got {self.interleave!r}")
        for name in ("budget_s", "precision"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"{name} must be a number > 0, got {value!r}")

    def signature(self) -> str:
        return f"single requests|sample:{self.sample} by id hash|warmup:{self.warmup}"


@dataclass(frozen=True)
class Measurement:
    """One candidate's latency sample: single requests, timed one at a time."""

    samples: dict[str, LatencySample]
    error: str | None = None
    """Set when nothing could be timed (e.g. replayed outputs)."""
    other_cores: float | None = None
    """Cores other processes kept busy while the single requests were timed."""


@dataclass(frozen=True)
class RunMeasurement:
    """The run-level figures: one batched generate over the sample, and the memory peak."""

    throughput: RunValue
    memory: RunValue


# One measurement per live candidate object and settings: the columns share it, and it
# disappears with the candidate (the engine builds a new one per run). The batched run is
# measured only when a run-level column asks for it (a suite gating TTFT alone skips it).
_MEASURED: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], Measurement]] = (
    weakref.WeakKeyDictionary()
)
_MEASURED_RUN: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], RunMeasurement]] = (
    weakref.WeakKeyDictionary()
)


def _key(
    samples: Sequence[Sample], params: GenerationSpec, settings: LatencySettings
) -> tuple[Any, ...]:
    return (settings, params.model_dump_json(), tuple(sorted(s.id for s in samples)))


def _requests(samples: Sequence[Sample]) -> list[GenerationRequest]:
    return [GenerationRequest(id=s.id, messages=s.messages) for s in samples]


def measure(
    candidate: Candidate,
    samples: Sequence[Sample],
    params: GenerationSpec,
    settings: LatencySettings,
) -> Measurement:
    return _memo(
        _MEASURED,
        candidate,
        _key(samples, params, settings),
        lambda: _measure(candidate, _requests(samples), params, settings),
    )


def measure_run(
    candidate: Candidate,
    samples: Sequence[Sample],
    params: GenerationSpec,
    settings: LatencySettings,
) -> RunMeasurement:
    """Throughput and memory, after the single requests (which warm the model up)."""

    def run() -> RunMeasurement:
        from evalkit.candidates.timing import timing_sample

        singles = measure(candidate, samples, params, settings)
        if singles.error is not None:
            missing = RunValue(None, detail={"error": singles.error})
            return RunMeasurement(missing, missing)
        chosen = timing_sample(_requests(samples), settings.sample)
        return _measure_run(candidate, chosen, params)

    return _memo(_MEASURED_RUN, candidate, _key(samples, params, settings), run)


def _memo(
    table: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], Any]],
    candidate: Candidate,
    key: tuple[Any, ...],
    compute: Callable[[], Any],
) -> Any:
    memo = table.setdefault(candidate, {})
    if key not in memo:
        memo[key] = compute()
    return memo[key]


def _measure(
    candidate: Candidate,
    requests: list[GenerationRequest],
    params: GenerationSpec,
    settings: LatencySettings,
) -> Measurement:
    from evalkit.candidates.contention import CoreWindow
    from evalkit.candidates.timing import timing_sample

    if not isinstance(candidate, LatencyProbe):
        reason = (
            f"candidate '{candidate.name}' has no model to time ({type(candidate).__name__}: "
            "its outputs were made elsewhere)"
        )
        return Measurement({}, error=reason)
    chosen = timing_sample(requests, settings.sample)
    with _probing(candidate):
        cores = CoreWindow().start()
        timed = candidate.measure_latency(chosen, params, warmup=settings.warmup)
        other = cores.read().other_cores
    return Measurement({s.id: s for s in timed}, other_cores=other)


def _measure_run(
    candidate: Candidate, chosen: list[GenerationRequest], params: GenerationSpec
) -> RunMeasurement:
    window = _memory_window(candidate)
    with _probing(candidate):
        if window is not None:
            _load(candidate)  # weights count, loading transients do not
            window.start()
        throughput = _throughput(candidate, chosen, params)
        memory = _memory(window, candidate)
    return RunMeasurement(throughput, memory)


def _probing(candidate: Candidate) -> AbstractContextManager[Any]:
    return candidate.probing() if isinstance(candidate, ProbeAware) else nullcontext()


def _load(candidate: Candidate) -> None:
    if isinstance(candidate, LocalModel):
        candidate.loaded()


def _memory_window(candidate: Candidate) -> Any:
    """Only a candidate running on a device of this process has memory we can measure."""
    from evalkit.candidates.timing import MemoryWindow

    return MemoryWindow(candidate.device) if isinstance(candidate, OnDevice) else None


def _memory(window: Any, candidate: Candidate) -> RunValue:
    if window is None:
        reason = (
            f"candidate '{candidate.name}' does not run on a device of this process "
            f"({type(candidate).__name__} has no 'device'): its memory is not ours to measure"
        )
        return RunValue(None, detail={"error": reason})
    peak = window.read()
    detail: dict[str, Any] = {"kind": peak.kind, "window": "the batched throughput run"}
    if peak.note:
        detail["note"] = peak.note
    return RunValue(peak.peak_mb, extra={"start_mb": peak.start_mb}, detail=detail)


def _throughput(
    candidate: Candidate, requests: list[GenerationRequest], params: GenerationSpec
) -> RunValue:
    from evalkit.candidates.timing import stopwatch

    tokens = errors = 0
    with stopwatch() as elapsed:
        for batch in candidate.generate(requests, params):
            tokens += sum(g.n_output_tokens for g in batch if g.error is None)
            errors += sum(g.error is not None for g in batch)
    seconds = elapsed[0]
    batch_size = (
        candidate.effective_batch_size(params)
        if isinstance(candidate, ProbeAware)
        else params.batch_size
    )
    detail = {"requests": len(requests), "errors": errors, "batch_size": batch_size}
    if errors == len(requests) or seconds <= 0:
        return RunValue(None, detail={**detail, "error": "every request of the run failed"})
    return RunValue(tokens / seconds, extra={"tokens": tokens, "seconds": seconds}, detail=detail)


# -- per-example columns ---------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default ``linear`` method)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


class PerRequestLatency:
    """A per-example latency column; ``part`` picks what it reads from a LatencySample."""

    version = "1"
    higher_is_better = False
    cacheable = False

    def __init__(self, name: str, part: str, settings: LatencySettings) -> None:
        self.name = name
        self.part = part
        self.settings = settings

    def signature(self) -> str:
        return f"{self.part}|ms|{self.settings.signature()}"

    def score_candidate(
        self, samples: Sequence[Sample], candidate: Candidate, params: GenerationSpec
    ) -> list[Score]:
        measured = measure(candidate, samples, params, self.settings)
        if measured.error is not None:
            return [Score(None, {"error": measured.error}) for _ in samples]
        scores = [self.value_of(measured.samples.get(s.id)) for s in samples]
        if measured.other_cores is None:
            return scores
        # Said beside the figures: were the cores shared while they were timed?
        shared = round(measured.other_cores, 3)
        return [Score(s.value, {**s.detail, "other_cores": shared}) for s in scores]

    def value_of(self, timed: LatencySample | None) -> Score:
        """This column's value of one timed request (also for interleaved pairs)."""
        if timed is None:
            return Score(None, {"error": NOT_SAMPLED})
        if timed.error is not None:
            return Score(None, {"error": timed.error})
        detail = {"output_tokens": timed.n_output_tokens}
        if self.part == "e2e":
            return Score(timed.total_s * 1000, detail)
        if timed.ttft_s is None:
            return Score(None, {**detail, "error": "no token was generated"})
        if self.part == "ttft":
            return Score(timed.ttft_s * 1000, detail)
        if timed.n_output_tokens < 2:
            return Score(None, {**detail, "error": "one output token: no time per output token"})
        per_token = (timed.total_s - timed.ttft_s) / (timed.n_output_tokens - 1)
        return Score(per_token * 1000, detail)

    def summarize(self, scored: Sequence[Scored]) -> RunFigures:
        """p50 and p95 of the measured values beside the mean (None when nothing was timed)."""
        values = [s.value for s in scored if s.value is not None]
        shared = next((s.detail["other_cores"] for s in scored if "other_cores" in s.detail), None)
        extra = {"other_cores_busy": shared} if shared is not None else {}
        if not values:
            return RunFigures(extra={"p50": None, "p95": None, **extra})
        return RunFigures(
            extra={"p50": percentile(values, 50), "p95": percentile(values, 95), **extra}
        )


class _Throughput:
    name = "latency.tokens_per_s"
    version = "1"
    higher_is_better = True

    def __init__(self, settings: LatencySettings) -> None:
        self.settings = settings

    def signature(self) -> str:
        return (
            "answer tokens/s of one batched generate over the sample|"
            f"sample:{self.settings.sample} by id hash"
        )

    def score_run(
        self, samples: Sequence[Sample], candidate: Candidate, params: GenerationSpec
    ) -> RunValue:
        return measure_run(candidate, samples, params, self.settings).throughput


class _PeakMemory:
    name = "memory.peak_mb"
    version = "1"
    higher_is_better = False

    def __init__(self, settings: LatencySettings) -> None:
        self.settings = settings

    def signature(self) -> str:
        return (
            "MiB|cuda peak allocated or process peak RSS|during the batched throughput run|"
            f"sample:{self.settings.sample} by id hash"
        )

    def score_run(
        self, samples: Sequence[Sample], candidate: Candidate, params: GenerationSpec
    ) -> RunValue:
        return measure_run(candidate, samples, params, self.settings).memory


PER_REQUEST = {"latency.ttft_ms": "ttft", "latency.tpot_ms": "tpot", "latency.e2e_ms": "e2e"}


def latency_columns(sample: int = 16, warmup: int = 2, **pairing: Any) -> dict[str, Any]:
    """The ``latency`` group: all five columns, sharing one measurement. ``pairing``:
    ``interleave``, ``budget_s``, ``precision`` of interleaved comparisons."""
    settings = LatencySettings(sample=sample, warmup=warmup, **pairing)
    columns: dict[str, Any] = {
        name: PerRequestLatency(name, part, settings) for name, part in PER_REQUEST.items()
    }
    columns["latency.tokens_per_s"] = _Throughput(settings)
    columns["memory.peak_mb"] = _PeakMemory(settings)
    return columns


def _single(name: str) -> Any:
    def factory(sample: int = 16, warmup: int = 2, **pairing: Any) -> Any:
        return latency_columns(sample, warmup, **pairing)[name]

    return factory


for _name in (*PER_REQUEST, "latency.tokens_per_s", "memory.peak_mb"):
    register(_name, _single(_name))
register("latency", latency_columns, group=True)
