"""Latency and memory metrics: the probe on a tiny model, the suite columns, run-level gates."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from suitefiles import write_jsonl, write_suite

from evalkit.candidates.base import GenerationRequest, Message
from evalkit.candidates.hf import HFCandidate
from evalkit.candidates.timing import MemoryWindow, timing_sample
from evalkit.errors import SpecError
from evalkit.gates import BaselineScores, evaluate_gate
from evalkit.metrics.latency import percentile
from evalkit.results import Aggregate, CandidateRun, load_run
from evalkit.spec import CandidateSpec, GateSpec, GenerationSpec

COLUMNS = [
    "latency.ttft_ms",
    "latency.tpot_ms",
    "latency.e2e_ms",
    "latency.tokens_per_s",
    "memory.peak_mb",
]


def test_percentile_matches_numpy() -> None:
    import numpy

    values = [5.0, 1.0, 9.5, 3.25, 7.0, 2.0, 8.0]
    for q in (0, 25, 50, 90, 95, 100):
        assert percentile(values, q) == pytest.approx(float(numpy.percentile(values, q)))
    assert percentile([4.0], 95) == 4.0


def test_timing_sample_is_chosen_by_id_hash() -> None:
    requests = [GenerationRequest(id=f"e{i}", messages=()) for i in range(20)]
    by_hash = sorted(requests, key=lambda r: hashlib.sha256(r.id.encode()).hexdigest())
    assert timing_sample(requests, 5) == by_hash[:5]
    assert timing_sample(list(reversed(requests)), 5) == by_hash[:5]  # order does not matter


def test_cpu_peak_memory_is_reset_per_window() -> None:
    import torch

    first = MemoryWindow(torch.device("cpu"))
    first.start()
    block = bytearray(200 * 2**20)
    block[:: 2**12] = b"x" * len(block[:: 2**12])  # touch every page so it is resident
    peak = first.read()
    del block
    assert peak.kind == "process_peak_rss" and not peak.note
    assert peak.peak_mb - peak.start_mb >= 190
    second = MemoryWindow(torch.device("cpu"))
    second.start()
    again = second.read()
    # The 200 MiB block is gone, and so is its peak: the kernel's high-water mark was reset.
    assert again.peak_mb < peak.peak_mb - 150


def test_hf_latency_probe_counts_every_generated_token(tiny_model: Path) -> None:
    import torch

    cand = HFCandidate("tiny", CandidateSpec(model=str(tiny_model)), base_dir=tiny_model.parent)
    params = GenerationSpec(max_new_tokens=7)
    requests = [
        GenerationRequest(id=f"r{i}", messages=(Message("user", text),))
        for i, text in enumerate(["The cat", "Where is the river?"])
    ]
    samples = cand.measure_latency(requests, params, warmup=1)
    model, _ = cand.loaded()
    assert [s.id for s in samples] == ["r0", "r1"]
    for sample, request in zip(samples, requests, strict=True):
        _, ids = cand.render(request)
        with torch.inference_mode():
            direct = model.generate(
                torch.tensor([ids]), max_new_tokens=7, do_sample=False, pad_token_id=0
            )
        assert sample.n_output_tokens == direct.shape[1] - len(ids)
        assert sample.ttft_s is not None and 0 < sample.ttft_s < sample.total_s
        assert sample.error is None


# -- in a suite ----------------------------------------------------------------------------------

ROWS = [
    {"id": f"q{i}", "text": f"Question {i}: where is the river?", "reference": "x"}
    for i in range(7)
]


@pytest.fixture
def project(pytester: pytest.Pytester, tiny_model: Path, tiny_model_b: Path) -> Path:
    root = pytester.path
    write_jsonl(root / "golden" / "q.jsonl", ROWS)
    write_jsonl(root / "golden" / "replayed.jsonl", [{"id": r["id"], "output": "x"} for r in ROWS])
    write_suite(
        root / "suites" / "q.yaml",
        {
            "suite": "q",
            "dataset": "../golden/q.jsonl",
            "prompt": "{{ text }}",
            "generation": {"max_new_tokens": 5, "batch_size": 4},
            "candidates": {
                "base": {"model": str(tiny_model)},
                "other": {"model": str(tiny_model_b)},
                "replayed": {"replay": "../golden/replayed.jsonl"},
            },
            "metrics": ["chrf", {"latency": {"sample": 3, "warmup": 1}}],
            "gates": {
                # 1000x allowances: timings on a shared CPU are noisy; these gates check the
                # plumbing (pairing, run-level comparison), the unit tests below the verdicts.
                "latency.tpot_ms": {"max_increase": "100000%"},
                "memory.peak_mb": {"max_increase": "100000%"},
                "latency.tokens_per_s": {"min": 0.0},
            },
            "compare_to": "base",
        },
    )
    return root


def test_latency_columns_in_a_suite(pytester: pytest.Pytester, project: Path) -> None:
    import numpy

    # Accepting baselines in the same run gates `base` against the figures just stored.
    result = pytester.runpytest("suites/", "-v", "-p", "no:xdist", "--evalkit-update-baseline")
    # `replayed` has no model: its three gates are errors that say so, nothing crashes.
    result.assert_outcomes(passed=6, failed=3)
    result.stdout.fnmatch_lines(["*no 'memory.peak_mb' scores*replayed*has no model to time*"])
    run = load_run(project / "reports" / "q" / "run.json")
    expected_ids = sorted(
        (r["id"] for r in ROWS), key=lambda i: hashlib.sha256(i.encode()).hexdigest()
    )[:3]
    for name in ("base", "other"):
        cand = run.candidates[name]
        assert list(cand.aggregates)[1:] == COLUMNS  # the group expands in place, in order
        for column in COLUMNS[:3]:
            values = {e.id: e.scores[column] for e in cand.examples}
            assert sorted(i for i, v in values.items() if v is not None) == sorted(expected_ids)
            others = [e for e in cand.examples if e.id not in expected_ids]
            assert all(e.details[column]["error"] == "not in the latency sample" for e in others)
            aggregate = cand.aggregates[column]
            present = [values[i] for i in expected_ids]
            assert aggregate.extra["p95"] == pytest.approx(numpy.percentile(present, 95))
            assert aggregate.extra["p50"] == pytest.approx(numpy.percentile(present, 50))
            assert "sample:3 by id hash|warmup:1" in aggregate.signature
            assert aggregate.level == "example" and aggregate.n == 3
        e2e = {e.id: e.scores["latency.e2e_ms"] for e in cand.examples}
        ttft = {e.id: e.scores["latency.ttft_ms"] for e in cand.examples}
        assert all(0 < ttft[i] < e2e[i] for i in expected_ids)
        throughput, memory = (
            cand.aggregates["latency.tokens_per_s"],
            cand.aggregates["memory.peak_mb"],
        )
        assert throughput.level == memory.level == "run"
        assert throughput.mean == pytest.approx(
            throughput.extra["tokens"] / throughput.extra["seconds"]
        )
        assert throughput.detail["requests"] == 3 and throughput.detail["batch_size"] == 4
        assert memory.mean is not None and memory.mean >= memory.extra["start_mb"] > 0
        assert memory.detail["kind"] == "process_peak_rss"
        assert all("memory.peak_mb" not in e.scores for e in cand.examples)
    verdict = next(v for v in run.gates if v.candidate == "other" and v.gate == "latency.tpot_ms")
    assert verdict.passed and verdict.comparison is not None
    assert verdict.comparison.n_paired == 3  # paired by id with base's sample
    memory_verdict = next(
        v for v in run.gates if v.candidate == "other" and v.gate == "memory.peak_mb"
    )
    assert memory_verdict.comparison is not None
    assert (
        memory_verdict.comparison.baseline_mean
        == run.candidates["base"].aggregates["memory.peak_mb"].mean
    )
    assert "no significance test is possible" in memory_verdict.message
    own = next(v for v in run.gates if v.candidate == "base" and v.gate == "memory.peak_mb")
    assert own.comparison is not None and own.comparison.baseline == "accepted:base.json"
    stored = json.loads((project / "golden" / "baselines" / "q" / "base.json").read_text())
    assert own.comparison.baseline_mean == stored["means"]["memory.peak_mb"]
    replayed = run.candidates["replayed"]
    assert replayed.aggregates["memory.peak_mb"].mean is None
    assert "has no model to time" in replayed.aggregates["memory.peak_mb"].detail["error"]
    assert all(e.scores["latency.tpot_ms"] is None for e in replayed.examples)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"latency": {"as": "lat"}}, "is a group of metrics"),
        ({"latency": {"sample": 0}}, "sample must be a whole number >= 1"),
        ("latency.tpot_ms", "column 'latency.tpot_ms' appears twice"),
    ],
)
def test_group_errors_name_the_line(
    tmp_path: Path, entry: object, message: str, tiny_model: Path
) -> None:
    from evalkit.run import prepare_suite

    write_jsonl(tmp_path / "d.jsonl", ROWS[:1])
    suite = write_suite(
        tmp_path / "s.yaml",
        {
            "suite": "s",
            "dataset": "d.jsonl",
            "prompt": "{{ text }}",
            "candidates": {"a": {"model": str(tiny_model)}},
            "metrics": ["latency", entry] if isinstance(entry, str) else [entry],
        },
    )
    with pytest.raises(SpecError, match=message) as caught:
        prepare_suite(suite)
    assert caught.value.line is not None and caught.value.field is not None


# -- run-level gate semantics -----------------------------------------------------------------


def _run_with(value: float | None, column: str = "memory.peak_mb") -> CandidateRun:
    return CandidateRun(
        name="cand",
        spec={},
        fingerprint={},
        fingerprint_hash="x",
        generation={},
        examples=[],
        aggregates={
            column: Aggregate(
                metric=column,
                mean=value,
                n=int(value is not None),
                level="run",
                higher_is_better=column != "memory.peak_mb",
                detail={} if value is not None else {"error": "not a local model"},
            )
        },
    )


@pytest.mark.parametrize(
    ("value", "status"), [(114.0, "passed"), (115.0, "passed"), (116.0, "failed")]
)
def test_run_level_increase_is_judged_on_the_two_numbers(value: float, status: str) -> None:
    gate = GateSpec(metric="memory.peak_mb", max_increase="15%")
    baseline = BaselineScores(label="candidate:base", scores={}, run_value=100.0)
    verdict = evaluate_gate("s", "memory.peak_mb", gate, _run_with(value), baseline)
    assert verdict.status == status
    assert verdict.comparison is not None
    assert verdict.comparison.mean_delta == pytest.approx(value - 100.0)
    assert verdict.comparison.allowed == pytest.approx(15.0)
    assert verdict.comparison.p_value is None and verdict.comparison.ci_low is None
    assert "one figure per run, so no significance test is possible" in verdict.message


def test_run_level_drop_bounds_and_missing_values() -> None:
    column = "latency.tokens_per_s"
    gate = GateSpec(metric=column, max_drop="20%", min=10.0)
    baseline = BaselineScores(label="accepted:base.json", scores={}, run_value=50.0)
    slow = evaluate_gate("s", column, gate, _run_with(39.0, column), baseline)
    assert slow.status == "failed" and "drop of 11 exceeds 10" in slow.message
    fine = evaluate_gate("s", column, gate, _run_with(41.0, column), baseline)
    assert fine.passed
    too_slow = evaluate_gate(
        "s", column, GateSpec(metric=column, min=10.0), _run_with(9.0, column), None
    )
    assert too_slow.status == "failed" and "below min 10" in too_slow.message
    no_base = BaselineScores(label="accepted:base.json", scores={}, run_value=None)
    missing = evaluate_gate("s", column, gate, _run_with(41.0, column), no_base)
    assert missing.status == "failed" and "has no 'latency.tokens_per_s' figure" in missing.message
    unmeasured = evaluate_gate("s", column, gate, _run_with(None, column), baseline)
    assert unmeasured.status == "error" and "not a local model" in unmeasured.message
