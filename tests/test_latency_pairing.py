"""Latency gates that do not flap (issue 10, item 8): candidates are timed interleaved (A, B, A
per example, in rounds) so machine drift hits both sides, rounds repeat until the paired CI is
decided, precise or out of budget, the A-vs-A noise floor is reported, competing work on the
cores is measured, and two runs of an unchanged pair give the same verdict."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from suitefiles import write_jsonl, write_suite

from evalkit.cache import Cache
from evalkit.candidates.base import GenerationRequest, LatencySample, Message
from evalkit.candidates.contention import CoreWindow
from evalkit.metrics.latency import latency_columns
from evalkit.results import RunResult
from evalkit.run import RunOptions, prepare_suite, run_suite
from evalkit.run.latency_pairing import MIN_ROUNDS, LatencyGate, measure_pair
from evalkit.spec import GateSpec, GenerationSpec

COLUMN = "latency.e2e_ms"


class Clock:
    """A shared call counter: simulated machine time that drifts as calls go by."""

    def __init__(self) -> None:
        self.calls = 0


class FakeProbe:
    """A candidate whose request takes ``base_ms * factor`` plus the machine's drift (linear in
    the calls made so far, on both candidates alike) plus seeded noise."""

    def __init__(self, clock: Clock, factor: float, drift_ms: float, noise_ms: float, seed: int):
        self.clock, self.factor, self.drift, self.noise = clock, factor, drift_ms, noise_ms
        self.rng = np.random.default_rng(seed)

    def measure_latency(
        self, requests: list[GenerationRequest], params: GenerationSpec, *, warmup: int
    ) -> list[LatencySample]:
        out = []
        for request in requests:
            self.clock.calls += 1
            base = 20.0 + int(request.id[1:])  # examples differ in length
            ms = base * self.factor + self.drift * self.clock.calls + self.rng.normal(0, self.noise)
            out.append(LatencySample(request.id, ms / 2000, ms / 1000, 8))
        return out


def gate(rule: dict[str, Any], **settings: Any) -> LatencyGate:
    metric = latency_columns(sample=8, warmup=0, **settings)[COLUMN]
    return LatencyGate(COLUMN, metric, GateSpec(metric=COLUMN, **rule))


def requests(n: int = 8) -> dict[str, GenerationRequest]:
    return {f"q{i}": GenerationRequest(f"q{i}", (Message("user", f"x{i}"),)) for i in range(n)}


def pair(factor: float, drift: float, noise: float, rule: dict[str, Any], **settings: Any) -> Any:
    clock = Clock()
    a, b = FakeProbe(clock, 1.0, drift, noise, 1), FakeProbe(clock, factor, drift, noise, 2)
    spec = GenerationSpec()
    return measure_pair(a, b, requests(), requests(), (spec, spec), [gate(rule, **settings)], "A")


def test_interleaving_cancels_drift_that_timing_apart_does_not() -> None:
    """Strong drift (the machine gets slower call by call), identical candidates: timed one
    after the other, B looks far slower; timed A, B, A, the difference is about zero and the
    drift shows in the A-vs-A noise floor instead."""
    drift = 0.5  # ms per call
    result = pair(1.0, drift, 0.2, {"max_increase": "15%"}, budget_s=60)
    column = result.columns[COLUMN]
    assert result.rounds >= MIN_ROUNDS and result.stopped in ("decided", "precise")
    assert abs(column.mean_delta) < 0.5 and column.ci_low < 0 < column.ci_high
    # The second A of a triple comes two calls after the first.
    assert column.noise_delta == pytest.approx(2 * drift, abs=0.3)
    # The same drift, timed apart (all of A, then all of B, as two separate measurements do):
    clock = Clock()
    a, b = FakeProbe(clock, 1.0, drift, 0.2, 1), FakeProbe(clock, 1.0, drift, 0.2, 2)
    spec = GenerationSpec()
    apart_a = [s.total_s for s in a.measure_latency(list(requests().values()), spec, warmup=0)]
    apart_b = [s.total_s for s in b.measure_latency(list(requests().values()), spec, warmup=0)]
    assert (np.mean(apart_b) - np.mean(apart_a)) * 1000 == pytest.approx(8 * drift, abs=0.5)


def test_a_real_slowdown_is_decided_and_an_impossible_precision_stops_at_the_budget() -> None:
    slower = pair(1.3, 0.05, 0.5, {"max_increase": "15%"})
    column = slower.columns[COLUMN]
    assert slower.stopped == "decided"
    assert column.ci_low > 0.15 * column.baseline_mean  # the whole CI is beyond the allowance
    base = {i: 20.0 + i for i in range(8)}
    expected = float(np.mean([0.3 * v for v in base.values()]))
    assert column.mean_delta == pytest.approx(expected, rel=0.1)
    # Noise far wider than any allowance, a tiny budget: the first round, then it stops.
    noisy = pair(1.0, 0.0, 30.0, {"max_increase": "1%"}, budget_s=0.001, precision=0.0001)
    assert (noisy.rounds, noisy.stopped) == (MIN_ROUNDS, "budget")


def test_core_window_sees_a_competing_process() -> None:
    spin = "import time\nt = time.time()\nwhile time.time() - t < 1.5: pass\n"
    window = CoreWindow().start()
    own_before = time.process_time()
    child = subprocess.Popen([sys.executable, "-c", spin])
    time.sleep(1.2)
    use = window.read()
    own = time.process_time() - own_before
    child.wait()
    assert use.other_cores is not None and use.other_cores >= 0.6  # the spinner's core, at least
    assert use.own_cores == pytest.approx(own / use.wall_s, abs=0.05)
    assert use.competing and "the cores were shared" in use.describe()


def suite(tmp: Path, model: Path) -> Path:
    write_jsonl(tmp / "g.jsonl", [{"id": f"q{i}", "q": f"Tell me about {i}"} for i in range(8)])
    model_spec = {"model": str(model), "chat_template": False}
    return write_suite(
        tmp / "suite.yaml",
        {
            "suite": "timing",
            "dataset": "g.jsonl",
            "prompt": "{{ q }}",
            "generation": {"max_new_tokens": 3, "temperature": 0, "batch_size": 8},
            "candidates": {
                "base": model_spec,
                "same": model_spec,
                # Four times the answer length: a real, large slowdown of e2e time.
                "slow": {**model_spec, "generation": {"max_new_tokens": 12}},
            },
            "metrics": [{"latency": {"sample": 6, "warmup": 0, "budget_s": 5}}],
            "gates": {COLUMN: {"max_increase": "50%"}},
            "compare_to": "base",
        },
    )


def run(path: Path, cache: Path) -> RunResult:
    options = RunOptions(report_dir=path.parent / "r", cache=Cache(cache), progress=False)
    return run_suite(prepare_suite(path), options)


def test_two_runs_of_an_unchanged_pair_give_the_same_verdicts(
    tiny_model: Path, tmp_path: Path
) -> None:
    path = suite(tmp_path, tiny_model)
    cold = run(path, tmp_path / "c.db")
    warm = run(path, tmp_path / "c.db")  # answers cached now; latency is timed afresh
    for result in (cold, warm):
        verdicts = {v.candidate: v for v in result.gates if v.candidate != "base"}
        assert verdicts["same"].status == "passed", verdicts["same"].message
        assert verdicts["slow"].status == "failed", verdicts["slow"].message
        for name in ("same", "slow"):
            timed = result.candidates[name].latency_pairs
            assert timed is not None and timed.rounds >= MIN_ROUNDS and timed.n_examples == 6
            column = timed.columns[COLUMN]
            comparison = verdicts[name].comparison
            assert comparison is not None
            assert comparison.baseline == "candidate:base (timed interleaved)"
            assert comparison.baseline_mean == pytest.approx(
                float(np.mean(list(column.baseline_ms.values())))
            )
            assert comparison.mean_delta == pytest.approx(column.mean_delta)
            assert "noise floor (A vs A)" in verdicts[name].message
            assert "cores" in verdicts[name].message
    assert [v.status for v in cold.gates] == [v.status for v in warm.gates]
    assert warm.candidates["same"].n_generated == 0
