"""Speculative decoding for HF candidates: transformers' assisted generation.

``speculative: {draft: MODEL, num_assistant_tokens: N}`` proposes tokens with a small draft model;
``speculative: {prompt_lookup: N}`` copies up to N tokens that followed the last n-gram in the
prompt. The target model verifies every proposal, so greedy output is the target's own.

What transformers 5.23 requires (``generation/utils.py``, ``_assisted_decoding``):

- batch size 1 only: a speculative candidate runs its requests one at a time;
- a dynamic cache and ``num_return_sequences`` 1 (our defaults);
- a draft with another tokenizer needs ``tokenizer`` and ``assistant_tokenizer`` (universal
  assisted decoding). transformers decides "another tokenizer" by comparing the configs'
  vocabulary sizes, so a draft whose vocabulary differs but has the same size cannot work.

Acceptance is counted on the candidate generator that ``_get_candidate_generator`` builds for
each ``generate`` call: ``get_candidates`` shows how many tokens were proposed and
``update_candidate_strategy`` receives ``num_matches``, the number the target accepted (after
transformers cuts at EOS and max length). The wrapper is an attribute of this candidate's own
target model instance, not a patch of a class or module, so nothing leaks to other candidates.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from evalkit.candidates.base import (
    EquivalenceTarget,
    Generation,
    GenerationRequest,
    lossless_target,
)
from evalkit.errors import CandidateError
from evalkit.spec import CandidateSpec, GenerationSpec, SpeculativeSpec


class TargetModel(Protocol):
    """What speculation needs of the candidate it belongs to (HFCandidate has it); typed here so
    that this module does not import hf.py, which imports it."""

    name: str
    spec: CandidateSpec
    base_dir: Path

    def fingerprint(self) -> dict[str, Any]: ...

    def loaded(self) -> tuple[Any, Any]: ...

    def describe(self) -> dict[str, Any]: ...

    def close(self) -> None: ...

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        params: GenerationSpec,
        *,
        assisted: bool = True,
    ) -> Iterator[list[Generation]]: ...

    def generate_single(
        self,
        request: GenerationRequest,
        params: GenerationSpec,
        *,
        assisted: bool = True,
        streamer: Any = None,
    ) -> Generation: ...


MakeDraft = Callable[[str, CandidateSpec], TargetModel]
"""``make_draft(name, spec)``: the draft as a candidate of the owner's own kind."""

BATCH_NOTE = (
    "requests run one at a time: transformers' assisted generation supports batch size 1 only"
)


@dataclass
class AcceptanceStats:
    """Draft tokens proposed and accepted over some ``generate`` calls."""

    requests: int = 0
    steps: int = 0
    proposed: int = 0
    accepted: int = 0

    @property
    def acceptance_rate(self) -> float | None:
        return self.accepted / self.proposed if self.proposed else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "steps": self.steps,
            "proposed": self.proposed,
            "accepted": self.accepted,
            "acceptance_rate": self.acceptance_rate,
        }


@dataclass(frozen=True)
class Speedup:
    """Plain and speculative decoding timed on the same requests, alternating."""

    requests: int
    plain_s: float
    speculative_s: float
    plain_tokens: int
    speculative_tokens: int

    @property
    def speedup(self) -> float:
        return self.plain_s / self.speculative_s if self.speculative_s > 0 else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {
            "speedup": self.speedup,
            "timed_requests": self.requests,
            "plain_s": self.plain_s,
            "speculative_s": self.speculative_s,
            "plain_tokens": self.plain_tokens,
            "speculative_tokens": self.speculative_tokens,
        }


