"""Fidelity to the base model: ``kl_divergence`` and ``top1_agreement`` against ``compare_to``.

Per example and candidate, teacher-forced on an answer after the chat-templated prompt (as
``reference_perplexity`` scores it, with the same tokenization rules):

- ``kl_divergence``: KL(base || candidate) of the next-token distributions at each answer
  position, averaged over the answer's tokens (nats per token). 0 means the candidate predicts
  exactly what the base does.
- ``top1_agreement``: the share of answer positions where both models' most likely next token
  is the same (llama.cpp's "same top token" rate).

``on: reference`` (default) scores the first reference; ``on: base_output`` scores the base's
own output (greedy under the suite's decoding), for suites without references.

Cost. The base's distributions are computed while the base is scored (it runs first: it is
``compare_to``) in the same forward pass that scores it, and stored in the run's cache under
the base fingerprint, as the top ``top_k`` log-probs plus the log of the remaining mass per
position (``metrics.divergence``, whose docstring states the tail bound: the reported KL is a
lower bound of the exact one, short of it by at most the ``tail_bound`` each example reports).
Every other candidate then needs one forward pass per example; the base model is loaded again
only for examples missing from the cache. Both columns share that pass (and one cache entry
each per example), so listing both costs no more than listing one.

Candidates without local weights (API, servers) need the ``ContinuationLogprobs`` capability
(top-k log-probs of a given continuation, k <= 20); they are compared on top-k only, with
``kl_from_top_logprobs``'s approximation, named in the signature and in each example's detail
(``fidelity_remote``). Without it the value is missing with the reason, never 0.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from evalkit.cache import MemoryStore, make_key
from evalkit.candidates.base import (
    Candidate,
    ContinuationLogprobs,
    LocalModel,
)
from evalkit.metrics.base import (
    BaseRef,
    RunFigures,
    Sample,
    Score,
    Scored,
    ScoreValue,
    Store,
    register,
)
from evalkit.metrics.divergence import Divergence, TopK, compare_full, top_k
from evalkit.metrics.fidelity_remote import API_TOP_K, remote_outcomes
from evalkit.metrics.latency import percentile
from evalkit.metrics.loglikelihood import model_max_length
from evalkit.metrics.options import check_type, checked_factory
from evalkit.metrics.teacher_forcing import (
    Continuation,
    forward_continuations,
    pad_id,
    teacher_forced_row,
)
from evalkit.spec import GenerationSpec

DEFAULT_TOP_K = 256
"""Stored log-probs per position. On the capitals demo the merged tail made SmolLM2's int8 and
nf4 KL 2-4% lower than the full-vocabulary value; the stored entries stay small in the cache."""
TARGETS = ("reference", "base_output")
APPROXIMATION = (
    "local:top{k}+rest(lower bound, tail_bound reported)|api:top{api_k}(approx:topk-floor)"
)
"""How each route compares distributions: local candidates against the stored top ``top_k`` plus
the rest; candidates without local weights top-k against top-k, k = min(top_k, 20)."""

Outcome = Divergence | str
"""An example's comparison, or why there is none."""

_SHARED: weakref.WeakKeyDictionary[Any, dict[str, Outcome]] = weakref.WeakKeyDictionary()
"""Per candidate object: comparisons already made in this run, so the second column of the pair
reads the first one's forward pass instead of making its own."""


