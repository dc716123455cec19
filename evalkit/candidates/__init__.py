"""Candidates: the models under test, built from a CandidateSpec."""

from __future__ import annotations

from pathlib import Path

from evalkit.candidates.base import Candidate, Generation, GenerationRequest, Message
from evalkit.spec import CandidateSpec

__all__ = ["Candidate", "Generation", "GenerationRequest", "Message", "make_candidate"]


def make_candidate(
    name: str, spec: CandidateSpec, base_dir: Path, *, device: str | None = None
) -> Candidate:
    """Build the candidate a spec describes; ``device`` overrides the spec's device.

    ``replay:`` is a replay candidate; an ``api:`` block, or a bare ``provider/name`` that
    litellm's local price list knows (``openai/gpt-4o-mini``; see ``is_bare_api_model``), is an
    API candidate; anything else (alias, folder, hub id) is a transformers model. The API check
    reads a file and imports neither litellm nor torch.
    """
    if spec.replay is not None:
        from evalkit.candidates.replay import ReplayCandidate

        return ReplayCandidate(name, (base_dir / spec.replay).resolve())
    from evalkit.candidates.api_models import is_bare_api_model

    if spec.api is not None or is_bare_api_model(spec, base_dir):
        from evalkit.candidates.api import ApiCandidate

        return ApiCandidate(name, spec)
    from evalkit.candidates.hf import HFCandidate

    if device is not None:
        spec = spec.model_copy(update={"device": device})
    return HFCandidate(name, spec, base_dir)
