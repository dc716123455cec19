"""engine: vllm on the real server (SmolLM2-135M-Instruct, float32, CPU) against transformers:
the set CI runs (`make test-vllm`), on the session's one server (base model + LoRA module).

Each suite runs once per session through evalkit's own runner; the tests read its results. What
the transformers engine answers is computed by the ``base`` candidates, independently of vLLM,
and cached before the server starts (conftest.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from vllm_constants import (
    CI_LIMIT,
    MODEL,
    check_fidelity,
    check_greedy_equal,
    check_reference_perplexity_equal,
    outputs,
    run,
    write_suite,
)

from evalkit.candidates.vllm_server import ServerPool
from evalkit.results import RunResult

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="session")
def capitals(suites: dict[str, Path], vllm_pool: ServerPool) -> RunResult:
    result = run(suites["capitals"], limit=CI_LIMIT)
    assert result.candidates["base"].n_cached == CI_LIMIT  # answered before the server started
    return result


def test_greedy_capitals_on_vllm_equal_transformers(capitals: RunResult) -> None:
    check_greedy_equal(capitals, CI_LIMIT)
    assert capitals.candidates["served"].n_generated == CI_LIMIT


def test_reference_perplexity_on_vllm_equals_transformers(capitals: RunResult) -> None:
    check_reference_perplexity_equal(capitals)


def test_fidelity_of_vllm_to_transformers(capitals: RunResult) -> None:
    """The server's prompt log-probs (top 20 by token id) against transformers' distribution
    of the same weights, on the reference answers."""
    check_fidelity(capitals, "served", CI_LIMIT)


def test_fidelity_through_the_openai_compatible_api(
    suites: dict[str, Path], vllm_pool: ServerPool, capitals: RunResult
) -> None:
    """The same server as a plain ``api: {base: URL}`` candidate: prompt rendered by the
    server's /tokenize, scored through /v1/completions with echo (``api_logprobs``). The base's
    distributions come from the capitals run's cache: only the API requests are new. One
    request at a time: vLLM 0.32's LoRA logits layer kills the engine when prompt log-probs of
    several requests share a batch (seen here with 8 in flight), and this server has a LoRA
    module (the vLLM engine knows and does the same by itself)."""
    [server] = vllm_pool.servers()
    api = {"model": f"hosted_vllm/{server.config.served_name}",
           "api": {"base": server.base, "concurrency": 1}}  # fmt: skip
    path = write_suite(suites["capitals"].parent, "capitals_api", {"base": {"model": MODEL},
                       "api": api}, ["kl_divergence", "top1_agreement"])  # fmt: skip
    result = run(path, limit=CI_LIMIT)
    check_fidelity(result, "api", CI_LIMIT)
    served = {e.id: e.scores["kl_divergence"] for e in capitals.candidates["served"].examples}
    through_api = {e.id: e.scores["kl_divergence"] for e in result.candidates["api"].examples}
    assert through_api == pytest.approx(served, abs=1e-6)


def test_lora_on_vllm_equals_peft(
    suites: dict[str, Path], vllm_pool: ServerPool, lora_adapter: Path, capitals: RunResult
) -> None:
    result = run(suites["lora"], limit=CI_LIMIT)
    peft, served = outputs(result, "base"), outputs(result, "lora")
    assert len(peft) == CI_LIMIT and None not in served.values()
    mismatches = {i: (peft[i], served[i]) for i in peft if peft[i] != served[i]}
    assert not mismatches, f"{len(mismatches)}/{CI_LIMIT} differ: {mismatches}"
    assert result.candidates["lora"].describe["served_model"].startswith(lora_adapter.name)
    # The adapter really changes answers (else both engines could be ignoring it alike).
    plain = outputs(capitals, "base")
    assert sum(plain[i] != peft[i] for i in peft) >= 5
    assert len(vllm_pool.servers()) == 1  # base and LoRA requests on one server start
