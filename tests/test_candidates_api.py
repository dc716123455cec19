"""ApiCandidate against a real OpenAI-compatible HTTP server on 127.0.0.1 (tests/openai_server.py).

Expected values are computed from the server's own documented rules (echo reply, whitespace
tokens, word-count usage) or from litellm's price list read directly, never copied from
evalkit's output.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from openai_server import Fault, OpenAIServer, Reply, default_top_logprobs, schema_instance, tokens

from evalkit.candidates import make_candidate
from evalkit.candidates.api import ApiCandidate, Backoff
from evalkit.candidates.api_errors import redact
from evalkit.candidates.api_models import is_litellm_model
from evalkit.candidates.base import GenerationRequest, Message
from evalkit.errors import CandidateError
from evalkit.spec import CandidateSpec, GenerationSpec, public_url

FAST = Backoff(base_s=0.01, cap_s=0.02)


def candidate(server: OpenAIServer, model: str = "test-model", **api: Any) -> ApiCandidate:
    spec = CandidateSpec(model=model, api={"base": server.base, **api})
    return ApiCandidate("remote", spec, backoff=FAST)


def request(prompt: str, system: str | None = None, id: str | None = None) -> GenerationRequest:
    messages = ((Message("system", system),) if system else ()) + (Message("user", prompt),)
    return GenerationRequest(id=id or prompt, messages=messages)


def generate_all(cand: ApiCandidate, requests: list[GenerationRequest], **params: Any) -> dict:
    return {g.id: g for batch in cand.generate(requests, GenerationSpec(**params)) for g in batch}


def test_replies_usage_and_messages(openai_server: OpenAIServer) -> None:
    openai_server.replies["capital of France?"] = "Paris"
    reqs = [
        request("capital of France?", system="Answer briefly."),
        request("one two three four five six"),
    ]
    out = generate_all(candidate(openai_server), reqs, max_new_tokens=4)
    assert out["capital of France?"].output == "Paris"
    # Echo rule cut at max_tokens=4 whitespace tokens.
    assert out["one two three four five six"].output == "one two three four "
    assert out["capital of France?"].n_prompt_tokens == 2 + 3  # words in system + user
    assert out["capital of France?"].n_output_tokens == 1
    assert out["one two three four five six"].n_output_tokens == 4
    assert all(g.error is None and g.cost is None for g in out.values())  # test-model: no price
    seen = {r.prompt: r for r in openai_server.log}
    assert seen["capital of France?"].body["messages"] == [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "capital of France?"},
    ]
    assert seen["capital of France?"].body["max_tokens"] == 4
    assert seen["capital of France?"].body["temperature"] == 0
    assert "seed" not in seen["capital of France?"].body  # greedy: no seed needed
    # No key_env with api.base: a placeholder, never a provider key from the environment.
    assert {r.authorization for r in openai_server.log} == {"Bearer EMPTY"}


def test_sampling_options_and_stop_strings(openai_server: OpenAIServer) -> None:
    openai_server.replies["count"] = "one, two. three"
    out = generate_all(
        candidate(openai_server),
        [request("count")],
        temperature=0.7,
        top_p=0.9,
        top_k=5,
        seed=3,
        stop=["."],
    )
    body = openai_server.log[0].body
    assert (body["temperature"], body["top_p"], body["top_k"], body["seed"]) == (0.7, 0.9, 5, 3)
    assert body["stop"] == ["."]
    # This server ignores stop strings; evalkit cuts locally, as for local models.
    assert out["count"].output == "one, two"


def test_cost_from_litellm_price_list(openai_server: OpenAIServer) -> None:
    import litellm

    prices = litellm.model_cost["gpt-4o-mini"]
    reqs = [request("a b c d"), request("e f")]
    out = generate_all(candidate(openai_server, model="openai/gpt-4o-mini"), reqs)
    # litellm strips its provider prefix: the server sees the OpenAI model name.
    assert {r.model for r in openai_server.log} == {"gpt-4o-mini"}
    for req in reqs:
        gen = out[req.id]
        words = len(req.messages[-1].content.split())
        assert (gen.n_prompt_tokens, gen.n_output_tokens) == (words, words)  # echo reply
        expected = words * prices["input_cost_per_token"] + words * prices["output_cost_per_token"]
        assert gen.cost == pytest.approx(expected, rel=1e-9)


def test_concurrency_limit_is_honoured(openai_server: OpenAIServer) -> None:
    openai_server.delay_s = 0.15
    reqs = [request(f"q{i}") for i in range(12)]
    out = generate_all(candidate(openai_server, concurrency=3), reqs)
    assert len(out) == 12 and all(g.error is None for g in out.values())
    assert openai_server.max_in_flight == 3
    openai_server.reset()
    generate_all(candidate(openai_server, concurrency=1), reqs[:4])
    assert openai_server.max_in_flight == 1


def test_retries_are_counted_exactly(openai_server: OpenAIServer) -> None:
    openai_server.fail_next(*[Fault(status=429, retry_after_ms=5)] * 2, prompt="rate")
    openai_server.fail_next(*[Fault(status=500)] * 3, prompt="flaky")
    openai_server.fail_always(Fault(status=503), prompt="down")
    cand = candidate(openai_server, max_retries=3)
    out = generate_all(cand, [request("rate"), request("flaky"), request("down"), request("ok")])
    assert openai_server.count("rate") == 3 and out["rate"].output == "rate"
    assert openai_server.count("flaky") == 4 and out["flaky"].output == "flaky"
    assert openai_server.count("down") == 4  # 1 + max_retries
    assert openai_server.count("ok") == 1 and out["ok"].error is None
    error = out["down"].error
    assert error is not None and "\n" not in error
    assert "HTTP 503" in error and "after 4 attempts" in error and "re-run later" in error
    assert out["down"].output == ""
    described = cand.describe()
    assert (described["requests"], described["retries"], described["errors"]) == (12, 8, 1)


def test_no_retries_when_max_retries_is_zero(openai_server: OpenAIServer) -> None:
    openai_server.fail_next(Fault(status=500), prompt="once")
    out = generate_all(candidate(openai_server, max_retries=0), [request("once")])
    assert openai_server.count("once") == 1
    assert out["once"].error is not None and "HTTP 500" in out["once"].error


def test_retry_after_header_is_honoured(openai_server: OpenAIServer) -> None:
    openai_server.fail_next(Fault(status=429, retry_after="1"), prompt="seconds")
    openai_server.fail_next(Fault(status=503, retry_after_ms=400), prompt="millis")
    out = generate_all(candidate(openai_server), [request("seconds"), request("millis")])
    assert out["seconds"].error is None and out["millis"].error is None
    for prompt, wait in (("seconds", 1.0), ("millis", 0.4)):
        first, second = [r for r in openai_server.log if r.prompt == prompt]
        # Our own backoff would wait at most 0.02 s; the server's wait wins.
        assert second.started - first.ended >= wait


def test_final_failures_are_per_example_errors(openai_server: OpenAIServer) -> None:
    openai_server.fail_always(Fault(drop=True), prompt="dropped")
    openai_server.fail_always(Fault(malformed=True), prompt="garbled")
    openai_server.fail_next(Fault(status=400, message="prompt too long"), prompt="too long")
    cand = candidate(openai_server, max_retries=1)
    out = generate_all(
        cand, [request("dropped"), request("garbled"), request("too long"), request("fine")]
    )
    assert openai_server.count("dropped") == 2 and openai_server.count("garbled") == 2
    assert openai_server.count("too long") == 1  # a 400 is not retried
    assert out["fine"].output == "fine" and out["fine"].error is None
    assert "could not reach" in str(out["dropped"].error)
    assert "not valid JSON" in str(out["garbled"].error)
    too_long = str(out["too long"].error)
    assert "HTTP 400" in too_long and "prompt too long" in too_long
    assert "attempts" not in too_long
    for gen in out.values():
        assert gen.error is None or "\n" not in gen.error


def test_a_server_that_is_not_there(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    spec = CandidateSpec(model="m", api={"base": f"http://127.0.0.1:{port}/v1", "max_retries": 1})
    out = generate_all(ApiCandidate("gone", spec, backoff=FAST), [request("hello")])
    error = str(out["hello"].error)
    assert error.startswith(f"could not reach http://127.0.0.1:{port}/v1")
    assert "(after 2 attempts); check that the server is running" in error


def test_timeouts_are_retried_then_reported(openai_server: OpenAIServer) -> None:
    openai_server.fail_next(Fault(delay_s=2.0), prompt="slow once")
    openai_server.fail_always(Fault(delay_s=2.0), prompt="always slow")
    cand = candidate(openai_server, timeout_s=0.3, max_retries=1)
    started = time.perf_counter()
    out = generate_all(cand, [request("slow once"), request("always slow"), request("quick")])
    assert time.perf_counter() - started < 2.0  # nobody waited for the slow replies
    assert out["slow once"].output == "slow once" and openai_server.count("slow once") == 2
    assert openai_server.count("always slow") == 2
    assert "timed out after 0.3 s (after 2 attempts)" in str(out["always slow"].error)
    assert out["quick"].error is None


def test_401_is_not_retried_and_stops_the_rest(
    openai_server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    openai_server.required_key = "sk-right-key-000000"
    monkeypatch.setenv("EVALKIT_TEST_KEY", "sk-wrong-key-123456")
    cand = candidate(openai_server, key_env="EVALKIT_TEST_KEY", concurrency=1, max_retries=4)
    out = generate_all(cand, [request(f"q{i}") for i in range(5)])
    assert openai_server.count() == 1  # not retried, and nothing more sent
    errors = [g.error or "" for g in out.values()]
    assert all("authentication failed" in e and "HTTP 401" in e for e in errors)
    assert sum(e.startswith("not sent: ") for e in errors) == 4
    assert all("$EVALKIT_TEST_KEY" in e for e in errors)
    # The server echoed the wrong key in its message; evalkit's errors do not.
    assert all("sk-wrong-key-123456" not in e for e in errors)


def test_missing_key_variable_is_one_clear_error(
    openai_server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EVALKIT_NO_SUCH_KEY", raising=False)
    cand = candidate(openai_server, key_env="EVALKIT_NO_SUCH_KEY")
    with pytest.raises(CandidateError, match=r"EVALKIT_NO_SUCH_KEY, which is not set"):
        list(cand.generate([request("x")], GenerationSpec()))
    assert openai_server.count() == 0


def test_batches_are_yielded_as_they_finish(openai_server: OpenAIServer) -> None:
    openai_server.fail_next(Fault(delay_s=1.5), prompt="slow")
    batches = candidate(openai_server).generate(
        [request("slow"), *[request(f"fast{i}") for i in range(4)]], GenerationSpec()
    )
    first = next(batches)
    slow = next(r for r in openai_server.log if r.prompt == "slow")
    assert "slow" not in {g.id for g in first}
    assert slow.ended == 0.0  # the slow request was still in flight when the batch arrived
    rest = [g.id for batch in batches for g in batch]
    assert sorted([g.id for g in first] + rest) == sorted(["slow", *[f"fast{i}" for i in range(4)]])


def test_complete_many_logprobs_and_json_schema(openai_server: OpenAIServer) -> None:
    scripted = [{"4": -0.25, "5": -1.75, "3": -3.0}]
    openai_server.replies["judge"] = Reply("4", top_logprobs=scripted)
    cand = candidate(openai_server)
    replies = cand.complete_many(
        [request("judge"), request("alpha beta")], GenerationSpec(), top_logprobs=3
    )
    assert [r.id for r in replies] == ["judge", "alpha beta"]
    assert replies[0].text == "4" and replies[0].top_logprobs == scripted
    assert replies[1].top_logprobs == [
        default_top_logprobs(i, token, 3) for i, token in enumerate(tokens("alpha beta"))
    ]
    assert openai_server.log[0].body["top_logprobs"] == 3
    # Several samples of one example (same id) each get their own reply, in order.
    twice = cand.complete_many([request("same"), request("same")], GenerationSpec())
    assert [r.text for r in twice] == ["same", "same"]
    # Without top_logprobs nothing is asked for and nothing is returned.
    plain = cand.complete_many([request("alpha beta")], GenerationSpec())
    assert plain[0].top_logprobs is None and "logprobs" not in openai_server.log[-1].body
    schema = {
        "type": "object",
        "properties": {"score": {"type": "integer", "minimum": 1}, "why": {"type": "string"}},
    }
    (structured,) = cand.complete_many([request("rate this")], GenerationSpec(), json_schema=schema)
    sent = openai_server.log[-1].body["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["schema"] == schema
    assert json.loads(structured.text) == schema_instance(schema) == {"score": 1, "why": ""}
    assert structured.n_output_tokens == len(tokens(structured.text))


def test_measure_latency_streams(openai_server: OpenAIServer) -> None:
    openai_server.stream_delay_s = 0.1
    cand = candidate(openai_server)
    samples = cand.measure_latency([request("a b c d"), request("e f")], GenerationSpec(), warmup=1)
    assert openai_server.count() == 3 and all(r.stream for r in openai_server.log)
    assert [s.id for s in samples] == ["a b c d", "e f"]
    first, second = samples
    assert first.error is None and first.ttft_s is not None
    assert first.n_output_tokens == 4 and second.n_output_tokens == 2
    assert first.total_s - first.ttft_s >= 3 * 0.1  # three more chunks, 0.1 s apart
    assert cand.describe()["streaming"] is True


def test_measure_latency_without_streaming(openai_server: OpenAIServer) -> None:
    openai_server.refuse_stream = True
    cand = candidate(openai_server)
    samples = cand.measure_latency([request("a b c")], GenerationSpec(), warmup=0)
    assert samples[0].ttft_s is None and samples[0].error is None
    assert samples[0].n_output_tokens == 3 and samples[0].total_s > 0
    assert [r.stream for r in openai_server.log] == [True, False]
    assert cand.describe()["streaming"] is False


def test_fingerprint_has_no_secrets_and_imports_no_litellm(tmp_path: Path) -> None:
    spec = CandidateSpec(
        model="my-model",
        api={"base": "HTTPS://user:pw@Example.COM:8443/v1/?token=abc#frag", "key_env": "K"},
    )
    assert ApiCandidate("x", spec).fingerprint() == {
        "kind": "api",
        "model": "my-model",
        "base": "https://example.com:8443/v1",
    }
    assert public_url("http://127.0.0.1:8000/v1/") == "http://127.0.0.1:8000/v1"
    # The spec as run.json records it carries no credentials or query either.
    assert spec.model_dump(mode="json")["api"]["base"] == "https://example.com:8443/v1"
    assert spec.api is not None and spec.api.base.startswith("HTTPS://user:pw@")  # as called
    # Choosing and fingerprinting an API candidate must not import litellm (2-3 s).
    code = (
        "import sys; from pathlib import Path; from evalkit.candidates import make_candidate;"
        "from evalkit.spec import CandidateSpec;"
        "c = make_candidate('r', CandidateSpec(model='openai/gpt-4o-mini'), Path('.'));"
        "c.fingerprint(); print(type(c).__name__, 'litellm' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert out.stdout.split() == ["ApiCandidate", "False"]


def test_which_models_are_api_candidates(tmp_path: Path) -> None:
    def kind(model: str, **options: Any) -> str:
        return type(make_candidate("c", CandidateSpec(model=model, **options), tmp_path)).__name__

    assert kind("openai/gpt-4o-mini") == "ApiCandidate"
    assert kind("anthropic/claude-sonnet-4-5") == "ApiCandidate"
    assert kind("any-name", api={"base": "http://127.0.0.1:1/v1"}) == "ApiCandidate"
    assert kind("openai/brand-new-model", api={}) == "ApiCandidate"
    # Hub ids stay local models, including an org that is also a litellm provider.
    assert kind("HuggingFaceTB/SmolLM2-135M-Instruct") == "HFCandidate"
    assert kind("openai/gpt-oss-20b") == "HFCandidate"
    assert kind("openai/brand-new-model") == "HFCandidate"  # not in litellm's local price list
    assert kind("smollm2-135m-instruct") == "HFCandidate"
    # A local-only option or an existing folder of that name means a local model.
    assert kind("openai/gpt-4o-mini", revision="main") == "HFCandidate"
    (tmp_path / "openai" / "gpt-4o-mini").mkdir(parents=True)
    assert kind("openai/gpt-4o-mini") == "HFCandidate"
    assert is_litellm_model("openai/gpt-4o-mini") and not is_litellm_model("gpt-4o-mini")


def test_redact() -> None:
    text = (
        "Incorrect API key provided: sk-abc123456789. header Authorization: Bearer tok-999 "
        "api_key='zzz-secret' my-own-secret"
    )
    clean = redact(text, ["my-own-secret"])
    for secret in ("sk-abc123456789", "tok-999", "zzz-secret", "my-own-secret"):
        assert secret not in clean
    assert clean.count("[redacted]") == 4
