"""Golden examples: load .jsonl / .csv / .yaml files into validated ``Example`` objects.

Every example needs a stable ``id`` (baselines and caches are keyed by it) and usually a
``reference`` (a string, or a list of acceptable strings). All other keys are template fields.
Files made for other tools often have no ``id``: a suite's ``ids:`` then names the field that
identifies an example, or ``line`` (the line it starts on: stable while lines do not move).
Errors name ``file:line`` and the field, so a broken line in a 5,000-line file is found at once.

Golden files may come from a pull request, so reading is defensive and lazy: JSONL and CSV
files are read line by line (``iter_golden``; ``--evalkit-limit 5`` reads five examples of a
100 MB file), no line or example may exceed ``max_example_bytes()`` (``EVALKIT_MAX_EXAMPLE_BYTES``,
default 1 MB), and every kind of bad input (bytes that are not UTF-8, lone surrogates, numbers
too long to convert, NaN, deep nesting, an unclosed CSV quote, ids that differ only by
whitespace) ends in one SpecError at ``file:line``. A UTF-8 byte-order mark is skipped in every
format.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import math
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalkit._reading import LIMIT_ENV, json_line, max_example_bytes, numbered_lines
from evalkit._yaml import MAX_DEPTH, load_yaml
from evalkit.errors import SpecError

SUPPORTED = (".jsonl", ".csv", ".yaml", ".yml")
MAX_ID_CHARS = 1_000
ID_FIELD = "id"
LINE_IDS = "line"


@dataclass(frozen=True)
class Example:
    id: str
    fields: dict[str, Any]
    references: tuple[str, ...]
    path: str = ""
    line: int = 0
    content_hash: str = field(default="", compare=False)
    sentinel: bool = False
    """``sentinel: true`` in the golden file: a regression gate fails if this example flips from
    pass to fail, whatever the statistics say (``evalkit.run.sentinels``)."""

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def load_golden(path: Path, limit: int | None = None, ids: str = ID_FIELD) -> list[Example]:
    """The first ``limit`` examples (all by default); raise SpecError at the first bad line.
    Lines after the limit are not read, so their problems are not seen either. ``ids``: the
    field holding each example's id, or ``line`` for ``line-N`` (N: the line it starts on)."""
    return list(itertools.islice(iter_golden(path, ids), limit))


