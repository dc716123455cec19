"""What the report computes from a RunResult: paired changes for every metric, their colours,
the ranking of regressions, and the Markdown summary for CI."""

from __future__ import annotations

import numpy as np
import pytest
from reportdata import HOSTILE, make_run
from scipy import stats as scipy_stats

from evalkit.report.summary import cell, render_summary, write_summary
from evalkit.report.view import build_suite_view
from evalkit.results import Aggregate, CandidateRun, ExampleResult, GateVerdict, RunResult
from evalkit.stats import paired_comparisons

# -- the shared paired bootstrap --------------------------------------------------------------


def test_paired_changes_agree_with_the_t_test_on_large_samples() -> None:
    """For 2,000 pairs the bootstrap mean is close to normal, so its CI and two-sided p must
    be close to the paired t-test's (scipy), column by column."""
    rng = np.random.default_rng(1)
    deltas = np.column_stack([rng.normal(shift, 1.0, 2000) for shift in (0.0, 0.03, 0.06, -0.1)])
    results = paired_comparisons(deltas, seed=3)
    for j, result in enumerate(results):
        assert result is not None
        column = deltas[:, j]
        test = scipy_stats.ttest_1samp(column, 0.0)
        low, high = test.confidence_interval(0.95)
        assert result.n == 2000
        assert result.mean_delta == pytest.approx(column.mean())
        assert result.ci_low == pytest.approx(low, abs=0.006)
        assert result.ci_high == pytest.approx(high, abs=0.006)
        assert result.p_value == pytest.approx(test.pvalue, abs=0.015)


def test_paired_changes_ignore_missing_pairs_and_handle_degenerate_columns() -> None:
    rng = np.random.default_rng(2)
    values = rng.normal(0.5, 1.0, 3000)
    with_gaps = values.copy()
    with_gaps[::3] = np.nan  # a third of the examples have no pair
    deltas = np.column_stack([with_gaps, np.zeros(3000), np.full(3000, np.nan)])
    gapped, zeros, empty = paired_comparisons(deltas, seed=0)
    present = values[~np.isnan(with_gaps)]
    assert gapped is not None and gapped.n == len(present) == 2000
    assert gapped.mean_delta == pytest.approx(present.mean())
    half_width = 1.96 * present.std(ddof=1) / np.sqrt(len(present))
    assert gapped.ci_low == pytest.approx(present.mean() - half_width, abs=0.01)
    assert gapped.ci_high == pytest.approx(present.mean() + half_width, abs=0.01)
    assert zeros is not None
    assert (zeros.mean_delta, zeros.ci_low, zeros.ci_high, zeros.p_value) == (0, 0, 0, 1)
    assert empty is None


# -- a small run whose changes are known by construction --------------------------------------


def _candidate(
    name: str, scores: dict[str, list[float | None]], hib: dict[str, bool]
) -> CandidateRun:
    n = len(next(iter(scores.values())))
    examples = [
        ExampleResult(
            id=f"e{i:03d}",
            references=["r"],
            messages=[{"role": "user", "content": f"q{i}"}],
            output=f"o{i}",
            scores={column: values[i] for column, values in scores.items()},
        )
        for i in range(n)
    ]
    aggregates = {}
    for column, values in scores.items():
        present = [v for v in values if v is not None]
        aggregates[column] = Aggregate(
            metric=column,
            mean=float(np.mean(present)),
            n=len(present),
            higher_is_better=hib[column],
        )
    return CandidateRun(
        name=name,
        spec={},
        fingerprint={},
        fingerprint_hash=name,
        generation={},
        examples=examples,
        aggregates=aggregates,
    )


def _run(candidates: list[CandidateRun], compare_to: str | None = "base") -> RunResult:
    return RunResult(
        suite="known",
        suite_path="suites/known.yaml",
        spec_hash="x",
        spec={},
        dataset_path="golden/known.jsonl",
        dataset_hash="y",
        n_examples=len(candidates[0].examples),
        created_at="2026-11-24T00:00:00+00:00",
        evalkit_version="0",
        versions={},
        compare_to=compare_to,
        candidates={c.name: c for c in candidates},
    )


N = 200
HIB = {"acc": True, "ms": False}


def _known_run() -> RunResult:
    rng = np.random.default_rng(5)
    base_acc = [float(v) for v in rng.integers(0, 2, N)]
    base_ms = [float(v) for v in rng.normal(100, 5, N)]
    return _run(
        [
            _candidate("worse", {"acc": [0.0] * N, "ms": [v + 20 for v in base_ms]}, HIB),
            _candidate("base", {"acc": base_acc, "ms": base_ms}, HIB),
            _candidate("same", {"acc": base_acc, "ms": [v - 30 for v in base_ms]}, HIB),
        ]
    )


