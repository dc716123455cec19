"""Helpers that write suite and golden files for tests."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml


def write_jsonl(path: Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_suite(path: Path, spec: Mapping[str, Any] | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = spec if isinstance(spec, str) else yaml.safe_dump(dict(spec), sort_keys=False)
    path.write_text(text, encoding="utf-8")
    return path


CAPITALS = [
    {"id": "fr", "country": "France", "reference": "Paris"},
    {"id": "de", "country": "Germany", "reference": "Berlin"},
    {"id": "it", "country": "Italy", "reference": "Rome"},
    {"id": "es", "country": "Spain", "reference": "Madrid"},
    {"id": "jp", "country": "Japan", "reference": "Tokyo"},
    {"id": "pe", "country": "Peru", "reference": "Lima"},
]
