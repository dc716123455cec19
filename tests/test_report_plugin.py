"""pytest writes the reports and the CI summary at the end of a session (the xdist controller
only), and JUnit XML names each (suite, candidate, gate)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from suitefiles import write_jsonl, write_suite

N = 30
WRONG = set(range(0, N, 2))  # half the answers wrong: a real regression


def _suite(name: str) -> dict:
    return {
        "suite": name,
        "dataset": "../golden/qa.jsonl",
        "prompt": "{{ question }}",
        "candidates": {
            "good": {"replay": "../golden/good.jsonl"},
            "bad": {"replay": "../golden/bad.jsonl"},
        },
        "metrics": ["exact_match", "chrf"],
        "gates": {"exact_match": {"max_drop": 0.05}},
        "compare_to": "good",
    }


@pytest.fixture
def project(pytester: pytest.Pytester) -> Path:
    root = pytester.path
    golden = [{"id": f"q{i:02d}", "question": f"q {i}", "reference": f"a {i}"} for i in range(N)]
    write_jsonl(root / "golden" / "qa.jsonl", golden)
    write_jsonl(
        root / "golden" / "good.jsonl", [{"id": g["id"], "output": g["reference"]} for g in golden]
    )
    write_jsonl(
        root / "golden" / "bad.jsonl",
        [
            {"id": g["id"], "output": "nope" if i in WRONG else g["reference"]}
            for i, g in enumerate(golden)
        ],
    )
    write_suite(root / "suites" / "qa.yaml", _suite("qa"))
    write_suite(root / "suites" / "qb.yaml", _suite("qb"))
    return root


def test_session_writes_reports_summary_and_step_summary(
    pytester: pytest.Pytester, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    step = project / "step.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step))
    result = pytester.runpytest("suites/qa.yaml", "-p", "no:xdist", "--junitxml=junit.xml")
    result.assert_outcomes(passed=0, failed=2)  # good: no accepted baseline; bad: regression
    result.stdout.fnmatch_lines(["report: reports/index.html", "summary: reports/summary.md"])
    reports = project / "reports"
    assert (reports / "qa" / "index.html").is_file()
    assert not (reports / "qb").exists()  # only what this session ran
    summary = (reports / "summary.md").read_text(encoding="utf-8")
    assert step.read_text(encoding="utf-8") == summary
    assert "| bad | exact_match | failed |" in summary
    assert "| qa | bad | exact_match | 1.00 | 0.500 | -0.500 [" in summary  # half the answers lost
    page = (reports / "index.html").read_text(encoding="utf-8")
    assert "bad::exact_match" in page and 'data-testid="verdict"' in page

    cases = {
        (case.get("classname"), case.get("name")): case
        for case in ET.parse(project / "junit.xml").getroot().iter("testcase")
    }
    assert set(cases) == {
        ("suites.qa.yaml.good", "exact_match"),
        ("suites.qa.yaml.bad", "exact_match"),
    }
    failure = cases[("suites.qa.yaml.bad", "exact_match")].find("failure")
    assert failure is not None
    message = failure.get("message", "")
    assert "FAILED: drop of 0.5 exceeds 0.05" in message
    assert "vs candidate:good" in (failure.text or "")


def test_with_xdist_only_the_controller_writes_once_for_all_suites(
    pytester: pytest.Pytester, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    step = project / "step.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step))
    result = pytester.runpytest("suites/", "-n", "2", "--dist", "loadfile")
    result.assert_outcomes(failed=4)
    text = step.read_text(encoding="utf-8")
    assert text.count("## evalkit") == 1
    assert "| qa |" in text and "| qb |" in text
    index = (project / "reports" / "index.html").read_text(encoding="utf-8")
    assert 'id="suite-qa"' in index and 'id="suite-qb"' in index
    assert result.stdout.str().count("report: reports/index.html") == 1


def test_a_suite_that_errors_does_not_stop_the_others_report(
    pytester: pytest.Pytester, project: Path
) -> None:
    (project / "golden" / "bad.jsonl").unlink()  # qb's bad candidate cannot even load now
    spec = _suite("qb")
    spec["candidates"]["bad"] = {"replay": "../golden/missing.jsonl"}
    write_suite(project / "suites" / "qb.yaml", spec)
    spec = _suite("qa")
    del spec["candidates"]["bad"]
    spec["gates"] = {"exact_match": {"min": 0.5}}
    write_suite(project / "suites" / "qa.yaml", spec)
    result = pytester.runpytest("suites/", "-p", "no:xdist")
    assert "report: reports/index.html" in result.stdout.str()
    index = (project / "reports" / "index.html").read_text(encoding="utf-8")
    assert 'id="suite-qa"' in index and 'id="suite-qb"' not in index
