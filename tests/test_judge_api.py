"""Judge metrics with an API judge, against a real OpenAI-compatible server on 127.0.0.1:
top log-probabilities, JSON with bounded re-asks, samples, cost, and pairwise position bias."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import pytest
from openai_server import Fault, OpenAIServer, Reply, word_count
from suitefiles import write_jsonl, write_suite

from evalkit.cache import Cache
from evalkit.metrics import Sample, Scored, create, run_figures
from evalkit.run import RunOptions, prepare_suite, run_suite

MODEL = "openai/gpt-4o-mini"  # priced in litellm's local map, so cost is known


def _judge(server: OpenAIServer, name: str = "judge", **options: Any) -> Any:
    api = {"base": server.base, "max_retries": 0, **options.pop("api", {})}
    return create(name, {"model": MODEL, "api": api, **options})


def _samples(n: int = 2) -> list[Sample]:
    answers = ["Paris", "Lyon", "Marseille"]
    return [
        Sample(id=f"s{i}", output=answers[i], references=("Paris",), prompt="Capital of France?")
        for i in range(n)
    ]


def _answer_in(prompt: str) -> str:
    """The judged answer as the judge sees it (between its tags)."""
    return prompt.split("<answer-")[1].split(">\n", 1)[1].split("\n</answer-")[0]


def _price(prompt_tokens: int, output_tokens: int) -> float:
    import litellm

    prices = litellm.model_cost["gpt-4o-mini"]
    return (
        prompt_tokens * prices["input_cost_per_token"]
        + output_tokens * prices["output_cost_per_token"]
    )


def _words(body: dict[str, Any]) -> int:
    return sum(word_count(m["content"]) for m in body["messages"])


def test_score_from_top_logprobs(openai_server: OpenAIServer) -> None:
    # The judge "writes" 4; its alternatives: 5, " 3" (with a space: same score), and a word.
    position = {"4": math.log(0.5), "5": math.log(0.2), " 3": math.log(0.1), "The": math.log(0.2)}
    openai_server.respond = lambda prompt, body: Reply("4", top_logprobs=[position])
    metric = _judge(openai_server, read="logprobs")
    scores = metric.score(_samples())
    expected = (4 * 0.5 + 5 * 0.2 + 3 * 0.1) / 0.8
    for score, record in zip(scores, openai_server.log, strict=True):
        assert score.value == pytest.approx(expected)
        assert score.detail["mass"] == pytest.approx(0.8)
        assert score.detail["argmax"] == 4 and score.detail["read"] == "distribution"
        assert record.body["logprobs"] is True and record.body["top_logprobs"] == 20
        # Tokens as the server counted them (words), cost as litellm's price list says.
        words = _words(record.body)
        assert score.detail["judge_prompt_tokens"] == words
        assert score.detail["judge_cost_usd"] == pytest.approx(_price(words, 1), rel=1e-9)
    summary = run_figures(metric, list(map(Scored.of, _samples(), scores))).extra
    assert summary["judge_cost_usd"] == pytest.approx(
        sum(s.detail["judge_cost_usd"] for s in scores)
    )


def _json_respond(score_for: dict[str, int], bad_rounds: int = 0) -> Any:
    """Valid JSON naming a score per answer, after ``bad_rounds`` invalid replies (a re-ask is
    a conversation with one more assistant turn)."""

    def respond(prompt: str, body: dict[str, Any]) -> str | None:
        if body.get("response_format") is None:
            return "I think it deserves a four."  # score mode: no log-probabilities follow
        first_user = next(m for m in body["messages"] if m["role"] == "user")["content"]
        rounds = sum(m["role"] == "assistant" for m in body["messages"])
        if rounds < bad_rounds:
            return ["Score: 4", '{"score": 9, "rationale": "too high"}'][rounds % 2]
        answer = _answer_in(first_user)
        return json.dumps({"rationale": f"{answer} vs Paris", "score": score_for[answer]})

    return respond


def test_api_without_logprobs_falls_back_to_validated_json(openai_server: OpenAIServer) -> None:
    openai_server.offer_logprobs = False
    openai_server.respond = _json_respond({"Paris": 5, "Lyon": 1})
    scores = _judge(openai_server).score(_samples())
    assert [s.value for s in scores] == [5.0, 1.0]
    assert scores[1].detail["rationale"] == "Lyon vs Paris"
    assert scores[1].detail["read"] == "json"
    assert "no log-probabilities" in scores[1].detail["fallback"]
    # Both requests of each judgment count: the logprob attempt and the JSON one.
    assert openai_server.count() == 4
    for score, sample in zip(scores, _samples(), strict=True):
        bodies = [r.body for r in openai_server.log if f"\n{sample.output}\n</answer-" in r.prompt]
        assert len(bodies) == 2
        assert score.detail["judge_prompt_tokens"] == sum(_words(b) for b in bodies)
    schema = openai_server.log[-1].body["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["score"]["enum"] == [1, 2, 3, 4, 5]


def test_invalid_json_is_re_asked_with_the_error_then_counted(openai_server: OpenAIServer) -> None:
    openai_server.respond = _json_respond({"Paris": 5, "Lyon": 2}, bad_rounds=2)
    scores = _judge(openai_server, read="json", max_reasks=2).score(_samples())
    assert [s.value for s in scores] == [5.0, 2.0]
    assert [s.detail["reasks"] for s in scores] == [2, 2]
    assert openai_server.count() == 6  # 3 requests per example
    last = openai_server.log[-1].body["messages"]
    assert [m["role"] for m in last] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert "Invalid JSON" in last[3]["content"]  # the parse error is shown to the judge
    assert "score: Input should be 1, 2, 3, 4 or 5" in last[5]["content"]
    scored = list(map(Scored.of, _samples(), scores))
    summary = run_figures(_judge(openai_server), scored).extra
    assert summary["judge_reasks"] == 4.0


def test_after_the_last_re_ask_the_value_is_missing_never_zero(
    openai_server: OpenAIServer,
) -> None:
    openai_server.respond = _json_respond({"Paris": 5, "Lyon": 2}, bad_rounds=5)
    scores = _judge(openai_server, read="json", max_reasks=1).score(_samples())
    assert [s.value for s in scores] == [None, None]
    assert "no valid JSON reply after 2 tries" in scores[0].detail["error"]
    assert openai_server.count() == 4


def test_api_failure_is_the_error_and_is_not_re_asked(openai_server: OpenAIServer) -> None:
    openai_server.fail_always(Fault(status=500))
    scores = _judge(openai_server, read="json").score(_samples(1))
    assert scores[0].value is None and "500" in scores[0].detail["error"]
    assert openai_server.count() == 1


def test_samples_report_their_spread(openai_server: OpenAIServer) -> None:
    by_seed = {0: 2, 1: 4, 2: 3}

    def respond(prompt: str, body: dict[str, Any]) -> str:
        return json.dumps({"rationale": "r", "score": by_seed[body["seed"]]})

    openai_server.respond = respond
    metric = _judge(openai_server, read="json", samples=3, temperature=0.8)
    (score,) = metric.score(_samples(1))
    assert score.value == pytest.approx(3.0)
    assert score.detail["samples"] == [2.0, 4.0, 3.0]
    assert score.detail["spread"] == pytest.approx(statistics.pstdev([2, 4, 3]))
    assert sorted(r.body["seed"] for r in openai_server.log) == [0, 1, 2]
    assert {r.body["temperature"] for r in openai_server.log} == {0.8}


def test_api_pairwise_judge_with_position_bias_ties(openai_server: OpenAIServer) -> None:
    # This judge always prefers the response shown first, whatever it says.
    position = {"1": math.log(0.9), "2": math.log(0.05), "0": math.log(0.05)}
    openai_server.respond = lambda prompt, body: Reply("1", top_logprobs=[position])
    metric = _judge(openai_server, "judge_pairwise")
    samples = [
        Sample(id=f"s{i}", output=o, references=("Paris",), prompt="q", baseline_output="Rome")
        for i, o in enumerate(["Paris", "Lyon"])
    ]
    scores = metric.score(samples)
    assert [s.value for s in scores] == [0.5, 0.5]
    assert all(s.detail["orders_disagree"] for s in scores)
    assert openai_server.count() == 4  # both orders for each example
    firsts = [r.prompt.split("<response-1-")[1].split("\n")[1] for r in openai_server.log]
    assert sorted(firsts) == ["Lyon", "Paris", "Rome", "Rome"]
    summary = run_figures(metric, list(map(Scored.of, samples, scores))).extra
    assert summary["order_disagreement_rate"] == 1.0


def test_api_judge_in_a_suite_sums_cost_and_does_not_cache_failures(
    tmp_path: Path, openai_server: OpenAIServer
) -> None:
    openai_server.respond = _json_respond({"Paris": 5, "Lyon": 1}, bad_rounds=9)
    write_jsonl(tmp_path / "g.jsonl", [{"id": "fr", "country": "France", "reference": "Paris"}])
    write_jsonl(tmp_path / "out.jsonl", [{"id": "fr", "output": "Paris"}])
    api = {"base": openai_server.base, "max_retries": 0}
    suite = write_suite(
        tmp_path / "s.yaml",
        {
            "suite": "s",
            "dataset": "g.jsonl",
            "prompt": "Capital of {{ country }}?",
            "candidates": {"out": {"replay": "out.jsonl"}},
            "metrics": [{"judge": {"model": MODEL, "api": api, "read": "json", "max_reasks": 1}}],
        },
    )

    def run() -> Any:
        cache = Cache(tmp_path / "c.db")
        result = run_suite(prepare_suite(suite), RunOptions(report_dir=tmp_path, cache=cache))
        cache.close()
        return result.candidates["out"]

    failed = run()
    assert failed.examples[0].scores["judge"] is None
    assert openai_server.count() == 2
    openai_server.respond = _json_respond({"Paris": 5})
    fixed = run()  # the failure was not cached: asked again, and now it answers
    assert fixed.examples[0].scores["judge"] == 5.0
    assert openai_server.count() == 3
    extra = fixed.aggregates["judge"].extra
    assert extra["judge_cost_usd"] == pytest.approx(
        fixed.examples[0].details["judge"]["judge_cost_usd"]
    )
    assert extra["judge_cost_usd"] > 0
