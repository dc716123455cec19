"""Fidelity of a candidate without local weights (an API server, a vLLM server): top-k against
top-k, from ``ContinuationLogprobs``.

The candidate names each answer position's k most likely tokens (``k = min(top_k, 20)``: what
OpenAI-compatible servers return) by id (``token_id:N``) or by text. The base gives the same
from wherever it is: a local base from its distribution in the fidelity cache (the top
``top_k`` ids stored when it was scored, computed now for examples the cache lacks), its first
k ids named as the candidate names its tokens (``candidates.continuation.named_top_k``); a
remote base through its own ``ContinuationLogprobs``. KL and top-1 agreement then come from
``divergence.kl_from_top_logprobs``, whose approximation (``approx:topk-floor``) the signature
names. Neither side has the tail of the distribution, so no tail bound is reported.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from evalkit.candidates.base import (
    ContinuationLogprobs,
    GenerationRequest,
    LocalModel,
)
from evalkit.candidates.continuation import named_top_k, names_ids
from evalkit.metrics.base import BaseRef, Sample
from evalkit.metrics.divergence import Divergence, TopK, kl_from_top_logprobs
from evalkit.spec import GenerationSpec

API_TOP_K = 20
"""The most OpenAI-compatible APIs return (``top_logprobs`` <= 20)."""

Positions = list[dict[str, float]]
Outcome = Divergence | str


class BaseDistributions(Protocol):
    """What the fidelity metric offers this route: its options and its cached base
    distributions (``fidelity._Fidelity``)."""

    top_k: int
    separator: str | None

    def store_key(self, base: BaseRef, sample: Sample, target: str | None) -> str: ...

    def stored(self, keys: Mapping[int, str]) -> dict[int, TopK]: ...

    def computed_base_top_k(
        self,
        model_of_base: LocalModel,
        samples: Sequence[Sample],
        targets: Sequence[str | None],
        indices: Sequence[int],
        keys: Mapping[int, str],
        params: GenerationSpec,
    ) -> dict[int, TopK]: ...


def remote_outcomes(
    metric: BaseDistributions,
    samples: Sequence[Sample],
    targets: Sequence[str | None],
    candidate: ContinuationLogprobs,
    base: BaseRef,
    params: GenerationSpec,
) -> list[Outcome]:
    """Each sample's comparison, or why there is none."""
    k = min(metric.top_k, API_TOP_K)
    todo = [i for i, t in enumerate(targets) if t is not None]
    requests = [GenerationRequest(samples[i].id, samples[i].messages) for i in todo]
    answers = [targets[i] or "" for i in todo]
    theirs = candidate.continuation_top_logprobs(requests, answers, k, separator=metric.separator)
    if base.is_self or all(isinstance(p, str) for p in theirs):  # nothing to compare with
        ours: Sequence[Positions | str] = theirs
    else:
        by_id = any(names_ids(p) for p in theirs if not isinstance(p, str))
        ours = _base_positions(metric, base, samples, targets, todo, k, by_id, params)
    outcomes: list[Outcome] = ["the base model has no output for this example" for _ in samples]
    for i, mine, other in zip(todo, ours, theirs, strict=True):
        outcomes[i] = compare_named(mine, other)
    return outcomes


def _base_positions(
    metric: BaseDistributions,
    base: BaseRef,
    samples: Sequence[Sample],
    targets: Sequence[str | None],
    todo: Sequence[int],
    k: int,
    by_id: bool,
    params: GenerationSpec,
) -> Sequence[Positions | str]:
    """The base's named top-k per answer position of each sample in ``todo`` (by id, else by
    text)."""
    reference: Any = base.open()
    try:
        if isinstance(reference, LocalModel):
            keys = {i: metric.store_key(base, samples[i], targets[i]) for i in todo}
            tops = metric.stored(keys)
            missing = [i for i in todo if i not in tops]
            if missing:
                computed = metric.computed_base_top_k(
                    reference, samples, targets, missing, keys, params
                )
                tops.update(computed)
            tokenizer = None if by_id else reference.loaded()[1]  # ids need no tokenizer
            return [_named(tops.get(i), tokenizer, k, by_id) for i in todo]
        if isinstance(reference, ContinuationLogprobs):
            requests = [GenerationRequest(samples[i].id, samples[i].messages) for i in todo]
            answers = [targets[i] or "" for i in todo]
            return reference.continuation_top_logprobs(
                requests, answers, k, separator=metric.separator
            )
        reason = f"the base '{base.name}' cannot give top-k log-probs of a text"
        return [reason for _ in todo]
    finally:
        reference.close()


def _named(top: TopK | None, tokenizer: Any, k: int, by_id: bool) -> Positions | str:
    if top is None:
        return "the base model gave no distribution for this answer"
    pairs = zip(top.ids, top.logprobs, strict=True)
    return [named_top_k(tokenizer, ids, lps, k, by_id=by_id) for ids, lps in pairs]


def compare_named(base: Positions | str, candidate: Positions | str) -> Outcome:
    """KL and agreement position by position from two named top-k lists."""
    for side in (base, candidate):
        if isinstance(side, str):
            return side
    if len(base) != len(candidate) or not base:
        return "the two models tokenize the answer differently (or it has no tokens)"
    if names_ids(base) != names_ids(candidate):
        return "one side names tokens by id, the other by text: they cannot be matched"
    pairs = [kl_from_top_logprobs(p, q) for p, q in zip(base, candidate, strict=True)]
    kl = [kl for kl, _ in pairs]
    return Divergence(kl, [agree for _, agree in pairs], [math.nan for _ in kl])
