"""The candidate contract: something that turns chat messages into outputs.

The engine asks a candidate for its ``fingerprint`` first; that must be cheap (hash files, never
load weights) because a fully cached run must not load any model. ``generate`` is called only
for cache misses and yields finished batches, so the engine can store each batch as it lands and
a crash mid-run loses at most one batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from evalkit.spec import GenerationSpec


@dataclass(frozen=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True)
class GenerationRequest:
    id: str
    messages: tuple[Message, ...]


@dataclass(frozen=True)
class Generation:
    id: str
    output: str
    prompt: str = ""
    """Exactly the text the model saw (after the chat template), for reports."""
    n_prompt_tokens: int = 0
    n_output_tokens: int = 0
    seconds: float = 0.0
    """Wall time of the batch this request ran in, divided by the batch size."""
    error: str | None = None
    cost: float | None = None
    """USD the request cost (API candidates, from litellm's price map); None when unknown."""


class Candidate(Protocol):
    name: str

    def fingerprint(self) -> dict[str, Any]:
        """Identity of everything that changes an answer (weights hash, tokenizer, dtype, device).
        Must not load the model."""
        ...

    def generate(
        self, requests: Sequence[GenerationRequest], params: GenerationSpec
    ) -> Iterator[list[Generation]]:
        """Yield generations batch by batch, each request exactly once, in any order."""
        ...

    def describe(self) -> dict[str, Any]:
        """Facts for the run record after generation (device used, dtype, load seconds, ...)."""
        ...

    def close(self) -> None:
        """Free the model."""
        ...


@dataclass(frozen=True)
class LatencySample:
    """One request timed on its own (no batching): what TTFT/TPOT metrics are computed from."""

    id: str
    ttft_s: float | None
    """Time to the first generated token (None when the backend cannot stream)."""
    total_s: float
    n_output_tokens: int
    error: str | None = None


@runtime_checkable
class LatencyProbe(Protocol):
    """A candidate that can time single requests (HF models; API models that stream)."""

    def measure_latency(
        self, requests: Sequence[GenerationRequest], params: GenerationSpec, *, warmup: int
    ) -> list[LatencySample]:
        """Run ``warmup`` untimed requests first, then time each request alone, in order."""
        ...


@runtime_checkable
class PromptLogprobs(Protocol):
    """A candidate that scores given token ids without its weights in this process (a vLLM
    server's prompt log-probs): what perplexity metrics need besides a ``LocalModel``."""

    name: str

    def tokenizer(self) -> Any:
        """The model's tokenizer, loaded here."""
        ...

    def render(self, request: GenerationRequest) -> tuple[str, list[int]]:
        """The exact prompt text and token ids generation feeds the model."""
        ...

    def max_length(self) -> int:
        """The longest model input one scored sequence may have (its tokens minus one)."""
        ...

    def prompt_logprobs(self, sequences: Sequence[Sequence[int]]) -> list[list[float | None]]:
        """Per sequence and position, log p(token | the tokens before it); None first."""
        ...
