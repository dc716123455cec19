"""Replay files: every malformed line is one located error at collection; an example without an
output is that example's error (partial outputs are real), never a zero."""

from __future__ import annotations

from pathlib import Path

import pytest
from suitefiles import write_jsonl, write_suite

from evalkit.cache import Cache
from evalkit.errors import SpecError
from evalkit.run import RunOptions, prepare_suite, run_suite

GOLDEN = [
    {"id": f"q{i}", "question": f"question {i}", "reference": f"answer {i}"} for i in range(4)
]
GOOD_LINES = [f'{{"id": "q{i}", "output": "answer {i}"}}' for i in range(4)]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # error messages show paths relative to the working directory
    write_jsonl(tmp_path / "golden" / "qa.jsonl", GOLDEN)
    write_suite(
        tmp_path / "suites" / "qa.yaml",
        {
            "suite": "qa",
            "dataset": "../golden/qa.jsonl",
            "prompt": "{{ question }}",
            "candidates": {"vendor": {"replay": "../golden/vendor.jsonl"}},
            "metrics": ["exact_match"],
        },
    )
    return tmp_path


def _write_replay(project: Path, lines: list[str]) -> None:
    (project / "golden" / "vendor.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (
            [GOOD_LINES[0], "", '{"id": "q1", "output": "answer 1"', *GOOD_LINES[2:]],
            "golden/vendor.jsonl:3: not valid JSON (Expecting ',' delimiter); each line needs",
        ),
        (
            [GOOD_LINES[0], '{"id": "q1", "text": "answer 1"}'],
            "golden/vendor.jsonl:2 field 'output': missing 'output'; each line needs",
        ),
        (
            ['{"output": "answer 0"}'],
            "golden/vendor.jsonl:1 field 'id': missing 'id'",
        ),
        (
            [*GOOD_LINES[:2], '{"id": "q0", "output": "again"}'],
            "golden/vendor.jsonl:3 field 'id': duplicate id 'q0' (first on line 1)",
        ),
        (
            [*GOOD_LINES, '{"id": "q99", "output": "stray"}'],
            "golden/vendor.jsonl:5 field 'id': id 'q99' is not in the golden dataset "
            "golden/qa.jsonl; fix the id or remove the line",
        ),
        (
            [GOOD_LINES[0], '{"id": "q1", "output": 42}'],
            "golden/vendor.jsonl:2 field 'output': must be a string (or null for no output), "
            "not int",
        ),
        (['["q0", "answer 0"]'], "golden/vendor.jsonl:1: not a JSON object"),
    ],
)
def test_a_broken_replay_file_is_one_located_error(
    project: Path, lines: list[str], message: str
) -> None:
    _write_replay(project, lines)
    with pytest.raises(SpecError) as error:
        prepare_suite(project / "suites" / "qa.yaml")
    assert str(error.value).startswith(message), str(error.value)
    assert "\n" not in str(error.value)


def test_pytest_reports_it_at_collection(pytester: pytest.Pytester) -> None:
    write_jsonl(pytester.path / "golden" / "qa.jsonl", GOLDEN)
    _write_replay(pytester.path, [GOOD_LINES[0], '{"id": "q0", "output": "dup"}'])
    write_suite(
        pytester.path / "suites" / "qa.yaml",
        {
            "suite": "qa",
            "dataset": "../golden/qa.jsonl",
            "prompt": "{{ question }}",
            "candidates": {"vendor": {"replay": "../golden/vendor.jsonl"}},
            "metrics": ["exact_match"],
        },
    )
    result = pytester.runpytest("--collect-only", "suites/")
    result.assert_outcomes(errors=1)
    out = result.stdout.str()
    assert "golden/vendor.jsonl:2 field 'id': duplicate id 'q0' (first on line 1)" in out
    assert "Traceback" not in out


def test_missing_and_null_outputs_are_per_example_errors(project: Path) -> None:
    _write_replay(project, [GOOD_LINES[0], '{"id": "q1", "output": null}', GOOD_LINES[3]])
    options = RunOptions(report_dir=project / "reports", cache=Cache(None), progress=False)
    run = run_suite(prepare_suite(project / "suites" / "qa.yaml"), options)
    vendor = {e.id: e for e in run.candidates["vendor"].examples}
    replay_file = project / "golden" / "vendor.jsonl"
    assert vendor["q1"].error == f"output is null for id 'q1' in {replay_file}:2"
    assert vendor["q2"].error == f"no output for id 'q2' in {replay_file}"
    assert vendor["q1"].output is None and vendor["q1"].scores["exact_match"] is None
    assert vendor["q0"].scores["exact_match"] == 1.0 and vendor["q3"].scores["exact_match"] == 1.0
    aggregate = run.candidates["vendor"].aggregates["exact_match"]
    assert (aggregate.n, aggregate.n_missing, aggregate.mean) == (2, 2, 1.0)


def test_integer_ids_match_and_a_missing_file_is_reported_at_run_time(project: Path) -> None:
    write_jsonl(
        project / "golden" / "qa.jsonl",
        [{"id": 7, "question": "seven", "reference": "7"}],
    )
    prepared = prepare_suite(project / "suites" / "qa.yaml")  # no replay file yet: collects
    options = RunOptions(report_dir=project / "reports", cache=Cache(None), progress=False)
    with pytest.raises(SpecError, match="replay file for candidate 'vendor' not found"):
        run_suite(prepared, options)
    _write_replay(project, ['{"id": 7, "output": "7"}'])
    run = run_suite(prepare_suite(project / "suites" / "qa.yaml"), options)
    assert run.candidates["vendor"].examples[0].scores["exact_match"] == 1.0
