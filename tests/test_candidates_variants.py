"""LoRA adapters and bitsandbytes quantization of HFCandidate, checked against peft, transformers
and bitsandbytes called directly.

Tiny config-built Llamas (tests/tinymodels.py) and adapters trained in-test for a second keep
this fast; one ``real_model`` test trains the demo adapter for a few steps on SmolLM2.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from suitefiles import CAPITALS, write_jsonl, write_suite
from test_train_split import load_script
from tinymodels import make_tiny_llama, make_tiny_lora

from evalkit.candidates import quantization
from evalkit.candidates.base import GenerationRequest, Message
from evalkit.candidates.hf import HFCandidate
from evalkit.candidates.models import fingerprint_files
from evalkit.errors import CandidateError, SpecError
from evalkit.spec import CandidateSpec, GenerationSpec, load_suite

PROMPTS = [
    "The cat",
    "What is the capital of France? The teacher knows the answer.",
    "A dog sees",
    "Where is the river?",
]
NEW_TOKENS = 8
ROOT = Path(__file__).resolve().parent.parent


# -- fixtures and helpers ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lora(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained LoRA (q/v, r=4) on ``tiny_model``."""
    return make_tiny_lora(tiny_model, tmp_path_factory.mktemp("lora") / "a", seed=0)


