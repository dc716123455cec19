"""The candidate contract: something that turns chat messages into outputs.

The engine asks a candidate for its ``fingerprint`` first; that must be cheap (hash files, never
load weights) because a fully cached run must not load any model. ``generate`` is called only
for cache misses and yields finished batches, so the engine can store each batch as it lands and
a crash mid-run loses at most one batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from evalkit.spec import GenerationSpec


@dataclass(frozen=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True)
class RetrievedChunk:
    """A corpus chunk retrieved for a request (RAG candidates), best first."""

    id: str
    """``<document id>#<index>``, e.g. ``policies/leave.md#2``."""
    doc_id: str
    score: float
    text: str


@dataclass(frozen=True)
class GenerationRequest:
    id: str
    messages: tuple[Message, ...]
    retrieved: tuple[RetrievedChunk, ...] = ()
    """The chunks rendered into the messages; the generation cache key reads the messages."""
    fields: Mapping[str, Any] = field(default_factory=dict, compare=False)
    """The example's fields, for candidates that answer from them instead of the messages
    (``AnswersFromFields``)."""


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
    context: tuple[RetrievedChunk, ...] = ()
    """Text the candidate retrieved itself (a user's RAG pipeline), for context metrics."""


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


# -- capabilities ------------------------------------------------------------------------------
# Metrics, gates and the run pipeline ask ``isinstance(candidate, <capability>)``, never for a
# concrete class, so a new backend gets a metric by implementing what the metric needs.


@runtime_checkable
class AnswersFromFields(Protocol):
    """A candidate that answers from the example's fields (``GenerationRequest.fields``), not
    from the rendered messages or the decoding settings (the user's own pipeline): its cached
    answers are keyed by its fingerprint and the fields alone."""

    def answers_from_fields(self) -> bool:
        """True (a method, so that ``isinstance`` can check for it)."""
        ...


@runtime_checkable
class LocalModel(Protocol):
    """A candidate whose weights are in this process: forward passes and logits (perplexity,
    local judges) need the loaded model and the exact prompt tokens ``generate`` would use."""

    name: str

    def loaded(self) -> tuple[Any, Any]:
        """``(model, tokenizer)``, loading them on first use."""
        ...

    def render(self, request: GenerationRequest) -> tuple[str, list[int]]:
        """The prompt text and token ids ``generate`` would feed the model."""
        ...


@runtime_checkable
class PromptLogprobs(Protocol):
    """A candidate that scores given token ids without its weights in this process (a vLLM
    server's prompt log-probs): the other way perplexity metrics get log-probabilities."""

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


@runtime_checkable
class OnDevice(Protocol):
    """A candidate that runs on a device of this process, whose memory is therefore ours to
    measure (``device`` is a ``torch.device``)."""

    @property
    def device(self) -> Any: ...


@runtime_checkable
class ProbeAware(Protocol):
    """A candidate that keeps measurement runs (latency, throughput) apart from its generation,
    e.g. so that run facts in ``describe()`` count only the generation, and that may batch
    differently than ``params.batch_size`` asks."""

    def probing(self) -> AbstractContextManager[None]:
        """Calls inside this block are measurement probes."""
        ...

    def effective_batch_size(self, params: GenerationSpec) -> int:
        """How many requests ``generate`` really runs together under ``params``."""
        ...


@runtime_checkable
class ChatCompleter(Protocol):
    """A candidate that answers chat requests remotely and can return token log-probabilities
    or JSON replies (API judges read through this)."""

    name: str

    def complete_many(
        self,
        requests: Sequence[GenerationRequest],
        params: GenerationSpec,
        *,
        top_logprobs: int | None = None,
        json_schema: dict[str, Any] | None = None,
    ) -> list[Any]: ...


@dataclass(frozen=True)
class EquivalenceTarget:
    """What a candidate's outputs must equal, example by example: another candidate's.

    ``candidate`` generates the reference outputs (it may share the owner's loaded weights);
    ``fingerprint`` is its cache identity, so a candidate of the suite with the same identity
    has already answered them. ``skipped`` says why no comparison is possible (e.g. sampling)."""

    label: str
    fingerprint: dict[str, Any]
    candidate: Candidate | None = None
    max_mismatch: int = 0
    skipped: str | None = None
    headline: str = "{n} outputs differ from {target}"
    """The failure headline; ``{n}``: mismatches, ``{target}``: ``label``."""
    output_name: str = "output"
    target_name: str = "target"
    """How the two outputs of a mismatch are labelled in the gate's message."""
    params: GenerationSpec | None = None
    """The settings the target generates under (another candidate of the suite: its own);
    None: the owner's."""
    logprob_tolerance: float | None = None
    """A mismatch whose first differing token is a near-tie of the target model (log-prob gap
    within this) is reported but not counted; needs a ``LocalModel`` target."""


def lossless_target(target: Candidate, params: GenerationSpec) -> EquivalenceTarget:
    """Speculative decoding's check, on either engine: greedy outputs must equal ``target``'s
    (the same model without speculation, whose fingerprint is a plain candidate's, so a plain
    candidate of the suite has already answered them); under sampling there is nothing to
    compare one by one."""
    skipped = (
        None
        if params.greedy
        else "sampling: speculative sampling keeps the target's distribution, not its "
        "individual samples, so outputs cannot be compared one by one; the check runs "
        "under greedy decoding (temperature: 0)"
    )
    return EquivalenceTarget(
        label="the target without speculation",
        fingerprint=target.fingerprint(),
        candidate=target,
        skipped=skipped,
        headline="speculative decoding changed {n} greedy outputs (it must only change speed)",
        output_name="speculative",
        target_name="plain",
    )


@runtime_checkable
class Verifiable(Protocol):
    """A candidate whose outputs must equal another candidate's (e.g. an optimisation that may
    change only speed)."""

    def equivalence_target(self, params: GenerationSpec) -> EquivalenceTarget | None:
        """The reference to compare with under ``params``; None when nothing is to be checked."""
        ...


@runtime_checkable
class RunObserver(Protocol):
    """A candidate that measures run facts for ``describe()`` once the run's outputs exist
    (cached or not) and while it is still open, e.g. a speed-up over the same requests."""

    def after_generation(
        self, requests: Sequence[GenerationRequest], params: GenerationSpec
    ) -> None: ...


@runtime_checkable
class ContinuationLogprobs(Protocol):
    """A candidate that scores a given continuation of a request without generating it: for
    each of its tokens, the top-k next-token log-probs at that position (an OpenAI-compatible
    server's prompt log-probs). Fidelity metrics use it when the weights are elsewhere.

    The continuation follows the chat-templated prompt as teacher forcing places it
    (``candidates.continuation``: ``answer_separator``, then ``answer_tokens``), and tokens are
    named by id (``token_id:N``) or by text as ``continuation.named_top_k`` names them, so that
    a local model's positions and alternatives line up with these."""

    def continuation_top_logprobs(
        self,
        requests: Sequence[GenerationRequest],
        continuations: Sequence[str],
        top_k: int,
        *,
        separator: str | None = None,
    ) -> list[list[dict[str, float]] | str]:
        """Per request, one ``{token: log-prob}`` of the ``top_k`` most likely tokens for each
        continuation token, or a string saying why there is none."""
        ...
