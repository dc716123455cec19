"""End to end through pytest with replay candidates: gates, baselines, cache, options, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from suitefiles import write_jsonl, write_suite

from evalkit.cli import main as cli_main
from evalkit.results import load_run

N = 40
WRONG_IN_BAD = set(range(0, N, 3))  # 14 of 40 wrong
WRONG_IN_OFF = {7}


def _golden() -> list[dict]:
    return [
        {"id": f"q{i:02d}", "question": f"question {i}", "reference": f"answer {i}"}
        for i in range(N)
    ]


def _replay(wrong: set[int]) -> list[dict]:
    return [
        {"id": f"q{i:02d}", "output": f"wrong {i}" if i in wrong else f"answer {i}"}
        for i in range(N)
    ]


SUITE = {
    "suite": "qa",
    "dataset": "../golden/qa.jsonl",
    "prompt": "{{ question }}",
    "candidates": {
        "good": {"replay": "../golden/good.jsonl"},
        "bad": {"replay": "../golden/bad.jsonl"},
        "off": {"replay": "../golden/off.jsonl"},
    },
    "metrics": ["exact_match", "chrf"],
    "gates": {"exact_match": {"max_drop": 0.0}},
    "compare_to": "good",
}


@pytest.fixture
def project(pytester: pytest.Pytester) -> Path:
    root = pytester.path
    write_jsonl(root / "golden" / "qa.jsonl", _golden())
    write_jsonl(root / "golden" / "good.jsonl", _replay(set()))
    write_jsonl(root / "golden" / "bad.jsonl", _replay(WRONG_IN_BAD))
    write_jsonl(root / "golden" / "off.jsonl", _replay(WRONG_IN_OFF))
    write_suite(root / "suites" / "qa.yaml", SUITE)
    return root


def _outcomes(result: pytest.RunResult) -> dict[str, str]:
    """nodeid -> PASSED/FAILED from -rA style verbose lines."""
    out: dict[str, str] = {}
    for line in result.stdout.lines:
        for word in ("PASSED", "FAILED", "ERROR"):
            if line.startswith("suites/qa.yaml::") and f" {word}" in line:
                out[line.split(" ")[0]] = word
    return out


def test_regression_vs_candidate_and_missing_baseline(
    pytester: pytest.Pytester, project: Path
) -> None:
    result = pytester.runpytest("suites/", "-v", "-p", "no:xdist")
    out = result.stdout.str()
    assert _outcomes(result) == {
        "suites/qa.yaml::good::exact_match": "FAILED",  # compares to an accepted baseline: none
        "suites/qa.yaml::bad::exact_match": "FAILED",
        "suites/qa.yaml::off::exact_match": "PASSED",  # one example worse: within noise
    }
    assert "no accepted baseline for qa/good" in out
    assert "--evalkit-update-baseline" in out
    drop = len(WRONG_IN_BAD) / N
    assert f"drop of {drop:.4g} exceeds 0 (significant at alpha=0.05)" in out
    assert "worst 5 examples:" in out
    assert (
        "- q00: score 0 | reference 'answer 0' | output 'wrong 0' | baseline 1: 'answer 0'" in out
    )

    run = load_run(project / "reports" / "qa" / "run.json")
    bad = run.candidates["bad"]
    assert bad.aggregates["exact_match"].mean == pytest.approx(1 - drop)
    assert [e.scores["exact_match"] for e in bad.examples] == [
        0.0 if i in WRONG_IN_BAD else 1.0 for i in range(N)
    ]
    verdict = next(v for v in run.gates if v.candidate == "bad")
    assert verdict.comparison is not None
    assert verdict.comparison.mean_delta == pytest.approx(-drop)
    assert verdict.comparison.ci_high < 0 and verdict.comparison.p_value < 0.001
    off = next(v for v in run.gates if v.candidate == "off")
    assert off.comparison is not None and off.comparison.p_value > 0.05
    assert "within noise" in off.message
    # The verdict table at the end of the session.
    assert "evalkit verdicts" in out
    table = [line for line in result.stdout.lines if line.startswith("qa ")]
    assert any("bad" in line and "FAILED" in line and "-0.350" in line for line in table), table


def test_update_baseline_then_gate_against_it(pytester: pytest.Pytester, project: Path) -> None:
    result = pytester.runpytest(
        "suites/", "--evalkit-update-baseline", "--evalkit-candidates", "good,off", "-p", "no:xdist"
    )
    result.assert_outcomes(passed=2)
    baseline_file = project / "golden" / "baselines" / "qa" / "good.json"
    stored = json.loads(baseline_file.read_text())
    assert stored["candidate"] == "good" and len(stored["examples"]) == N
    assert stored["means"]["exact_match"] == 1.0
    # Next run: good is compared with its accepted baseline and passes.
    result = pytester.runpytest("suites/", "--evalkit-candidates", "good", "-p", "no:xdist")
    result.assert_outcomes(passed=1)
    run = load_run(project / "reports" / "qa" / "run.json")
    verdict = run.gates[0]
    assert verdict.comparison is not None
    assert verdict.comparison.baseline == "accepted:good.json"
    assert verdict.comparison.n_paired == N and verdict.comparison.mean_delta == 0.0
    # Change one example's reference: it no longer pairs with the accepted baseline.
    rows = _golden()
    rows[5]["reference"] = "something else"
    write_jsonl(project / "golden" / "qa.jsonl", rows)
    pytester.runpytest("suites/", "--evalkit-candidates", "good", "-p", "no:xdist")
    comparison = load_run(project / "reports" / "qa" / "run.json").gates[0].comparison
    assert comparison is not None
    assert (comparison.n_paired, comparison.n_unpaired) == (N - 1, 1)


def test_strict_gate_fails_on_the_point_estimate(pytester: pytest.Pytester, project: Path) -> None:
    write_suite(
        project / "suites" / "qa.yaml",
        {**SUITE, "gates": {"exact_match": {"max_drop": 0.0, "strict": True}}},
    )
    result = pytester.runpytest("suites/", "--evalkit-candidates", "off", "-p", "no:xdist")
    result.assert_outcomes(failed=1)
    assert "(strict gate)" in result.stdout.str()


def test_absolute_min_and_relative_threshold(pytester: pytest.Pytester, project: Path) -> None:
    write_suite(
        project / "suites" / "qa.yaml",
        {
            **SUITE,
            "gates": {"exact_match": {"min": 0.9}, "chrf": {"max_drop": "50%"}},
        },
    )
    result = pytester.runpytest("suites/", "-v", "--evalkit-candidates", "bad", "-p", "no:xdist")
    outcomes = _outcomes(result)
    assert outcomes["suites/qa.yaml::bad::exact_match"] == "FAILED"
    assert outcomes["suites/qa.yaml::bad::chrf"] == "PASSED"  # a 50% relative drop is allowed
    assert "mean 0.65 is below min 0.9" in result.stdout.str()


def test_cache_and_limit(pytester: pytest.Pytester, project: Path) -> None:
    pytester.runpytest("suites/", "--evalkit-candidates", "bad", "-p", "no:xdist")
    first = load_run(project / "reports" / "qa" / "run.json")
    assert first.candidates["bad"].n_cached == 0
    pytester.runpytest("suites/", "--evalkit-candidates", "bad", "-p", "no:xdist")
    second = load_run(project / "reports" / "qa" / "run.json")
    assert second.candidates["bad"].n_cached == N
    assert second.cache["hits"]["score"] == 2 * 2 * N  # 2 metrics x 2 candidates (bad, good)
    assert second.cache["misses"].get("score", 0) == 0
    pytester.runpytest(
        "suites/",
        "--evalkit-no-cache",
        "--evalkit-limit",
        "10",
        "--evalkit-candidates",
        "bad",
        "-p",
        "no:xdist",
    )
    limited = load_run(project / "reports" / "qa" / "run.json")
    assert limited.limit == 10 and limited.n_examples == 10
    assert limited.candidates["bad"].n_cached == 0
    assert [e.id for e in limited.candidates["bad"].examples] == [f"q{i:02d}" for i in range(10)]


def test_update_baseline_refuses_a_limited_run(pytester: pytest.Pytester, project: Path) -> None:
    result = pytester.runpytest(
        "suites/", "--evalkit-update-baseline", "--evalkit-limit", "5", "-p", "no:xdist"
    )
    assert "would accept a partial baseline" in result.stdout.str()
    assert not (project / "golden" / "baselines").exists()


def test_cli_run_and_schema(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project)
    code = cli_main(["run", "suites/qa.yaml", "--candidates", "bad,off", "--no-cache"])
    out = capsys.readouterr().out
    assert code == 1
    assert "qa     bad        exact_match  FAILED" in out
    assert "results: reports/qa/run.json" in out
    assert cli_main(["run", "suites/qa.yaml", "--candidates", "off", "--no-cache"]) == 0
    capsys.readouterr()
    assert cli_main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert {"suite", "dataset", "candidates", "metrics"} <= set(schema["required"])
    assert "CandidateSpec" in schema["$defs"]
    assert cli_main(["models"]) == 0
    models = capsys.readouterr().out
    assert models.startswith("smollm2-135m-instruct\n") and "license: Apache-2.0" in models
    assert cli_main(["run", "suites/missing.yaml"]) == 2
    assert "cannot read file" in capsys.readouterr().err


def test_xdist_keeps_a_suite_on_one_worker_and_gathers_verdicts(
    pytester: pytest.Pytester, project: Path
) -> None:
    result = pytester.runpytest("suites/", "-n", "2", "--dist", "loadfile", "-v")
    result.assert_outcomes(passed=1, failed=2)
    out = result.stdout.str()
    table = [line for line in out.splitlines() if line.startswith("qa ")]
    assert len(table) == 3 and sum("FAILED" in line for line in table) == 2
    workers = {line.split()[0] for line in out.splitlines() if line.startswith("[gw")}
    assert len(workers) == 1, out  # the whole suite ran on one worker, once
    run = load_run(project / "reports" / "qa" / "run.json")
    assert set(run.candidates) == {"good", "bad", "off"}


def test_a_suite_spread_over_workers_is_still_right(
    pytester: pytest.Pytester, project: Path
) -> None:
    # --dist load may send one suite's items to two workers: each runs the suite and both
    # share the cache file, which must not fail with "database is locked".
    result = pytester.runpytest("suites/", "-n", "2", "--dist", "load")
    result.assert_outcomes(passed=1, failed=2)
    assert "locked" not in result.stdout.str()


def test_report_and_cache_dirs_and_a_suite_without_gates(
    pytester: pytest.Pytester, project: Path
) -> None:
    write_suite(project / "suites" / "qa.yaml", {**SUITE, "gates": {}, "compare_to": None})
    result = pytester.runpytest(
        "suites/",
        "-v",
        "-p",
        "no:xdist",
        "--evalkit-report-dir",
        "out",
        "--evalkit-cache-dir",
        "cachedir",
    )
    assert _outcomes(result) == {
        f"suites/qa.yaml::{name}::run": "PASSED" for name in ("good", "bad", "off")
    }
    assert (project / "cachedir" / "evalkit.sqlite").exists()
    assert not (project / ".evalkit_cache").exists()
    run = load_run(project / "out" / "qa" / "run.json")
    assert run.gates == [] and run.candidates["bad"].aggregates["exact_match"].mean == 0.65


def test_examples_without_output_are_errors_not_zeros(
    pytester: pytest.Pytester, project: Path
) -> None:
    write_jsonl(project / "golden" / "bad.jsonl", _replay(WRONG_IN_BAD)[:30])  # 10 ids missing
    write_jsonl(project / "golden" / "off.jsonl", [])
    write_suite(project / "suites" / "qa.yaml", {**SUITE, "gates": {"exact_match": {"min": 0.5}}})
    result = pytester.runpytest("suites/", "-v", "-p", "no:xdist")
    assert _outcomes(result) == {
        "suites/qa.yaml::good::exact_match": "PASSED",
        "suites/qa.yaml::bad::exact_match": "PASSED",
        "suites/qa.yaml::off::exact_match": "FAILED",
    }
    run = load_run(project / "reports" / "qa" / "run.json")
    bad = run.candidates["bad"]
    assert bad.n_errors == 10 and bad.aggregates["exact_match"].n == 30
    assert bad.aggregates["exact_match"].mean == pytest.approx(
        sum(i not in WRONG_IN_BAD for i in range(30)) / 30
    )
    assert bad.examples[35].scores["exact_match"] is None
    assert bad.examples[35].error == f"no output for id 'q35' in {project / 'golden' / 'bad.jsonl'}"
    verdict = next(v for v in run.gates if v.candidate == "bad")
    assert "n=30, 10 examples without a score" in verdict.message
    assert (
        "no 'exact_match' scores to gate on (40 examples failed to generate; first error: "
        "no output for id 'q00'" in result.stdout.str()
    )


def test_cache_counts_in_run_json_are_per_suite(project: Path) -> None:
    """One Cache serves every suite of a session; each run.json counts only its own lookups."""
    from evalkit.cache import Cache
    from evalkit.run import RunOptions, prepare_suite, run_suite

    second = dict(SUITE, suite="qa2")
    write_suite(project / "suites" / "qa2.yaml", second)
    options = RunOptions(
        report_dir=project / "reports",
        cache=Cache(project / "c.sqlite"),
        candidates=["bad"],
        progress=False,
    )
    first = run_suite(prepare_suite(project / "suites" / "qa.yaml"), options)
    other = run_suite(prepare_suite(project / "suites" / "qa2.yaml"), options)
    # Each run looks up 40 generations and 2 metrics x 40 scores for bad and for good.
    for result in (first, other):
        assert sum(result.cache["hits"].values()) + sum(result.cache["misses"].values()) == (
            2 * (N + 2 * N)
        )
    # Within the first run, bad's correct outputs equal good's: those scores are cache hits.
    distinct = N + len(WRONG_IN_BAD)
    assert first.cache["misses"] == {"generation": 2 * N, "score": 2 * distinct}
    assert first.cache["hits"] == {"score": 2 * (N - len(WRONG_IN_BAD))}
    assert other.cache["hits"] == {"generation": 2 * N, "score": 2 * 2 * N}  # same outputs
