"""Run a suite: generate (cache first), score (cache first), summarize, gate, record.

``prepare_suite`` does everything cheap and checkable at collection time (spec, golden data,
templates, metric names, gate names) without importing torch; ``run_suite`` does the work.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from tqdm import tqdm

import evalkit
from evalkit import baseline as baselines
from evalkit._files import progress_enabled
from evalkit.cache import Cache, make_key
from evalkit.candidates import make_candidate
from evalkit.candidates.base import Candidate, Generation, GenerationRequest
from evalkit.candidates.replay import check_replay_file
from evalkit.errors import EvalkitError, SpecError
from evalkit.gates import LOSSLESS_GATE, BaselineScores, evaluate_gate, lossless_verdict
from evalkit.golden import Example, load_golden
from evalkit.metrics import (
    AnyMetric,
    CandidateMetric,
    CorpusMetric,
    RunMetric,
    Sample,
    SummarizingMetric,
    create_columns,
    split_score,
)
from evalkit.metrics.base import CorpusFigures, DetailAggregating, UsesStore
from evalkit.prompts import render_request
from evalkit.results import (
    Aggregate,
    CandidateRun,
    ExampleResult,
    LosslessCheck,
    LosslessMismatch,
    RunResult,
    Timings,
    save_run,
)
from evalkit.spec import GenerationSpec, LoadedSuite, load_suite
from evalkit.stats import mean_ci

KEY_LIBRARIES = (
    "torch", "transformers", "tokenizers", "sacrebleu", "rouge-score", "rapidfuzz",
    "pydantic", "numpy", "jinja2", "pytest",
)  # fmt: skip


@dataclass(frozen=True)
class PreparedSuite:
    """A suite validated end to end, ready to run; building it imports no model library."""

    loaded: LoadedSuite
    examples: list[Example]
    requests: list[GenerationRequest]
    metrics: dict[str, AnyMetric]

    @property
    def name(self) -> str:
        return self.loaded.spec.suite

    def candidate_names(self) -> list[str]:
        return list(self.loaded.spec.candidates)

    @property
    def needs_outputs(self) -> bool:
        """False when every metric says it never reads outputs (perplexity): then nothing is
        generated at all."""
        return any(needs_output(metric) for metric in self.metrics.values())


def needs_output(metric: AnyMetric) -> bool:
    return bool(getattr(metric, "needs_output", True))


@dataclass
class RunOptions:
    report_dir: Path
    cache: Cache
    limit: int | None = None
    candidates: Sequence[str] | None = None
    device: str | None = None
    update_baseline: bool = False
    seed: int = 0
    progress: bool = field(default_factory=progress_enabled)


def prepare_suite(path: Path) -> PreparedSuite:
    loaded = load_suite(path)
    examples = _load_examples(loaded)
    requests = [render_request(loaded, example) for example in examples]
    metrics = _create_metrics(loaded)
    _check_gates(loaded, metrics)
    _check_pairwise(loaded, metrics)
    _check_replay_files(loaded, {e.id for e in examples})
    return PreparedSuite(loaded=loaded, examples=examples, requests=requests, metrics=metrics)


def _load_examples(loaded: LoadedSuite) -> list[Example]:
    try:
        return load_golden(loaded.dataset_path)
    except SpecError as exc:
        if exc.path is None:
            raise SpecError(exc.detail, path=loaded.path, line=loaded.line_of("dataset")) from None
        raise


def _check_replay_files(loaded: LoadedSuite, ids: set[str]) -> None:
    """Replay files are data like the golden file: a broken line fails collection. A file not
    written yet (a CI step may produce it) is reported when its candidate runs."""
    for candidate in loaded.spec.candidates.values():
        if candidate.replay is not None and loaded.resolve(candidate.replay).is_file():
            check_replay_file(loaded.resolve(candidate.replay), ids, loaded.dataset_path)


def _create_metrics(loaded: LoadedSuite) -> dict[str, AnyMetric]:
    """Columns in list order; a group (``latency``) adds all its columns at its place."""
    metrics: dict[str, AnyMetric] = {}
    for index, metric_spec in enumerate(loaded.spec.metrics):
        try:
            columns = create_columns(
                metric_spec.name,
                metric_spec.options,
                metric_spec.alias,
                base_dir=loaded.path.parent,
            )
            if twice := [c for c in columns if c in metrics]:
                raise SpecError(
                    f"column '{twice[0]}' appears twice (a group such as 'latency' makes "
                    "several columns); drop one entry or give one an 'as:' name"
                )
        except SpecError as exc:
            raise SpecError(
                exc.detail,
                path=loaded.path,
                line=loaded.line_of("metrics", index),
                field=f"metrics[{index}]",
            ) from None
        metrics.update(columns)
    return metrics


def implicit_gates(loaded: LoadedSuite, candidate: str) -> list[str]:
    """Checks a candidate gets without a gate entry: ``lossless`` for speculative candidates
    decoding greedily (their outputs must equal the plain target's)."""
    spec = loaded.spec.candidates[candidate]
    params = loaded.spec.generation.merged(spec.generation)
    return [LOSSLESS_GATE] if spec.speculative is not None and params.greedy else []


def _check_gates(loaded: LoadedSuite, metrics: dict[str, AnyMetric]) -> None:
    if LOSSLESS_GATE in loaded.spec.gates:
        raise SpecError(
            f"'{LOSSLESS_GATE}' is the name of evalkit's own check of speculative candidates; "
            "gate a metric column instead",
            path=loaded.path,
            line=loaded.line_of("gates", LOSSLESS_GATE),
            field=f"gates.{LOSSLESS_GATE}",
        )
    for gate_name, gate in loaded.spec.gates.items():
        if gate.metric not in metrics:
            raise SpecError(
                f"gate on '{gate.metric}', which is not a metric of this suite; metrics: "
                f"{', '.join(metrics)}",
                path=loaded.path,
                line=loaded.line_of("gates", gate_name),
                field=f"gates.{gate_name}",
            )


def _check_pairwise(loaded: LoadedSuite, metrics: dict[str, AnyMetric]) -> None:
    """A metric that reads the baseline's output needs a ``compare_to`` candidate."""
    if loaded.spec.compare_to is not None:
        return
    for index, (column, metric) in enumerate(metrics.items()):
        if getattr(metric, "uses_baseline", False):
            raise SpecError(
                f"metric '{column}' compares each output with the compare_to candidate's "
                "output, but the suite has no 'compare_to'; add compare_to: <candidate>",
                path=loaded.path,
                line=loaded.line_of("metrics", index),
                field=f"metrics[{index}]",
            )


def gate_applies(prepared: PreparedSuite, candidate: str, gate_name: str) -> bool:
    """False for a gate on a pairwise metric (one that reads the compare_to candidate's output)
    for the compare_to candidate itself: it has nothing to be compared with. Implicit gates
    (``lossless``) are not in the spec and always apply to the candidates they are made for."""
    gate = prepared.loaded.spec.gates.get(gate_name)
    if gate is None:
        return True
    metric = prepared.metrics.get(gate.metric)
    pairwise = bool(getattr(metric, "uses_baseline", False))
    return not (pairwise and candidate == prepared.loaded.spec.compare_to)


def library_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0], "evalkit": evalkit.__version__}
    for name in KEY_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def run_order(prepared: PreparedSuite, wanted: Sequence[str] | None) -> list[str]:
    """Candidates to run: the wanted ones plus what they compare to, baseline first."""
    names = prepared.candidate_names()
    if wanted is not None:
        unknown = [w for w in wanted if w not in names]
        if unknown:
            raise EvalkitError(
                f"suite '{prepared.name}' has no candidate {', '.join(unknown)}; "
                f"candidates: {', '.join(names)}"
            )
        names = [n for n in names if n in wanted]
    compare_to = prepared.loaded.spec.compare_to
    if compare_to and names and compare_to not in names:
        names.append(compare_to)
    return sorted(names, key=lambda n: n != compare_to)


