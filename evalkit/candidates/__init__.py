"""Candidates: the models under test, built from a CandidateSpec through the kind registry."""

from __future__ import annotations

from pathlib import Path

from evalkit.candidates.base import Candidate, Generation, GenerationRequest, Message
from evalkit.candidates.registry import checked_kind, run_resources
from evalkit.spec import CandidateSpec

__all__ = [
    "Candidate",
    "Generation",
    "GenerationRequest",
    "Message",
    "make_candidate",
    "run_resources",
]


def make_candidate(
    name: str, spec: CandidateSpec, base_dir: Path, *, device: str | None = None
) -> Candidate:
    """Build the candidate a spec describes; ``device`` overrides the spec's device for kinds
    that accept one.

    The kind comes from ``evalkit.candidates.registry``: ``engine:`` when given, else
    ``replay:`` is a replay candidate; an ``api:`` block, or a bare ``provider/name`` that
    litellm's local price list knows (``openai/gpt-4o-mini``; see ``is_bare_api_model``), is an
    API candidate; anything else (alias, folder, hub id) is a transformers model. Deciding reads
    a file and imports neither litellm nor torch.
    """
    kind = checked_kind(name, spec, base_dir)
    if device is not None and "device" in kind.options:
        spec = spec.model_copy(update={"device": device})
    return kind.build(name, spec, base_dir)
