"""``json_schema_valid``: 1.0 when the output is JSON that validates against a JSON Schema.

Registered through the entry point group ``evalkit.metrics`` (see pyproject.toml), so evalkit
imports this module only when a suite uses the metric. The schema is checked when the suite is
read (a bad schema fails collection with the suite's file and line); a bad per-example schema
gives that example no score, with the reason.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from importlib import metadata
from typing import Any, ClassVar

from evalkit.metrics import Sample, Score

__all__ = ["JsonSchemaValid"]

_FENCE = re.compile(r"^\s*```[A-Za-z0-9_-]*[ \t]*\n(.*?)\n?```\s*$", re.DOTALL)


class JsonSchemaValid:
    name: ClassVar[str] = "json_schema_valid"
    version: ClassVar[str] = "1"
    higher_is_better: ClassVar[bool] = True

    def __init__(
        self,
        schema: Mapping[str, Any] | bool | None = None,
        schema_field: str | None = None,
        strip_code_fence: bool = False,
    ) -> None:
        if (schema is None) == (schema_field is None):
            raise ValueError("give exactly one of 'schema' (the schema) or 'schema_field'")
        if schema_field is not None and not isinstance(schema_field, str):
            raise TypeError(f"option 'schema_field' must be str, got {schema_field!r}")
        if not isinstance(strip_code_fence, bool):
            raise TypeError(f"option 'strip_code_fence' must be bool, got {strip_code_fence!r}")
        if schema is not None:
            _check_schema(schema)
        self.schema = schema
        self.schema_field = schema_field
        self.strip_code_fence = strip_code_fence

    def signature(self) -> str:
        source = (
            f"field:{self.schema_field}" if self.schema_field else f"schema:{_digest(self.schema)}"
        )
        fences = "strip" if self.strip_code_fence else "no"
        return f"{source}|fences:{fences}|jsonschema {metadata.version('jsonschema')}"

    def score(self, samples: Sequence[Sample]) -> list[Score]:
        return [self._score_one(sample) for sample in samples]

    def _score_one(self, sample: Sample) -> Score:
        text = sample.output
        if self.strip_code_fence and (match := _FENCE.match(text)):
            text = match.group(1)
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            return Score(
                0.0, {"reason": f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"}
            )
        try:
            schema = self._schema_for(sample)
        except ValueError as exc:
            return Score(None, {"error": str(exc)})
        problem = _first_violation(schema, document)
        return Score(0.0, {"reason": problem}) if problem else Score(1.0)

    def _schema_for(self, sample: Sample) -> Any:
        if self.schema_field is None:
            return self.schema
        if self.schema_field not in sample.fields:
            raise ValueError(f"example '{sample.id}' has no field '{self.schema_field}'")
        raw = sample.fields[self.schema_field]
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ValueError(f"field '{self.schema_field}' is not JSON ({exc.msg})") from None
        _check_schema(raw, where=f"field '{self.schema_field}' of example '{sample.id}'")
        return raw


def _check_schema(schema: Any, where: str = "option 'schema'") -> None:
    from jsonschema import exceptions, validators

    if not isinstance(schema, Mapping | bool):
        raise ValueError(f"{where} must be a JSON Schema object, got {schema!r}")
    try:
        validators.validator_for(schema).check_schema(schema)
    except exceptions.SchemaError as exc:
        raise ValueError(f"{where} is not a valid JSON Schema: {exc.message}") from None


def _first_violation(schema: Any, document: Any) -> str | None:
    """The most relevant error (jsonschema's best_match), with where in the document it is."""
    from jsonschema import exceptions, validators

    validator = validators.validator_for(schema)(schema)
    error = exceptions.best_match(validator.iter_errors(document))
    return None if error is None else f"{error.message} at {error.json_path}"


def _digest(schema: Any) -> str:
    blob = json.dumps(schema, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