class SuiteRunner:
    """One run of one suite. Kept as an object so each step stays short and testable."""

    def __init__(self, prepared: PreparedSuite, options: RunOptions) -> None:
        self.prepared = prepared
        self.options = options
        self.spec = prepared.loaded.spec
        self.examples = prepared.examples[: options.limit] if options.limit else prepared.examples
        self.by_id = {e.id: e for e in self.examples}
        wanted = {e.id for e in self.examples}
        self.requests = [r for r in prepared.requests if r.id in wanted]
        self.request_by_id = {r.id: r for r in self.requests}
        self._accepted: dict[str, baselines.Baseline | None] = {}
        self._attach_stores()

    def _attach_stores(self) -> None:
        """Metrics that keep intermediate results (embeddings) get this run's cache, in their
        own namespace, so a reference is embedded once across candidates and runs. Handing it
        over here keeps metrics free of cache paths and options (they are built at collection,
        before the cache is known) and gives them a namespace, not the whole cache."""
        for column, metric in self.prepared.metrics.items():
            if isinstance(metric, UsesStore):
                try:
                    metric.use_store(self.options.cache.namespace(metric.store_namespace))
                except ValueError as exc:
                    raise EvalkitError(f"metric '{column}': {exc}") from None

    def run(self) -> RunResult:
        if self.options.update_baseline and self.options.limit:
            raise EvalkitError(
                "--evalkit-update-baseline with --evalkit-limit would accept a partial baseline;"
                " drop the limit to update baselines"
            )
        started = time.perf_counter()
        cache = self.options.cache
        hits_before, misses_before = Counter(cache.hits), Counter(cache.misses)
        order = run_order(self.prepared, self.options.candidates)
        runs: dict[str, CandidateRun] = {}
        for name in order:  # the compare_to candidate first: pairwise metrics read its outputs
            runs[name] = self.run_candidate(name, runs.get(self.spec.compare_to or ""))
        updated = self.update_baselines(runs) if self.options.update_baseline else []
        gated = [
            run
            for run in runs.values()
            if self.options.candidates is None or run.name in self.options.candidates
        ]
        verdicts = [
            evaluate_gate(
                self.spec.suite,
                gate_name,
                gate,
                run,
                self.baseline_for(run, gate.metric, runs) if gate.is_regression else None,
                seed=self.options.seed,
            )
            for run in gated
            for gate_name, gate in self.spec.gates.items()
            if gate_applies(self.prepared, run.name, gate_name)
        ] + [
            lossless_verdict(self.spec.suite, run)
            for run in gated
            if LOSSLESS_GATE in implicit_gates(self.prepared.loaded, run.name)
        ]
        result = RunResult(
            suite=self.spec.suite,
            suite_path=str(self.prepared.loaded.path),
            spec_hash=self.prepared.loaded.spec_hash,
            spec=self.spec.model_dump(mode="json", exclude_unset=True),
            dataset_path=str(self.prepared.loaded.dataset_path),
            dataset_hash=_dataset_hash(self.examples),
            n_examples=len(self.examples),
            limit=self.options.limit,
            created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            evalkit_version=evalkit.__version__,
            versions=library_versions(),
            compare_to=self.spec.compare_to,
            candidates=runs,
            gates=verdicts,
            # The Cache object is shared by every suite of a session: record this run's share.
            cache={
                "hits": dict(cache.hits - hits_before),
                "misses": dict(cache.misses - misses_before),
            },
            baseline_updated=updated,
            timings=Timings(total_s=time.perf_counter() - started),
        )
        save_run(result, self.options.report_dir)
        return result

    # -- generation ------------------------------------------------------------------------

    def run_candidate(self, name: str, baseline: CandidateRun | None = None) -> CandidateRun:
        cand_spec = self.spec.candidates[name]
        params = self.spec.generation.merged(cand_spec.generation)
        candidate = make_candidate(
            name, cand_spec, self.prepared.loaded.path.parent, device=self.options.device
        )
        t0 = time.perf_counter()
        fingerprint = candidate.fingerprint()
        fingerprint_hash = make_key(**fingerprint)[:16]
        t1 = time.perf_counter()
        if self.prepared.needs_outputs:
            generations = generate_cached(
                candidate, fingerprint_hash, self.requests, params, self.options.cache
            )
            n_cached = sum(cached for _, cached in generations.values())
            n_generated = len(self.requests) - n_cached
            examples = [self.example_result(r, *generations[r.id]) for r in self.requests]
        else:  # only perplexity-like metrics: no output is read, so none is made
            generations, n_cached, n_generated = {}, 0, 0
            examples = [self.unanswered_result(r) for r in self.requests]
        t2 = time.perf_counter()
        scoring = _CandidateScoring(candidate, fingerprint_hash, params, baseline)
        try:  # candidate metrics (perplexity, latency) use the loaded model before it is freed
            lossless = (
                self.check_speculation(candidate, fingerprint, params, generations)
                if self.prepared.needs_outputs
                else None  # nothing generated, nothing to compare
            )
            aggregates = self.score(scoring, examples)
        finally:
            describe = candidate.describe()
            candidate.close()
        t3 = time.perf_counter()
        return CandidateRun(
            name=name,
            spec=cand_spec.model_dump(mode="json", exclude_unset=True),
            fingerprint=fingerprint,
            fingerprint_hash=fingerprint_hash,
            generation=params.model_dump(mode="json"),
            describe=describe,
            examples=examples,
            aggregates=aggregates,
            generated=self.prepared.needs_outputs,
            n_generated=n_generated,
            n_cached=n_cached,
            n_errors=sum(e.error is not None for e in examples),
            cost=_total_cost(examples),
            lossless=lossless,
            timings=Timings(
                fingerprint_s=t1 - t0, generate_s=t2 - t1, score_s=t3 - t2, total_s=t3 - t0
            ),
        )

    def example_result(
        self, request: GenerationRequest, gen: Generation, cached: bool
    ) -> ExampleResult:
        example = self.by_id[request.id]
        return ExampleResult(
            id=request.id,
            references=list(example.references),
            messages=[{"role": m.role, "content": m.content} for m in request.messages],
            prompt=gen.prompt,
            output=None if gen.error else gen.output,
            error=gen.error,
            n_prompt_tokens=gen.n_prompt_tokens,
            n_output_tokens=gen.n_output_tokens,
            seconds=gen.seconds,
            cost=gen.cost,
            cached=cached,
        )

    def unanswered_result(self, request: GenerationRequest) -> ExampleResult:
        """An example of a suite that generates nothing: no output, and no error either."""
        example = self.by_id[request.id]
        return ExampleResult(
            id=request.id,
            references=list(example.references),
            messages=[{"role": m.role, "content": m.content} for m in request.messages],
            output=None,
        )

    # -- speculative candidates -------------------------------------------------------------

    def check_speculation(
        self,
        candidate: Candidate,
        fingerprint: dict[str, Any],
        params: GenerationSpec,
        generations: dict[str, tuple[Generation, bool]],
    ) -> LosslessCheck | None:
        """For speculative candidates: the lossless check (greedy only) and the speed-up timing.

        The plain target's outputs come through the cache under the fingerprint without
        ``speculative``, i.e. exactly the key a plain candidate with the same model uses, so a
        ``base`` candidate that already ran answers them; otherwise they are generated here."""
        speculation = getattr(candidate, "speculation", None)
        if speculation is None:
            return None
        check = self._lossless(speculation, fingerprint, params, generations)
        if speculation.spec.speedup_sample:
            speculation.measure_speedup(self.requests, params)
        return check

    def _lossless(
        self,
        speculation: Any,
        fingerprint: dict[str, Any],
        params: GenerationSpec,
        generations: dict[str, tuple[Generation, bool]],
    ) -> LosslessCheck:
        from evalkit.candidates.speculative import plain_fingerprint

        plain_hash = make_key(**plain_fingerprint(fingerprint))[:16]
        if not params.greedy:
            return LosslessCheck(
                plain_fingerprint_hash=plain_hash,
                skipped="sampling: speculative sampling keeps the target's distribution, not "
                "its individual samples, so outputs cannot be compared one by one; the check "
                "runs under greedy decoding (temperature: 0)",
            )
        plain = generate_cached(
            speculation.plain_target(), plain_hash, self.requests, params, self.options.cache
        )
        check = LosslessCheck(
            plain_fingerprint_hash=plain_hash, plain_cached=sum(c for _, c in plain.values())
        )
        for request in self.requests:
            fast, reference = generations[request.id][0], plain[request.id][0]
            if fast.error is not None or reference.error is not None:
                check.unchecked += 1
                continue
            check.checked += 1
            if fast.output != reference.output:
                check.mismatches.append(
                    LosslessMismatch(
                        id=request.id, output=fast.output, plain_output=reference.output
                    )
                )
        return check

    # -- scoring ---------------------------------------------------------------------------

    def score(
        self, scoring: _CandidateScoring, examples: list[ExampleResult]
    ) -> dict[str, Aggregate]:
        """Fill ``examples[*].scores`` (and ``details``) for every metric; return aggregates."""
        scorable = [e for e in examples if e.output is not None]
        samples = [self.sample(e.id, e.output or "", scoring.baseline) for e in scorable]
        # Metrics that read no output score every example, even one whose generation failed.
        outputless = [self.sample(e.id, "", scoring.baseline) for e in examples]
        aggregates: dict[str, Aggregate] = {}
        metrics = tqdm(
            self.prepared.metrics.items(),
            desc=f"score {scoring.candidate.name}",
            unit="metric",
            file=sys.stderr,
            leave=False,
            disable=not self.options.progress,
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
            present = [v for v, _ in values.values() if v is not None]
            estimate = mean_ci(present, seed=self.options.seed) if present else None
            figures = self.corpus_figures(metric, metric_samples, examples, column, present)
            aggregates[column] = Aggregate(
                metric=column,
                mean=estimate.mean if estimate else None,
                ci_low=estimate.ci_low if estimate else None,
                ci_high=estimate.ci_high if estimate else None,
                n=len(present),
                n_missing=len(examples) - len(present),
                corpus=figures.corpus,
                extra={**figures.extra, **_summary(metric, values)},
                higher_is_better=metric.higher_is_better,
                signature=metric.signature(),
                version=metric.version,
            )
        return aggregates

    @staticmethod
    def corpus_figures(
        metric: AnyMetric,
        samples: list[Sample],
        examples: list[ExampleResult],
        column: str,
        present: list[float],
    ) -> CorpusFigures:
        """Run-level figures beside the mean: a corpus score from the samples (BLEU), figures
        from the per-example details (perplexity; details come back from the cache too), and
        secondary figures from the values (p50/p95)."""
        corpus: float | None = None
        extra: dict[str, float | None] = {}
        if isinstance(metric, CorpusMetric) and samples:
            corpus = metric.aggregate(samples)
        if isinstance(metric, DetailAggregating):
            details = [
                e.details.get(column, {}) for e in examples if e.scores.get(column) is not None
            ]
            if details:
                figures = metric.aggregate_details(details)
                corpus, extra = figures.corpus, dict(figures.extra)
        summarize = getattr(metric, "aggregate_extra", None)
        if summarize is not None:
            extra.update(summarize(present))
        return CorpusFigures(corpus, extra)

    def score_run(
        self, column: str, metric: RunMetric, samples: list[Sample], scoring: _CandidateScoring
    ) -> Aggregate:
        """A run-level figure: measured with the candidate every run, never cached."""
        try:
            measured = metric.score_run(samples, scoring.candidate, scoring.params)
        except ValueError as exc:
            raise EvalkitError(f"suite '{self.spec.suite}', metric '{column}': {exc}") from None
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

    def sample(self, example_id: str, output: str, baseline: CandidateRun | None = None) -> Sample:
        """What a metric sees: an output with the current golden example's references, fields
        and request (for this run's outputs and for accepted baseline outputs alike)."""
        golden = self.by_id[example_id]
        messages = self.request_by_id[example_id].messages
        baseline_output = None
        if baseline is not None:
            baseline_output = next(
                (e.output for e in baseline.examples if e.id == example_id), None
            )
        return Sample(
            id=example_id,
            output=output,
            references=golden.references,
            prompt=messages[-1].content if messages else "",
            fields=golden.fields,
            messages=messages,
            baseline_output=baseline_output,
        )

    def score_metric(
        self,
        column: str,
        metric: AnyMetric,
        samples: list[Sample],
        scoring: _CandidateScoring | None = None,
    ) -> dict[str, tuple[float | None, dict[str, Any]]]:
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
        cacheable = not by_candidate or bool(getattr(metric, "cacheable", True))
        # Only pairwise metrics read the baseline's output; others share scores across candidates.
        pairwise = bool(getattr(metric, "uses_baseline", False))
        keys = {s.id: _score_key(identity, s, pairwise, needs_output(metric)) for s in samples}
        cached = self.options.cache.get_many("score", keys.values()) if cacheable else {}
        values = {s.id: _from_cache(cached[keys[s.id]]) for s in samples if keys[s.id] in cached}
        todo = [s for s in samples if s.id not in values]
        if todo:
            fresh = self._compute(column, metric, todo, scoring)
            values.update(fresh)
            if cacheable:  # a missing value (an outage, an error) must not be remembered
                self.options.cache.put_many(
                    "score",
                    {keys[i]: _to_cache(v, d) for i, (v, d) in fresh.items() if v is not None},
                )
        return values

    def _compute(
        self,
        column: str,
        metric: AnyMetric,
        todo: list[Sample],
        scoring: _CandidateScoring | None,
    ) -> dict[str, tuple[float | None, dict[str, Any]]]:
        try:
            if isinstance(metric, CandidateMetric):
                assert scoring is not None
                raw = metric.score_candidate(todo, scoring.candidate, scoring.params)
            else:
                raw = metric.score(todo)
        except ValueError as exc:
            raise EvalkitError(f"suite '{self.spec.suite}', metric '{column}': {exc}") from None
        raw = list(raw)
        if len(raw) != len(todo):
            raise EvalkitError(
                f"metric '{column}' returned {len(raw)} scores for {len(todo)} samples"
            )
        return {s.id: split_score(v) for s, v in zip(todo, raw, strict=True)}

    # -- baselines -------------------------------------------------------------------------

    def baseline_for(
        self, run: CandidateRun, column: str, runs: dict[str, CandidateRun]
    ) -> BaselineScores:
        compare_to = self.spec.compare_to
        if compare_to and run.name != compare_to:
            other = runs[compare_to]
            figure = other.aggregates.get(column)
            return BaselineScores(
                label=f"candidate:{compare_to}",
                scores={e.id: e.scores.get(column) for e in other.examples},
                outputs={e.id: e.output for e in other.examples},
                run_value=figure.mean if figure is not None else None,
            )
        return self.accepted_baseline(run.name, column)

    def accepted_baseline(self, candidate: str, column: str) -> BaselineScores:
        path = baselines.baseline_path(self.prepared.loaded.baseline_dir, candidate)
        label = f"accepted:{path.name}"
        if candidate not in self._accepted:  # read once per candidate, not once per gate
            self._accepted[candidate] = baselines.load_baseline(path)
        stored = self._accepted[candidate]
        if stored is None:
            return BaselineScores(
                label=label,
                scores={},
                missing_reason=(
                    f"no accepted baseline for {self.spec.suite}/{candidate} (expected {path}); "
                    "run `pytest --evalkit-update-baseline` to accept the current results"
                ),
            )
        current = [
            e
            for e in stored.examples
            if e.id in self.by_id and self.by_id[e.id].content_hash == e.content_hash
        ]
        outputs = {e.id: e.output for e in current}
        metric = self.prepared.metrics[column]
        if isinstance(metric, RunMetric):  # one stored figure, not per-example values
            return BaselineScores(
                label=label, scores={}, outputs=outputs, run_value=stored.means.get(column)
            )
        if isinstance(metric, CandidateMetric):
            # Perplexity or latency needs the accepted model itself: use the stored values.
            return BaselineScores(
                label=label, scores={e.id: e.scores.get(column) for e in current}, outputs=outputs
            )
        # Re-score the accepted outputs with today's metric so a metric change is not a delta.
        samples = [self.sample(e.id, e.output) for e in current if e.output is not None]
        scores = {i: v for i, (v, _) in self.score_metric(column, metric, samples).items()}
        return BaselineScores(label=label, scores=scores, outputs=outputs)

    def update_baselines(self, runs: dict[str, CandidateRun]) -> list[str]:
        written = []
        for run in runs.values():
            path = baselines.baseline_path(self.prepared.loaded.baseline_dir, run.name)
            baselines.write_baseline(
                path,
                suite=self.spec.suite,
                run=run,
                content_hashes={e.id: e.content_hash for e in self.examples},
                signatures={c: a.signature for c, a in run.aggregates.items()},
                evalkit_version=evalkit.__version__,
            )
            written.append(str(path))
        return written


@dataclass(frozen=True)
class _CandidateScoring:
    """What scoring one candidate needs beyond its outputs."""

    candidate: Candidate
    fingerprint_hash: str
    params: GenerationSpec
    baseline: CandidateRun | None

    @property
    def decoding(self) -> dict[str, Any]:
        return self.params.model_dump(mode="json", exclude={"batch_size"})


def _summary(
    metric: AnyMetric, values: dict[str, tuple[float | None, dict[str, Any]]]
) -> dict[str, float | None]:
    """A metric's own run-level figures (judge cost, win rates), from every scored example."""
    if not isinstance(metric, SummarizingMetric) or not values:
        return {}
    return metric.summarize([detail for _, detail in values.values()])


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
    )


