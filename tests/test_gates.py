"""Gate verdicts on hand-built runs: increases, relative thresholds, errors, worst examples."""

from __future__ import annotations

import pytest

from evalkit.gates import BaselineScores, evaluate_gate
from evalkit.results import Aggregate, CandidateRun, ExampleResult
from evalkit.spec import GateSpec


def _run(scores: list[float], *, higher_is_better: bool = True) -> CandidateRun:
    examples = [
        ExampleResult(
            id=f"e{i}", references=[f"ref {i}"], messages=[], output=f"out {i}", scores={"m": s}
        )
        for i, s in enumerate(scores)
    ]
    mean = sum(scores) / len(scores)
    return CandidateRun(
        name="cand",
        spec={},
        fingerprint={},
        fingerprint_hash="x",
        generation={},
        examples=examples,
        aggregates={
            "m": Aggregate(
                metric="m",
                mean=mean,
                ci_low=mean,
                ci_high=mean,
                n=len(scores),
                higher_is_better=higher_is_better,
            )
        },
    )


def _baseline(scores: list[float]) -> BaselineScores:
    return BaselineScores(
        label="candidate:base",
        scores={f"e{i}": s for i, s in enumerate(scores)},
        outputs={f"e{i}": f"base {i}" for i in range(len(scores))},
    )


def test_latency_style_relative_increase() -> None:
    base = [100.0 + (i % 7) for i in range(60)]
    slower = [b * 1.30 for b in base]  # +30% everywhere
    gate = GateSpec(metric="m", max_increase="15%")
    verdict = evaluate_gate("s", "m", gate, _run(slower, higher_is_better=False), _baseline(base))
    assert verdict.status == "failed"
    assert verdict.comparison is not None
    base_mean = sum(base) / len(base)
    assert verdict.comparison.allowed == pytest.approx(0.15 * base_mean)
    assert verdict.comparison.mean_delta == pytest.approx(0.30 * base_mean)
    # Worst examples for a lower-is-better metric are the largest increases.
    assert verdict.worst[0].id == "e6" and verdict.worst[0].baseline_output == "base 6"
    faster_enough = [b * 1.10 for b in base]
    ok = evaluate_gate("s", "m", gate, _run(faster_enough, higher_is_better=False), _baseline(base))
    assert ok.status == "passed"


def test_no_scores_is_an_error_not_a_pass() -> None:
    run = _run([1.0])
    run.aggregates["m"] = Aggregate(metric="m", mean=None)
    verdict = evaluate_gate("s", "m", GateSpec(metric="m", min=0.1), run, None)
    assert verdict.status == "error" and "no 'm' scores" in verdict.message


def test_missing_baseline_fails_with_its_reason() -> None:
    missing = BaselineScores(label="accepted:x.json", scores={}, missing_reason="no baseline: do X")
    verdict = evaluate_gate("s", "m", GateSpec(metric="m", max_drop=0.01), _run([1.0] * 5), missing)
    assert verdict.status == "failed" and "no baseline: do X" in verdict.message


def test_threshold_parsing_errors() -> None:
    with pytest.raises(ValueError, match="percentage"):
        GateSpec(metric="m", max_drop="fifteen")
    with pytest.raises(ValueError, match="at least one of"):
        GateSpec(metric="m")
    assert str(GateSpec(metric="m", max_increase="15%").max_increase) == "15%"


def test_gate_thresholds_round_trip_and_schema() -> None:
    from evalkit.spec import suite_json_schema

    gate = GateSpec(metric="m", max_drop="15%", max_increase=0.2)
    dumped = gate.model_dump(mode="json")
    assert (dumped["max_drop"], dumped["max_increase"]) == ("15%", 0.2)
    assert GateSpec.model_validate(dumped) == gate
    schema = suite_json_schema()["$defs"]["GateSpec"]["properties"]["max_drop"]
    assert {"type": "number", "minimum": 0} in schema["anyOf"]
