"""The one run-level hook, ``summarize(scored) -> RunFigures``, on every kind of metric that
uses it (corpus BLEU/chrF/TER, perplexity, latency, a user's class), and the one registration
route that built-ins and plugins share."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy
import pytest
import sacrebleu
from suitefiles import write_jsonl, write_suite

from evalkit.cache import Cache
from evalkit.errors import EvalkitError
from evalkit.metrics import (
    RunFigures,
    Sample,
    Score,
    Scored,
    create,
    register,
    registered,
    registered_groups,
    run_figures,
)
from evalkit.metrics.base import _GROUPS, _REGISTRY
from evalkit.metrics.perplexity import Perplexity, ReferencePerplexity
from evalkit.run import RunOptions, prepare_suite, run_suite

# Distinct prompts: generations are cached by request, so identical prompts would share one.
ROWS = [
    {"id": "a", "topic": "cat", "reference": "The cat sat on the mat."},
    {"id": "b", "topic": "dog", "reference": "A dog barked at the postman today."},
    {"id": "c", "topic": "rain", "reference": "It rained all day in the city."},
]
OUTPUTS = ["The cat sat on a mat.", "A dog barked at the mailman.", "It was raining all day."]


def replay_suite(root: Path, metrics: list[Any]) -> Path:
    write_jsonl(root / "golden.jsonl", ROWS)
    write_jsonl(
        root / "replay.jsonl",
        [{"id": r["id"], "output": o} for r, o in zip(ROWS, OUTPUTS, strict=True)],
    )
    return write_suite(
        root / "suite.yaml",
        {
            "suite": "hook",
            "dataset": "golden.jsonl",
            "prompt": "Say something about {{ topic }}.",
            "candidates": {"replay": {"replay": "replay.jsonl"}},
            "metrics": metrics,
        },
    )


def test_corpus_scores_through_the_hook_equal_sacrebleu_fresh_and_cached(tmp_path: Path) -> None:
    path = replay_suite(tmp_path, ["bleu", "chrf", "ter"])
    references = [[r["reference"] for r in ROWS]]
    expected = {
        "bleu": sacrebleu.corpus_bleu(OUTPUTS, references).score,
        "chrf": sacrebleu.corpus_chrf(OUTPUTS, references).score,
        "ter": sacrebleu.corpus_ter(OUTPUTS, references).score,
    }
    assert 0 < expected["bleu"] < 100  # partial overlaps: the corpus score is not trivial
    options = RunOptions(
        report_dir=tmp_path / "reports", cache=Cache(tmp_path / "c.sqlite"), progress=False
    )
    for _ in range(2):  # the second run takes every score from the cache
        run = run_suite(prepare_suite(path), options).candidates["replay"]
        for name, value in expected.items():
            assert run.aggregates[name].corpus == pytest.approx(value, rel=1e-12)
            assert run.aggregates[name].extra == {}


def test_corpus_hook_directly_and_on_nothing() -> None:
    bleu = create("bleu")
    samples = [
        Sample(id=r["id"], output=o, references=(r["reference"],))
        for r, o in zip(ROWS, OUTPUTS, strict=True)
    ]
    scored = list(map(Scored.of, samples, bleu.score(samples)))
    direct = sacrebleu.corpus_bleu(OUTPUTS, [[r["reference"] for r in ROWS]]).score
    assert run_figures(bleu, scored) == RunFigures(direct)
    assert run_figures(bleu, []) == RunFigures(None, {})


def test_perplexity_figures_from_cached_details_equal_fresh(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = "The cat sat on the mat. It was warm and the sun was out."
    write_jsonl(
        tmp_path / "corpus.jsonl",
        [
            {"id": "a", "text": text, "reference": "Paris"},
            {"id": "b", "text": "A dog sees a small house.", "reference": "Berlin"},
        ],
    )
    path = write_suite(
        tmp_path / "corpus.yaml",
        {
            "suite": "corpus",
            "dataset": "corpus.jsonl",
            "prompt": "Go.",
            "candidates": {"tiny": {"model": str(tiny_model)}},
            "metrics": ["perplexity", "reference_perplexity"],
        },
    )
    options = RunOptions(
        report_dir=tmp_path / "reports", cache=Cache(tmp_path / "c.sqlite"), progress=False
    )
    fresh = run_suite(prepare_suite(path), options).candidates["tiny"]

    def no_scoring(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a fully cached run must not score perplexity again")

    monkeypatch.setattr(Perplexity, "score_candidate", no_scoring)
    monkeypatch.setattr(ReferencePerplexity, "score_candidate", no_scoring)
    cached = run_suite(prepare_suite(path), options).candidates["tiny"]
    for column in ("perplexity", "reference_perplexity"):
        assert cached.aggregates[column].corpus == fresh.aggregates[column].corpus
        assert cached.aggregates[column].extra == fresh.aggregates[column].extra
    # lm-evaluation-harness's definitions, from the per-example details.
    details = [e.details["perplexity"] for e in cached.examples]
    total = sum(d["loglikelihood"] for d in details)
    n_bytes = sum(d["n_bytes"] for d in details)
    figures = cached.aggregates["perplexity"]
    assert figures.corpus == pytest.approx(math.exp(-total / sum(d["n_tokens"] for d in details)))
    assert figures.extra["bits_per_byte"] == pytest.approx(-total / n_bytes / math.log(2))
    words = sum(d["n_words"] for d in details)
    assert figures.extra["word_perplexity"] == pytest.approx(math.exp(-total / words))


def test_latency_percentiles_through_the_hook_equal_numpy() -> None:
    metric = create("latency.e2e_ms")
    values = [12.5, 3.0, 40.25, 7.75, 19.0, 8.5, 100.0]
    scored = [
        Scored(Sample(str(i), "o", ()), v, {"output_tokens": 3}) for i, v in enumerate(values)
    ]
    scored.append(Scored(Sample("x", "o", ()), None, {"error": "not in the latency sample"}))
    figures = run_figures(metric, scored)
    assert figures.corpus is None
    assert figures.extra["p50"] == pytest.approx(numpy.percentile(values, 50), rel=1e-12)
    assert figures.extra["p95"] == pytest.approx(numpy.percentile(values, 95), rel=1e-12)
    assert run_figures(metric, scored[-1:]) == RunFigures(None, {"p50": None, "p95": None})


def test_a_metric_without_the_hook_has_no_figures() -> None:
    metric = create("exact_match")
    scored = [Scored.of(Sample("a", "x", ("x",)), 1.0)]
    assert run_figures(metric, scored) == RunFigures(None, {})


def test_a_user_class_with_summarize_reaches_run_json(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import evalkit
        from evalkit.metrics import RunFigures

        @evalkit.metric
        class Length:
            name, version, higher_is_better = "length", "1", True

            def signature(self):
                return "chars"

            def score(self, samples):
                return [float(len(s.output)) for s in samples]

            def summarize(self, scored):
                values = [s.value for s in scored]
                ids = "".join(s.sample.id for s in scored)
                return RunFigures(sum(values), {"longest": max(values), "n_ids": len(ids)})
        """
    )
    root = pytester.path / "suites"
    write_jsonl(root / "golden.jsonl", ROWS)
    write_jsonl(
        root / "replay.jsonl",
        [{"id": r["id"], "output": o} for r, o in zip(ROWS, OUTPUTS, strict=True)],
    )
    (root / "len.yaml").write_text(
        "suite: lengths\ndataset: golden.jsonl\nprompt: 'say {{ topic }}'\n"
        "candidates: {replay: {replay: replay.jsonl}}\nmetrics: [length]\n"
        "gates: {length: {min: 1}}\n"
    )
    result = pytester.runpytest("suites", "-p", "no:xdist")
    result.assert_outcomes(passed=1)
    run = json.loads((pytester.path / "reports" / "lengths" / "run.json").read_text())
    aggregate = run["candidates"]["replay"]["aggregates"]["length"]
    lengths = [float(len(o)) for o in OUTPUTS]
    assert aggregate["corpus"] == sum(lengths)
    assert aggregate["extra"] == {"longest": max(lengths), "n_ids": 3}


