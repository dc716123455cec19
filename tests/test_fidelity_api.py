"""Fidelity metrics of API candidates (``api: {base: URL}``) against a local base: the server is
a real HTTP server on 127.0.0.1 whose completions endpoint is a real tiny transformers model
(``model_server``), scoring the given answer with ``echo`` as vLLM does. Expected values come
from the two models' own forward passes, top-k taken with torch and keyed by token id."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from model_server import ModelRoutes
from openai_server import Fault, OpenAIServer
from suitefiles import CAPITALS, write_jsonl, write_suite

from evalkit.cache import Cache
from evalkit.candidates.api import ApiCandidate
from evalkit.candidates.base import Message
from evalkit.candidates.hf import HFCandidate
from evalkit.metrics import BaseRef, Sample, create, split_score
from evalkit.metrics.divergence import kl_from_top_logprobs
from evalkit.run import RunOptions, prepare_suite, run_suite
from evalkit.spec import CandidateSpec, GenerationSpec

KEY = "sk-evalkit-FIDELITY-9d2e7a41c0"
KEY_ENV = "EVALKIT_FIDELITY_API_KEY"
QUESTIONS = [
    ("a", "What is the capital of France?", "Paris"),
    ("b", "Which colour is the sky? Tell me in a few words.", "The sky is blue."),
    ("c", "Who?", "My friend knows the teacher."),
]


def chat_sample(sample_id: str, question: str, reference: str) -> Sample:
    messages = (Message("system", "Answer briefly."), Message("user", question))
    return Sample(sample_id, "", (reference,), question, {}, messages)


SAMPLES = [chat_sample(*q) for q in QUESTIONS]


@pytest.fixture
def served(tiny_model: Path) -> Iterator[OpenAIServer]:
    """``tiny_model`` behind an OpenAI-compatible server (tokens named by id, as vLLM does when
    asked)."""
    with ModelRoutes(tiny_model).install(OpenAIServer()) as server:
        yield server


def remote(server: OpenAIServer, model: str = "tiny", **api: Any) -> ApiCandidate:
    spec = CandidateSpec(model=model, api={"base": server.base, "max_retries": 1, **api})
    return ApiCandidate("served", spec)


def local_base(folder: Path) -> BaseRef:
    return BaseRef("base", f"fp-{folder.name}", lambda: HFCandidate("base", _spec(folder), folder))


def _spec(folder: Path) -> CandidateSpec:
    return CandidateSpec(model=str(folder))


def score(
    column: str, candidate: Any, base: BaseRef, samples: list[Sample] = SAMPLES
) -> list[tuple[float | None, dict]]:
    metric = create(column)
    values = metric.score_against(samples, candidate, base, GenerationSpec(batch_size=2))
    return [split_score(v) for v in values]


def direct_top_k(base: Path, other: Path, sample: Sample, k: int = 20) -> tuple[list[float], float]:
    """Per answer token, ``kl_from_top_logprobs`` of the two models' top-k (torch.topk of a
    float64 log-softmax, keyed by token id), and the top-1 agreement; the answer is the tail of
    prompt + answer tokenized together, after the tokenizer's chat template."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    chat = [{"role": m.role, "content": m.content} for m in sample.messages]
    prompt = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    whole = tokenizer(prompt + sample.reference, add_special_tokens=False)["input_ids"]
    assert whole[: len(prompt_ids)] == prompt_ids
    tops = []
    for folder in (base, other):
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([whole])).logits[0].double()
        rows = torch.log_softmax(logits, dim=-1)[len(prompt_ids) - 1 : len(whole) - 1]
        values, ids = torch.topk(rows, k, dim=-1)
        tops.append(
            [
                {str(i): v for i, v in zip(row_ids, row_values, strict=True)}
                for row_ids, row_values in zip(ids.tolist(), values.tolist(), strict=True)
            ]
        )
    pairs = [kl_from_top_logprobs(p, q) for p, q in zip(*tops, strict=True)]
    return [kl for kl, _ in pairs], sum(agree for _, agree in pairs) / len(pairs)