class Speculation:
    """The speculative part of one HFCandidate: its draft, its generate arguments, its counts."""

    def __init__(self, owner: TargetModel, make_draft: MakeDraft) -> None:
        assert owner.spec.speculative is not None
        self.owner = owner
        self.spec: SpeculativeSpec = owner.spec.speculative
        self._make_draft = make_draft
        self._draft: TargetModel | None = None
        self._assist: dict[str, Any] | None = None
        self._same_tokenizer: bool | None = None
        self._num_assistant_tokens: int | None = None
        self.generated = AcceptanceStats()
        """This run's generation of uncached requests."""
        self.timed = AcceptanceStats()
        """The speculative half of the speed-up timing."""
        self.probed = AcceptanceStats()
        """Latency probes (``measure_latency`` and the throughput run)."""
        self._bucket = self.generated
        self._speedup: Speedup | None = None

    @property
    def method(self) -> str:
        return "draft" if self.spec.draft is not None else "prompt_lookup"

    # -- identity -------------------------------------------------------------------------

    @property
    def draft(self) -> TargetModel:
        """The draft as a candidate of its own: resolved like any model (alias, folder relative
        to the suite file, hub id), on the target's device and dtype."""
        if self._draft is None:
            owner = self.owner
            spec = CandidateSpec(
                model=self.spec.draft, device=owner.spec.device, dtype=owner.spec.dtype
            )
            self._draft = self._make_draft(f"{owner.name} (draft)", spec)
        return self._draft

    def fingerprint(self) -> dict[str, Any]:
        """The settings that can change an answer. Greedy answers should not change at all, but
        multi-token verification rounds differently from one-token steps, so they count."""
        if self.method == "prompt_lookup":
            return {"method": "prompt_lookup", "prompt_lookup": self.spec.prompt_lookup}
        draft = self.draft.fingerprint()
        return {
            "method": "draft",
            "draft": self.spec.draft,
            "draft_files": draft["files"],
            "num_assistant_tokens": self.spec.num_assistant_tokens,
        }

    # -- loading ----------------------------------------------------------------------------

    def attach(self, model: Any, tokenizer: Any) -> None:
        """Called once the target is loaded: load the draft and count acceptance on ``model``."""
        if self.method == "prompt_lookup":
            self._assist = {"prompt_lookup_num_tokens": self.spec.prompt_lookup}
        else:
            self._assist = self._draft_kwargs(model, tokenizer)
        original = model._get_candidate_generator

        def counted_candidate_generator(*args: Any, **kwargs: Any) -> Any:
            return self._count(original(*args, **kwargs))

        model._get_candidate_generator = counted_candidate_generator

    def _draft_kwargs(self, model: Any, tokenizer: Any) -> dict[str, Any]:
        draft_model, draft_tokenizer = self.draft.loaded()
        config = draft_model.generation_config
        if self.spec.num_assistant_tokens is not None:
            config.num_assistant_tokens = self.spec.num_assistant_tokens
        # "heuristic" carries the proposal length over from one call to the next, so a request's
        # output timing would depend on the requests before it; "constant" keeps them apart.
        config.num_assistant_tokens_schedule = "constant"
        self._num_assistant_tokens = int(config.num_assistant_tokens or 20)
        kwargs: dict[str, Any] = {"assistant_model": draft_model}
        target_size = model.config.get_text_config().vocab_size
        draft_size = draft_model.config.get_text_config().vocab_size
        if target_size != draft_size:
            kwargs.update(tokenizer=tokenizer, assistant_tokenizer=draft_tokenizer)
            self._same_tokenizer = False
        elif tokenizer.get_vocab() != draft_tokenizer.get_vocab():
            raise CandidateError(
                f"candidate '{self.owner.name}': the draft '{self.spec.draft}' has another "
                f"vocabulary of the same size ({target_size}) as the target; transformers can "
                "only run a draft with another tokenizer when the vocabulary sizes differ. Use a "
                "draft with the target's tokenizer"
            )
        else:
            self._same_tokenizer = True
        return kwargs

    def _count(self, generator: Any) -> Any:
        """Wrap one call's candidate generator (its own instance attributes only)."""
        get_candidates = generator.get_candidates
        update_strategy = generator.update_candidate_strategy
        proposed = [0]

        def counted_get_candidates(input_ids: Any, **kwargs: Any) -> Any:
            candidate_ids, logits = get_candidates(input_ids, **kwargs)
            proposed[0] = int(candidate_ids.shape[-1] - input_ids.shape[-1])
            return candidate_ids, logits

        def counted_update(input_ids: Any, scores: Any, num_matches: Any) -> Any:
            bucket = self._bucket
            bucket.steps += 1
            bucket.proposed += proposed[0]
            bucket.accepted += int(num_matches)
            return update_strategy(input_ids, scores, num_matches)

        generator.get_candidates = counted_get_candidates
        generator.update_candidate_strategy = counted_update
        return generator

    def close(self) -> None:
        if self._draft is not None:
            self._draft.close()
        self._assist = None

    # -- generation -------------------------------------------------------------------------

    def generate(self, model: Any, **kwargs: Any) -> Any:
        """``model.generate`` with assistance; the caller passes one request (batch size 1)."""
        if self._assist is None:
            raise CandidateError(f"candidate '{self.owner.name}': speculation is not attached")
        output = model.generate(**kwargs, **self._assist)
        self._bucket.requests += 1
        return output

    @contextlib.contextmanager
    def counting(self, bucket: AcceptanceStats) -> Iterator[None]:
        """Count the speculative calls inside the block into ``bucket``."""
        previous, self._bucket = self._bucket, bucket
        try:
            yield
        finally:
            self._bucket = previous

    def plain_target(self) -> PlainTarget:
        """The same loaded target without speculation (for the lossless check)."""
        return PlainTarget(self.owner)

    def equivalence_target(self, params: GenerationSpec) -> EquivalenceTarget:
        """Greedy outputs must equal the plain target's. Its fingerprint is the owner's without
        ``speculative``, i.e. exactly a plain candidate's with the same model, so a ``base``
        candidate that already ran answers them from the cache."""
        return lossless_target(self.plain_target(), params)

    def after_generation(
        self, requests: Sequence[GenerationRequest], params: GenerationSpec
    ) -> None:
        """The speed-up timing, once per run (``speedup_sample`` requests; 0 turns it off)."""
        if self.spec.speedup_sample:
            self.measure_speedup(requests, params)

    # -- speed-up ---------------------------------------------------------------------------

    def measure_speedup(
        self,
        requests: Sequence[GenerationRequest],
        params: GenerationSpec,
        n: int | None = None,
    ) -> None:
        """Time the same ``n`` (default ``speedup_sample``) requests with and without
        speculation, one request at a time, alternating the order (plain first, then
        speculative first) so that drift in machine load hits both alike; one untimed warm-up
        of each comes first."""
        from evalkit.candidates.timing import timing_sample

        sample = timing_sample(requests, self.spec.speedup_sample if n is None else n)
        if not sample:
            return
        owner = self.owner
        with self.counting(AcceptanceStats()):  # the warm-up is not counted
            owner.generate_single(sample[0], params, assisted=False)
            owner.generate_single(sample[0], params, assisted=True)
        seconds = {False: 0.0, True: 0.0}
        tokens = {False: 0, True: 0}
        with self.counting(self.timed):
            for index, request in enumerate(sample):
                for assisted in (False, True) if index % 2 == 0 else (True, False):
                    start = time.perf_counter()
                    generation = owner.generate_single(request, params, assisted=assisted)
                    seconds[assisted] += time.perf_counter() - start
                    tokens[assisted] += generation.n_output_tokens
        self._speedup = Speedup(
            requests=len(sample),
            plain_s=seconds[False],
            speculative_s=seconds[True],
            plain_tokens=tokens[False],
            speculative_tokens=tokens[True],
        )

    # -- run record ---------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """Settings, acceptance and speed-up. The headline acceptance is over the timed sample
        (the same requests every run) when it was measured, else over this run's generation."""
        facts: dict[str, Any] = {"method": self.method, "batch_size": 1, "note": BATCH_NOTE}
        if self.method == "prompt_lookup":
            facts["prompt_lookup"] = self.spec.prompt_lookup
        else:
            draft = self.draft.describe()
            facts.update(
                draft=self.spec.draft,
                draft_source=draft["source"],
                draft_parameters=draft["n_parameters"],
                num_assistant_tokens=self._num_assistant_tokens or self.spec.num_assistant_tokens,
                same_tokenizer=self._same_tokenizer,
            )
        headline = self.timed if self.timed.requests else self.generated
        facts.update(
            acceptance_rate=headline.acceptance_rate,
            proposed=headline.proposed,
            accepted=headline.accepted,
            acceptance_over="speed-up sample" if self.timed.requests else "generated requests",
        )
        if self._speedup is not None:
            facts.update(self._speedup.as_dict())
        else:
            facts["speedup"] = None
            if self.spec.speedup_sample == 0:
                facts["speedup_note"] = "not measured (speedup_sample: 0)"
        if self.generated.requests:
            facts["generation"] = self.generated.as_dict()
        if self.probed.requests:
            facts["latency_probe"] = self.probed.as_dict()
        return facts


class PlainTarget:
    """A speculative candidate's target model without speculation, sharing its loaded weights.

    Its fingerprint is the owner's without ``speculative``, so a plain candidate with the same
    model and settings shares its cached generations."""

    def __init__(self, owner: TargetModel) -> None:
        self.owner = owner
        self.name = f"{owner.name} (without speculation)"

    def fingerprint(self) -> dict[str, Any]:
        return plain_fingerprint(self.owner.fingerprint())

    def generate(
        self, requests: Sequence[GenerationRequest], params: GenerationSpec
    ) -> Iterator[list[Generation]]:
        return self.owner.generate(requests, params, assisted=False)

    def describe(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        """The owner holds the model and frees it."""


def plain_fingerprint(fingerprint: dict[str, Any]) -> dict[str, Any]:
    """The fingerprint of the same target without speculation."""
    return {key: value for key, value in fingerprint.items() if key != "speculative"}
