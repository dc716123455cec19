"""Cached generation: every request's answer comes from the cache or, on a miss, the candidate.

The key holds everything that changes an answer (the candidate's fingerprint, the decoding
settings and the rendered messages), so a model is loaded only when some answer is missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from evalkit.cache import Cache, make_key
from evalkit.candidates.base import (
    AnswersFromFields,
    Candidate,
    Generation,
    GenerationRequest,
    RetrievedChunk,
)
from evalkit.errors import EvalkitError
from evalkit.spec import GenerationSpec


def generation_key(
    fingerprint_hash: str,
    params: GenerationSpec,
    request: GenerationRequest,
    from_fields: bool = False,
) -> str:
    """``from_fields``: the candidate answers from the example's fields (``AnswersFromFields``,
    the user's own pipeline): the fields are its input, and of the decoding settings only the
    seed counts (``samples: k`` asks again for each sample's seed)."""
    if from_fields:
        fields = dict(request.fields)
        return make_key(kind="generation", model=fingerprint_hash, fields=fields, seed=params.seed)
    # batch_size changes throughput, not answers: it is left out of the key on purpose.
    # Samples are seeded per example since issue 13 (candidates/sampling.py): samples cached
    # under the older per-batch seeding must not be reused, so sampled keys name the scheme.
    # Greedy keys are unchanged.
    sampling = {} if params.greedy else {"sampling": "per-example-seed/1"}
    return make_key(
        kind="generation",
        model=fingerprint_hash,
        decoding=params.model_dump(mode="json", exclude={"batch_size"}),
        messages=[(m.role, m.content) for m in request.messages],
        **sampling,
    )


def generate_cached(
    candidate: Candidate,
    fingerprint_hash: str,
    requests: Sequence[GenerationRequest],
    params: GenerationSpec,
    cache: Cache,
) -> dict[str, tuple[Generation, bool]]:
    """Every request's generation by id, with whether it came from the cache. Misses go to the
    candidate (loading it only then) and each finished batch is stored as soon as it lands."""
    from_fields = isinstance(candidate, AnswersFromFields)
    keys = {r.id: generation_key(fingerprint_hash, params, r, from_fields) for r in requests}
    cached = cache.get_many("generation", keys.values())
    out: dict[str, tuple[Generation, bool]] = {}
    for request in requests:
        hit = cached.get(keys[request.id])
        if hit is not None:
            context = tuple(RetrievedChunk(**c) for c in hit.get("context", ()))
            out[request.id] = (Generation(**{**hit, "id": request.id, "context": context}), True)
    misses = [r for r in requests if r.id not in out]
    if misses:
        for batch in candidate.generate(misses, params):
            out.update((g.id, (g, False)) for g in batch)
            # Errors are not cached: an outage must not be remembered as the answer.
            cache.put_many(
                "generation", {keys[g.id]: _generation_record(g) for g in batch if g.error is None}
            )
    lost = [r.id for r in misses if r.id not in out]
    if lost:
        raise EvalkitError(
            f"candidate '{candidate.name}' returned no generation for {len(lost)} examples "
            f"(first: {lost[0]})"
        )
    return out


def _generation_record(gen: Generation) -> dict[str, Any]:
    return {
        "output": gen.output,
        "prompt": gen.prompt,
        "n_prompt_tokens": gen.n_prompt_tokens,
        "n_output_tokens": gen.n_output_tokens,
        "seconds": gen.seconds,
        "cost": gen.cost,
        # Only for candidates that retrieve their own context, so other records stay as they were.
        **({"context": [asdict(c) for c in gen.context]} if gen.context else {}),
    }