def _to_cache(value: float, detail: dict[str, Any]) -> Any:
    return {"value": value, "detail": detail} if detail else value


def _from_cache(stored: Any) -> tuple[float | None, dict[str, Any]]:
    if isinstance(stored, dict):
        return stored["value"], stored.get("detail") or {}
    return stored, {}


def generation_key(
    fingerprint_hash: str, params: GenerationSpec, request: GenerationRequest
) -> str:
    # batch_size changes throughput, not answers: it is left out of the key on purpose.
    return make_key(
        kind="generation",
        model=fingerprint_hash,
        decoding=params.model_dump(mode="json", exclude={"batch_size"}),
        messages=[(m.role, m.content) for m in request.messages],
    )


def generate_cached(
    candidate: Candidate,
    fingerprint_hash: str,
    requests: Sequence[GenerationRequest],
    params: GenerationSpec,
    cache: Cache,
) -> dict[str, tuple[Generation, bool]]:
    """Every request's generation by id, with whether it came from the cache. Misses go to the
    candidate (loading it only then) and each finished batch is stored as soon as it lands."""
    keys = {r.id: generation_key(fingerprint_hash, params, r) for r in requests}
    cached = cache.get_many("generation", keys.values())
    out: dict[str, tuple[Generation, bool]] = {}
    for request in requests:
        hit = cached.get(keys[request.id])
        if hit is not None:
            out[request.id] = (Generation(**{**hit, "id": request.id}), True)
    misses = [r for r in requests if r.id not in out]
    if misses:
        for batch in candidate.generate(misses, params):
            out.update((g.id, (g, False)) for g in batch)
            # Errors are not cached: an outage must not be remembered as the answer.
            cache.put_many(
                "generation", {keys[g.id]: _generation_record(g) for g in batch if g.error is None}
            )
    lost = [r.id for r in misses if r.id not in out]
    if lost:
        raise EvalkitError(
            f"candidate '{candidate.name}' returned no generation for {len(lost)} examples "
            f"(first: {lost[0]})"
        )
    return out


def _generation_record(gen: Generation) -> dict[str, Any]:
    return {
        "output": gen.output,
        "prompt": gen.prompt,
        "n_prompt_tokens": gen.n_prompt_tokens,
        "n_output_tokens": gen.n_output_tokens,
        "seconds": gen.seconds,
        "cost": gen.cost,
    }


def _total_cost(examples: Sequence[ExampleResult]) -> float | None:
    """Sum of the known per-example costs (cached ones at what they cost); None if none known."""
    costs = [e.cost for e in examples if e.cost is not None]
    return sum(costs) if costs else None


def _dataset_hash(examples: Sequence[Example]) -> str:
    digest = hashlib.sha256()
    for example in examples:
        digest.update(example.content_hash.encode())
    return digest.hexdigest()[:16]


def run_suite(prepared: PreparedSuite, options: RunOptions) -> RunResult:
    return SuiteRunner(prepared, options).run()
