"""Candidates: the models under test, built from a CandidateSpec."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path

from evalkit.candidates.base import Candidate, Generation, GenerationRequest, Message
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
    if spec.engine == "vllm":  # the vLLM build decides the device: ``device`` does not apply
        from evalkit.candidates.vllm import VllmCandidate

        return VllmCandidate(name, spec, base_dir)
    from evalkit.candidates.hf import HFCandidate

    if device is not None:
        spec = spec.model_copy(update={"device": device})
    return HFCandidate(name, spec, base_dir)


def run_resources(
    specs: Mapping[str, CandidateSpec], base_dir: Path, log_dir: Path
) -> contextlib.AbstractContextManager[object]:
    """What the candidates of one run share, held for the whole run and released at its end
    (also on errors and Ctrl-C): the vLLM servers of ``engine: vllm`` candidates, logs in
    ``log_dir``. Nothing for runs without such candidates."""
    if not any(spec.engine == "vllm" for spec in specs.values()):
        return contextlib.nullcontext()
    from evalkit.candidates.vllm import run_servers

    return run_servers(specs, base_dir, log_dir)
