"""The equivalence check: a candidate whose outputs must equal another candidate's
(``candidates.base.Verifiable``) is compared with it example by example, after generation.

The target's outputs come through the generation cache under the target's own fingerprint, so
a candidate of the suite with that identity (e.g. the plain model a variant must not change)
has already answered them; otherwise they are generated here, while the candidate is loaded.
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
from evalkit.run.generation import generate_cached
from evalkit.spec import GenerationSpec


def check_equivalence(
    candidate: Candidate,
    requests: Sequence[GenerationRequest],
    params: GenerationSpec,
    generations: dict[str, tuple[Generation, bool]],
    cache: Cache,
) -> EquivalenceCheck | None:
    """Compare ``generations`` with the candidate's equivalence target; None for candidates
    that have none. Then let a ``RunObserver`` measure its run facts (it is still loaded)."""
    check = None
    if isinstance(candidate, Verifiable):
        target = candidate.equivalence_target(params)
        if target is not None:
            check = compare(target, requests, params, generations, cache)
    if isinstance(candidate, RunObserver):
        candidate.after_generation(requests, params)
    return check


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
        target.candidate, check.target_fingerprint_hash, requests, params, cache
    )
    check.target_cached = sum(cached for _, cached in reference.values())
    for request in requests:
        own, theirs = generations[request.id][0], reference[request.id][0]
        if own.error is not None or theirs.error is not None:
            check.unchecked += 1
            continue
        check.checked += 1
        if own.output != theirs.output:
            check.mismatches.append(
                EquivalenceMismatch(id=request.id, output=own.output, target_output=theirs.output)
            )
    return check