def iter_golden(path: Path, ids: str = ID_FIELD) -> Iterator[Example]:
    """Examples one at a time, checked as they are read (ids unique up to whitespace and
    Unicode normalisation)."""
    if not path.is_file():
        raise SpecError("golden file not found; check the suite's 'dataset' path", path=path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED:
        raise SpecError(
            f"unsupported golden file type '{suffix}'; use one of {', '.join(SUPPORTED)}", path=path
        )
    reader = {".jsonl": _jsonl_rows, ".csv": _csv_rows}.get(suffix, _yaml_rows)
    first_line: dict[str, tuple[int, str]] = {}
    for line, row in reader(path):
        example = _example(row, path, line, ids)
        key = unicodedata.normalize("NFC", example.id).strip()
        if key in first_line:
            seen_line, seen_id = first_line[key]
            same = "" if seen_id == example.id else f" (as '{seen_id}', up to whitespace)"
            raise SpecError(
                f"duplicate example id '{example.id}'{same} (first seen on line {seen_line}); "
                "ids must be unique and stable",
                path=path,
                line=line,
                field=ids,
            )
        first_line[key] = (line, example.id)
        yield example
    if not first_line:
        raise SpecError("golden file holds no examples", path=path)


def _jsonl_rows(path: Path) -> Iterator[tuple[int, Any]]:
    with path.open("rb") as handle:
        for number, text in numbered_lines(handle, path):
            if text.strip():
                yield number, json_line(text, path, number, "each line must be one JSON object")


_TOO_DEEP = f"nested deeper than {MAX_DEPTH} levels; flatten the example"


def _csv_rows(path: Path) -> Iterator[tuple[int, Any]]:
    limit = max_example_bytes()
    csv.field_size_limit(max(limit, csv.field_size_limit()))
    with path.open("rb") as handle:
        lines = (text for _, text in numbered_lines(handle, path))
        reader = csv.reader(lines, strict=True)
        header: list[str] | None = None
        start = 1
        while True:
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise _csv_error(exc, path, start, reader.line_num, limit) from None
            if header is None:
                header = values
            elif values:
                if len(values) > len(header):
                    raise SpecError("more values than header columns", path=path,
                                    line=reader.line_num)  # fmt: skip
                yield start, dict(itertools.zip_longest(header, values))
            start = reader.line_num + 1


def _csv_error(exc: csv.Error, path: Path, start: int, line: int, limit: int) -> SpecError:
    text = str(exc)
    if "end of data" in text or "EOF" in text:
        message = (
            f"the quoted field that starts on line {start} is never closed (it runs to the end "
            "of the file); add the closing quote"
        )
        return SpecError(message, path=path, line=start)
    if "field limit" in text:
        message = f"a field longer than {limit:,} characters; shorten it or raise {LIMIT_ENV}"
        return SpecError(message, path=path, line=start)
    return SpecError(f"malformed CSV ({text}); quote fields that hold commas or quotes",
                     path=path, line=line)  # fmt: skip


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


def _example(row: Any, path: Path, line: int, ids: str = ID_FIELD) -> Example:
    if not isinstance(row, dict):
        raise SpecError("an example must be an object (a JSON object per line)", path=path,
                        line=line)  # fmt: skip
    raw_id = f"line-{line}" if ids == LINE_IDS else row.get(ids)
    if raw_id is None or (isinstance(raw_id, str) and not raw_id.strip()):
        raise SpecError(_missing_id(ids), path=path, line=line, field=ids)
    if not isinstance(raw_id, str | int) or isinstance(raw_id, bool):
        raise SpecError(f"'{ids}' must be a string or an integer", path=path, line=line,
                        field=ids)  # fmt: skip
    if isinstance(raw_id, str) and len(raw_id) > MAX_ID_CHARS:
        raise SpecError(f"'{ids}' is longer than {MAX_ID_CHARS:,} characters; use a short stable "
                        "id", path=path, line=line, field=ids)  # fmt: skip
    references = _references(row.get("reference"), path, line)
    sentinel = _flag(row.get("sentinel"), path, line)
    fields = {key: value for key, value in row.items() if key not in ("reference", "sentinel")}
    # Marking an example as a sentinel changes no answer: its hash (and baseline pairing) stays.
    content = {key: value for key, value in row.items() if key != "sentinel"}
    return Example(
        id=str(raw_id),
        fields=fields,
        references=references,
        path=str(path),
        line=line,
        content_hash=_content_hash(content, path, line),
        sentinel=sentinel,
    )


def _missing_id(ids: str) -> str:
    if ids != ID_FIELD:
        return f"missing '{ids}', the field the suite's 'ids:' takes example ids from"
    return (
        "missing 'id'; give every example a stable, unique id, or set 'ids:' in the suite: "
        "'ids: FIELD' takes them from another field, 'ids: line' numbers examples by line"
    )


_FLAGS = {"true": True, "1": True, "false": False, "0": False, "": False}


def _flag(raw: Any, path: Path, line: int) -> bool:
    """A true/false field; CSV cells are text, so "true"/"false" (and 1/0, empty) count too."""
    if raw is None or isinstance(raw, bool):
        return bool(raw)
    if isinstance(raw, str) and raw.strip().lower() in _FLAGS:
        return _FLAGS[raw.strip().lower()]
    raise SpecError("'sentinel' must be true or false", path=path, line=line, field="sentinel")


def _content_hash(row: dict[Any, Any], path: Path, line: int) -> str:
    for key, value in row.items():
        if not isinstance(key, str):
            raise SpecError(f"field name {key!r} is not a string; quote it", path=path, line=line)
        _check_value(value, path, line, key)
    blob = json.dumps(row, sort_keys=True, ensure_ascii=False, default=str).encode()
    limit = max_example_bytes()
    if len(blob) > limit:
        raise SpecError(
            f"the example is {len(blob):,} bytes, over the limit of {limit:,}; shorten it or "
            f"raise {LIMIT_ENV}",
            path=path,
            line=line,
        )
    return hashlib.sha256(blob).hexdigest()[:16]


def _check_value(value: Any, path: Path, line: int, name: str) -> None:
    """Nesting within MAX_DEPTH, string keys, and only encodable text (a lone surrogate such as
    "\\ud800" parses in JSON but cannot be hashed, cached or sent to a model). Iterative, so a
    deep value cannot exhaust the stack here."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise SpecError(_TOO_DEEP, path=path, line=line, field=name)
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                bad = item[exc.start]
                raise SpecError(
                    f"holds an invalid character (lone surrogate U+{ord(bad):04X}); fix the text",
                    path=path, line=line, field=name,
                ) from None  # fmt: skip
        elif isinstance(item, dict):
            if not all(isinstance(key, str) for key in item):
                raise SpecError("holds a mapping whose keys are not all strings; quote them",
                                path=path, line=line, field=name)  # fmt: skip
            stack.extend((v, depth + 1) for v in (*item.keys(), *item.values()))
        elif isinstance(item, list | tuple):
            stack.extend((v, depth + 1) for v in item)


def _references(raw: Any, path: Path, line: int) -> tuple[str, ...]:
    if raw is None:
        return ()
    if isinstance(raw, str):
        return (raw,)
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        if isinstance(raw, float) and not math.isfinite(raw):
            raise SpecError(f"the reference is {raw}, not a usable number; write it as a string",
                            path=path, line=line, field="reference")  # fmt: skip
        return (str(raw),)
    if isinstance(raw, list) and raw and all(isinstance(r, str) for r in raw):
        return tuple(raw)
    raise SpecError(
        "'reference' must be a string or a non-empty list of strings",
        path=path,
        line=line,
        field="reference",
    )
