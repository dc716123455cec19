"""json_schema_valid as users get it: through evalkit's registry (the installed entry point),
checked against jsonschema called directly."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from evalkit.cache import Cache
from evalkit.errors import SpecError
from evalkit.metrics import Sample, create, registered, split_score
from evalkit.run import RunOptions, prepare_suite, run_suite

PERSON = {
    "type": "object",
    "required": ["name", "age"],
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
}
OUTPUTS = [
    '{"name": "Ada", "age": 36}',
    '{"name": "Ada", "age": "36"}',
    '{"name": "Ada"}',
    '{"name": "Ada", "age": -1}',
    "Ada, 36",
    '```json\n{"name": "Ada", "age": 36}\n```',
]


def direct(schema: dict, text: str) -> float:
    try:
        jsonschema.validate(json.loads(text), schema)
    except (json.JSONDecodeError, jsonschema.ValidationError):
        return 0.0
    return 1.0


def test_registered_through_the_entry_point() -> None:
    assert "json_schema_valid" in registered()


def test_values_equal_jsonschema_validate() -> None:
    metric = create("json_schema_valid", {"schema": PERSON})
    values = [
        split_score(v) for v in metric.score([Sample(str(i), o, ()) for i, o in enumerate(OUTPUTS)])
    ]
    assert [v for v, _ in values] == [direct(PERSON, o) for o in OUTPUTS]
    assert [v for v, _ in values] == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert values[1][1]["reason"] == "'36' is not of type 'integer' at $.age"
    assert values[2][1]["reason"] == "'age' is a required property at $"
    assert values[4][1]["reason"].startswith("not JSON: ")
    fenced = create("json_schema_valid", {"schema": PERSON, "strip_code_fence": True})
    assert split_score(fenced.score([Sample("f", OUTPUTS[5], ())])[0])[0] == 1.0


def test_schema_per_example() -> None:
    metric = create("json_schema_valid", {"schema_field": "schema"})
    samples = [
        Sample("a", "[1, 2]", (), fields={"schema": {"type": "array", "maxItems": 2}}),
        Sample("b", "[1, 2, 3]", (), fields={"schema": '{"type": "array", "maxItems": 2}'}),
        Sample("c", "[1]", (), fields={"schema": {"type": "nonsense"}}),
    ]
    values = [split_score(v) for v in metric.score(samples)]
    assert [v for v, _ in values] == [1.0, 0.0, None]
    assert "not a valid JSON Schema" in values[2][1]["error"]


def test_bad_options_fail_at_collection(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="give exactly one of 'schema'"):
        create("json_schema_valid", {})
    with pytest.raises(SpecError, match="option 'schema' is not a valid JSON Schema"):
        create("json_schema_valid", {"schema": {"type": 12}})


def test_in_a_suite(tmp_path: Path) -> None:
    rows = [{"id": str(i), "input": "Describe Ada as JSON."} for i in range(len(OUTPUTS))]
    (tmp_path / "golden.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    replay = [{"id": str(i), "output": o} for i, o in enumerate(OUTPUTS)]
    (tmp_path / "replay.jsonl").write_text("".join(json.dumps(r) + "\n" for r in replay))
    suite = {
        "suite": "json",
        "dataset": "golden.jsonl",
        "candidates": {"api": {"replay": "replay.jsonl"}},
        "metrics": [{"json_schema_valid": {"schema": PERSON}}],
        "gates": {"json_schema_valid": {"min": 0.9}},
    }
    (tmp_path / "suite.yaml").write_text(json.dumps(suite))  # JSON is YAML
    options = RunOptions(report_dir=tmp_path / "reports", cache=Cache(None), progress=False)
    result = run_suite(prepare_suite(tmp_path / "suite.yaml"), options)
    assert result.candidates["api"].aggregates["json_schema_valid"].mean == pytest.approx(1 / 6)
    assert result.gates[0].status == "failed"
