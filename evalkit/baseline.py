"""Accepted baselines: a candidate's outputs and scores, accepted on purpose like a snapshot,
and the one answer to "what does this candidate's gate compare with".

``pytest --evalkit-update-baseline`` writes one JSON file per (suite, candidate) beside the golden
data; it is committed with the data. Later runs pair their examples with it by id. An example
whose content (input or reference) changed since acceptance is not paired: its old score says
nothing about the new example.

A regression gate compares a candidate with the suite's ``compare_to`` candidate from the same
run, or (for the compare_to candidate itself, or a suite without one) with its accepted baseline.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from evalkit._files import write_atomic
from evalkit.errors import UPDATE_COMMAND as UPDATE_COMMAND  # re-exported
from evalkit.errors import EvalkitError, disk_error
from evalkit.gates import BaselineScores
from evalkit.metrics import AnyMetric, CandidateMetric, RunMetric
from evalkit.metrics.judge_identity import describe, judge_identity, same_judge
from evalkit.repeats import mean_of, parse_derived, per_example
from evalkit.results import CandidateRun


class BaselineExample(BaseModel):
    id: str
    content_hash: str
    output: str | None
    error: str | None = None
    scores: dict[str, float | None] = Field(default_factory=dict)
    samples: list[str | None] = Field(
        default_factory=list, description="samples: k candidates: every sample's output"
    )


class Baseline(BaseModel):
    suite: str
    candidate: str
    accepted_at: str
    evalkit_version: str
    fingerprint: dict[str, Any]
    generation: dict[str, Any]
    metrics: dict[str, str] = Field(description="column -> signature at acceptance")
    judges: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="judge column -> the judge that scored it"
    )
    means: dict[str, float | None]
    examples: list[BaselineExample]


def baseline_path(directory: Path, candidate: str) -> Path:
    return directory / f"{candidate}.json"


def load_baseline(path: Path, update_command: str = UPDATE_COMMAND) -> Baseline | None:
    if not path.exists():
        return None
    try:
        return Baseline.model_validate_json(path.read_text(encoding="utf-8"))
    except ValidationError as exc:
        raise EvalkitError(
            f"{path}: not a valid evalkit baseline ({exc.errors()[0]['msg']}); delete it and run "
            f"`{update_command}` to accept a new one"
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
        judges={c: a.judge for c, a in run.aggregates.items() if a.judge is not None},
        means={name: agg.mean for name, agg in run.aggregates.items()},
        examples=[
            BaselineExample(
                id=e.id,
                content_hash=content_hashes[e.id],
                output=e.output,
                error=e.error,
                scores=e.scores,
                samples=[sample.output for sample in e.samples],
            )
            for e in run.examples
        ],
    )
    try:
        write_atomic(path, baseline.model_dump_json(indent=1) + "\n")
    except OSError as exc:  # the previous baseline stays as it was
        raise disk_error(exc, path, extra="; the accepted baseline is unchanged") from None
    return baseline


Rescore = Callable[[str, str, Sequence["BaselineExample"]], dict[str, float | None]]
"""Scores accepted outputs with today's metric of a column, against the candidate's own
requests: (candidate, column, examples) -> id -> value."""


def compare_to_scores(other: CandidateRun, column: str) -> BaselineScores:
    """The compare_to candidate of the same run, as the baseline of one column."""
    figure = other.aggregates.get(column)
    return BaselineScores(
        label=f"candidate:{other.name}",
        scores={e.id: e.scores.get(column) for e in other.examples},
        outputs={e.id: e.output for e in other.examples},
        run_value=figure.mean if figure is not None else None,
    )


class AcceptedBaselines:
    """The accepted baselines of one suite run, each file read once per candidate."""

    def __init__(
        self,
        directory: Path,
        suite: str,
        content_hashes: Mapping[str, str],
        metrics: Mapping[str, AnyMetric],
        rescore: Rescore,
        update_command: str = UPDATE_COMMAND,
    ) -> None:
        self.update_command = update_command
        self.directory = directory
        self.suite = suite
        self.content_hashes = content_hashes
        self.metrics = metrics
        self.rescore = rescore
        self._loaded: dict[str, Baseline | None] = {}

    def scores(self, candidate: str, column: str) -> BaselineScores:
        path = baseline_path(self.directory, candidate)
        label = f"accepted:{path.name}"
        if candidate not in self._loaded:
            self._loaded[candidate] = load_baseline(path, self.update_command)
        stored = self._loaded[candidate]
        if stored is None:
            return BaselineScores(
                label=label,
                scores={},
                missing_reason=(
                    f"no accepted baseline for {self.suite}/{candidate} (expected {path}); "
                    f"run `{self.update_command}` to accept the current results"
                ),
            )
        # Only examples whose content is unchanged since acceptance are paired.
        current = [e for e in stored.examples if self.content_hashes.get(e.id) == e.content_hash]
        outputs = {e.id: e.output for e in current}
        derived = parse_derived(column) if column not in self.metrics else None
        metric = self.metrics[derived.base if derived else column]
        if isinstance(metric, RunMetric):  # one stored figure, not per-example values
            return BaselineScores(
                label=label, scores={}, outputs=outputs, run_value=stored.means.get(column)
            )
        if isinstance(metric, CandidateMetric):
            # Perplexity or latency needs the accepted model itself: use the stored values.
            return BaselineScores(
                label=label, scores={e.id: e.scores.get(column) for e in current}, outputs=outputs
            )
        today = judge_identity(metric)
        if today is not None and not same_judge(stored.judges.get(column), today):
            # Never compare across judges: re-score with today's judge, or refuse.
            before = describe(stored.judges.get(column))
            if not any(e.output is not None for e in current):
                return BaselineScores(label=label, scores={}, missing_reason=(
                    f"{path.name} was scored by {before}, today's judge is {describe(today)}, "
                    "and it holds no outputs to re-score; accept a new baseline (pytest "
                    "--evalkit-update-baseline) to compare judge scores"))  # fmt: skip
            label += f" (re-scored by today's judge; accepted under {before})"
        # Re-score the accepted outputs with today's metric so a metric change is not a delta.
        if derived is None and not any(e.samples for e in current):
            scored = [e for e in current if e.output is not None]
            rescored = self.rescore(candidate, column, scored)
        else:
            greedy = not stored.generation.get("temperature")
            rescored = rescore_samples(self.rescore, candidate, column, current, greedy)
        return BaselineScores(label=label, scores=rescored, outputs=outputs)


def rescore_samples(
    rescore: Rescore,
    candidate: str,
    column: str,
    examples: Sequence[BaselineExample],
    greedy: bool,
) -> dict[str, float | None]:
    """Today's scores of an accepted ``samples: k`` candidate: each stored sample re-scored,
    then folded per example as the column says (the mean, or ``X@pass@K`` / ``X@pass^K``)."""
    derived = parse_derived(column)
    base = derived.base if derived else column
    k = max((len(e.samples) for e in examples), default=0)
    per_sample: list[dict[str, float | None]] = []
    for index in range(max(k, 1)):
        batch = []
        for e in examples:
            # An example accepted with one answer (samples: 1) has it as 'output' only.
            output = e.samples[index] if index < len(e.samples) else None
            output = e.output if index == 0 and not e.samples else output
            if output is not None:
                batch.append(e.model_copy(update={"output": output}))
        per_sample.append(rescore(candidate, base, batch))
    folded: dict[str, float | None] = {}
    for example in examples:
        values = [scores.get(example.id) for scores in per_sample]
        if derived is None:
            folded[example.id] = mean_of(values)
        else:
            deterministic = greedy and not example.samples
            folded[example.id] = per_example(derived, values, deterministic=deterministic)[0]
    return folded


def baseline_for(
    run: CandidateRun,
    column: str,
    runs: Mapping[str, CandidateRun],
    compare_to: str | None,
    accepted: AcceptedBaselines,
) -> BaselineScores:
    """What ``run``'s regression gate on ``column`` compares with."""
    if compare_to and run.name != compare_to:
        return compare_to_scores(runs[compare_to], column)
    return accepted.scores(run.name, column)


def write_baselines(
    directory: Path,
    suite: str,
    runs: Sequence[CandidateRun],
    content_hashes: dict[str, str],
    evalkit_version: str,
) -> list[str]:
    """Accept every run as its candidate's baseline; returns the files written."""
    written = []
    for run in runs:
        path = baseline_path(directory, run.name)
        write_baseline(
            path,
            suite=suite,
            run=run,
            content_hashes=content_hashes,
            signatures={c: a.signature for c, a in run.aggregates.items()},
            evalkit_version=evalkit_version,
        )
        written.append(str(path))
    return written
