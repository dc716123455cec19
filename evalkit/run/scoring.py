"""Cached scoring and aggregation: per-example values for every metric column, then the
run-level figures (mean with its CI, corpus scores, a metric's own extra figures).

Scores are keyed by the metric's identity (name, version, signature) and what it reads: the
output (unless the metric reads none), references, messages and fields; candidate metrics
(perplexity, latency) also by the candidate's fingerprint and decoding. Missing values (an error,
an outage) are never cached.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm

from evalkit.cache import Cache, make_key
from evalkit.candidates.base import Candidate, GenerationRequest
from evalkit.errors import EvalkitError
from evalkit.golden import Example
from evalkit.metrics import (
    AnyMetric,
    CandidateMetric,
    RunFigures,
    RunMetric,
    Sample,
    Scored,
    run_figures,
    split_score,
)
from evalkit.metrics.base import BaseComparingMetric, BaseRef, UsesStore
from evalkit.results import Aggregate, CandidateRun, ExampleResult
from evalkit.run.prepare import needs_output
from evalkit.spec import GenerationSpec
from evalkit.spec_variants import AnswerSpec
from evalkit.stats import mean_ci

Values = dict[str, tuple[float | None, dict[str, Any]]]
"""(value, detail) per example id."""


@dataclass(frozen=True)
class CandidateScoring:
    """What scoring one candidate needs beyond its outputs."""

    candidate: Candidate
    fingerprint_hash: str
    params: GenerationSpec
    baseline: CandidateRun | None
    base: BaseRef | None = None
    """The compare_to candidate, for metrics that compare models (fidelity)."""
    answer: AnswerSpec | None = None
    """The candidate's answer extractor (``answer: {regex}``), applied to every sample."""

    @property
    def decoding(self) -> dict[str, Any]:
        return self.params.model_dump(mode="json", exclude={"batch_size"})

    def scored(self, output: str) -> str:
        """What the metrics score of an output: its extracted answer, if the candidate has an
        extractor."""
        return output if self.answer is None else self.answer.extract(output)


