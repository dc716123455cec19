"""What one candidate is asked: the suite's requests, or its own (its prompt and shots, its
retrieved chunks), plus what a ``call:`` candidate retrieved itself, and the identity of its
prompt for its fingerprint. The runner asks here so that it only orchestrates."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from evalkit.cache import Cache
from evalkit.candidates.base import Generation, GenerationRequest
from evalkit.candidates.timing import timing_sample
from evalkit.golden import Example
from evalkit.run.prepare import PreparedSuite
from evalkit.run.rag import rag_requests


def prompt_identity(prepared: PreparedSuite, name: str) -> dict[str, object]:
    """The content hashes of a candidate's own prompt files and train file, for its fingerprint
    (nothing for candidates that use the suite's prompt, so their fingerprints stay as they
    were)."""
    variant = prepared.variants.get(name)
    return {"prompt": dict(variant.identity)} if variant and variant.identity else {}


def limited(
    examples: Sequence[Example], requests: Sequence[GenerationRequest], limit: int | None
) -> tuple[list[Example], list[GenerationRequest]]:
    """A candidate's ``limit:`` sample of the suite, chosen by id hash as the latency metrics
    choose theirs: a spread over the file (not its first lines), nested (a smaller limit is a
    subset, so candidates pair), and the examples a full run times, so a latency baseline still
    pairs. Everything when there is no limit."""
    if limit is None:
        return list(examples), list(requests)
    chosen = {r.id for r in timing_sample(requests, limit)}
    return [e for e in examples if e.id in chosen], [r for r in requests if r.id in chosen]


def own_requests(
    prepared: PreparedSuite,
    name: str,
    examples: Sequence[Example],
    plain: Sequence[GenerationRequest],
    cache: Cache,
    device: str | None,
) -> list[GenerationRequest] | None:
    """A candidate's own requests, in the order of ``examples``: rendered with its own prompt
    and shots, and with its retrieved chunks; None when it uses the suite's (``plain``)."""
    setup = prepared.retrieval.get(name)
    if setup is not None:
        variant = prepared.variants.get(name)
        return rag_requests(prepared.loaded, setup, examples, plain, cache, device, variant)
    own = prepared.candidate_requests.get(name)
    if own is None:
        return None
    wanted = {e.id for e in examples}
    return [r for r in own if r.id in wanted]


def with_own_context(
    requests: Sequence[GenerationRequest], generations: Mapping[str, tuple[Generation, bool]]
) -> list[GenerationRequest] | None:
    """The requests carrying the context a candidate retrieved itself (a user's RAG pipeline,
    ``call:``), so context metrics and run.json see it as a RAG candidate's chunks; None when it
    retrieved nothing."""
    if not any(gen.context for gen, _ in generations.values()):
        return None
    return [
        replace(r, retrieved=generations[r.id][0].context)
        if r.id in generations and generations[r.id][0].context
        else r
        for r in requests
    ]
