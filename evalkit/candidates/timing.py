"""Timing and memory measurement of local candidates: single requests, samples, peak memory.

Time to first token comes from a transformers streamer: ``generate`` hands it the prompt first,
then each new token (several at once under speculative decoding) as soon as it exists on the
host, so the second ``put`` marks the first generated token. On CUDA that ``put`` copies the
token to the CPU, which waits for the GPU: the time is real, not queued work.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import resource
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from evalkit.candidates.base import Generation, GenerationRequest, LatencySample
from evalkit.spec import GenerationSpec


class SingleRequestRunner(Protocol):
    """What timing single requests needs of a local candidate (HFCandidate has it)."""

    def loaded(self) -> tuple[Any, Any]: ...

    def generate_single(
        self, request: GenerationRequest, params: GenerationSpec, *, streamer: Any = None
    ) -> Generation: ...

    def probing(self) -> AbstractContextManager[None]: ...


def timing_sample(requests: Sequence[GenerationRequest], n: int) -> list[GenerationRequest]:
    """``n`` requests chosen by a hash of their ids, in that order.

    The choice depends on the ids alone, so two candidates of a suite (and two runs) time the
    same examples and their values pair up by id; adding an example moves few others out."""
    ordered = sorted(requests, key=lambda r: (hashlib.sha256(r.id.encode()).hexdigest(), r.id))
    return ordered[:n]


def measure_single_requests(
    candidate: SingleRequestRunner,
    requests: Sequence[GenerationRequest],
    params: GenerationSpec,
    *,
    warmup: int,
) -> list[LatencySample]:
    """The ``LatencyProbe`` of HF candidates: ``warmup`` untimed requests (the first ones of
    ``requests``), then each request alone, timed from the call to the first token and to the
    end. ``n_output_tokens`` counts every generated token, the final EOS included (each one
    cost a decoding step)."""
    candidate.loaded()  # loading is not latency
    with candidate.probing():
        for request in list(requests)[:warmup]:
            candidate.generate_single(request, params, streamer=_TokenClock())
        return [_time_one(candidate, request, params) for request in requests]


def _time_one(
    candidate: SingleRequestRunner, request: GenerationRequest, params: GenerationSpec
) -> LatencySample:
    clock = _TokenClock()
    clock.start = time.perf_counter()
    generation = candidate.generate_single(request, params, streamer=clock)
    total = time.perf_counter() - clock.start
    if generation.error is not None:
        return LatencySample(request.id, None, total, 0, error=generation.error)
    ttft = clock.first_token - clock.start if clock.first_token is not None else None
    return LatencySample(request.id, ttft, total, clock.tokens)


class _TokenClock:
    """A duck-typed transformers streamer (``put``/``end``): when the first new token came and
    how many came. The first ``put`` is the prompt."""

    def __init__(self) -> None:
        self.start = 0.0
        self.first_token: float | None = None
        self.tokens = 0
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        if self.first_token is None:
            self.first_token = time.perf_counter()
        self.tokens += int(value.numel())

    def end(self) -> None:
        pass


# -- peak memory -------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryPeak:
    """Peak memory over a window; ``kind`` says what was measured."""

    peak_mb: float
    start_mb: float
    kind: str
    note: str = ""


class MemoryWindow:
    """Peak memory from ``start()`` to ``read()``.

    CUDA: ``torch.cuda`` peak allocated bytes on the device (weights, cache, activations).
    CPU (Linux): the process's peak resident set; writing "5" to ``/proc/self/clear_refs``
    resets the kernel's high-water mark (VmHWM) to the current RSS, so the peak belongs to this
    window. Elsewhere ``ru_maxrss`` is the peak since the process started (said in ``note``).
    """

    def __init__(self, device: Any) -> None:
        self.device = device
        self._start_mb = 0.0
        self._reset = False

    def start(self) -> None:
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start_mb = torch.cuda.memory_allocated(self.device) / 2**20
            return
        self._reset = reset_peak_rss()
        self._start_mb = proc_status_mb("VmRSS") or 0.0

    def read(self) -> MemoryPeak:
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device) / 2**20
            return MemoryPeak(peak, self._start_mb, "cuda_peak_allocated")
        hwm = proc_status_mb("VmHWM") if self._reset else None
        if hwm is not None:
            return MemoryPeak(hwm, self._start_mb, "process_peak_rss")
        maxrss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return MemoryPeak(
            maxrss_mb,
            self._start_mb,
            "process_peak_rss",
            note="peak since the process started (/proc/self/clear_refs is not available)",
        )


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark of this process (Linux); False if impossible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def proc_status_mb(field: str) -> float | None:
    """A ``kB`` field of ``/proc/self/status`` in MiB (None where there is no procfs)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{field}:\s+(\d+)\s+kB", status, re.MULTILINE)
    return int(match.group(1)) / 1024 if match else None


@contextlib.contextmanager
def stopwatch() -> Iterator[list[float]]:
    """``with stopwatch() as elapsed:`` ... ``elapsed[0]`` is the wall time of the block."""
    elapsed = [0.0]
    start = time.perf_counter()
    try:
        yield elapsed
    finally:
        elapsed[0] = time.perf_counter() - start