class Scorer:
    """Scores one suite's examples with its metrics, through the cache."""

    def __init__(
        self,
        suite: str,
        metrics: Mapping[str, AnyMetric],
        examples: Sequence[Example],
        requests: Sequence[GenerationRequest],
        cache: Cache,
        *,
        seed: int = 0,
        progress: bool = False,
    ) -> None:
        self.suite = suite
        self.metrics = metrics
        self.by_id = {e.id: e for e in examples}
        self.request_by_id = {r.id: r for r in requests}
        self.candidate_requests: dict[str, dict[str, GenerationRequest]] = {}
        # One id -> output map per baseline run (kept with the run it was built from): a scan
        # per sample made scoring quadratic in the suite size.
        self._baseline_outputs: dict[int, tuple[CandidateRun, dict[str, str | None]]] = {}
        """Requests of candidates that render their own (RAG: with retrieved chunks)."""
        self.cache = cache
        self.seed = seed
        self.progress = progress
        self._attach_stores()

    def use_requests(self, candidate: str, requests: Sequence[GenerationRequest]) -> None:
        """Score ``candidate`` against these requests instead of the suite's."""
        self.candidate_requests[candidate] = {r.id: r for r in requests}

    def _attach_stores(self) -> None:
        """Metrics that keep intermediate results (embeddings) get this run's cache, in their
        own namespace, so a reference is embedded once across candidates and runs. Handing it
        over here keeps metrics free of cache paths and options (they are built at collection,
        before the cache is known) and gives them a namespace, not the whole cache."""
        for column, metric in self.metrics.items():
            if isinstance(metric, UsesStore):
                try:
                    metric.use_store(self.cache.namespace(metric.store_namespace))
                except ValueError as exc:
                    raise EvalkitError(f"metric '{column}': {exc}") from None

    def score(
        self, scoring: CandidateScoring, examples: list[ExampleResult]
    ) -> dict[str, Aggregate]:
        """Fill ``examples[*].scores`` (and ``details``) for every metric; return aggregates."""
        name = scoring.candidate.name
        scorable = [e for e in examples if e.output is not None]
        samples = [
            self.sample(e.id, e.scored_output or "", scoring.baseline, name, e.n_prompt_tokens)
            for e in scorable
        ]
        # Metrics that read no output score every example, even one whose generation failed.
        outputless = [
            self.sample(e.id, "", scoring.baseline, name, e.n_prompt_tokens) for e in examples
        ]
        aggregates: dict[str, Aggregate] = {}
        metrics = tqdm(
            self.metrics.items(),
            desc=f"score {scoring.candidate.name}",
            unit="metric",
            file=sys.stderr,
            leave=False,
            disable=not self.progress,
        )
        for column, metric in metrics:
            metric_samples = samples if needs_output(metric) else outputless
            if isinstance(metric, RunMetric):
                aggregates[column] = self.score_run(column, metric, metric_samples, scoring)
                continue
            values = self.score_metric(column, metric, metric_samples, scoring)
            for example in examples:
                value, detail = values.get(example.id, (None, {}))
                example.scores[column] = value
                if detail:
                    example.details[column] = detail
            aggregates[column] = self.aggregate(column, metric, metric_samples, examples, values)
        return aggregates

    def aggregate(
        self,
        column: str,
        metric: AnyMetric,
        samples: list[Sample],
        examples: list[ExampleResult],
        values: Values,
    ) -> Aggregate:
        present = [v for v, _ in values.values() if v is not None]
        estimate = mean_ci(present, seed=self.seed) if present else None
        figures = self.run_figures(column, metric, samples, values)
        return Aggregate(
            metric=column,
            mean=estimate.mean if estimate else None,
            ci_low=estimate.ci_low if estimate else None,
            ci_high=estimate.ci_high if estimate else None,
            n=len(present),
            n_missing=len(examples) - len(present),
            corpus=figures.corpus,
            extra=dict(figures.extra),
            higher_is_better=metric.higher_is_better,
            signature=metric.signature(),
            version=metric.version,
        )

    def run_figures(
        self, column: str, metric: AnyMetric, samples: list[Sample], values: Values
    ) -> RunFigures:
        """The metric's run-level figures (corpus BLEU, perplexity, p50/p95, judge cost) from
        every scored example in example order, cached ones included."""
        scored = [Scored(s, *values[s.id]) for s in samples if s.id in values]
        try:
            return run_figures(metric, scored)
        except ValueError as exc:
            raise EvalkitError(f"suite '{self.suite}', metric '{column}': {exc}") from None

    def score_run(
        self, column: str, metric: RunMetric, samples: list[Sample], scoring: CandidateScoring
    ) -> Aggregate:
        """A run-level figure: measured with the candidate every run, never cached."""
        try:
            measured = metric.score_run(samples, scoring.candidate, scoring.params)
        except ValueError as exc:
            raise EvalkitError(f"suite '{self.suite}', metric '{column}': {exc}") from None
        value, detail = split_score(measured.value)
        return Aggregate(
            metric=column,
            mean=value,
            n=int(value is not None),
            n_missing=int(value is None),
            extra=dict(measured.extra),
            level="run",
            detail={**measured.detail, **detail},
            higher_is_better=metric.higher_is_better,
            signature=metric.signature(),
            version=metric.version,
        )

    def _outputs_of(self, baseline: CandidateRun) -> dict[str, str | None]:
        kept = self._baseline_outputs.get(id(baseline))
        if kept is None or kept[0] is not baseline:
            # What the baseline's metrics scored: its extracted answers (answer: {regex}).
            kept = (baseline, {e.id: e.scored_output for e in baseline.examples})
            self._baseline_outputs[id(baseline)] = kept
        return kept[1]

    def sample(
        self,
        example_id: str,
        output: str,
        baseline: CandidateRun | None = None,
        candidate: str | None = None,
        n_prompt_tokens: int | None = None,
    ) -> Sample:
        """What a metric sees: an output with the current golden example's references, fields
        and request (for this run's outputs and for accepted baseline outputs alike); the
        candidate's own request (with its retrieved chunks) where it renders one."""
        golden = self.by_id[example_id]
        request = self.candidate_requests.get(candidate or "", self.request_by_id)[example_id]
        messages = request.messages
        baseline_output = None
        if baseline is not None:
            baseline_output = self._outputs_of(baseline).get(example_id)
        return Sample(
            id=example_id,
            output=output,
            references=golden.references,
            prompt=messages[-1].content if messages else "",
            fields=golden.fields,
            messages=messages,
            baseline_output=baseline_output,
            retrieved=request.retrieved,
            n_prompt_tokens=n_prompt_tokens or None,
        )

    def score_metric(
        self,
        column: str,
        metric: AnyMetric,
        samples: list[Sample],
        scoring: CandidateScoring | None = None,
    ) -> Values:
        """(value, detail) per sample id, from the cache where possible. Candidate metrics are
        keyed by the candidate's fingerprint and decoding too; uncacheable ones always run."""
        by_candidate = isinstance(metric, CandidateMetric)
        if by_candidate and scoring is None:
            raise EvalkitError(f"metric '{column}' needs a candidate to score with")
        identity: dict[str, Any] = {
            "metric": metric.name, "version": metric.version, "sig": metric.signature()
        }  # fmt: skip
        if by_candidate and scoring is not None:
            identity["model"] = scoring.fingerprint_hash
            # Perplexity reads no decoding setting: candidates that differ only in decoding
            # (greedy vs sampled) share its values.
            if getattr(metric, "uses_decoding", True):
                identity["decoding"] = scoring.decoding
            if isinstance(metric, BaseComparingMetric) and scoring.base is not None:
                identity["base_model"] = scoring.base.fingerprint_hash
        cacheable = not by_candidate or bool(getattr(metric, "cacheable", True))
        # Only pairwise metrics read the baseline's output; others share scores across candidates.
        pairwise = bool(getattr(metric, "uses_baseline", False))
        keys = {s.id: _score_key(identity, s, pairwise, needs_output(metric)) for s in samples}
        cached = self.cache.get_many("score", keys.values()) if cacheable else {}
        values = {s.id: _from_cache(cached[keys[s.id]]) for s in samples if keys[s.id] in cached}
        todo = [s for s in samples if s.id not in values]
        if todo:
            fresh = self._compute(column, metric, todo, scoring)
            values.update(fresh)
            if cacheable:  # a missing value (an outage, an error) must not be remembered
                self.cache.put_many(
                    "score",
                    {keys[i]: _to_cache(v, d) for i, (v, d) in fresh.items() if v is not None},
                )
        return values

    def _compute(
        self,
        column: str,
        metric: AnyMetric,
        todo: list[Sample],
        scoring: CandidateScoring | None,
    ) -> Values:
        try:
            if isinstance(metric, BaseComparingMetric) and scoring and scoring.base:
                raw = metric.score_against(todo, scoring.candidate, scoring.base, scoring.params)
            elif isinstance(metric, CandidateMetric):
                assert scoring is not None
                raw = metric.score_candidate(todo, scoring.candidate, scoring.params)
            else:
                raw = metric.score(todo)
        except ValueError as exc:
            raise EvalkitError(f"suite '{self.suite}', metric '{column}': {exc}") from None
        raw = list(raw)
        if len(raw) != len(todo):
            raise EvalkitError(
                f"metric '{column}' returned {len(raw)} scores for {len(todo)} samples"
            )
        return {s.id: split_score(v) for s, v in zip(todo, raw, strict=True)}


def _score_key(identity: dict[str, Any], sample: Sample, pairwise: bool, uses_output: bool) -> str:
    return make_key(
        kind="score",
        **identity,
        # A metric that reads no output (perplexity) keeps its values when outputs change.
        output=sample.output if uses_output else None,
        references=list(sample.references),
        messages=[(m.role, m.content) for m in sample.messages],
        fields=sample.fields,
        baseline_output=sample.baseline_output if pairwise else None,
        # Only for RAG candidates, so the keys of every other score stay as they were.
        **({"retrieved": [(c.id, c.text) for c in sample.retrieved]} if sample.retrieved else {}),
    )


def _to_cache(value: float, detail: dict[str, Any]) -> Any:
    return {"value": value, "detail": detail} if detail else value


def _from_cache(stored: Any) -> tuple[float | None, dict[str, Any]]:
    if isinstance(stored, dict):
        return stored["value"], stored.get("detail") or {}
    return stored, {}
