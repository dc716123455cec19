"""A candidate whose outputs were produced elsewhere: a JSONL file of ``{"id", "output"}``.

It lets teams evaluate generations made by another system (a batch job, a vendor) with the same
metrics, gates and reports, and gives the tests a model-free candidate.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from evalkit.candidates.base import Generation, GenerationRequest
from evalkit.errors import SpecError
from evalkit.spec import GenerationSpec


class ReplayCandidate:
    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self.path = path
        self._outputs: dict[str, str] | None = None

    def _load(self) -> dict[str, str]:
        if self._outputs is None:
            if not self.path.exists():
                raise SpecError(
                    f"replay file for candidate '{self.name}' not found", path=self.path
                )
            outputs: dict[str, str] = {}
            with self.path.open(encoding="utf-8") as handle:
                for number, text in enumerate(handle, start=1):
                    if not text.strip():
                        continue
                    try:
                        row = json.loads(text)
                    except json.JSONDecodeError as exc:
                        raise SpecError(
                            f"not valid JSON ({exc.msg})", path=self.path, line=number
                        ) from None
                    if not isinstance(row, dict) or "id" not in row or "output" not in row:
                        raise SpecError(
                            'each line needs {"id": ..., "output": ...}',
                            path=self.path,
                            line=number,
                        )
                    outputs[str(row["id"])] = str(row["output"])
            self._outputs = outputs
        return self._outputs

    def fingerprint(self) -> dict[str, Any]:
        if not self.path.exists():
            raise SpecError(f"replay file for candidate '{self.name}' not found", path=self.path)
        digest = hashlib.sha256(self.path.read_bytes()).hexdigest()
        return {"replay": str(self.path), "sha256": digest}

    def generate(
        self, requests: Sequence[GenerationRequest], params: GenerationSpec
    ) -> Iterator[list[Generation]]:
        outputs = self._load()
        yield [
            Generation(id=r.id, output=outputs[r.id])
            if r.id in outputs
            else Generation(id=r.id, output="", error=f"no output for id '{r.id}' in {self.path}")
            for r in requests
        ]

    def describe(self) -> dict[str, Any]:
        return {"kind": "replay", "path": str(self.path)}

    def close(self) -> None:
        self._outputs = None
