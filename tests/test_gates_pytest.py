"""Verdicts end to end with replay candidates: the underpowered warning in the pytest output,
run.json and the report; non-inferiority items; and a report whose "what changed" list says
why a gate reads differently from a change's colour."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from scipy import stats as scipy_stats
from suitefiles import write_jsonl, write_suite

from evalkit.results import load_run

N = 40
WRONG = {"off": {0, 1, 2}, "many": set(range(10))}


@pytest.fixture
def project(pytester: pytest.Pytester) -> Path:
    root = pytester.path
    write_jsonl(
        root / "golden" / "qa.jsonl",
        [{"id": f"q{i:02d}", "question": f"q {i}", "reference": f"a {i}"} for i in range(N)],
    )
    for name, wrong in {"good": set(), **WRONG}.items():
        rows = [
            {"id": f"q{i:02d}", "output": f"wrong {i}" if i in wrong else f"a {i}"}
            for i in range(N)
        ]
        write_jsonl(root / "golden" / f"{name}.jsonl", rows)
    write_suite(
        root / "suites" / "qa.yaml",
        {
            "suite": "qa",
            "dataset": "../golden/qa.jsonl",
            "prompt": "{{ question }}",
            "candidates": {n: {"replay": f"../golden/{n}.jsonl"} for n in ("good", *WRONG)},
            "metrics": ["exact_match"],
            "gates": {
                "exact_match": {"max_drop": 0.3},
                "tight": {"metric": "exact_match", "max_drop": 0.05},
                "signoff": {
                    "metric": "exact_match",
                    "max_drop": 0.05,
                    "test": "noninferiority",
                    "candidates": ["off"],
                },
            },
            "compare_to": "good",
        },
    )
    return root


def test_underpowered_noninferiority_and_the_report_agree(
    pytester: pytest.Pytester, project: Path
) -> None:
    result = pytester.runpytest(
        "suites/", "-v", "-p", "no:xdist", "--evalkit-candidates", "off,many", "-rA"
    )
    result.assert_outcomes(passed=3, failed=2, warnings=1)
    out = result.stdout.str()
    for item, outcome in (
        ("off::exact_match", "PASSED"),
        ("off::tight", "PASSED"),
        ("off::signoff", "FAILED"),
        ("many::exact_match", "PASSED"),
        ("many::tight", "FAILED"),
    ):
        assert re.search(rf"suites/qa.yaml::{item} {outcome}", out), item
    # off: 3 discordant pairs of 40; what 80% power needs for a 0.05 drop at that rate.
    z = scipy_stats.norm.ppf(0.95) + scipy_stats.norm.ppf(0.8)
    rate = 3 / N
    needed = math.ceil(z * z * (max(rate, 0.05) - 0.05**2) / 0.05**2)
    warning = (
        f"underpowered: cannot see a drop of 0.05 with 40 examples; about {needed} examples would"
    )
    assert "GateWarning" in out and f"qa::off::tight: {warning}" in out
    assert "non-inferiority not shown: the one-sided 95% lower bound of the change" in out
    assert "PASSED (underpowered)" in out  # the verdict table

    run = load_run(project / "reports" / "qa" / "run.json")
    verdicts = {(v.candidate, v.gate): v for v in run.gates}
    tight = verdicts["off", "tight"]
    assert tight.warnings == [warning]
    assert tight.comparison is not None and tight.comparison.power is not None
    assert tight.comparison.power.underpowered and tight.comparison.power.n_needed == needed
    assert tight.comparison.method == "exact McNemar" and tight.comparison.n_down == 3
    detection = [c for v in run.gates for c in v.comparisons if c.test == "detection"]
    assert len(detection) == 4 and all(c.n_tests == 4 for c in detection)

    page = (project / "reports" / "qa" / "index.html").read_text(encoding="utf-8")
    assert warning in page
    # many: 10 of 40 lost is a significant change (exact McNemar) within a 0.3 allowance.
    assert "significant change, within the allowance" in page
    # off: no significant change, but sign-off is not shown.
    assert "no significant change, but the data cannot show it is within the allowance" in page
    summary = (project / "reports" / "summary.md").read_text(encoding="utf-8")
    assert "Passed, with a warning" in summary and warning in summary
