"""The equivalence check: a candidate whose outputs must equal another candidate's is compared
with it example by example, after generation. The target comes from the candidate
(``candidates.base.Verifiable``: speculative decoding against the plain model, no mismatch
allowed) or from the suite (``equivalent_to``: batch invariance, merged vs unmerged LoRA,
float32 vs bfloat16, a local model vs the same model behind a server); both are this one check.

The target's outputs come through the generation cache under the target's own fingerprint, so
a candidate of the suite with that identity (e.g. the plain model a variant must not change, or
the candidate ``equivalent_to`` names) has already answered them; otherwise they are generated
here, while the candidate is loaded. Each differing example records where the outputs part;
with a log-prob tolerance, a difference at a near-tie of the target model is reported but not
counted (``divergence_point``).
"""

from __future__ import annotations

from collections.abc import Sequence

from evalkit.cache import Cache, make_key
from evalkit.candidates.base import (
    Candidate,
    EquivalenceTarget,
    Generation,
    GenerationRequest,
    RunObserver,
    Verifiable,
)
from evalkit.results import EquivalenceCheck, EquivalenceMismatch
from evalkit.run.divergence_point import first_divergence, near_ties
from evalkit.run.generation import generate_cached
from evalkit.spec import EquivalenceSpec, GenerationSpec


def check_equivalence(
    candidate: Candidate,
    requests: Sequence[GenerationRequest],
    params: GenerationSpec,
    generations: dict[str, tuple[Generation, bool]],
    cache: Cache,
    declared: EquivalenceTarget | None = None,
) -> EquivalenceCheck | None:
    """Compare ``generations`` with the candidate's equivalence target (``declared``, from the
    suite's ``equivalent_to``, else the candidate's own); None for candidates that have none.
    Then let a ``RunObserver`` measure its run facts (it is still loaded)."""
    check = None
    target = declared
    if target is None and isinstance(candidate, Verifiable):
        target = candidate.equivalence_target(params)
    if target is not None:
        check = compare(target, requests, params, generations, cache)
    if isinstance(candidate, RunObserver):
        candidate.after_generation(requests, params)
    return check


def declared_target(
    equivalence: EquivalenceSpec, target: Candidate, target_params: GenerationSpec
) -> EquivalenceTarget:
    """``equivalent_to``: the named candidate of the suite, generating with its own settings
    (its batch size, for batch invariance), so its cached outputs are the ones compared."""
    return EquivalenceTarget(
        label=f"candidate '{equivalence.candidate}'",
        fingerprint=target.fingerprint(),
        candidate=target,
        max_mismatch=equivalence.max_mismatch,
        params=target_params,
        logprob_tolerance=equivalence.logprob_tolerance,
    )


def compare(
    target: EquivalenceTarget,
    requests: Sequence[GenerationRequest],
    params: GenerationSpec,
    generations: dict[str, tuple[Generation, bool]],
    cache: Cache,
) -> EquivalenceCheck:
    """Outputs of ``generations`` against the target's, one example at a time; an example
    that failed to generate on either side is counted as unchecked, not as a mismatch."""
    check = EquivalenceCheck(
        target=target.label,
        target_fingerprint_hash=make_key(**target.fingerprint)[:16],
        max_mismatch=target.max_mismatch,
        logprob_tolerance=target.logprob_tolerance,
        skipped=target.skipped,
        headline=target.headline,
        output_name=target.output_name,
        target_name=target.target_name,
    )
    if target.skipped is not None:
        return check
    if target.candidate is None:
        check.skipped = f"{target.label} cannot generate here"
        return check
    reference = generate_cached(
        target.candidate,
        check.target_fingerprint_hash,
        requests,
        target.params or params,
        cache,
    )
    check.target_cached = sum(cached for _, cached in reference.values())
    for request in requests:
        own, theirs = generations[request.id][0], reference[request.id][0]
        if own.error is not None or theirs.error is not None:
            check.unchecked += 1
            continue
        check.checked += 1
        if own.output != theirs.output:
            where = first_divergence(own.output, theirs.output)
            check.mismatches.append(
                EquivalenceMismatch(
                    id=request.id,
                    output=own.output,
                    target_output=theirs.output,
                    first_char=where.char,
                    first_word=where.word,
                )
            )
    if target.logprob_tolerance is not None and check.mismatches:
        _mark_near_ties(check, target.logprob_tolerance, target.candidate, requests)
    return check


def _mark_near_ties(
    check: EquivalenceCheck,
    tolerance: float,
    target: Candidate,
    requests: Sequence[GenerationRequest],
) -> None:
    by_id = {r.id: r for r in requests}
    pairs = [(by_id[m.id], m.output or "", m.target_output or "") for m in check.mismatches]
    found = near_ties(target, pairs)
    if isinstance(found, str):
        check.note = found
        return
    for mismatch, where in zip(check.mismatches, found, strict=True):
        mismatch.first_token = where.token
        mismatch.logprob_gap = where.logprob_gap
        mismatch.near_tie = where.logprob_gap is not None and abs(where.logprob_gap) <= tolerance
