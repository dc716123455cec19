"""The opt-in real-server tests (``vllm_full``; `make test-vllm-full`): all 175 capitals,
n-gram speculation and corpus perplexity on vLLM. CI leaves them out for time: the n-gram
candidate needs a second server (speculation is a server setting), which starts here on first
use, and the corpus run scores long texts one request at a time on the LoRA-enabled server.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from vllm_constants import (
    LOOKUP,
    MODEL,
    check_greedy_equal,
    check_reference_perplexity_equal,
    run,
    write_suite,
)

from evalkit.candidates.vllm_server import ServerPool
from evalkit.results import RunResult

pytestmark = [pytest.mark.real_model, pytest.mark.vllm_full]


@pytest.fixture(scope="module")
def all_capitals(suites: dict[str, Path], vllm_pool: ServerPool) -> RunResult:
    """The CI set's capitals suite on all 175 examples (its first ones come from the cache)."""
    return run(suites["capitals"])


def test_all_greedy_capitals_on_vllm_equal_transformers(all_capitals: RunResult) -> None:
    check_greedy_equal(all_capitals, 175)


def test_all_reference_perplexities_on_vllm_equal_transformers(all_capitals: RunResult) -> None:
    check_reference_perplexity_equal(all_capitals)


def test_ngram_speculation_on_vllm_is_lossless(
    suites: dict[str, Path], vllm_pool: ServerPool, all_capitals: RunResult
) -> None:
    path = write_suite(
        suites["capitals"].parent, "capitals_ngram",
        {"base": {"model": MODEL}, "ngram": {"model": MODEL, "engine": "vllm",
                                             "speculative": LOOKUP}},
        [{"contains": {"normalize": ["lower"]}}],
    )  # fmt: skip
    plain = all_capitals  # its `served` answers are in the cache the n-gram run reads
    result = run(path)
    ngram = result.candidates["ngram"]
    check = ngram.equivalence
    assert check is not None and check.skipped is None
    assert check.checked == 175 and check.unchecked == 0
    assert check.mismatches == []
    # Its target is the plain `served` candidate: same fingerprint, so its answers came cached.
    assert check.target_fingerprint_hash == plain.candidates["served"].fingerprint_hash
    assert check.target_cached == 175
    assert ngram.describe["vllm"]["base"] != plain.candidates["served"].describe["vllm"]["base"]


def test_corpus_perplexity_on_vllm_equals_transformers(
    suites: dict[str, Path], vllm_pool: ServerPool
) -> None:
    corpus = {"base": {"model": MODEL}, "served": {"model": MODEL, "engine": "vllm"}}
    result: RunResult = run(write_suite(suites["capitals"].parent, "corpus", corpus))
    base, served = result.candidates["base"], result.candidates["served"]
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
