"""pytest writes the reports and the CI summary at the end of a session (the xdist controller
only), and JUnit XML names each (suite, candidate, gate)."""

from __future__ import annotations

import json
import re
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


def _row(page: str, candidate: str, metric: str) -> str:
    rows = re.findall(r"<tr class=\"st-[^\"]*\">(.*?)</tr>", page, re.S)
    return next(r for r in rows if f"{candidate}</td>" in r and f"<td>{metric} " in r)


def test_the_failing_item_and_the_report_show_the_same_delta_ci_and_p(
    pytester: pytest.Pytester, project: Path
) -> None:
    """One statistics path: the gate's delta, CI and p in the failing pytest item are the
    numbers of the HTML report (its table row vs the same baseline, and its gate cell). Some
    examples have no output, so only 27 pairs exist: a bootstrap over all 30 rows (what the
    report once drew) gives a visibly different CI."""
    golden = [json.loads(line) for line in (project / "golden" / "qa.jsonl").open()]
    missing = {1, 2, 5}
    replay = []
    for i, g in enumerate(golden):
        # Every third answer gains 1-5 stray characters: chrF drops by varying amounts.
        output = g["reference"] + " " + "x" * (i % 5 + 1) if i % 3 == 0 else g["reference"]
        if i not in missing:
            replay.append({"id": g["id"], "output": output})
    write_jsonl(project / "golden" / "bad.jsonl", replay)
    spec = _suite("qa")
    spec["gates"] = {"chrf": {"max_drop": "5%", "alpha": 0.3}}
    write_suite(project / "suites" / "qa.yaml", spec)
    result = pytester.runpytest("suites/qa.yaml", "-p", "no:xdist", "--junitxml=junit.xml")
    result.assert_outcomes(failed=2)  # good: no accepted baseline; bad: the drop
    failure = next(
        case.find("failure")
        for case in ET.parse(project / "junit.xml").getroot().iter("testcase")
        if case.get("classname") == "suites.qa.yaml.bad"
    )
    assert failure is not None
    text = failure.text or ""
    assert "n=27, 3 unpaired examples ignored" in text
    found = re.search(r"delta (\S+) \(95% CI (\S+)\.\.(\S+)\), p=(\S+) one-sided", text)
    assert found, text
    item_delta, item_low, item_high, item_p = (float(x) for x in found.groups())

    page = (project / "reports" / "qa" / "index.html").read_text(encoding="utf-8")
    row = _row(page, "bad", "chrf")
    delta = float(re.search(r'<td data-v="([^"]+)">[+-]', row).group(1))  # type: ignore[union-attr]
    interval = re.search(r'<td data-v="([^"]+)" data-high="([^"]+)">', row)
    assert interval is not None
    low, high = float(interval.group(1)), float(interval.group(2))
    # The item prints 4 significant digits of the very numbers the report holds.
    assert (item_delta, item_low, item_high) == tuple(float(f"{v:.4g}") for v in (delta, low, high))
    assert low < delta < high < 0.0
    gate_cell = re.search(r'data-testid="gate-comparison">(.*?)</span>', row, re.S)
    assert gate_cell is not None
    shown = re.search(r"\[(\S+), (\S+)\], allowed \S+, p=(\S+) \(one-sided\)", gate_cell.group(1))
    assert shown, gate_cell.group(1)
    assert float(shown.group(1)) == float(f"{low:.3g}")
    assert float(shown.group(2)) == float(f"{high:.3g}")
    assert 0.001 < item_p < 0.3
    # The same p rounded twice: to 3 decimals (report, within 5e-4) and 3 digits (item).
    assert float(shown.group(3)) == pytest.approx(item_p, abs=5e-4 + 5e-5 + 1e-12)