class _Fidelity:
    """What both columns share; subclasses pick the value they report."""

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    higher_is_better: ClassVar[bool]
    cacheable: ClassVar[bool] = True
    uses_decoding: ClassVar[bool] = False
    uses_base_model: ClassVar[bool] = True
    binary: ClassVar[bool] = False  # top-1 agreement of a one-token answer is 0/1: no flips
    store_namespace: ClassVar[str] = "fidelity"

    def __init__(
        self, on: str = "reference", top_k: int = DEFAULT_TOP_K, separator: str | None = None
    ) -> None:
        check_type("on", on, (str,))
        check_type("top_k", top_k, (int,))
        check_type("separator", separator, (str, type(None)))
        if on not in TARGETS:
            raise ValueError(f"option 'on' must be one of {', '.join(TARGETS)}, got {on!r}")
        if top_k < 1:
            raise ValueError("option 'top_k' must be at least 1")
        self.on = on
        self.top_k = top_k
        self.separator = separator
        self._store: Store = MemoryStore()

    @property
    def needs_output(self) -> bool:
        """Only ``on: base_output`` reads outputs (the base's own, while it is scored)."""
        return self.on == "base_output"

    @property
    def uses_baseline(self) -> bool:
        return self.on == "base_output"

    def signature(self) -> str:
        separator = "auto" if self.separator is None else repr(self.separator)
        return f"kl:base||candidate|on:{self.on}|separator:{separator}|" + APPROXIMATION.format(
            k=self.top_k, api_k=min(self.top_k, API_TOP_K)
        )

    def use_store(self, store: Store) -> None:
        self._store = store

    def score_candidate(
        self, samples: Sequence[Sample], candidate: Candidate, params: GenerationSpec
    ) -> list[ScoreValue]:
        """Outside a suite run there is no base to compare with."""
        reason = f"{self.name} compares a candidate with the suite's compare_to candidate"
        return [Score(None, {"error": reason}) for _ in samples]

    def score_against(
        self,
        samples: Sequence[Sample],
        candidate: Candidate,
        base: BaseRef,
        params: GenerationSpec,
    ) -> list[ScoreValue]:
        outcomes = self.outcomes(samples, candidate, base, params)
        return [
            self.value(o) if isinstance(o, Divergence) else Score(None, {"error": o})
            for o in outcomes
        ]

    def value(self, divergence: Divergence) -> Score:
        raise NotImplementedError

    # -- the shared computation -----------------------------------------------------------

    def outcomes(
        self,
        samples: Sequence[Sample],
        candidate: Candidate,
        base: BaseRef,
        params: GenerationSpec,
    ) -> list[Outcome]:
        """Each sample's comparison, from this run's earlier column where it made one."""
        try:
            shared = _SHARED.setdefault(candidate, {})
        except TypeError:  # a candidate object that takes no weak reference: no sharing
            shared = {}
        keys = {s.id: f"{self.signature()}|{base.fingerprint_hash}|{s.id}" for s in samples}
        todo = [s for s in samples if keys[s.id] not in shared]
        if todo:
            fresh = self.compute(todo, candidate, base, params)
            shared.update({keys[s.id]: outcome for s, outcome in zip(todo, fresh, strict=True)})
        return [shared[keys[s.id]] for s in samples]

    def compute(
        self,
        samples: Sequence[Sample],
        candidate: Candidate,
        base: BaseRef,
        params: GenerationSpec,
    ) -> list[Outcome]:
        targets = [self.target(s, base) for s in samples]
        if isinstance(candidate, LocalModel):
            return self._local(samples, targets, candidate, base, params)
        if isinstance(candidate, ContinuationLogprobs):
            return remote_outcomes(self, samples, targets, candidate, base, params)
        reason = (
            f"{self.name} needs the candidate's next-token distribution: its weights in this "
            f"process, or top-k log-probs of a given continuation; candidate "
            f"'{getattr(candidate, 'name', candidate)}' ({type(candidate).__name__}) returns "
            "no log-probs for text it did not generate"
        )
        return [reason for _ in samples]

    def target(self, sample: Sample, base: BaseRef) -> str | None:
        """The text both models are teacher-forced on; None when there is none."""
        if self.on == "reference":
            if not sample.references:
                raise ValueError(
                    f"metric '{self.name}' needs a reference; example '{sample.id}' has none "
                    "(or use `on: base_output`)"
                )
            return sample.reference
        return sample.output if base.is_self else sample.baseline_output

    def _local(
        self,
        samples: Sequence[Sample],
        targets: Sequence[str | None],
        candidate: LocalModel,
        base: BaseRef,
        params: GenerationSpec,
    ) -> list[Outcome]:
        outcomes: list[Outcome] = ["" for _ in samples]
        rows = self._rows(candidate, samples, targets, outcomes)
        keys = {i: self.store_key(base, samples[i], targets[i]) for i in rows}
        if base.is_self:
            stored: dict[int, TopK] = {}
        else:
            stored = self.stored(keys)
            missing = [i for i in rows if i not in stored]
            if missing:
                stored.update(self._base_top_k(base, samples, targets, missing, keys, params))
        fresh: dict[str, Any] = {}

        def compare(i: int, logits: Any) -> None:
            if base.is_self:  # the base's distribution and its comparison from one pass
                stored[i] = top_k(logits, rows[i].continuation, self.top_k)
                fresh[keys[i]] = stored[i].to_json()
            reference = stored.get(i)
            if reference is None:
                outcomes[i] = "the base model gave no distribution for this answer"
            elif reference.target != rows[i].continuation:
                outcomes[i] = (
                    "the candidate tokenizes the answer differently from the base model; KL "
                    "needs the same vocabulary"
                )
            else:
                outcomes[i] = compare_full(reference, logits)

        model, tokenizer = candidate.loaded()
        order = list(rows)
        forward_continuations(
            model,
            [rows[i] for i in order],
            lambda j, logits: compare(order[j], logits),
            batch_size=params.batch_size,
            pad_id=pad_id(tokenizer),
        )
        if fresh:
            self._store.put_many(fresh)
        return outcomes

    def _rows(
        self,
        candidate: LocalModel,
        samples: Sequence[Sample],
        targets: Sequence[str | None],
        outcomes: list[Outcome],
    ) -> dict[int, Continuation]:
        """Teacher-forced rows of the examples that have an answer; the others' outcome is
        the reason they have none."""
        model, tokenizer = candidate.loaded()
        limit = model_max_length(model, tokenizer)
        rows: dict[int, Continuation] = {}
        for i, (sample, target) in enumerate(zip(samples, targets, strict=True)):
            if target is None:
                outcomes[i] = "the base model has no output for this example"
                continue
            row, note = teacher_forced_row(
                candidate, tokenizer, sample, target, limit, separator=self.separator
            )
            if "error" in note:
                outcomes[i] = note["error"]
            else:
                rows[i] = row
        return rows

    def store_key(self, base: BaseRef, sample: Sample, target: str | None) -> str:
        return make_key(
            kind="base-top-k",
            base=base.fingerprint_hash,
            messages=[(m.role, m.content) for m in sample.messages],
            target=target,
            separator=self.separator,
            top_k=self.top_k,
        )

    def stored(self, keys: Mapping[int, str]) -> dict[int, TopK]:
        found = self._store.get_many(list(keys.values()))
        return {i: TopK.from_json(found[key]) for i, key in keys.items() if key in found}

    def _base_top_k(
        self,
        base: BaseRef,
        samples: Sequence[Sample],
        targets: Sequence[str | None],
        indices: Sequence[int],
        keys: Mapping[int, str],
        params: GenerationSpec,
    ) -> dict[int, TopK]:
        """The base's distributions the cache lacks: the base model is loaded for them (and
        freed), one forward pass per example, and they are stored for every later candidate."""
        model_of_base = base.open()
        try:
            if not isinstance(model_of_base, LocalModel):
                return {}
            return self.computed_base_top_k(model_of_base, samples, targets, indices, keys, params)
        finally:
            model_of_base.close()

    def computed_base_top_k(
        self,
        model_of_base: LocalModel,
        samples: Sequence[Sample],
        targets: Sequence[str | None],
        indices: Sequence[int],
        keys: Mapping[int, str],
        params: GenerationSpec,
    ) -> dict[int, TopK]:
        """The base's distributions at ``indices`` from its loaded model, stored under ``keys``."""
        picked = [samples[i] for i in indices]
        scratch: list[Outcome] = ["" for _ in picked]
        rows = self._rows(model_of_base, picked, [targets[i] for i in indices], scratch)
        found: dict[int, TopK] = {}
        order = list(rows)

        def keep(j: int, logits: Any) -> None:
            found[indices[order[j]]] = top_k(logits, rows[order[j]].continuation, self.top_k)

        model, tokenizer = model_of_base.loaded()
        forward_continuations(
            model,
            [rows[i] for i in order],
            keep,
            batch_size=params.batch_size,
            pad_id=pad_id(tokenizer),
        )
        self._store.put_many({keys[i]: top.to_json() for i, top in found.items()})
        return found


