"""Golden examples: load .jsonl / .csv / .yaml files into validated ``Example`` objects.

Every example needs a stable ``id`` (baselines and caches are keyed by it) and usually a
``reference`` (a string, or a list of acceptable strings). All other keys are template fields.
Errors name ``file:line`` and the field, so a broken line in a 5,000-line file is found at once.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalkit._yaml import load_yaml
from evalkit.errors import SpecError

SUPPORTED = (".jsonl", ".csv", ".yaml", ".yml")


@dataclass(frozen=True)
class Example:
    id: str
    fields: dict[str, Any]
    references: tuple[str, ...]
    path: str = ""
    line: int = 0
    content_hash: str = field(default="", compare=False)

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def load_golden(path: Path) -> list[Example]:
    """Load every example of a golden file; raise SpecError at the first bad line."""
    if not path.exists():
        raise SpecError("golden file not found; check the suite's 'dataset' path", path=path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED:
        raise SpecError(
            f"unsupported golden file type '{suffix}'; use one of {', '.join(SUPPORTED)}", path=path
        )
    rows = {".jsonl": _jsonl_rows, ".csv": _csv_rows}.get(suffix, _yaml_rows)(path)
    examples: list[Example] = []
    first_line: dict[str, int] = {}
    for line, row in rows:
        example = _example(row, path, line)
        if example.id in first_line:
            raise SpecError(
                f"duplicate example id '{example.id}' (first seen on line "
                f"{first_line[example.id]}); ids must be unique and stable",
                path=path,
                line=line,
                field="id",
            )
        first_line[example.id] = line
        examples.append(example)
    if not examples:
        raise SpecError("golden file holds no examples", path=path)
    return examples


def _jsonl_rows(path: Path) -> Iterator[tuple[int, Any]]:
    with path.open(encoding="utf-8") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                yield number, json.loads(text)
            except json.JSONDecodeError as exc:
                raise SpecError(
                    f"not valid JSON ({exc.msg} at column {exc.colno}); each line must be one "
                    "JSON object",
                    path=path,
                    line=number,
                ) from None


def _csv_rows(path: Path) -> Iterator[tuple[int, Any]]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        for row in reader:
            if None in row:
                raise SpecError("more values than header columns", path=path, line=reader.line_num)
            yield reader.line_num, dict(row)


def _yaml_rows(path: Path) -> Iterator[tuple[int, Any]]:
    data, lines = load_yaml(path)
    if isinstance(data, dict) and isinstance(data.get("examples"), list):
        data, prefix = data["examples"], ("examples",)
    else:
        prefix = ()
    if not isinstance(data, list):
        raise SpecError(
            "a YAML golden file must be a list of examples (or 'examples: [...]')", path=path
        )
    for index, row in enumerate(data):
        yield lines.line_of((*prefix, index)) or 0, row


def _example(row: Any, path: Path, line: int) -> Example:
    if not isinstance(row, dict):
        raise SpecError("an example must be an object with an 'id' field", path=path, line=line)
    raw_id = row.get("id")
    if raw_id is None or (isinstance(raw_id, str) and not raw_id.strip()):
        raise SpecError(
            "missing 'id'; give every example a stable, unique id", path=path, line=line, field="id"
        )
    if not isinstance(raw_id, str | int) or isinstance(raw_id, bool):
        raise SpecError("'id' must be a string or an integer", path=path, line=line, field="id")
    references = _references(row.get("reference"), path, line)
    fields = {key: value for key, value in row.items() if key != "reference"}
    blob = json.dumps(row, sort_keys=True, ensure_ascii=False, default=str)
    return Example(
        id=str(raw_id),
        fields=fields,
        references=references,
        path=str(path),
        line=line,
        content_hash=hashlib.sha256(blob.encode()).hexdigest()[:16],
    )


def _references(raw: Any, path: Path, line: int) -> tuple[str, ...]:
    if raw is None:
        return ()
    if isinstance(raw, str):
        return (raw,)
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return (str(raw),)
    if isinstance(raw, list) and raw and all(isinstance(r, str) for r in raw):
        return tuple(raw)
    raise SpecError(
        "'reference' must be a string or a non-empty list of strings",
        path=path,
        line=line,
        field="reference",
    )
