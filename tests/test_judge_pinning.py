"""Pinned, calibrated judges (issue 10, item 6): the judge's identity is stored with its scores
in run.json and baselines; a baseline scored by another judge is re-scored with today's judge
or refused, never compared silently; calibration on human labels (kappa checked against
scikit-learn, cached) makes the gates of a judge below its floor advisory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from suitefiles import write_jsonl, write_suite

from evalkit.cache import Cache, make_key
from evalkit.metrics import Sample, create
from evalkit.metrics.judge_prompts import PROMPT_VERSION
from evalkit.results import RunResult
from evalkit.run import PreparedSuite, RunOptions, prepare_suite, run_suite

REPO = Path(__file__).resolve().parent.parent
GOLDEN = [
    {"id": "fr", "country": "France", "reference": "Paris"},
    {"id": "de", "country": "Germany", "reference": "Berlin"},
    {"id": "it", "country": "Italy", "reference": "Rome"},
    {"id": "es", "country": "Spain", "reference": "Madrid"},
]
OUTPUTS = {"fr": "Paris", "de": "Munich", "it": "Rome", "es": "It is Madrid."}
N_LABELS = 15


def project(root: Path, tiny_model: Path, judge: dict[str, Any], gate: dict[str, Any]) -> Path:
    write_jsonl(root / "golden" / "caps.jsonl", GOLDEN)
    replay = [{"id": i, "output": o} for i, o in OUTPUTS.items()]
    write_jsonl(root / "golden" / "base.jsonl", replay)
    labels = (REPO / "golden" / "judge_labels.jsonl").read_text().splitlines()[:N_LABELS]
    (root / "golden" / "labels.jsonl").write_text("\n".join(labels) + "\n")
    (root / "models").mkdir(exist_ok=True)
    if not (root / "models" / "judge").exists():
        (root / "models" / "judge").symlink_to(tiny_model)
    return write_suite(
        root / "suites" / "caps.yaml",
        {
            "suite": "caps",
            "dataset": "../golden/caps.jsonl",
            "prompt": "What is the capital of {{ country }}?",
            "candidates": {"base": {"replay": "../golden/base.jsonl"}},
            "metrics": [{"judge": {"model": "../models/judge", "as": "correct", **judge}}],
            "gates": {"correct": gate},
        },
    )


def run(suite: Path, cache: Path, **options: Any) -> tuple[PreparedSuite, RunResult]:
    prepared = prepare_suite(suite)
    opts = RunOptions(report_dir=suite.parent.parent / "reports", cache=Cache(cache),
                      progress=False, **options)  # fmt: skip
    try:
        return prepared, run_suite(prepared, opts)
    finally:
        opts.cache.close()


def test_identity_in_run_json_and_baseline(tmp_path: Path, tiny_model: Path) -> None:
    suite = project(tmp_path, tiny_model, {}, {"max_drop": 1.0})
    prepared, result = run(suite, tmp_path / "c.db", update_baseline=True)
    judge = prepared.metrics["correct"]
    identity = result.candidates["base"].aggregates["correct"].judge
    assert identity is not None
    assert identity["model"] == "../models/judge"
    assert identity["fingerprint"] == make_key(**judge.candidate.fingerprint())[:16]
    assert identity["rubric"] == "correctness" and identity["prompt_version"] == PROMPT_VERSION
    assert identity["scale"] == [1, 5] and identity["signature"] == judge.signature()
    saved = json.loads((tmp_path / "golden" / "baselines" / "caps" / "base.json").read_text())
    assert saved["judges"]["correct"] == identity
    on_disk = RunResult.model_validate_json(
        (tmp_path / "reports" / "caps" / "run.json").read_text()
    )
    assert on_disk.candidates["base"].aggregates["correct"].judge == identity
    # The same judge today: compared as it is, nothing said.
    _, again = run(suite, tmp_path / "c.db")
    (verdict,) = again.gates
    assert verdict.comparison is not None and verdict.comparison.baseline == "accepted:base.json"


def test_another_judge_rescores_the_baseline_or_refuses(tmp_path: Path, tiny_model: Path) -> None:
    suite = project(tmp_path, tiny_model, {}, {"max_drop": 1.0})
    run(suite, tmp_path / "c.db", update_baseline=True)
    # Today's judge reads another rubric: the accepted outputs are scored again by it.
    suite = project(tmp_path, tiny_model, {"rubric": "helpfulness"}, {"max_drop": 1.0})
    prepared, result = run(suite, tmp_path / "c.db")
    (verdict,) = result.gates
    comparison = verdict.comparison
    assert comparison is not None and "re-scored by today's judge" in comparison.baseline
    assert "rubric correctness#" in comparison.baseline
    judge = prepared.metrics["correct"]
    samples = [
        Sample(id=g["id"], output=OUTPUTS[g["id"]], references=(g["reference"],),
               prompt=f"What is the capital of {g['country']}?")
        for g in GOLDEN
    ]  # fmt: skip
    direct = [s.value for s in (judge.score(samples))]  # type: ignore[union-attr]
    assert comparison.baseline_mean == pytest.approx(float(np.mean(direct)))
    assert comparison.mean_delta == pytest.approx(0.0, abs=1e-12)  # same outputs, same judge
    # A baseline with no outputs cannot be re-scored: the gate refuses, saying why.
    path = tmp_path / "golden" / "baselines" / "caps" / "base.json"
    saved = json.loads(path.read_text())
    for example in saved["examples"]:
        example["output"] = None
    path.write_text(json.dumps(saved))
    _, refused = run(suite, tmp_path / "c.db")
    (verdict,) = refused.gates
    assert verdict.status == "failed"
    assert "was scored by ../models/judge@" in verdict.message
    assert "holds no outputs to re-score" in verdict.message


def test_calibration_kappa_cached_and_advisory_gates(tmp_path: Path, tiny_model: Path) -> None:
    from sklearn.metrics import cohen_kappa_score

    from evalkit.agreement import load_labels

    calibrated = {"calibration": "../golden/labels.jsonl", "min_kappa": 0.99}
    suite = project(tmp_path, tiny_model, calibrated, {"min": 4.99})
    prepared, result = run(suite, tmp_path / "c.db")
    aggregate = result.candidates["base"].aggregates["correct"]
    calibration = aggregate.judge["calibration"]  # type: ignore[index]
    # Independently: the judge scores each labelled answer, rounded to the scale, vs humans.
    labels = load_labels(tmp_path / "golden" / "labels.jsonl")
    judge = create("judge", {"model": str(tiny_model)})
    values = [s.value for s in judge.score([  # type: ignore[union-attr]
        Sample(id=x.id, output=x.answer, references=(x.reference,), prompt=x.question)
        for x in labels])]  # fmt: skip
    rounded = [min(5, max(1, int(np.floor(v + 0.5)))) for v in values]
    human = [x.score for x in labels]
    expected = cohen_kappa_score(rounded, human, weights="quadratic", labels=[1, 2, 3, 4, 5])
    assert calibration["n"] == N_LABELS and calibration["cached"] is False
    assert calibration["kappa"] == pytest.approx(expected, abs=1e-12)
    assert expected < 0.99 and aggregate.advisory is not None
    (verdict,) = result.gates
    assert verdict.status == "passed" and verdict.advisory == aggregate.advisory
    assert verdict.message.startswith("ADVISORY (would have FAILED; not enforced)")
    assert "below min_kappa 0.99" in verdict.message and "is below min 4.99" in verdict.message
    # Cached: a re-run neither re-measures nor loads the judge.
    prepared, again = run(suite, tmp_path / "c.db")
    judge_record = again.candidates["base"].aggregates["correct"].judge
    assert judge_record is not None and judge_record["calibration"]["cached"]
    assert prepared.metrics["correct"].candidate.describe()["load_seconds"] is None
    # A floor the judge meets: its gates are enforced again.
    suite = project(tmp_path, tiny_model, {**calibrated, "min_kappa": -1.0}, {"min": 4.99})
    _, enforced = run(suite, tmp_path / "c.db")
    (verdict,) = enforced.gates
    assert verdict.status == "failed" and verdict.advisory is None


def test_calibration_option_errors(tmp_path: Path, tiny_model: Path) -> None:
    from evalkit.errors import SpecError

    suite = project(tmp_path, tiny_model, {"calibration": "../golden/nope.jsonl"}, {"min": 1})
    with pytest.raises(SpecError, match=r"calibration file .*nope\.jsonl not found"):
        prepare_suite(suite)
    suite = project(tmp_path, tiny_model, {"min_kappa": 0.5}, {"min": 1})
    with pytest.raises(SpecError, match="min_kappa needs calibration"):
        prepare_suite(suite)