def test_a_hook_returning_something_else_is_named(tmp_path: Path) -> None:
    class Wrong:
        name, version, higher_is_better = "wrong_figures", "1", True

        def signature(self) -> str:
            return "-"

        def score(self, samples: list[Sample]) -> list[Score]:
            return [Score(1.0) for _ in samples]

        def summarize(self, scored: list[Scored]) -> dict[str, float]:
            return {"total": 1.0}

    register("wrong_figures", Wrong)
    try:
        path = replay_suite(tmp_path, ["wrong_figures"])
        cache = Cache(tmp_path / "c.sqlite")
        options = RunOptions(report_dir=tmp_path / "reports", cache=cache, progress=False)
        with pytest.raises(EvalkitError, match=r"metric 'wrong_figures': summarize\(\) returned"):
            run_suite(prepare_suite(path), options)
    finally:
        _REGISTRY.pop("wrong_figures", None)


def test_groups_and_metrics_register_through_one_call() -> None:
    assert "latency" in registered_groups() and "latency" not in registered()
    assert {"bleu", "latency.e2e_ms", "judge", "perplexity"} <= set(registered())

    def pair(**options: Any) -> dict[str, Any]:
        return {"pair.a": create("exact_match"), "pair.b": create("contains")}

    register("pair", pair, group=True)
    try:
        assert "pair" in registered_groups() and "pair" not in registered()
        with pytest.raises(ValueError, match="'latency' is already registered"):
            register("latency", pair, group=True)
        with pytest.raises(ValueError, match="'bleu' is already registered"):
            register("bleu", pair, group=True)
        with pytest.raises(ValueError, match="'pair' is already registered"):
            register("pair", create)  # a metric cannot take a group's name either
    finally:
        _GROUPS.pop("pair", None)
