"""Accepted baselines: a candidate's outputs and scores, accepted on purpose like a snapshot.

``pytest --evalkit-update-baseline`` writes one JSON file per (suite, candidate) beside the golden
data; it is committed with the data. Later runs pair their examples with it by id. An example
whose content (input or reference) changed since acceptance is not paired: its old score says
nothing about the new example.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from evalkit._files import write_atomic
from evalkit.errors import EvalkitError
from evalkit.results import CandidateRun


class BaselineExample(BaseModel):
    id: str
    content_hash: str
    output: str | None
    error: str | None = None
    scores: dict[str, float | None] = Field(default_factory=dict)


class Baseline(BaseModel):
    suite: str
    candidate: str
    accepted_at: str
    evalkit_version: str
    fingerprint: dict[str, Any]
    generation: dict[str, Any]
    metrics: dict[str, str] = Field(description="column -> signature at acceptance")
    means: dict[str, float | None]
    examples: list[BaselineExample]


def baseline_path(directory: Path, candidate: str) -> Path:
    return directory / f"{candidate}.json"


def load_baseline(path: Path) -> Baseline | None:
    if not path.exists():
        return None
    try:
        return Baseline.model_validate_json(path.read_text(encoding="utf-8"))
    except ValidationError as exc:
        raise EvalkitError(
            f"{path}: not a valid evalkit baseline ({exc.errors()[0]['msg']}); delete it and run "
            "pytest --evalkit-update-baseline to accept a new one"
        ) from None


def write_baseline(
    path: Path,
    *,
    suite: str,
    run: CandidateRun,
    content_hashes: dict[str, str],
    signatures: dict[str, str],
    evalkit_version: str,
) -> Baseline:
    baseline = Baseline(
        suite=suite,
        candidate=run.name,
        accepted_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        evalkit_version=evalkit_version,
        fingerprint=run.fingerprint,
        generation=run.generation,
        metrics=signatures,
        means={name: agg.mean for name, agg in run.aggregates.items()},
        examples=[
            BaselineExample(
                id=e.id,
                content_hash=content_hashes[e.id],
                output=e.output,
                error=e.error,
                scores=e.scores,
            )
            for e in run.examples
        ],
    )
    write_atomic(path, baseline.model_dump_json(indent=1) + "\n")
    return baseline