@pytest.mark.parametrize("names", ["vllm", "text"])
def test_the_same_model_behind_a_server_gives_zero_kl_and_full_agreement(
    tiny_model: Path, names: str
) -> None:
    """Named by id, or by text (a server that ignores ``return_tokens_as_token_ids``): the local
    base's tokens are named the same way, so both line up."""
    with ModelRoutes(tiny_model, names=names).install(OpenAIServer()) as server:
        candidate = remote(server)
        kls = score("kl_divergence", candidate, local_base(tiny_model))
        tops = score("top1_agreement", candidate, local_base(tiny_model))
    for (kl, detail), (top1, top1_detail) in zip(kls, tops, strict=True):
        assert kl is not None and abs(kl) < 1e-9, detail
        assert top1 == 1.0 and top1_detail["n_agree"] == top1_detail["n_tokens"]
        assert detail["method"] == "api-top-k-approx" and "tail_bound" not in detail
    # Per example: /tokenize (chat), /detokenize, /tokenize (prompt + answer), /completions,
    # once for both columns (the second column reads the first one's comparison).
    paths = [path for path, _, _ in server.route_log]
    assert paths.count("/v1/completions") == len(SAMPLES) and len(paths) == 4 * len(SAMPLES)
    completions = [body for path, _, body in server.route_log if path == "/v1/completions"]
    assert all(body["echo"] and body["logprobs"] == 20 and body["max_tokens"] == 0
               and body["return_tokens_as_token_ids"] for body in completions)  # fmt: skip


@pytest.mark.parametrize("served_model", ["noisy copy", "other weights"])
def test_a_different_model_behind_a_server_equals_a_direct_top_k_computation(
    tiny_model: Path, tiny_model_b: Path, tmp_path: Path, served_model: str
) -> None:
    """The noisy copy agrees on some answer tokens and not others; tiny_model_b on none."""
    from tinymodels import make_noisy_copy

    other = tiny_model_b
    if served_model == "noisy copy":
        other = make_noisy_copy(tiny_model, tmp_path / "noisy", noise=0.01)
    with ModelRoutes(other).install(OpenAIServer()) as server:
        candidate = remote(server)
        kls = score("kl_divergence", candidate, local_base(tiny_model))
        tops = score("top1_agreement", candidate, local_base(tiny_model))
    agreements = []
    for sample, (kl, detail), (top1, _) in zip(SAMPLES, kls, tops, strict=True):
        tokens, agreement = direct_top_k(tiny_model, other, sample)
        assert kl is not None and kl > 0.01
        assert detail["n_tokens"] == len(tokens)
        assert detail["kl_tokens"] == pytest.approx(tokens, abs=1e-5)
        assert kl == pytest.approx(math.fsum(tokens) / len(tokens), abs=1e-5)
        assert top1 == pytest.approx(agreement, abs=1e-12)
        agreements.append(agreement)
    if served_model == "noisy copy":
        assert any(0 < a < 1 for a in agreements)
    assert "|api:top20(approx:topk-floor)" in create("kl_divergence").signature()
    assert "|api:top5(approx:topk-floor)" in create("kl_divergence", {"top_k": 5}).signature()


def test_apis_without_prompt_log_probs_give_the_reason_never_zero(
    tiny_model: Path, openai_server: OpenAIServer
) -> None:
    base = local_base(tiny_model)
    # A chat-only provider: nothing is sent (no key, no server needed).
    chat_only = ApiCandidate("gpt", CandidateSpec(model="openai/gpt-4o-mini"))
    for value, detail in score("kl_divergence", chat_only, base):
        assert value is None and "chat-completions API" in detail["error"]
    # A chat-only OpenAI-compatible server: no /tokenize; after its 404 nothing more is sent.
    candidate = remote(openai_server, concurrency=1)
    for value, detail in score("top1_agreement", candidate, base):
        assert value is None and "/tokenize" in detail["error"] and "HTTP 404" in detail["error"]
    assert candidate.describe()["requests"] == 1