def test_statuses_follow_the_metric_direction() -> None:
    run = _known_run()
    view = build_suite_view(run)
    assert view.candidates == ["base", "worse", "same"]  # the baseline leads
    status = {(r.candidate, r.metric.name): r.status for r in view.rows}
    assert status == {
        ("base", "acc"): "baseline",
        ("base", "ms"): "baseline",
        ("worse", "acc"): "regression",  # every 1 became 0
        ("worse", "ms"): "regression",  # 20 ms slower, lower is better
        ("same", "acc"): "noise",  # identical scores: p = 1
        ("same", "ms"): "improvement",  # 30 ms faster
    }
    worse_ms = view.row("worse", "ms")
    assert worse_ms is not None and worse_ms.change is not None
    assert worse_ms.change.mean_delta == pytest.approx(20.0)
    base_ms = np.mean([e.scores["ms"] for e in run.candidates["base"].examples])
    assert worse_ms.baseline_mean == pytest.approx(base_ms)
    assert worse_ms.relative == pytest.approx(20.0 / base_ms)


def test_regressions_rank_by_relative_size() -> None:
    view = build_suite_view(_known_run())
    ranked = [(r.candidate, r.metric.name) for r in view.regressions]
    # acc falls by 100% of its baseline mean, ms rises by about 20%: acc ranks first
    assert ranked == [("worse", "acc"), ("worse", "ms")]
    assert view.regressions[0].relative == pytest.approx(-1.0)


def test_a_regression_a_gate_failed_on_ranks_first() -> None:
    run = _known_run()
    run.gates = [
        GateVerdict(
            suite="known", candidate="worse", gate="ms", metric="ms", status="failed", message="x"
        )
    ]
    ranked = [(r.candidate, r.metric.name) for r in build_suite_view(run).regressions]
    assert ranked == [("worse", "ms"), ("worse", "acc")]


def test_missing_scores_are_not_pairs() -> None:
    base = _candidate("base", {"acc": [1.0, 1.0, 0.0, None]}, HIB)
    cand = _candidate("cand", {"acc": [0.0, None, 0.0, 1.0]}, HIB)
    row = build_suite_view(_run([base, cand])).row("cand", "acc")
    assert row is not None and row.change is not None
    assert row.change.n == 2  # e000 and e002 have both scores
    assert row.change.mean_delta == pytest.approx(-0.5)
    assert row.baseline_mean == pytest.approx(0.5)


def test_without_a_compare_to_candidate_there_are_no_changes() -> None:
    run = _known_run()
    run.compare_to = None
    view = build_suite_view(run)
    assert view.baseline is None
    assert {r.status for r in view.rows} == {"n/a"}
    assert view.regressions == []


# -- Markdown summary -------------------------------------------------------------------------


def test_summary_lists_verdicts_failed_gates_and_regressions() -> None:
    run = make_run(80)
    view = build_suite_view(run)
    text = render_summary([view], "reports/index.html")
    failed = [v for v in run.gates if not v.passed]
    assert failed, "the fake run is built with failing gates"
    first_line = text.splitlines()[0]
    assert first_line.startswith("## evalkit: ") and "FAILED" in first_line
    passed = sum(v.passed for v in run.gates)
    assert f"| qa | ❌ FAILED | {passed}/{len(run.gates)} |" in text
    for verdict in failed:
        assert f"| {verdict.candidate} | {verdict.gate} | failed |" in text
    for row in view.regressions[:10]:
        assert f"| qa | {row.candidate} | {row.metric.name} |" in text
    assert "Full report: `reports/index.html`" in text


def test_summary_cells_cannot_break_the_table_or_inject_html() -> None:
    assert cell("a|b\nc") == "a\\|b c"
    for hostile in HOSTILE:
        assert "<" not in cell(hostile)
    assert cell("x" * 200, 10) == "x" * 9 + "…"


def test_summary_is_written_and_appended_to_the_github_step_summary(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    step = tmp_path / "step_summary.md"
    step.write_text("earlier step\n", encoding="utf-8")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step))
    view = build_suite_view(make_run(30, ("base", "lora")))
    path = write_summary([view], tmp_path / "reports", "reports/index.html")
    text = path.read_text(encoding="utf-8")
    assert path == tmp_path / "reports" / "summary.md"
    assert step.read_text(encoding="utf-8") == "earlier step\n" + text
    monkeypatch.delenv("GITHUB_STEP_SUMMARY")
    write_summary([view], tmp_path / "reports", None)
    assert step.read_text(encoding="utf-8") == "earlier step\n" + text  # untouched when unset
