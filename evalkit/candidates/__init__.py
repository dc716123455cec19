"""Candidates: the models under test, built from a CandidateSpec."""

from __future__ import annotations

from pathlib import Path

from evalkit.candidates.base import Candidate, Generation, GenerationRequest, Message
from evalkit.spec import CandidateSpec

__all__ = ["Candidate", "Generation", "GenerationRequest", "Message", "make_candidate"]


def make_candidate(
    name: str, spec: CandidateSpec, base_dir: Path, *, device: str | None = None
) -> Candidate:
    """Build the candidate a spec describes; ``device`` overrides the spec's device."""
    if spec.replay is not None:
        from evalkit.candidates.replay import ReplayCandidate

        return ReplayCandidate(name, (base_dir / spec.replay).resolve())
    from evalkit.candidates.hf import HFCandidate

    if device is not None:
        spec = spec.model_copy(update={"device": device})
    return HFCandidate(name, spec, base_dir)