def test_a_server_that_refuses_echo_or_names_tokens_otherwise(tiny_model: Path) -> None:
    routes = ModelRoutes(tiny_model)
    with routes.install(OpenAIServer()) as server:
        server.routes["/v1/completions"] = lambda body: (
            400, {"error": {"message": "echo is not supported", "type": "BadRequestError"}}
        )  # fmt: skip
        for value, detail in score("kl_divergence", remote(server), local_base(tiny_model)):
            assert value is None
            assert "refused a completions request with echo" in detail["error"]
            assert "echo is not supported" in detail["error"]
    # Raw pieces (``▁sky``) where text was expected: caught on answers with a word boundary
    # inside (a one-piece answer such as "Paris" spells itself either way).
    with ModelRoutes(tiny_model, names="pieces").install(OpenAIServer()) as server:
        scored = score("kl_divergence", remote(server), local_base(tiny_model), SAMPLES[1:])
        for value, detail in scored:
            assert value is None and "do not spell" in detail["error"]


def test_server_errors_are_retried_and_the_key_is_sent_never_shown(
    tiny_model: Path, served: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    served.required_key = KEY
    monkeypatch.setenv(KEY_ENV, KEY)
    served.route_faults["/v1/completions"] = [Fault(status=503)]
    candidate = remote(served, key_env=KEY_ENV)
    values = score("kl_divergence", candidate, local_base(tiny_model))
    assert all(v is not None and abs(v) < 1e-9 for v, _ in values)
    assert candidate.describe()["retries"] == 1
    assert {auth for _, auth, _ in served.route_log} == {f"Bearer {KEY}"}
    # A wrong key: the server echoes it in its 401; the reason names what to do, not the key.
    monkeypatch.setenv(KEY_ENV, "sk-wrong-" + KEY[::-1])
    candidate = remote(served, key_env=KEY_ENV)
    for value, detail in score("kl_divergence", candidate, local_base(tiny_model)):
        assert value is None and "HTTP 401" in detail["error"]
        assert KEY[::-1] not in detail["error"] and f"${KEY_ENV}" in detail["error"]


def test_a_suite_run_compares_a_local_base_with_its_served_copy(
    tmp_path: Path, tiny_model: Path, served: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    served.required_key = KEY
    monkeypatch.setenv(KEY_ENV, KEY)
    write_jsonl(tmp_path / "golden.jsonl", CAPITALS[:4])
    candidates = {
        "base": {"model": str(tiny_model)},
        "served": {"model": "tiny", "api": {"base": served.base, "key_env": KEY_ENV}},
    }
    path = write_suite(
        tmp_path / "suite.yaml",
        {
            "suite": "fidelity_api",
            "dataset": "golden.jsonl",
            "prompt": "What is the capital of {{ country }}?",
            "generation": {"max_new_tokens": 4},
            "candidates": candidates,
            "metrics": ["kl_divergence", "top1_agreement"],
            "gates": {"kl_divergence": {"max": 1e-6}, "top1_agreement": {"min": 1.0}},
            "compare_to": "base",
        },
    )  # fmt: skip
    options = RunOptions(
        report_dir=tmp_path / "r", cache=Cache(tmp_path / "c.sqlite"), progress=False
    )
    result = run_suite(prepare_suite(path), options)
    examples = result.candidates["served"].examples
    assert len(examples) == 4
    assert all(e.scores["kl_divergence"] is not None for e in examples)
    assert all(abs(e.scores["kl_divergence"]) < 1e-9 for e in examples)
    assert all(e.scores["top1_agreement"] == 1.0 for e in examples)
    assert all(g.passed for g in result.gates)
    needle = KEY.encode()
    assert [p for p in tmp_path.rglob("*") if p.is_file() and needle in p.read_bytes()] == []