class KLDivergence(_Fidelity):
    """KL(base || candidate), nats per answer token."""

    name: ClassVar[str] = "kl_divergence"
    higher_is_better: ClassVar[bool] = False

    def value(self, divergence: Divergence) -> Score:
        bounds = [b for b in divergence.tail_bound if not math.isnan(b)]
        detail: dict[str, Any] = {
            "n_tokens": len(divergence.kl),
            "kl_tokens": divergence.kl,
            "method": "exact-top-k" if bounds else "api-top-k-approx",
        }
        if bounds:
            detail["tail_bound"] = math.fsum(bounds) / len(bounds)
        return Score(divergence.mean_kl, detail)

    def summarize(self, scored: Sequence[Scored]) -> RunFigures:
        """llama.cpp's statistics over every answer token of the run: the token-weighted mean
        (the headline), p95, p99 and the maximum; and the largest tail bound of an example.
        From the per-token values in the details, cached with the values, so a fully cached
        run reports the same figures."""
        details = _scored_details(scored)
        tokens = [float(kl) for d in details for kl in d.get("kl_tokens", ())]
        if not tokens:
            return RunFigures(None, {"p95": None, "p99": None, "max": None})
        bounds = [float(d["tail_bound"]) for d in details if "tail_bound" in d]
        extra: dict[str, float | None] = {
            "p95": percentile(tokens, 95),
            "p99": percentile(tokens, 99),
            "max": max(tokens),
        }
        if bounds:
            extra["tail_bound_max"] = max(bounds)
        return RunFigures(math.fsum(tokens) / len(tokens), extra)


class Top1Agreement(_Fidelity):
    """Share of answer positions where base and candidate have the same most likely token."""

    name: ClassVar[str] = "top1_agreement"
    higher_is_better: ClassVar[bool] = True

    def value(self, divergence: Divergence) -> Score:
        return Score(
            divergence.agreement,
            {"n_tokens": len(divergence.agree), "n_agree": sum(divergence.agree)},
        )

    def summarize(self, scored: Sequence[Scored]) -> RunFigures:
        """The token-weighted share over the whole run (llama.cpp's "same top" rate)."""
        details = _scored_details(scored)
        tokens = sum(int(d["n_tokens"]) for d in details)
        same = sum(int(d["n_agree"]) for d in details)
        return RunFigures(same / tokens if tokens else None)


def _scored_details(scored: Sequence[Scored]) -> list[Mapping[str, Any]]:
    """The details of the examples that have a value (the others carry only an error)."""
    return [s.detail for s in scored if s.value is not None]


_OPTIONS = ["on", "top_k", "separator"]
register("kl_divergence", checked_factory("kl_divergence", KLDivergence, _OPTIONS))
register("top1_agreement", checked_factory("top1_agreement", Top1Agreement, _OPTIONS))
