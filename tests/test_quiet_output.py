"""A real run prints evalkit's own output and nothing from the libraries underneath: no loading
bars with EVALKIT_PROGRESS=0, no deprecation warnings, no library log lines (issue: quiet output).

The suite has one candidate of each kind that used to make noise, on tiny models: sampling
(transformers' "generation flags are not valid"), a LoRA adapter (peft's
`is_gradient_checkpointing` FutureWarning), a draft model (transformers' "Passing
`generation_config` together with ..."), nf4 (bitsandbytes), and every load ("Loading weights").
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from suitefiles import write_jsonl, write_suite
from tinymodels import make_noisy_copy, make_tiny_llama, make_tiny_lora

from evalkit._quiet import LOG_NOISE, quiet_libraries

REPO = Path(__file__).resolve().parents[1]

NOISE = [
    "Loading weights",
    "generation flags are not valid",
    "Passing `generation_config`",
    "is_gradient_checkpointing",
    "gemm_4bit_forward",
    "MatMul8bitLt",
    "Warning",  # FutureWarning, UserWarning, DeprecationWarning, pytest's "warnings summary"
    "warn(",
    "1 suites",
]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("quiet")
    # 64 wide: bitsandbytes' 4-bit CPU kernel needs multiples of 32 out, 64 in.
    model = make_tiny_llama(root / "model", seed=2, hidden_size=64, intermediate_size=128)
    make_tiny_lora(model, root / "lora", steps=2)
    make_noisy_copy(model, root / "draft", noise=0.01)
    rows = [{"id": f"w{i}", "word": w, "reference": w} for i, w in enumerate(["cat", "sun"])]
    write_jsonl(root / "golden" / "words.jsonl", rows)
    base = {"model": "../model"}
    write_suite(
        root / "suites" / "words.yaml",
        {
            "suite": "words",
            "dataset": "../golden/words.jsonl",
            "prompt": "Say {{ word }}",
            "generation": {"max_new_tokens": 4, "batch_size": 2},
            "candidates": {
                "base": base,
                "sampled": {**base, "generation": {"temperature": 0.8, "top_p": 0.95}},
                "lora": {**base, "adapter": "../lora"},
                "draft": {**base, "speculative": {"draft": "../draft", "num_assistant_tokens": 2}},
                "nf4": {**base, "quantization": {"bits": 4, "type": "nf4"}},
            },
            "metrics": ["chrf"],
            "gates": {"chrf": {"min": 0.0}},
            "compare_to": "base",
        },
    )
    return root


def _run(root: Path, *command: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    env.update(EVALKIT_PROGRESS="0", PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, *command], cwd=root, capture_output=True, text=True, env=env, timeout=600
    )


def _noise(text: str) -> list[str]:
    return [line for line in text.splitlines() if any(n in line for n in NOISE)]


def test_evalkit_run_prints_no_third_party_output(project: Path) -> None:
    done = _run(project, "-m", "evalkit.cli", "run", "suites/words.yaml", "--no-cache")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "words/draft: 2 examples, 0 cached, 0 errors" in done.stdout
    assert _noise(done.stdout + done.stderr) == []
    assert done.stderr == ""  # evalkit itself writes nothing to stderr on a clean run


def test_pytest_run_prints_no_warnings_and_counts_one_suite(project: Path) -> None:
    done = _run(project, "-m", "pytest", "suites/", "-p", "no:xdist", "--evalkit-no-cache", "-s")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "6 passed" in done.stdout  # 5 candidates' chrf and the draft's lossless gate
    assert _noise(done.stdout + done.stderr) == []
    summary = (project / "reports" / "summary.md").read_text(encoding="utf-8")
    assert "(1 suite)" in summary and _noise(summary) == []


@pytest.mark.real_model
def test_semantic_similarity_loads_quietly(project: Path) -> None:
    """sentence-transformers imports peft, which imports bitsandbytes, and loads weights."""
    suite = (project / "suites" / "words.yaml").read_text(encoding="utf-8")
    semantic = suite.replace("chrf", "semantic_similarity")
    write_suite(project / "other" / "semantic.yaml", semantic)  # same depth: same relative paths
    done = _run(project, "-m", "evalkit.cli", "run", "other/semantic.yaml", "--candidates", "base")
    assert done.returncode == 0, done.stdout + done.stderr
    assert _noise(done.stdout + done.stderr) == [] and done.stderr == ""


def test_library_log_lines_are_dropped_and_others_kept(caplog: pytest.LogCaptureFixture) -> None:
    """The kernels line appears only on CPUs with AVX512-BF16, so it is logged here directly,
    through the very logger and text bitsandbytes uses."""
    quiet_libraries()
    with caplog.at_level(logging.WARNING):
        for logger, prefix in LOG_NOISE:
            logging.getLogger(logger).warning(prefix + ": details")
            logging.getLogger(logger).warning("a real problem")
    assert [r.getMessage() for r in caplog.records] == ["a real problem"] * len(LOG_NOISE)