@pytest.fixture(scope="module")
def lora_other(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same config as ``lora``, other training seed, so other weights."""
    return make_tiny_lora(tiny_model, tmp_path_factory.mktemp("lora") / "b", seed=1)


@pytest.fixture(scope="module")
def tiny_model_64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama whose layer sizes fit bitsandbytes' fused 4-bit CPU kernel (multiples of 32
    out, 64 in); ``tiny_model`` (48 wide) does not."""
    folder = tmp_path_factory.mktemp("tiny-llama-64")
    return make_tiny_llama(folder, seed=2, hidden_size=64, intermediate_size=128)


def candidate(folder: Path, name: str = "tiny", **spec: Any) -> HFCandidate:
    return HFCandidate(name, CandidateSpec(model=str(folder), **spec), base_dir=folder.parent)


def requests() -> list[GenerationRequest]:
    return [
        GenerationRequest(id=f"r{i}", messages=(Message("user", text),))
        for i, text in enumerate(PROMPTS)
    ]


def outputs(cand: HFCandidate, batch_size: int = 8) -> dict[str, str]:
    params = GenerationSpec(max_new_tokens=NEW_TOKENS, batch_size=batch_size)
    return {g.id: g.output for batch in cand.generate(requests(), params) for g in batch}


def direct_outputs(model: Any, folder: Path) -> dict[str, str]:
    """Greedy outputs from a plain ``generate`` call per prompt (no evalkit code)."""
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    result = {}
    for i, text in enumerate(PROMPTS):
        encoded = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
        with torch.inference_mode():
            out = model.generate(**encoded, max_new_tokens=NEW_TOKENS, do_sample=False)
        new = out[0, encoded["input_ids"].shape[1] :].tolist()
        if tokenizer.eos_token_id in new:
            new = new[: new.index(tokenizer.eos_token_id)]
        result[f"r{i}"] = tokenizer.decode(new, skip_special_tokens=True).strip()
    return result


def load_direct(folder: Path, adapter: Path | None = None, **bnb: Any) -> Any:
    """transformers (+ peft) directly, with a BitsAndBytesConfig built here when ``bnb`` is set."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    kwargs: dict[str, Any] = {}
    if bnb:
        kwargs = {"quantization_config": BitsAndBytesConfig(**bnb), "device_map": {"": "cpu"}}
    model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    return model.eval()


def copy_adapter(source: Path, target: Path, **config_changes: Any) -> Path:
    shutil.copytree(source, target)
    config_file = target / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config.update(config_changes)
    config_file.write_text(json.dumps(config))
    return target


def rewrite_weights(folder: Path, change: Any) -> None:
    from safetensors.torch import load_file, save_file

    weights = folder / "adapter_model.safetensors"
    save_file(change(load_file(weights)), weights)


def load_error(cand: HFCandidate) -> str:
    with pytest.raises(CandidateError) as info:
        cand.loaded()
    return str(info.value)


# -- adapters -------------------------------------------------------------------------------------


def test_adapter_outputs_equal_peft_directly_and_differ_from_base(
    tiny_model: Path, lora: Path
) -> None:
    adapted = outputs(candidate(tiny_model, adapter=str(lora)), batch_size=1)
    assert adapted == direct_outputs(load_direct(tiny_model, adapter=lora), tiny_model)
    base = outputs(candidate(tiny_model), batch_size=1)
    assert sum(adapted[k] != base[k] for k in base) >= 3, (adapted, base)


def test_merged_adapter_matches_unmerged(tiny_model: Path, lora: Path) -> None:
    """Merging adds B·A·scale into W: the same function up to float32 rounding. Logits agree to
    1e-4 (they are O(10) here; float32 sums of 48 terms differ by ~1e-6), greedy tokens exactly."""
    import torch

    unmerged = candidate(tiny_model, adapter=str(lora))
    merged = candidate(tiny_model, adapter=str(lora), merge=True)
    assert outputs(merged) == outputs(unmerged)
    _, ids = unmerged.render(requests()[1])
    logits = []
    for cand in (unmerged, merged):
        model, _ = cand.loaded()
        with torch.inference_mode():
            logits.append(model(input_ids=torch.tensor([ids])).logits)
    assert (logits[0] - logits[1]).abs().max().item() < 1e-4
    assert type(merged.loaded()[0]).__name__ == "LlamaForCausalLM"  # really merged, no wrapper
    assert merged.describe()["adapter"]["merged"] is True


def test_fingerprint_holds_adapter_files_and_merge(
    tiny_model: Path, lora: Path, lora_other: Path, tmp_path: Path
) -> None:
    base = candidate(tiny_model).fingerprint()
    adapted = candidate(tiny_model, adapter=str(lora)).fingerprint()
    assert "adapter" not in base  # plain candidates keep their fingerprints (and caches)
    assert {k: v for k, v in adapted.items() if k != "adapter"} == base
    assert adapted["adapter"] == {"files": fingerprint_files(lora), "merge": False}
    merged = candidate(tiny_model, adapter=str(lora), merge=True).fingerprint()
    assert merged["adapter"]["merge"] is True

    # Same config, other weights: a new fingerprint. Same files elsewhere: the same one.
    other = candidate(tiny_model, adapter=str(lora_other)).fingerprint()
    assert other["adapter"]["files"] != adapted["adapter"]["files"]
    moved = shutil.copytree(lora, tmp_path / "moved")
    assert candidate(tiny_model, adapter=str(moved)).fingerprint() == adapted
    # The config counts too (alpha scales the update).
    changed = copy_adapter(lora, tmp_path / "alpha", lora_alpha=2)
    assert candidate(tiny_model, adapter=str(changed)).fingerprint() != adapted


def test_describe_records_the_adapter(tiny_model: Path, lora: Path) -> None:
    cand = candidate(tiny_model, adapter=str(lora))
    cand.loaded()
    described = cand.describe()
    config = json.loads((lora / "adapter_config.json").read_text())
    assert described["adapter"] == {
        "path": str(lora),
        "hash": fingerprint_files(lora),
        "base_model": str(tiny_model),
        "r": config["r"],
        "alpha": config["lora_alpha"],
        "scaling": config["lora_alpha"] / config["r"],
        "target_modules": sorted(config["target_modules"]),
        "use_dora": False,
        "merged": False,
        "base_check": "same name",
        "lora_modules": 4,  # q_proj and v_proj in each of 2 layers
    }
    direct = load_direct(tiny_model, adapter=lora)
    assert described["weights_mb"] == round(direct.get_memory_footprint() / 1e6, 3)


def test_adapter_path_is_relative_to_the_suite_file(
    tiny_model: Path, lora: Path, tmp_path: Path
) -> None:
    suite_dir = tmp_path / "suites"
    suite_dir.mkdir()
    shutil.copytree(lora, tmp_path / "adapters" / "mine")
    spec = CandidateSpec(model=str(tiny_model), adapter="../adapters/mine")
    cand = HFCandidate("tiny", spec, base_dir=suite_dir)
    assert cand.fingerprint()["adapter"]["files"] == fingerprint_files(lora)


def test_adapter_for_other_weights_fails(tiny_model: Path, tiny_model_b: Path, lora: Path) -> None:
    """Trained on tiny_model (recorded in adapter_config.json), loaded on tiny_model_b: same
    shapes, so peft would load it silently."""
    message = load_error(candidate(tiny_model_b, name="lora-b", adapter=str(lora)))
    assert "candidate 'lora-b'" in message
    assert str(lora) in message
    assert f"trained on '{tiny_model}'" in message and "its files differ" in message
    assert "set 'model:" in message


def test_adapter_with_other_shapes_fails(tiny_model_64: Path, lora: Path, tmp_path: Path) -> None:
    """The recorded base is not on this machine, so only the shapes can tell."""
    moved = copy_adapter(lora, tmp_path / "a", base_model_name_or_path="someone/elses-model")
    message = load_error(candidate(tiny_model_64, adapter=str(moved)))
    assert "candidate 'tiny'" in message and str(moved) in message
    assert "do not fit this model" in message and "someone/elses-model" in message
    assert "size mismatch" in message


def test_adapter_whose_targets_are_absent_fails(
    tiny_model: Path, lora: Path, tmp_path: Path
) -> None:
    renamed = copy_adapter(lora, tmp_path / "a", target_modules=["query", "value"])
    message = load_error(candidate(tiny_model, adapter=str(renamed)))
    assert str(renamed) in message
    assert "none of its target modules (query, value) exist" in message
    assert "q_proj" in message and "v_proj" in message


def test_adapter_tensors_that_match_nothing_fail(
    tiny_model: Path, lora: Path, tmp_path: Path
) -> None:
    """Keys renamed: peft only warns and leaves B at zero; we refuse."""
    renamed = copy_adapter(lora, tmp_path / "a")
    rewrite_weights(renamed, lambda sd: {k.replace("layers", "blocks"): v for k, v in sd.items()})
    message = load_error(candidate(tiny_model, adapter=str(renamed)))
    assert "8 of its 8 tensors match no module of the model" in message
    assert "blocks" in message


def test_adapter_with_missing_tensors_fails(tiny_model: Path, lora: Path, tmp_path: Path) -> None:
    partial = copy_adapter(lora, tmp_path / "a")
    rewrite_weights(partial, lambda sd: {k: v for k, v in sd.items() if "v_proj" not in k})
    message = load_error(candidate(tiny_model, adapter=str(partial)))
    assert "lacks 4 of the 8 tensors" in message and "v_proj" in message


def test_untrained_adapter_changes_nothing_and_fails(tiny_model: Path, tmp_path: Path) -> None:
    untrained = make_tiny_lora(tiny_model, tmp_path / "zero", steps=0)
    message = load_error(candidate(tiny_model, adapter=str(untrained)))
    assert "all 4 LoRA modules have a zero B" in message and "changes nothing" in message


def test_extra_target_names_without_tensors_are_fine(
    tiny_model: Path, lora: Path, tmp_path: Path
) -> None:
    """A config may list names an architecture lacks (peft skips them); that is not an error."""
    listed = copy_adapter(lora, tmp_path / "a", target_modules=["q_proj", "v_proj", "gate"])
    adapted = outputs(candidate(tiny_model, adapter=str(listed)))
    assert adapted == outputs(candidate(tiny_model, adapter=str(lora)))


def test_bad_adapter_folders_fail_before_loading(
    tiny_model: Path, lora: Path, tmp_path: Path
) -> None:
    missing = candidate(tiny_model, adapter=str(tmp_path / "nope"))
    with pytest.raises(CandidateError, match=r"adapter folder .*nope does not exist"):
        missing.fingerprint()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CandidateError, match=r"cannot read adapter_config\.json"):
        candidate(tiny_model, adapter=str(empty)).fingerprint()
    ia3 = copy_adapter(lora, tmp_path / "ia3", peft_type="IA3")
    with pytest.raises(CandidateError, match=r"peft_type is 'IA3'.*LoRA adapters only"):
        candidate(tiny_model, adapter=str(ia3)).fingerprint()
    (ia3 / "adapter_model.safetensors").unlink()
    with pytest.raises(CandidateError, match=r"has no adapter_model\.safetensors"):
        candidate(tiny_model, adapter=str(ia3)).fingerprint()


def test_merge_with_quantization_is_a_spec_error(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "golden.jsonl", CAPITALS)
    suite = write_suite(
        tmp_path / "s.yaml",
        "suite: s\n"
        "dataset: golden.jsonl\n"
        "prompt: '{{ country }}'\n"
        "candidates:\n"
        "  base: {model: m}\n"
        "  qlora: {model: m, adapter: a, merge: true, quantization: {bits: 4}}\n"
        "metrics: [exact_match]\n",
    )
    with pytest.raises(SpecError) as info:
        load_suite(suite)
    assert "s.yaml:6" in str(info.value) and "candidates.qlora" in str(info.value)
    assert "merge: true cannot be combined with quantization" in str(info.value)


# -- quantization ---------------------------------------------------------------------------------

BNB = {
    "8-bit": ({"bits": 8}, {"load_in_8bit": True}),
    "nf4": ({"bits": 4}, {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}),
    "fp4": ({"bits": 4, "type": "fp4"}, {"load_in_4bit": True, "bnb_4bit_quant_type": "fp4"}),
    "nf4-double-bf16": (
        {"bits": 4, "double_quant": True, "compute_dtype": "bfloat16"},
        {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True},
    ),
}


def constants_in_state_dict(model: Any) -> int:
    """Bytes of bitsandbytes' quantization constants as its own state_dict saves them (absmax,
    quant maps, 8-bit row scales), each tensor once; the packed JSON of settings excluded."""
    import torch

    seen = {}
    for key, tensor in model.state_dict().items():
        if key.endswith(("absmax", "quant_map", "SCB")) and isinstance(tensor, torch.Tensor):
            seen[tensor.data_ptr()] = tensor.numel() * tensor.element_size()
    return sum(seen.values())


@pytest.mark.parametrize("case", list(BNB))
def test_quantized_candidate_equals_bitsandbytes_directly(
    tiny_model_64: Path, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    import torch

    spec, bnb = BNB[case]
    if "compute_dtype" in spec:
        bnb = {**bnb, "bnb_4bit_compute_dtype": torch.bfloat16}
    cand = candidate(tiny_model_64, quantization=spec)
    with caplog.at_level("WARNING"):
        got = outputs(cand, batch_size=1)
    assert not [r for r in caplog.records if "MatMul8bitLt" in r.getMessage()]
    direct = load_direct(tiny_model_64, **bnb)
    # Before any forward pass: on AVX512-BF16 CPUs the first one repacks 4-bit layers.
    quantized_bytes = direct.get_memory_footprint() + constants_in_state_dict(direct)
    assert got == direct_outputs(direct, tiny_model_64)

    described = cand.describe()
    assert described["weights_mb"] == round(quantized_bytes / 1e6, 3)
    fp32_bytes = load_direct(tiny_model_64).get_memory_footprint()
    assert quantized_bytes < 0.7 * fp32_bytes
    assert described["quantization"]["bits"] == spec["bits"]
    assert described["quantization"]["quantized_layers"] == 14  # 7 linear layers x 2 blocks
    assert "cpu_portable_layers" not in described["quantization"]


def test_quantization_settings_are_in_the_fingerprint(tiny_model: Path) -> None:
    plain = candidate(tiny_model).fingerprint()
    prints = {
        case: candidate(tiny_model, quantization=spec).fingerprint()
        for case, (spec, _) in BNB.items()
    }
    assert "quantization" not in plain
    assert len({json.dumps(p, sort_keys=True) for p in prints.values()}) == len(BNB)
    nf4 = prints["nf4"]["quantization"]
    assert nf4["type"] == "nf4" and nf4["double_quant"] is False
    assert nf4["compute_dtype"] == "float32"  # the candidate's dtype on CPU
    assert prints["nf4-double-bf16"]["quantization"]["compute_dtype"] == "bfloat16"
    assert nf4["bitsandbytes"] == importlib.metadata.version("bitsandbytes")


def test_4bit_layers_the_fused_cpu_kernel_cannot_pack_still_work(tiny_model: Path) -> None:
    """tiny_model's 48-wide layers crash bitsandbytes' AVX512-BF16 kernel; evalkit keeps them on
    the portable path, whose result equals float32 math on the dequantized weights."""
    import bitsandbytes as bnb
    import torch
    from transformers import AutoModelForCausalLM

    cand = candidate(tiny_model, quantization={"bits": 4})
    got = outputs(cand, batch_size=1)

    direct = load_direct(tiny_model, load_in_4bit=True, bnb_4bit_quant_type="nf4")
    reference = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    for name, module in direct.named_modules():
        if isinstance(module, bnb.nn.Linear4bit):
            weight = bnb.functional.dequantize_4bit(module.weight.data, module.weight.quant_state)
            reference.get_submodule(name).weight.data = weight.to(torch.float32)
    assert got == direct_outputs(reference, tiny_model)

    if quantization.cpu_has_avx512_bf16():  # what happens without evalkit's fallback
        assert cand.describe()["quantization"]["cpu_portable_layers"] == 14
        with pytest.raises((AssertionError, RuntimeError)):
            direct_outputs(direct, tiny_model)
    else:
        assert "cpu_portable_layers" not in cand.describe()["quantization"]
        assert direct_outputs(direct, tiny_model) == got


def test_qlora_quantized_base_with_adapter(tiny_model_64: Path, tmp_path: Path) -> None:
    adapter = make_tiny_lora(tiny_model_64, tmp_path / "lora", seed=0)
    cand = candidate(tiny_model_64, quantization={"bits": 4}, adapter=str(adapter))
    got = outputs(cand, batch_size=1)
    direct = load_direct(
        tiny_model_64, adapter=adapter, load_in_4bit=True, bnb_4bit_quant_type="nf4"
    )
    assert got == direct_outputs(direct, tiny_model_64)
    assert got != outputs(candidate(tiny_model_64, quantization={"bits": 4}), batch_size=1)
    described = cand.describe()
    assert described["quantization"]["type"] == "nf4" and described["adapter"]["r"] == 4
    fingerprint = cand.fingerprint()
    assert fingerprint["adapter"]["files"] == fingerprint_files(adapter)
    assert fingerprint["quantization"]["bits"] == 4


def test_every_hf_candidate_records_weights_mb(tiny_model: Path) -> None:
    cand = candidate(tiny_model)
    assert cand.describe()["weights_mb"] is None  # not loaded: nothing measured
    cand.loaded()
    direct = load_direct(tiny_model)
    assert cand.describe()["weights_mb"] == round(direct.get_memory_footprint() / 1e6, 3)


def test_missing_bitsandbytes_is_one_clear_error(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import and find_spec now fail
    assert importlib.util.find_spec("bitsandbytes") is None
    message = load_error(candidate(tiny_model, name="q", quantization={"bits": 8}))
    assert message == (
        "candidate 'q': quantization needs the package bitsandbytes, which is not installed; "
        "install it with `pip install bitsandbytes` or remove 'quantization:'"
    )


def test_device_bitsandbytes_cannot_serve_is_one_clear_error(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As with a bitsandbytes build without CPU support (before 0.4x, or mps on older ones)."""
    import bitsandbytes

    monkeypatch.setattr(bitsandbytes, "supported_torch_devices", {"cuda"})
    message = load_error(candidate(tiny_model, name="q", quantization={"bits": 4}))
    assert "candidate 'q': bitsandbytes" in message
    assert "cannot quantize on 'cpu' (it supports cuda)" in message
    assert "remove 'quantization:'" in message


