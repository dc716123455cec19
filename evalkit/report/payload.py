"""The per-example data of a suite as report.js reads it: columnar, one entry per example in
golden order, outputs interned (candidates often agree word for word, e.g. a
faster variant of the same model), scores rounded to 6 significant digits."""

from __future__ import annotations

import json
import math
from typing import Any

from evalkit.report.view import SuiteView
from evalkit.results import CandidateRun, RunResult

MAX_NOTE_CHARS = 2000
"""Longer per-example details (judge transcripts) are cut in the report; run.json keeps all."""


def _compact(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(f"{value:.6g}")


def _input_text(messages: list[dict[str, str]], shared_system: str | None) -> str:
    """The prompt as messages; a system message every example shares is shown once elsewhere."""
    shown = [
        m for m in messages if not (m.get("role") == "system" and m.get("content") == shared_system)
    ]
    if len(shown) == 1:
        return shown[0].get("content", "")
    return "\n".join(f"[{m.get('role', '?')}] {m.get('content', '')}" for m in shown)


def shared_system_message(run: RunResult) -> str | None:
    """The system message every example shares (shown once, in the metadata)."""
    seen = set()
    for cand in run.candidates.values():
        for example in cand.examples:
            seen.add(
                next((m["content"] for m in example.messages if m.get("role") == "system"), None)
            )
            if len(seen) > 1:
                return None
    return seen.pop() if seen else None


def _notes(details: dict[str, dict[str, Any]]) -> list[list[str]]:
    """[label, kind, text] per detail: judge rationales and errors by name, the rest as JSON."""
    notes = []
    for column, detail in details.items():
        for key, value in detail.items():
            kind = key if key in ("rationale", "error") else "detail"
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            label = column if kind != "detail" else f"{column}.{key}"
            notes.append([label, kind, text[:MAX_NOTE_CHARS]])
    return notes


class _Strings:
    """Each distinct output stored once; candidates refer to it by index (-1: no output)."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self._index: dict[str, int] = {}

    def ref(self, text: str | None) -> int:
        if text is None:
            return -1
        if text not in self._index:
            self._index[text] = len(self.items)
            self.items.append(text)
        return self._index[text]


def _candidate_columns(
    cand: CandidateRun, position: dict[str, int], view: SuiteView, strings: _Strings
) -> dict[str, Any]:
    out = [-1] * len(position)
    scores: list[list[float | None]] = [[None] * len(position) for _ in view.metrics]
    errors: dict[str, str] = {}
    notes: dict[str, list[list[str]]] = {}
    for example in cand.examples:
        i = position[example.id]
        out[i] = strings.ref(example.output)
        for j, metric in enumerate(view.metrics):
            scores[j][i] = _compact(example.scores.get(metric.name))
        if example.error:
            errors[str(i)] = example.error
        if example.details:
            notes[str(i)] = _notes(example.details)
    return {"out": out, "scores": scores, "errors": errors, "notes": notes}


def examples_payload(view: SuiteView) -> dict[str, Any]:
    run = view.run
    first: dict[str, Any] = {}  # id -> the example as the first candidate that has it saw it
    for name in view.candidates:
        for example in run.candidates[name].examples:
            first.setdefault(example.id, example)
    ids = list(first)
    position = {example_id: i for i, example_id in enumerate(ids)}
    system = shared_system_message(run)
    strings = _Strings()
    runs = [_candidate_columns(run.candidates[n], position, view, strings) for n in view.candidates]
    return {
        "metrics": [
            {"name": m.name, "hib": m.higher_is_better, "resource": m.resource}
            for m in view.metrics
        ],
        "candidates": view.candidates,
        "baseline": view.candidates.index(view.baseline) if view.baseline else None,
        "ids": ids,
        "inputs": [_input_text(first[i].messages, system) for i in ids],
        "refs": [" | ".join(first[i].references) for i in ids],
        "strings": strings.items,
        "runs": runs,
    }
