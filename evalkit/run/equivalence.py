"""Checks that a candidate's outputs equal another candidate's: speculative decoding must be
lossless under greedy decoding (automatic ``lossless``), and any candidate with ``equivalent_to``
must reproduce the named candidate's outputs (``equivalent_to``: batch invariance, merged vs
unmerged LoRA, float32 vs bfloat16, a local model vs the same model behind a server)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from evalkit.cache import Cache, make_key
from evalkit.candidates.base import Candidate, Generation, GenerationRequest
from evalkit.results import LosslessCheck, LosslessMismatch
from evalkit.run.divergence_point import first_divergence, near_ties
from evalkit.run.generation import generate_cached
from evalkit.spec import EquivalenceSpec, GenerationSpec


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


def check_declared(
    equivalence: EquivalenceSpec,
    target: Candidate,
    target_params: GenerationSpec,
    generations: dict[str, tuple[Generation, bool]],
    requests: Sequence[GenerationRequest],
    cache: Cache,
) -> LosslessCheck:
    """``equivalent_to``: this candidate's outputs against the named candidate's, generated
    (or read from the cache, where that candidate's own run put them) with its own settings.
    Each differing example records where the outputs part; with ``logprob_tolerance``, a
    difference at a near-tie of the target model is reported but not counted."""
    target_hash = make_key(**target.fingerprint())[:16]
    theirs = generate_cached(target, target_hash, requests, target_params, cache)
    check = LosslessCheck(
        target=f"candidate '{equivalence.candidate}'",
        max_mismatch=equivalence.max_mismatch,
        logprob_tolerance=equivalence.logprob_tolerance,
        plain_fingerprint_hash=target_hash,
        plain_cached=sum(cached for _, cached in theirs.values()),
    )
    for request in requests:
        own, other = generations[request.id][0], theirs[request.id][0]
        if own.error is not None or other.error is not None:
            check.unchecked += 1
            continue
        check.checked += 1
        if own.output != other.output:
            where = first_divergence(own.output, other.output)
            check.mismatches.append(
                LosslessMismatch(
                    id=request.id,
                    output=own.output,
                    plain_output=other.output,
                    first_char=where.char,
                    first_word=where.word,
                )
            )
    if equivalence.logprob_tolerance is not None and check.mismatches:
        _mark_near_ties(check, equivalence.logprob_tolerance, target, requests, generations)
    return check


def _mark_near_ties(
    check: LosslessCheck,
    tolerance: float,
    target: Candidate,
    requests: Sequence[GenerationRequest],
    generations: dict[str, tuple[Generation, bool]],
) -> None:
    by_id = {r.id: r for r in requests}
    pairs = [(by_id[m.id], m.output or "", m.plain_output or "") for m in check.mismatches]
    found = near_ties(target, pairs)
    if isinstance(found, str):
        check.note = found
        return
    for mismatch, where in zip(check.mismatches, found, strict=True):
        mismatch.first_token = where.token
        mismatch.logprob_gap = where.logprob_gap
        mismatch.near_tie = where.logprob_gap is not None and abs(where.logprob_gap) <= tolerance
