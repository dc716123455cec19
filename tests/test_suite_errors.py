"""Bad suites and golden files fail at collection with ONE clear message, never a traceback."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from suitefiles import CAPITALS, write_jsonl

from evalkit.errors import SpecError
from evalkit.golden import load_golden
from evalkit.spec import load_suite

GOOD = textwrap.dedent(
    """\
    suite: capitals
    dataset: ../golden/capitals.jsonl
    prompt: "Capital of {{ country }}?"
    generation: {max_new_tokens: 8}
    candidates:
      old: {replay: ../golden/old.jsonl}
    metrics: [exact_match]
    gates:
      exact_match: {min: 0.5}
    """
)


def collect(pytester: pytest.Pytester, suite_text: str, rows: list[dict] | None = None) -> str:
    """Write a suite (and golden file), collect it, and return the one-error output."""
    write_jsonl(pytester.path / "golden" / "capitals.jsonl", rows if rows is not None else CAPITALS)
    (pytester.path / "suites").mkdir(exist_ok=True)
    (pytester.path / "suites" / "capitals.yaml").write_text(suite_text, encoding="utf-8")
    result = pytester.runpytest("--collect-only", "suites/")
    out = result.stdout.str()
    assert result.ret == pytest.ExitCode.INTERRUPTED, out
    result.assert_outcomes(errors=1)
    assert "Traceback" not in out and 'File "' not in out, out
    return out


def test_good_suite_collects_one_item_per_candidate_and_gate(pytester: pytest.Pytester) -> None:
    write_jsonl(pytester.path / "golden" / "capitals.jsonl", CAPITALS)
    (pytester.path / "suites").mkdir()
    (pytester.path / "suites" / "capitals.yaml").write_text(
        GOOD.replace(
            "old: {replay: ../golden/old.jsonl}",
            "old: {replay: ../golden/old.jsonl}\n  new: {replay: ../golden/new.jsonl}",
        )
        + "  exact_match2: {min: 0.1}\n",
        encoding="utf-8",
    )
    result = pytester.runpytest("--collect-only", "-q", "suites/")
    out = result.stdout.str()
    # exact_match2 names no metric, so first prove the message, then fix and count items.
    assert "gate on 'exact_match2', which is not a metric of this suite" in out
    assert "suites/capitals.yaml:11 field 'gates.exact_match2'" in out
    (pytester.path / "suites" / "capitals.yaml").write_text(
        GOOD.replace(
            "old: {replay: ../golden/old.jsonl}",
            "old: {replay: ../golden/old.jsonl}\n  new: {replay: ../golden/new.jsonl}",
        ),
        encoding="utf-8",
    )
    result = pytester.runpytest("--collect-only", "-q", "suites/")
    assert result.ret == 0
    lines = [line for line in result.stdout.lines if "::" in line]
    assert lines == [
        "suites/capitals.yaml::old::exact_match",
        "suites/capitals.yaml::new::exact_match",
    ]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        # YAML syntax error: an unclosed flow mapping.
        (
            ("generation: {max_new_tokens: 8}", "generation: {max_new_tokens: 8"),
            ["capitals.yaml:", "invalid YAML"],
        ),
        # Missing required field.
        (
            ("dataset: ../golden/capitals.jsonl\n", ""),
            ["field 'dataset'", "required field is missing"],
        ),
        # Unknown metric, with a suggestion.
        (
            ("metrics: [exact_match]", "metrics: [exact_mach]"),
            ["capitals.yaml:7", "unknown metric 'exact_mach'", "Did you mean 'exact_match'"],
        ),
        # Unknown candidate option (a typo must not be silently ignored).
        (
            (
                "old: {replay: ../golden/old.jsonl}",
                "old: {replay: ../golden/old.jsonl, devise: cpu}",
            ),
            ["capitals.yaml:6", "field 'candidates.old.devise'", "unknown option 'devise'"],
        ),
        # Unknown generation option.
        (
            ("generation: {max_new_tokens: 8}", "generation: {max_new_token: 8}"),
            ["capitals.yaml:4", "field 'generation.max_new_token'", "unknown option"],
        ),
        # Unknown option in a candidate's generation overrides.
        (
            (
                "old: {replay: ../golden/old.jsonl}",
                "old: {replay: ../golden/old.jsonl, generation: {temprature: 0.5}}",
            ),
            ["capitals.yaml:6", "field 'candidates.old.generation.temprature'", "unknown option"],
        ),
        # A bad value.
        (
            ("generation: {max_new_tokens: 8}", "generation: {max_new_tokens: 0}"),
            ["capitals.yaml:4", "generation.max_new_tokens", "greater than or equal to 1"],
        ),
        # Template variable the examples lack.
        (
            ("{{ country }}", "{{ nation }}"),
            [
                "capitals.jsonl:1",
                "'nation' is undefined",
                "'prompt' template",
                "fields country, id",
            ],
        ),
        # Template syntax error.
        (("{{ country }}", "{{ country }"), ["capitals.yaml:3", "bad jinja2 template"]),
        # compare_to names no candidate.
        (
            ("metrics: [exact_match]", "metrics: [exact_match]\ncompare_to: base"),
            ["compare_to 'base' is not a candidate"],
        ),
        # Missing golden file.
        (
            ("../golden/capitals.jsonl", "../golden/nope.jsonl"),
            ["nope.jsonl", "golden file not found"],
        ),
        # Duplicate key in the YAML mapping.
        (
            ("metrics: [exact_match]", "metrics: [exact_match]\nmetrics: [chrf]"),
            ["capitals.yaml:8", "duplicate key 'metrics'"],
        ),
        # Bad metric option.
        (
            ("metrics: [exact_match]", "metrics: [{exact_match: {normalise: [lower]}}]"),
            ["capitals.yaml:7", "bad options for metric 'exact_match'", "normalise"],
        ),
    ],
)
def test_bad_suite_gives_one_located_message(
    pytester: pytest.Pytester, change: tuple[str, str], expected: list[str]
) -> None:
    old, new = change
    assert old in GOOD
    out = collect(pytester, GOOD.replace(old, new, 1))
    for fragment in expected:
        assert fragment in out, f"{fragment!r} not in:\n{out}"


@pytest.mark.parametrize(
    ("line_3", "expected"),
    [
        (
            '{"id": "it", "country": "Italy", "reference": "Rome"',
            ["capitals.jsonl:3", "not valid JSON"],
        ),
        (
            '{"id": "fr", "country": "Italy", "reference": "Rome"}',
            ["capitals.jsonl:3", "duplicate example id 'fr'", "first seen on line 1"],
        ),
        ('{"country": "Italy", "reference": "Rome"}', ["capitals.jsonl:3", "missing 'id'"]),
        (
            '{"id": "it", "country": "Italy", "reference": {"a": 1}}',
            ["capitals.jsonl:3", "field 'reference'", "string or a non-empty list"],
        ),
        ('["it", "Italy"]', ["capitals.jsonl:3", "must be an object"]),
    ],
)
def test_bad_golden_line_is_named(
    pytester: pytest.Pytester, line_3: str, expected: list[str]
) -> None:
    write_jsonl(pytester.path / "golden" / "capitals.jsonl", CAPITALS)
    golden = pytester.path / "golden" / "capitals.jsonl"
    lines = golden.read_text().splitlines()
    lines[2] = line_3
    golden.write_text("\n".join(lines) + "\n")
    (pytester.path / "suites").mkdir(exist_ok=True)
    (pytester.path / "suites" / "capitals.yaml").write_text(GOOD)
    out = pytester.runpytest("--collect-only", "suites/").stdout.str()
    assert "Traceback" not in out
    for fragment in expected:
        assert fragment in out, f"{fragment!r} not in:\n{out}"


def test_csv_and_yaml_golden_files_report_their_lines(tmp_path: Path) -> None:
    csv_file = tmp_path / "g.csv"
    csv_file.write_text("id,country,reference\nfr,France,Paris\nde,Germany,Berlin,extra\n")
    with pytest.raises(SpecError) as info:
        load_golden(csv_file)
    assert str(info.value).startswith(f"{csv_file}:3: more values than header columns")

    yaml_file = tmp_path / "g.yaml"
    yaml_file.write_text("- id: fr\n  reference: Paris\n- id: fr\n  reference: Paris\n")
    with pytest.raises(SpecError) as info:
        load_golden(yaml_file)
    assert str(info.value).startswith(f"{yaml_file}:3 field 'id': duplicate example id 'fr'")

    good = load_golden(_ok_csv(tmp_path))
    assert [(e.id, e.references, e.line) for e in good] == [
        ("fr", ("Paris",), 2),
        ("de", ("Berlin",), 3),
    ]


def _ok_csv(tmp_path: Path) -> Path:
    path = tmp_path / "ok.csv"
    path.write_text("id,country,reference\nfr,France,Paris\nde,Germany,Berlin\n")
    return path


def test_yaml_golden_with_examples_key_and_reference_lists(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text(
        "examples:\n  - id: us\n    reference: [Washington, 'Washington, D.C.']\n"
        "  - id: 7\n    reference: 42\n"
    )
    examples = load_golden(path)
    assert [(e.id, e.references, e.line) for e in examples] == [
        ("us", ("Washington", "Washington, D.C."), 2),
        ("7", ("42",), 4),
    ]


def test_suite_line_numbers_point_at_the_field(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        GOOD.replace(
            "generation: {max_new_tokens: 8}", "generation:\n  max_new_tokens: 8\n  temperature: -1"
        )
    )
    with pytest.raises(SpecError) as info:
        load_suite(path)
    assert info.value.line == 6
    assert info.value.field == "generation.temperature"
    assert "greater than or equal to 0" in str(info.value)
