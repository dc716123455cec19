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
    check_greedy_equal,
    check_reference_perplexity_equal,
    outputs,
    run,
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
