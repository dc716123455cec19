"""A candidate whose outputs were produced elsewhere: a JSONL file of ``{"id", "output"}``.

It lets teams evaluate generations made by another system (a batch job, a vendor) with the same
metrics, gates and reports, and gives the tests a model-free candidate.

What counts as a broken file, and how it is reported:

- a line that is not JSON, not an object, or lacks ``id`` or ``output``; an ``output`` that is not
  a string; an id that appears twice; an id that is not in the golden dataset: one ``SpecError``
  naming ``file:line``, at collection (``check_replay_file``), because the file itself is wrong
  and every later number would be suspect;
- an example of the dataset with no line in the file, or ``"output": null``: that example's
  ``Generation.error``, because partial outputs are real (a vendor batch where some requests
  failed) and the rest still deserve scores: the engine records such examples as errors, never
  as 0, and gates say how many examples had no score.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalkit._files import display_path
from evalkit._reading import json_line, numbered_lines, text_problem
from evalkit.candidates.base import Generation, GenerationRequest
from evalkit.errors import SpecError
from evalkit.spec import GenerationSpec

LINE_SHAPE = 'each line needs {"id": ..., "output": "..."}'


@dataclass(frozen=True)
class ReplayLine:
    output: str | None
    """None when the file says ``"output": null`` (no output for that example)."""
    line: int


def read_replay(path: Path) -> dict[str, ReplayLine]:
    """Every line of a replay file by id; any malformed line raises a SpecError at file:line.
    Lines are read as untrusted input (see evalkit._reading): size-bounded, UTF-8, no NaN."""
    rows: dict[str, ReplayLine] = {}
    seen: dict[str, str] = {}  # id up to whitespace and Unicode normalisation -> id as written
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise SpecError(f"cannot read the replay file ({exc.strerror})", path=path) from None
    with handle:
        for number, text in numbered_lines(handle, path):
            if not text.strip():
                continue
            example_id, row = _parse_line(text, path, number)
            key = unicodedata.normalize("NFC", example_id).strip()
            if key in seen:
                first = seen[key]
                same = "" if first == example_id else f" (as '{first}', up to whitespace)"
                raise SpecError(
                    f"duplicate id '{example_id}'{same} (first on line {rows[first].line}); "
                    "keep one output per id",
                    path=path,
                    line=number,
                    field="id",
                )
            seen[key] = example_id
            rows[example_id] = row
    return rows


def _parse_line(text: str, path: Path, number: int) -> tuple[str, ReplayLine]:
    row = json_line(text, path, number, LINE_SHAPE, column=False)
    if not isinstance(row, dict):
        raise SpecError(f"not a JSON object; {LINE_SHAPE}", path=path, line=number)
    for key in ("id", "output"):
        if key not in row:
            raise SpecError(f"missing '{key}'; {LINE_SHAPE}", path=path, line=number, field=key)
    raw_id, output = row["id"], row["output"]
    if isinstance(raw_id, bool) or not isinstance(raw_id, str | int):
        raise SpecError("must be a string or an integer", path=path, line=number, field="id")
    if output is not None and not isinstance(output, str):
        raise SpecError(
            f"must be a string (or null for no output), not {type(output).__name__}",
            path=path,
            line=number,
            field="output",
        )
    for key, value in (("id", raw_id), ("output", output)):
        if problem := text_problem(value):
            raise SpecError(f"{problem}; fix the text", path=path, line=number, field=key)
    return str(raw_id), ReplayLine(output=output, line=number)


def check_replay_file(path: Path, dataset_ids: Collection[str] | None, dataset: Path) -> None:
    """Collection-time check: the file parses and names only examples of the dataset (ids are
    None when only the first examples were read, ``--evalkit-limit``: then the file's syntax
    alone is checked)."""
    for example_id, row in read_replay(path).items():
        if dataset_ids is not None and example_id not in dataset_ids:
            raise SpecError(
                f"id '{example_id}' is not in the golden dataset {display_path(dataset)}; fix "
                "the id or remove the line (outputs are matched to examples by id)",
                path=path,
                line=row.line,
                field="id",
            )


class ReplayCandidate:
    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self.path = path
        self._rows: dict[str, ReplayLine] | None = None

    def _load(self) -> dict[str, ReplayLine]:
        if self._rows is None:
            self._check_exists()
            self._rows = read_replay(self.path)
        return self._rows

    def _check_exists(self) -> None:
        if not self.path.exists():
            raise SpecError(f"replay file for candidate '{self.name}' not found", path=self.path)

    def fingerprint(self) -> dict[str, Any]:
        self._check_exists()
        digest = hashlib.sha256(self.path.read_bytes()).hexdigest()
        return {"replay": str(self.path), "sha256": digest}

    def generate(
        self, requests: Sequence[GenerationRequest], params: GenerationSpec
    ) -> Iterator[list[Generation]]:
        rows = self._load()
        yield [self._generation(r.id, rows.get(r.id)) for r in requests]

    def _generation(self, example_id: str, row: ReplayLine | None) -> Generation:
        if row is None:
            return Generation(
                id=example_id, output="", error=f"no output for id '{example_id}' in {self.path}"
            )
        if row.output is None:
            return Generation(
                id=example_id,
                output="",
                error=f"output is null for id '{example_id}' in {self.path}:{row.line}",
            )
        return Generation(id=example_id, output=row.output)

    def describe(self) -> dict[str, Any]:
        return {"kind": "replay", "path": str(self.path)}

    def close(self) -> None:
        self._rows = None
