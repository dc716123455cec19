"""Crashes, parallel runs and determinism, asserted on run.json outcomes of real pytest
processes: kill -9 mid-suite then resume equals an uninterrupted run (greedy and sampled);
-n 2 --dist loadfile equals serial; two processes on one cache agree; greedy outputs are the
same at batch 1 and 16 (the real SmolLM2 model)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from suitefiles import write_jsonl, write_suite

from evalkit.candidates.base import GenerationRequest, Message
from evalkit.results import load_run
from evalkit.spec import GenerationSpec

N = 12
SLOW_CONFTEST = """
import os, time
from evalkit.candidates.hf import HFCandidate

_real = HFCandidate._generate_batch


def _slow(self, *args, **kwargs):
    # Only to give the test time to kill the process between committed batches.
    time.sleep(float(os.environ.get("SLOW_BATCH_S", "0")))
    return _real(self, *args, **kwargs)


HFCandidate._generate_batch = _slow
"""


def make_project(root: Path, model: Path, suites: tuple[str, ...] = ("s",)) -> Path:
    rows = [{"id": f"e{i}", "text": f"count {i} then {'word ' * (i % 4)}", "reference": "word"}
            for i in range(N)]  # fmt: skip
    write_jsonl(root / "golden" / "g.jsonl", rows)
    for name in suites:
        write_suite(root / "suites" / f"{name}.yaml", {
            "suite": name, "dataset": "../golden/g.jsonl", "prompt": "{{ text }}",
            "generation": {"max_new_tokens": 6, "batch_size": 2},
            "candidates": {
                "greedy": {"model": str(model), "chat_template": False},
                "sampled": {"model": str(model), "chat_template": False,
                            "generation": {"temperature": 1.0, "seed": 7}},
            },
            "metrics": ["chrf"],
        })  # fmt: skip
    (root / "conftest.py").write_text(SLOW_CONFTEST)
    return root


def pytest_process(root: Path, cache: Path, reports: Path, *extra: str, slow: float = 0.0,
                   ) -> subprocess.Popen[str]:  # fmt: skip
    env = {**os.environ, "SLOW_BATCH_S": str(slow), "EVALKIT_PROGRESS": "0",
           "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "suites/", "-q", "-p", "no:cacheprovider",
         f"--evalkit-cache-dir={cache}", f"--evalkit-report-dir={reports}", *extra],
        cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def finish(process: subprocess.Popen[str], timeout: float = 300) -> str:
    out, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, out
    return out


def outcomes(reports: Path, suite: str = "s") -> dict[str, Any]:
    """What a run decided: every output and score per candidate, and the aggregates."""
    run = load_run(reports / suite / "run.json")
    return {
        name: (
            [(e.id, e.output, e.scores) for e in sorted(c.examples, key=lambda e: e.id)],
            {k: (a.mean, a.ci_low, a.ci_high, a.corpus) for k, a in c.aggregates.items()},
        )
        for name, c in run.candidates.items()
    }


def cached_generations(cache: Path) -> int:
    try:
        with sqlite3.connect(cache / "evalkit.sqlite", timeout=5) as conn:
            query = "SELECT count(*) FROM entries WHERE namespace='generation'"
            return int(conn.execute(query).fetchone()[0])
    except sqlite3.Error:
        return 0


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> dict[str, Any]:
    """One uninterrupted serial run with a fresh cache: what every other way must equal."""
    root = make_project(tmp_path_factory.mktemp("reference"), tiny_model, ("s", "t"))
    finish(pytest_process(root, root / "cache", root / "reports", "-p", "no:xdist"))
    return {"s": outcomes(root / "reports"), "t": outcomes(root / "reports", "t")}


def test_kill_9_mid_suite_then_resume_equals_uninterrupted(
    tmp_path: Path, tiny_model: Path, reference: dict[str, Any]
) -> None:
    root = make_project(tmp_path, tiny_model)
    cache, reports = tmp_path / "cache", tmp_path / "reports"
    process = pytest_process(root, cache, reports, "-p", "no:xdist", slow=0.6)
    deadline = time.monotonic() + 120
    while cached_generations(cache) < 3 and time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before it could be killed"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)  # the real pytest process, mid-suite
    process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL
    survived = cached_generations(cache)
    assert 3 <= survived < 2 * N  # finished batches were kept, the rest was not done
    assert not (reports / "s" / "run.json").exists()

    finish(pytest_process(root, cache, reports, "-p", "no:xdist"))
    assert outcomes(reports) == reference["s"]  # greedy and sampled alike
    run = load_run(reports / "s" / "run.json")
    assert sum(c.n_cached for c in run.candidates.values()) == survived
    assert sum(c.n_generated for c in run.candidates.values()) == 2 * N - survived


def test_xdist_loadfile_equals_serial(
    tmp_path: Path, tiny_model: Path, reference: dict[str, Any]
) -> None:
    root = make_project(tmp_path, tiny_model, ("s", "t"))
    out = finish(pytest_process(root, root / "cache", root / "reports",
                                "-n", "2", "--dist", "loadfile"))  # fmt: skip
    assert "2 workers" in out or "gw1" in out or "passed" in out
    assert outcomes(root / "reports") == reference["s"]
    assert outcomes(root / "reports", "t") == reference["t"]


def test_two_processes_share_one_cache(
    tmp_path: Path, tiny_model: Path, reference: dict[str, Any]
) -> None:
    root = make_project(tmp_path, tiny_model)
    cache = tmp_path / "shared-cache"
    first = pytest_process(root, cache, tmp_path / "r1", "-p", "no:xdist", slow=0.05)
    second = pytest_process(root, cache, tmp_path / "r2", "-p", "no:xdist", slow=0.05)
    for process in (first, second):
        assert "locked" not in finish(process)
    assert outcomes(tmp_path / "r1") == outcomes(tmp_path / "r2") == reference["s"]
    assert cached_generations(cache) == 2 * N


@pytest.mark.real_model
def test_greedy_outputs_equal_at_batch_1_and_16(tmp_path: Path) -> None:
    from evalkit.candidates.hf import HFCandidate
    from evalkit.spec import CandidateSpec

    questions = [f"What is {a} plus {b}? Answer with a number." for a in range(4) for b in range(4)]
    requests = [GenerationRequest(id=f"q{i}", messages=(Message("user", q),))
                for i, q in enumerate(questions)]  # fmt: skip
    cand = HFCandidate("base", CandidateSpec(model="smollm2-135m-instruct", dtype="float32"),
                       tmp_path)  # fmt: skip

    def outputs(batch_size: int) -> dict[str, str]:
        params = GenerationSpec(max_new_tokens=8, batch_size=batch_size)
        return {g.id: g.output for batch in cand.generate(requests, params) for g in batch}

    one, sixteen = outputs(1), outputs(16)
    cand.close()
    assert one == sixteen
    assert len(set(one.values())) > 4  # real, different answers, not one empty string
