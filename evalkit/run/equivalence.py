"""Checks that a candidate's outputs equal another candidate's (speculative decoding must be
lossless under greedy decoding)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from evalkit.cache import Cache, make_key
from evalkit.candidates.base import Candidate, Generation, GenerationRequest
from evalkit.results import LosslessCheck, LosslessMismatch
from evalkit.run.generation import generate_cached
from evalkit.spec import GenerationSpec


def check_speculation(
    candidate: Candidate,
    fingerprint: dict[str, Any],
    params: GenerationSpec,
    generations: dict[str, tuple[Generation, bool]],
    requests: Sequence[GenerationRequest],
    cache: Cache,
) -> LosslessCheck | None:
    """For speculative candidates: the lossless check (greedy only) and the speed-up timing.

    The plain target's outputs come through the cache under the fingerprint without
    ``speculative``, i.e. exactly the key a plain candidate with the same model uses, so a
    ``base`` candidate that already ran answers them; otherwise they are generated here."""
    speculation = getattr(candidate, "speculation", None)
    if speculation is None:
        return None
    check = _lossless(speculation, fingerprint, params, generations, requests, cache)
    if speculation.spec.speedup_sample:
        speculation.measure_speedup(requests, params)
    return check


def _lossless(
    speculation: Any,
    fingerprint: dict[str, Any],
    params: GenerationSpec,
    generations: dict[str, tuple[Generation, bool]],
    requests: Sequence[GenerationRequest],
    cache: Cache,
) -> LosslessCheck:
    from evalkit.candidates.speculative import plain_fingerprint

    plain_hash = make_key(**plain_fingerprint(fingerprint))[:16]
    if not params.greedy:
        return LosslessCheck(
            plain_fingerprint_hash=plain_hash,
            skipped="sampling: speculative sampling keeps the target's distribution, not "
            "its individual samples, so outputs cannot be compared one by one; the check "
            "runs under greedy decoding (temperature: 0)",
        )
    plain = generate_cached(speculation.plain_target(), plain_hash, requests, params, cache)
    check = LosslessCheck(
        plain_fingerprint_hash=plain_hash, plain_cached=sum(c for _, c in plain.values())
    )
    for request in requests:
        fast, reference = generations[request.id][0], plain[request.id][0]
        if fast.error is not None or reference.error is not None:
            check.unchecked += 1
            continue
        check.checked += 1
        if fast.output != reference.output:
            check.mismatches.append(
                LosslessMismatch(id=request.id, output=fast.output, plain_output=reference.output)
            )
    return check
