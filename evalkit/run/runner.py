"""One run of one suite: generate (cache first), score (cache first), gate, record.

The runner only orchestrates; each step lives in the module that owns it: preparation and the
gate plan in ``prepare``, cached generation in ``generation``, scoring and aggregation in
``scoring``, what a gate compares with in ``evalkit.baseline``, verdicts in ``evalkit.gates``.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import evalkit
from evalkit import baseline as baselines
from evalkit.cache import make_key
from evalkit.candidates import make_candidate, run_resources
from evalkit.candidates.base import Candidate, Generation, GenerationRequest
from evalkit.errors import EvalkitError
from evalkit.gates import (
    EQUIVALENCE_GATE,
    RUN_GATE,
    BaselineScores,
    GateJob,
    equivalence_verdict,
    evaluate_gates,
)
from evalkit.metrics import BaseRef
from evalkit.results import (
    CandidateRun,
    EquivalenceCheck,
    ExampleResult,
    GateVerdict,
    RunResult,
    Timings,
    save_run,
)
from evalkit.run.equivalence import check_equivalence, declared_target
from evalkit.run.flips import record_flips
from evalkit.run.generation import generate_cached
from evalkit.run.judges import JudgeChecks, make_advisory
from evalkit.run.latency_pairing import pair_latency, paired_inputs, pairing_note
from evalkit.run.options import RunOptions
from evalkit.run.prepare import PreparedSuite, gate_plan, run_order
from evalkit.run.provenance import dataset_hash, library_versions
from evalkit.run.requests import limited, own_requests, prompt_identity, with_own_context
from evalkit.run.samples import derived_columns, flip_columns, fold_samples, generate_samples
from evalkit.run.scoring import CandidateScoring, Scorer
from evalkit.run.sentinels import enforce_sentinels, sentinel_flips
from evalkit.spec import GenerationSpec
from evalkit.spec_variants import AnswerSpec


class SuiteRunner:
    """One run of one suite. Kept as an object so each step stays short and testable."""

    def __init__(self, prepared: PreparedSuite, options: RunOptions) -> None:
        self.prepared = prepared
        self.options = options
        self.spec = prepared.loaded.spec
        self.examples = prepared.examples[: options.limit] if options.limit else prepared.examples
        self.by_id = {e.id: e for e in self.examples}
        wanted = set(self.by_id)
        self.requests = [r for r in prepared.requests if r.id in wanted]
        self.scorer = Scorer(
            self.spec.suite,
            prepared.metrics,
            self.examples,
            self.requests,
            options.cache,
            seed=options.seed,
            progress=options.progress,
        )
        self.accepted = baselines.AcceptedBaselines(
            prepared.loaded.baseline_dir,
            self.spec.suite,
            {e.id: e.content_hash for e in self.examples},
            prepared.metrics,
            self._rescore,
            options.update_command,
        )
        self.derived = derived_columns(prepared)
        self.judges = JudgeChecks(prepared.metrics, options.cache)

    def run(self) -> RunResult:
        if self.options.update_baseline and self.options.limit:
            raise EvalkitError(
                "updating baselines with a limit (--evalkit-limit, --limit) would accept a "
                "partial baseline; drop the limit to update baselines"
            )
        limited = [n for n in run_order(self.prepared, self.options.candidates) if self.limit(n)]
        if self.options.update_baseline and limited:
            raise EvalkitError(
                f"candidate(s) {', '.join(limited)} of suite '{self.spec.suite}' have 'limit:', "
                "so updating baselines would accept partial ones; add --evalkit-full (evalkit "
                "run: --full) to run every example"
            )
        started = time.perf_counter()
        cache = self.options.cache
        hits_before, misses_before = Counter(cache.hits), Counter(cache.misses)
        runs: dict[str, CandidateRun] = {}
        # What candidates share for the whole run (vLLM servers) is released at its end.
        folder = self.prepared.loaded.path.parent
        with run_resources(self.spec.candidates, folder, self.options.report_dir / "logs"):
            for name in run_order(self.prepared, self.options.candidates):
                # The compare_to candidate runs first: pairwise metrics read its outputs.
                runs[name] = self.run_candidate(name, runs.get(self.spec.compare_to or ""))
            wanted, device = self.options.candidates, self.options.device
            pairs = pair_latency(self.prepared, runs, self.requests_for, wanted, device)
        record_flips(runs, self.spec.compare_to, flip_columns(self.prepared.metrics, self.derived))
        for name, pair in pairs.items():
            runs[name].latency_pairs = pair
        updated = []
        if self.options.update_baseline:
            updated = baselines.write_baselines(
                self.prepared.loaded.baseline_dir,
                self.spec.suite,
                list(runs.values()),
                {e.id: e.content_hash for e in self.examples},
                evalkit.__version__,
            )
        result = self.record(runs, self.verdicts(runs), updated)
        # The Cache object is shared by every suite of a session: record this run's share.
        result.cache = {
            "hits": dict(cache.hits - hits_before),
            "misses": dict(cache.misses - misses_before),
        }
        result.timings = Timings(total_s=time.perf_counter() - started)
        save_run(result, self.options.report_dir)
        return result

    def verdicts(self, runs: dict[str, CandidateRun]) -> list[GateVerdict]:
        """Every planned gate of every wanted candidate (not of a compare_to added only to be
        compared with), in plan order; the gates' detection rules are decided together (one
        Holm family per run, unless the suite says ``multiple_comparisons: none``)."""
        wanted = self.options.candidates
        jobs: list[GateJob] = []
        slots: list[GateVerdict | int] = []  # a finished verdict, or the index of a job
        for run in runs.values():
            if wanted is not None and run.name not in wanted:
                continue
            for gate_name in gate_plan(self.prepared, run.name):
                if gate_name == EQUIVALENCE_GATE:
                    slots.append(equivalence_verdict(self.spec.suite, run))
                elif gate_name != RUN_GATE:  # checked by the pytest item from the run record
                    slots.append(len(jobs))
                    jobs.append(self.gate_job(gate_name, run, runs))
        decided = evaluate_gates(
            self.spec.suite,
            jobs,
            multiple_comparisons=self.spec.multiple_comparisons,
            seed=self.options.seed,
        )
        # Sentinels, latency timing and advisory judges amend the decided verdicts.
        decided = [self.amend(v, j.run, j.baseline) for v, j in zip(decided, jobs, strict=True)]
        return [decided[slot] if isinstance(slot, int) else slot for slot in slots]

    def gate_job(self, gate_name: str, run: CandidateRun, runs: dict[str, CandidateRun]) -> GateJob:
        gate = self.spec.gates[gate_name]
        baseline = None
        if gate.is_regression:
            baseline = baselines.baseline_for(
                run, gate.metric, runs, self.spec.compare_to, self.accepted
            )
        timed, baseline = paired_inputs(run, baseline, gate.metric)  # latency: interleaved
        return GateJob(gate_name, gate, timed, baseline)

    def amend(
        self, verdict: GateVerdict, run: CandidateRun, baseline: BaselineScores | None
    ) -> GateVerdict:
        """What no statistic decides: how latency was timed, flipped sentinels (fail whatever
        the test said), and an uncalibrated judge (its gate reports but cannot fail)."""
        gate = self.spec.gates[verdict.gate]
        verdict = pairing_note(verdict, run, gate.metric)
        flipped = sentinel_flips(gate, run, baseline, self.prepared.metrics)
        verdict = enforce_sentinels(verdict, flipped, baseline.label if baseline else "")
        return make_advisory(verdict, run, gate.metric)

    def _rescore(
        self, candidate: str, column: str, accepted: Sequence[baselines.BaselineExample]
    ) -> dict[str, float | None]:
        metric = self.prepared.metrics[column]
        answer = self.spec.candidates[candidate].answer
        samples = [
            self.scorer.sample(e.id, _scored(answer, e.output or ""), None, candidate)
            for e in accepted
        ]
        return {i: v for i, (v, _) in self.scorer.score_metric(column, metric, samples).items()}

    def record(
        self, runs: dict[str, CandidateRun], verdicts: list[GateVerdict], updated: list[str]
    ) -> RunResult:
        loaded = self.prepared.loaded
        return RunResult(
            suite=self.spec.suite,
            suite_path=str(loaded.path),
            spec_hash=loaded.spec_hash,
            spec=self.spec.model_dump(mode="json", exclude_unset=True),
            dataset_path=str(loaded.dataset_path),
            dataset_hash=dataset_hash(self.examples),
            n_examples=len(self.examples),
            limit=self.options.limit,
            created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            evalkit_version=evalkit.__version__,
            versions=library_versions(),
            compare_to=self.spec.compare_to,
            candidates=runs,
            gates=verdicts,
            baseline_updated=updated,
        )

    def base_ref(
        self, name: str, fingerprint_hash: str, baseline: CandidateRun | None
    ) -> BaseRef | None:
        """The compare_to candidate for fidelity metrics: the scored candidate itself while the
        base runs (it runs first), else a fresh object, loaded only if a metric must."""
        compare_to = self.spec.compare_to
        if compare_to is None:
            return None
        if name == compare_to:
            return BaseRef(compare_to, fingerprint_hash, _no_reload, is_self=True)
        if baseline is None:
            return None
        spec, folder = self.spec.candidates[compare_to], self.prepared.loaded.path.parent
        device = self.options.device
        return BaseRef(
            compare_to,
            baseline.fingerprint_hash,
            lambda: make_candidate(compare_to, spec, folder, device=device),
        )

    def run_candidate(self, name: str, baseline: CandidateRun | None = None) -> CandidateRun:
        cand_spec = self.spec.candidates[name]
        params = self.spec.generation.merged(cand_spec.generation)
        candidate = make_candidate(
            name, cand_spec, self.prepared.loaded.path.parent, device=self.options.device
        )
        t0 = time.perf_counter()
        fingerprint, fingerprint_hash = self.identify(name, candidate, params)
        requests = self.requests_for(name)
        t1 = time.perf_counter()
        generations = self.generate(candidate, fingerprint_hash, params, requests)
        if (retrieved := with_own_context(requests, generations)) is not None:
            requests = retrieved
            self.scorer.use_requests(name, requests)
        examples = [
            self.example_result(r, *generations.get(r.id, (None, False)), cand_spec.answer)
            for r in requests
        ]
        k, cache = cand_spec.samples if self.prepared.needs_outputs else 1, self.options.cache
        extra = generate_samples(candidate, fingerprint_hash, requests, params, cache, k)
        t2 = time.perf_counter()
        base = self.base_ref(name, fingerprint_hash, baseline)
        scoring = CandidateScoring(
            candidate, fingerprint_hash, params, baseline, base, cand_spec.answer
        )
        try:  # candidate metrics (perplexity, latency) use the loaded model before it is freed
            equivalence = self.check_outputs(name, candidate, params, generations, requests)
            aggregates = self.scorer.score(scoring, examples)
            seed = self.options.seed
            fold_samples(self.scorer, scoring, examples, extra, aggregates, self.derived, seed)
            self.judges.annotate(aggregates)
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
            **_counts(generations, [x.generations for x in extra], examples),
            samples=cand_spec.samples,
            equivalence=equivalence,
            timings=Timings(
                fingerprint_s=t1 - t0, generate_s=t2 - t1, score_s=t3 - t2, total_s=t3 - t0
            ),
        )

    def identify(
        self, name: str, candidate: Candidate, params: GenerationSpec
    ) -> tuple[dict[str, Any], str]:
        """The candidate's fingerprint (model and prompt identity) and the hash keying its
        cached outputs."""
        fingerprint = {**candidate.fingerprint(), **prompt_identity(self.prepared, name)}
        if self.spec.candidates[name].equivalent_to is None:
            return fingerprint, make_key(**fingerprint)[:16]
        # Its outputs are what the check is about: never the target's cached ones, even when
        # only batch_size (left out of generation keys) tells the two apart.
        return fingerprint, make_key(**fingerprint, batch_size=params.batch_size)[:16]

    def check_outputs(
        self,
        name: str,
        candidate: Candidate,
        params: GenerationSpec,
        generations: dict[str, tuple[Generation, bool]],
        requests: Sequence[GenerationRequest],
    ) -> EquivalenceCheck | None:
        """The equivalence check: against the ``equivalent_to`` candidate if the suite names
        one (built here, freed after), else the candidate's own target (``Verifiable``); None
        when nothing was generated or there is nothing to check. The target answers the
        candidate's own requests (a RAG candidate's carry its retrieved chunks)."""
        if not self.prepared.needs_outputs:  # nothing generated, nothing to compare
            return None
        cache = self.options.cache
        equivalence = self.spec.candidates[name].equivalent_to
        if equivalence is None:
            return check_equivalence(candidate, requests, params, generations, cache)
        spec = self.spec.candidates[equivalence.candidate]
        folder, device = self.prepared.loaded.path.parent, self.options.device
        target = make_candidate(equivalence.candidate, spec, folder, device=device)
        try:
            declared = declared_target(
                equivalence, target, self.spec.generation.merged(spec.generation)
            )
            return check_equivalence(
                candidate, requests, params, generations, cache, declared=declared
            )
        finally:
            target.close()

    def limit(self, name: str) -> int | None:
        """The candidate's own ``limit:``, unless the run is full."""
        return None if self.options.full else self.spec.candidates[name].limit

    def requests_for(self, name: str) -> list[GenerationRequest]:
        """The suite's requests (a ``limit:`` sample of them), or a candidate's own (its prompt,
        shots, retrieved chunks), which the scorer then shows its metrics."""
        examples, suite_requests = limited(self.examples, self.requests, self.limit(name))
        options = self.options
        own = own_requests(
            self.prepared, name, examples, suite_requests, options.cache, options.device
        )
        if own is None:
            return suite_requests
        self.scorer.use_requests(name, own)
        return own

    def generate(
        self,
        candidate: Candidate,
        fingerprint_hash: str,
        params: GenerationSpec,
        requests: Sequence[GenerationRequest],
    ) -> dict[str, tuple[Generation, bool]]:
        """Cached generations by id; none when no metric reads an output (perplexity only)."""
        if not self.prepared.needs_outputs:
            return {}
        return generate_cached(candidate, fingerprint_hash, requests, params, self.options.cache)

    def example_result(
        self,
        request: GenerationRequest,
        gen: Generation | None,
        cached: bool,
        answer: AnswerSpec | None = None,
    ) -> ExampleResult:
        """One example's record; with no generation (a suite that generates nothing) it has no
        output and no error either. ``answer`` extracts what the metrics score; the record
        keeps the whole output too."""
        example = self.by_id[request.id]
        produced = {}
        if gen is not None:
            produced = {
                "prompt": gen.prompt,
                "error": gen.error,
                "n_prompt_tokens": gen.n_prompt_tokens,
                "n_output_tokens": gen.n_output_tokens,
                "seconds": gen.seconds,
                "cost": gen.cost,
                "cached": cached,
            }
            if answer is not None and gen.error is None:
                produced["answer"] = answer.extract(gen.output)
        return ExampleResult(
            id=request.id,
            references=list(example.references),
            messages=[{"role": m.role, "content": m.content} for m in request.messages],
            output=None if gen is None or gen.error else gen.output,
            retrieved=[{"id": c.id, "score": c.score} for c in request.retrieved],
            sentinel=example.sentinel,
            **produced,
        )


def _scored(answer: AnswerSpec | None, output: str) -> str:
    return output if answer is None else answer.extract(output)


def _counts(
    generations: dict[str, tuple[Generation, bool]],
    samples: Sequence[dict[str, tuple[Generation, bool]]],
    examples: Sequence[ExampleResult],
) -> dict[str, Any]:
    """A candidate run's generated, cached and failed counts (over every sample) and cost."""
    every = (generations, *samples)
    return {
        # Generated means answered: a failed request (an outage) is an error, not output.
        "n_generated": sum(not c and g.error is None for gens in every for g, c in gens.values()),
        "n_cached": sum(c for gens in every for _, c in gens.values()),
        "n_errors": sum(e.error is not None for e in examples),
        "cost": _total_cost(examples),
    }


def _total_cost(examples: Sequence[ExampleResult]) -> float | None:
    """Sum of the known per-example costs (cached ones at what they cost); None if none known."""
    costs = [e.cost for e in examples if e.cost is not None]
    return sum(costs) if costs else None


def run_suite(prepared: PreparedSuite, options: RunOptions) -> RunResult:
    return SuiteRunner(prepared, options).run()


def _no_reload() -> Candidate:
    raise EvalkitError("the compare_to candidate is being scored itself; it is not reloaded")
