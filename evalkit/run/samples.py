"""``samples: k``: k answers per example, scored one by one, folded into one value per example.

Sample j is generated with its own seed (``evalkit.repeats.sample_seed``), which is part of the
decoding settings and so of the generation cache key: a repeat is never served from another
sample's cached answer, and sample 0 is the answer a ``samples: 1`` run caches. Output metrics
score every sample (through the score cache, as any output); metrics of the candidate itself
(perplexity, latency) and run-level figures are measured once. An example's plain column then
holds the mean over its samples and ``ExampleResult.samples`` keeps every answer and score.

Derived columns (``X@mean``, ``X@pass@K``, ``X@pass^K``; see ``evalkit.repeats``) are added for
every candidate: those the suite's gates name, and, when a candidate samples k > 1 times,
``X@pass@k`` and ``X@pass^k`` of every 0/1 column.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from evalkit.cache import Cache
from evalkit.candidates.base import Candidate, Generation, GenerationRequest
from evalkit.metrics import AnyMetric, CandidateMetric, RunMetric
from evalkit.repeats import DerivedColumn, mean_of, parse_derived, per_example, sample_seed
from evalkit.results import Aggregate, ExampleResult, SampleResult
from evalkit.run.generation import generate_cached
from evalkit.run.prepare import PreparedSuite, needs_output
from evalkit.run.scoring import CandidateScoring, Scorer, Values
from evalkit.spec import GenerationSpec
from evalkit.stats import mean_ci

Generations = dict[str, tuple[Generation, bool]]


@dataclass(frozen=True)
class SampleSet:
    """The generations of one sample index (1..k-1; index 0 is the ordinary generation)."""

    index: int
    seed: int
    generations: Generations


def sample_params(params: GenerationSpec, index: int) -> GenerationSpec:
    return params.model_copy(update={"seed": sample_seed(params.seed, index)})


def generate_samples(
    candidate: Candidate,
    fingerprint_hash: str,
    requests: Sequence[GenerationRequest],
    params: GenerationSpec,
    cache: Cache,
    k: int,
) -> list[SampleSet]:
    """Samples 1..k-1 of every request, each index through the cache with its own seed."""
    sets = []
    for index in range(1, k):
        seeded = sample_params(params, index)
        generations = generate_cached(candidate, fingerprint_hash, requests, seeded, cache)
        sets.append(SampleSet(index, seeded.seed, generations))
    return sets


def sample_dependent(metric: AnyMetric) -> bool:
    """A column that reads each answer: scored per sample. Metrics of the candidate itself and
    run-level figures do not depend on which sample was drawn."""
    return needs_output(metric) and not isinstance(metric, RunMetric | CandidateMetric)


def score_samples(
    scorer: Scorer,
    scoring: CandidateScoring,
    examples: list[ExampleResult],
    sets: Sequence[SampleSet],
    aggregates: dict[str, Aggregate],
) -> None:
    """Score samples 1..k-1 (sample 0 is already in ``examples``), keep every sample in
    ``ExampleResult.samples`` and replace each output column's value and aggregate by the mean
    over samples (its CI over examples: the bootstrap clustered by example)."""
    name = scoring.candidate.name
    columns = {c: m for c, m in scorer.metrics.items() if sample_dependent(m)}
    for example in examples:
        scores = {c: example.scores.get(c) for c in columns}
        example.samples = [
            SampleResult(seed=scoring.params.seed, output=example.output, error=example.error,
                         scores=scores, cached=example.cached)
        ]  # fmt: skip
    by_id = {e.id: e for e in examples}
    for sample_set in sets:
        answered = {
            i: g for i, (g, _) in sample_set.generations.items() if i in by_id and g.error is None
        }
        samples = [
            scorer.sample(
                i, scoring.scored(g.output), scoring.baseline, name, by_id[i].n_prompt_tokens
            )
            for i, g in answered.items()
        ]
        values = {c: scorer.score_metric(c, m, samples, scoring) for c, m in columns.items()}
        for example in examples:
            generation, cached = sample_set.generations.get(example.id, (None, False))
            example.samples.append(
                SampleResult(
                    seed=sample_set.seed,
                    output=answered[example.id].output if example.id in answered else None,
                    error=generation.error if generation is not None else "not generated",
                    scores={c: values[c].get(example.id, (None, {}))[0] for c in columns},
                    cached=cached,
                )
            )
    first = [
        scorer.sample(e.id, e.scored_output or "", scoring.baseline, name, e.n_prompt_tokens)
        for e in examples
        if e.output is not None
    ]
    for column, metric in columns.items():
        for example in examples:
            example.scores[column] = mean_of([s.scores.get(column) for s in example.samples])
        means: Values = {
            e.id: (e.scores[column], e.details.get(column, {}))
            for e in examples
            if e.scores.get(column) is not None
        }
        aggregates[column] = scorer.aggregate(column, metric, first, examples, means)
        aggregates[column].extra["samples"] = float(len(sets) + 1)


def fold_samples(
    scorer: Scorer,
    scoring: CandidateScoring,
    examples: list[ExampleResult],
    extra: Sequence[SampleSet],
    aggregates: dict[str, Aggregate],
    derived: Sequence[DerivedColumn],
    seed: int,
) -> None:
    """Score the extra samples and fold them per example, then add the derived columns."""
    if extra:
        score_samples(scorer, scoring, examples, extra, aggregates)
    greedy = scoring.params.greedy and not extra  # one answer stands for any k samples
    add_derived(examples, aggregates, derived, deterministic=greedy, seed=seed)


# -- derived columns ---------------------------------------------------------------------------


def derived_columns(prepared: PreparedSuite) -> list[DerivedColumn]:
    """The derived columns of a suite: those its gates name, then, if a candidate samples k > 1
    times, pass@k and pass^k of every column whose metric says it is 0/1."""
    spec = prepared.loaded.spec
    found: dict[str, DerivedColumn] = {}
    for gate in spec.gates.values():
        derived = parse_derived(gate.metric) if gate.metric not in prepared.metrics else None
        if derived is not None:
            found.setdefault(derived.name, derived)
    k = max(candidate.samples for candidate in spec.candidates.values())
    if k > 1:
        for column, metric in prepared.metrics.items():
            if getattr(metric, "binary", None) is True:
                for kind in ("pass@", "pass^"):
                    derived = DerivedColumn(column, kind, k)  # type: ignore[arg-type]
                    found.setdefault(derived.name, derived)
    return list(found.values())


def add_derived(
    run_examples: list[ExampleResult],
    aggregates: dict[str, Aggregate],
    derived: Sequence[DerivedColumn],
    *,
    deterministic: bool,
    seed: int,
) -> None:
    """Fill every derived column of every example, and its aggregate (mean, CI over examples).
    ``deterministic``: a greedy candidate's one answer stands for any number of samples."""
    for column in derived:
        base = aggregates.get(column.base)
        if base is None or base.level == "run":
            continue
        for example in run_examples:
            values = sample_values(example, column.base)
            value, reason = per_example(column, values, deterministic=deterministic)
            example.scores[column.name] = value
            if value is None and reason and any(v is not None for v in values):
                example.details[column.name] = {"error": reason}
        present = [v for e in run_examples if (v := e.scores.get(column.name)) is not None]
        estimate = mean_ci(present, seed=seed) if present else None
        aggregates[column.name] = Aggregate(
            metric=column.name,
            mean=estimate.mean if estimate else None,
            ci_low=estimate.ci_low if estimate else None,
            ci_high=estimate.ci_high if estimate else None,
            n=len(present),
            n_missing=len(run_examples) - len(present),
            higher_is_better=base.higher_is_better,
            signature=f"{base.signature}|{column.describe()}",
            version=base.version,
        )


class _DerivedFlips:
    """What flips need to know of a derived column: pass^K and pass@K with K = n are 0/1 and
    get flips (decided by their values); means are not 0/1."""

    def __init__(self, column: DerivedColumn) -> None:
        self.binary: bool | None = None if column.needs_binary else False


def flip_columns(
    metrics: Mapping[str, AnyMetric], derived: Sequence[DerivedColumn]
) -> dict[str, Any]:
    """The columns flips are recorded for: the suite's metrics and its derived columns."""
    return {**metrics, **{d.name: _DerivedFlips(d) for d in derived}}


def sample_values(example: ExampleResult, column: str) -> list[float | None]:
    """Every sample's value of a column (one value for a candidate that samples once)."""
    if example.samples:
        return [s.scores.get(column, example.scores.get(column)) for s in example.samples]
    return [example.scores.get(column)]