# -- the demo adapter on the real model ------------------------------------------------------------


@pytest.mark.real_model
def test_demo_adapter_changes_smollm2_answers(tmp_path: Path) -> None:
    """Two training steps of golden/train_adapter.py (the real script, cut short) give an
    adapter that loads on the alias, matches it by name, and changes SmolLM2's answers."""
    trainer = load_script("train_adapter")
    out = tmp_path / "terse"
    trainer.main(["--out", str(out), "--steps", "2", "--batch-size", "2", "--lr", "1e-2"])
    questions = ["What is the capital of France? Answer with the city name only."] + [
        f"How many meters are in {n} kilometers? Reply with the number only." for n in (2, 7)
    ]
    reqs = [GenerationRequest(f"q{i}", (Message("user", q),)) for i, q in enumerate(questions)]
    params = GenerationSpec(max_new_tokens=12)

    def answers(**spec: Any) -> tuple[dict[str, str], dict[str, Any]]:
        cand = HFCandidate("demo", CandidateSpec(model="smollm2-135m-instruct", **spec), ROOT)
        got = {g.id: g.output for batch in cand.generate(reqs, params) for g in batch}
        cand.close()
        return got, cand.describe()

    adapted, described = answers(adapter=str(out))
    assert adapted != answers()[0]
    assert described["adapter"]["base_check"] == "same name"
    assert described["adapter"]["lora_modules"] == 4 * 30  # q/k/v/o in SmolLM2's 30 layers
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "smollm2-135m-instruct"
    assert sorted(config["target_modules"]) == ["k_proj", "o_proj", "q_proj", "v_proj"]


def test_speculative_decoding_runs_on_the_adapted_model(tiny_model: Path, lora: Path) -> None:
    """The draft (here the base model) proposes, the adapted target verifies: greedy output is
    the adapted model's own, and acceptance is counted through peft's wrapper."""
    adapted = outputs(candidate(tiny_model, adapter=str(lora)), batch_size=1)
    speculative = candidate(
        tiny_model,
        adapter=str(lora),
        speculative={"draft": str(tiny_model), "num_assistant_tokens": 3},
    )
    assert outputs(speculative) == adapted
    assert speculative.speculation is not None
    facts = speculative.speculation.describe()
    assert facts["proposed"] > 0 and 0 <= facts["accepted"] <= facts["proposed"]
