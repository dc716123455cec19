"""The demo draft built from SmolLM2, and speculative SmolLM2 keeping its greedy answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from evalkit.candidates.base import GenerationRequest, Message
from evalkit.candidates.hf import HFCandidate
from evalkit.candidates.models import (
    DRAFT_ALIAS,
    DRAFT_LAYERS,
    ensure_embedded_model,
    resolve_model,
)
from evalkit.spec import CandidateSpec, GenerationSpec

pytestmark = pytest.mark.real_model


def test_draft_alias_is_the_first_layers_of_smollm2() -> None:
    import torch
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    draft = resolve_model(DRAFT_ALIAS).path
    source = ensure_embedded_model()
    assert draft is not None
    full, cut = load_file(source / "model.safetensors"), load_file(draft / "model.safetensors")
    layer_keys = {k for k in full if k.startswith("model.layers.")}
    kept = {k for k in layer_keys if int(k.split(".")[2]) < DRAFT_LAYERS}
    assert {k for k in cut if k.startswith("model.layers.")} == kept
    assert all(torch.equal(cut[k], full[k]) for k in kept)  # the weights, untouched
    others = set(full) - layer_keys
    assert others <= set(cut) and all(torch.equal(cut[k], full[k]) for k in others)
    assert AutoTokenizer.from_pretrained(draft).get_vocab() == (
        AutoTokenizer.from_pretrained(source).get_vocab()
    )


def test_speculative_smollm2_keeps_greedy_answers(tmp_path: Path) -> None:
    questions = [
        "What is the capital of Peru? Answer with the city name only.",
        "How many centimeters are in 3 meters? Reply with the number only.",
    ]
    requests = [
        GenerationRequest(id=f"q{i}", messages=(Message("user", q),))
        for i, q in enumerate(questions)
    ]
    params = GenerationSpec(max_new_tokens=12)
    plain = HFCandidate("base", CandidateSpec(model="smollm2-135m-instruct"), tmp_path)
    expected = {g.id: g.output for batch in plain.generate(requests, params) for g in batch}
    plain.close()
    for speculative in ({"prompt_lookup": 10}, {"draft": DRAFT_ALIAS, "num_assistant_tokens": 4}):
        spec = CandidateSpec(model="smollm2-135m-instruct", speculative=speculative)
        cand = HFCandidate("spec", spec, tmp_path)
        outputs = {g.id: g.output for batch in cand.generate(requests, params) for g in batch}
        assert outputs == expected, speculative
        facts = cand.describe()["speculative"]
        assert facts["proposed"] > 0 and 0 <= facts["accepted"] <= facts["proposed"]
        cand.close()
