"""Speculative decoding on vLLM: the plain target a speculative candidate is checked against,
and the speed-up timing.

Speculation is a server setting, so the plain target is the same candidate without
``speculative``: another server of the run's pool. Its fingerprint is a plain ``engine: vllm``
candidate's with the same model, so such a candidate of the suite has answered it already (the
generation cache) and the equivalence check (``run/equivalence.py``) generates nothing new.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from evalkit.candidates import vllm_options as opts
from evalkit.candidates.base import (
    Candidate,
    EquivalenceTarget,
    GenerationRequest,
    LatencySample,
    lossless_target,
)
from evalkit.spec import CandidateSpec, GenerationSpec


class ServedModel(Candidate, Protocol):
    """What speculation needs of the vLLM candidate it belongs to; typed here so that this
    module does not import vllm.py, which imports it."""

    spec: CandidateSpec
    base_dir: Path

    @property
    def who(self) -> str: ...

    def measure_latency(
        self, requests: Sequence[GenerationRequest], params: GenerationSpec, *, warmup: int
    ) -> list[LatencySample]: ...

    def without_speculation(self) -> ServedModel:
        """The same candidate without ``speculative``, on the same pool."""
        ...


class VllmSpeculation:
    """The equivalence check's view of a speculative vLLM candidate: the plain target is the
    same candidate without ``speculative`` on its own server, sharing the run's pool and cache."""

    def __init__(self, owner: ServedModel) -> None:
        assert owner.spec.speculative is not None
        self.owner = owner
        self.spec = owner.spec.speculative
        self._plain: ServedModel | None = None
        self._speedup: dict[str, Any] | None = None

    def plain_target(self) -> ServedModel:
        if self._plain is None:
            self._plain = self.owner.without_speculation()
        return self._plain

    def equivalence_target(self, params: GenerationSpec) -> EquivalenceTarget:
        """Greedy outputs must equal the plain server's. The target's fingerprint is a plain
        ``engine: vllm`` candidate's with the same model, so one in the suite answers from the
        cache."""
        return lossless_target(self.plain_target(), params)

    def measure_speedup(
        self, requests: Sequence[GenerationRequest], params: GenerationSpec
    ) -> None:
        """The same requests one at a time on both servers, alternating which goes first."""
        from evalkit.candidates.timing import timing_sample

        sample = timing_sample(requests, self.spec.speedup_sample)
        if not sample:
            return
        plain, fast = self.plain_target(), self.owner
        for candidate in (plain, fast):  # untimed: the first request of a server is slower
            candidate.measure_latency(sample[:1], params, warmup=0)
        seconds = {"plain": 0.0, "speculative": 0.0}
        for index, request in enumerate(sample):
            pair = [("plain", plain), ("speculative", fast)]
            for key, candidate in pair if index % 2 == 0 else pair[::-1]:
                start = time.perf_counter()
                candidate.measure_latency([request], params, warmup=0)
                seconds[key] += time.perf_counter() - start
        self._speedup = {
            "speedup": seconds["plain"] / seconds["speculative"]
            if seconds["speculative"]
            else None,
            "timed_requests": len(sample),
            "plain_s": seconds["plain"],
            "speculative_s": seconds["speculative"],
        }

    def describe(self) -> dict[str, Any]:
        config, _ = opts.speculative_config(self.owner.spec, self.owner.base_dir, self.owner.who)
        return {"method": "vllm", "config": json.loads(config or "{}"), **(self._speedup or {})}
