"""The run record: everything a report needs, saved as ``reports/<suite>/run.json``.

The HTML report and the CI summary read a ``RunResult`` and nothing else, so a saved run can be
re-rendered without any model. Writes are atomic (temp file + rename): an interrupted run never
leaves a truncated JSON behind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, computed_field

from evalkit._files import keep_elsewhere, retire_stale, write_atomic
from evalkit.errors import disk_error

RESULT_SCHEMA_VERSION = 1


class SampleResult(BaseModel):
    """One of the k answers of an example of a ``samples: k`` candidate."""

    seed: int = Field(description="the generation seed of this sample (in its cache key)")
    output: str | None
    error: str | None = None
    scores: dict[str, float | None] = Field(default_factory=dict)
    cached: bool = False


class ExampleResult(BaseModel):
    id: str
    references: list[str]
    messages: list[dict[str, str]]
    prompt: str = Field("", description="what the model saw, after the chat template")
    output: str | None
    answer: str | None = Field(
        None,
        description="the part of the output the metrics scored, when the candidate has an "
        "answer extractor (answer: {regex}); '' when the regex found nothing",
    )
    error: str | None = None
    scores: dict[str, float | None] = Field(default_factory=dict)
    details: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="per metric column: judge rationale, samples, cost, or the error of a "
        "missing score",
    )
    n_prompt_tokens: int = 0
    n_output_tokens: int = 0
    seconds: float = 0.0
    cost: float | None = Field(None, description="USD (API candidates); None when unknown")
    cached: bool = False
    retrieved: list[dict[str, Any]] = Field(
        default_factory=list,
        description="RAG candidates: the retrieved chunks, best first, as {id, score}",
    )
    sentinel: bool = Field(False, description="golden 'sentinel: true': must never flip")
    samples: list[SampleResult] = Field(
        default_factory=list,
        description="samples: k candidates: every answer with its scores (the first is also "
        "'output'); 'scores' then holds per-example figures over them (mean, pass@K, pass^K)",
    )

    @property
    def scored_output(self) -> str | None:
        """What the metrics score: the extracted answer where there is one, else the output."""
        return self.output if self.answer is None or self.output is None else self.answer


class Aggregate(BaseModel):
    metric: str
    mean: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    n: int = 0
    n_missing: int = 0
    corpus: float | None = Field(None, description="corpus-level score (BLEU, chrF, TER)")
    extra: dict[str, float | None] = Field(
        default_factory=dict,
        description="secondary run-level figures, e.g. p50/p95, word and byte perplexity",
    )
    level: Literal["example", "run"] = Field(
        "example",
        description="'run': one figure for the whole run (tokens/s, peak memory) in 'mean', "
        "with no per-example scores and no CI",
    )
    detail: dict[str, Any] = Field(
        default_factory=dict,
        description="for run-level figures: how it was measured, or the 'error' of a missing one",
    )
    higher_is_better: bool = True
    signature: str = ""
    version: str = ""
    judge: dict[str, Any] | None = Field(
        None,
        description="judge columns: who scored (model fingerprint, rubric hash, prompt version, "
        "scale) and its calibration against human labels",
    )
    advisory: str | None = Field(
        None, description="why gates on this column report but never fail (an uncalibrated judge)"
    )


class Timings(BaseModel):
    fingerprint_s: float = 0.0
    generate_s: float = 0.0
    score_s: float = 0.0
    total_s: float = 0.0


class EquivalenceMismatch(BaseModel):
    id: str
    output: str | None
    target_output: str | None
    first_char: int | None = Field(None, description="first differing character")
    first_word: int | None = Field(None, description="first differing word (whitespace split)")
    first_token: int | None = Field(
        None, description="first differing token (target's tokenizer; with logprob_tolerance)"
    )
    logprob_gap: float | None = Field(
        None, description="target's log p(its token) - log p(this one's) at first_token"
    )
    near_tie: bool = Field(False, description="gap within logprob_tolerance: not a mismatch")


class EquivalenceCheck(BaseModel):
    """A candidate's outputs against another candidate's (its equivalence target), example by
    example: a speculative candidate's against its plain model's (``max_mismatch`` 0), or any
    candidate's against the one its ``equivalent_to`` names. The wording fields come from
    whoever set the target, which knows what it is."""

    target: str = Field("", description="what the outputs must equal, e.g. 'the plain model'")
    logprob_tolerance: float | None = Field(
        None, description="near-ties within this log-prob gap are reported, not counted"
    )
    checked: int = 0
    mismatches: list[EquivalenceMismatch] = Field(default_factory=list)
    max_mismatch: int = Field(0, description="mismatches allowed before the gate fails")
    unchecked: int = Field(0, description="examples that failed to generate in either run")
    target_fingerprint_hash: str = ""
    target_cached: int = Field(0, description="target outputs read from the cache")
    skipped: str | None = Field(None, description="why no check was made (e.g. sampling)")
    headline: str = Field(
        "{n} outputs differ from {target}",
        description="failure headline; {n} is the number of mismatches, {target} the target",
    )
    output_name: str = "output"
    target_name: str = "target"
    note: str | None = Field(None, description="e.g. why near-ties could not be measured")

    @property
    def failing(self) -> list[EquivalenceMismatch]:
        """Mismatches that count: near-ties within the tolerance do not."""
        return [m for m in self.mismatches if not m.near_tie]


class Flips(BaseModel):
    """A 0/1 column's per-example changes against the ``compare_to`` candidate."""

    against: str
    n_paired: int = Field(0, description="examples both candidates scored")
    pass_to_fail: list[str] = Field(default_factory=list, description="ids: 1 there, 0 here")
    fail_to_pass: list[str] = Field(default_factory=list, description="ids: 0 there, 1 here")

    @computed_field  # type: ignore[prop-decorator]  # written to run.json beside the ids
    @property
    def n_pass_to_fail(self) -> int:
        return len(self.pass_to_fail)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def n_fail_to_pass(self) -> int:
        return len(self.fail_to_pass)


class PairedLatencyColumn(BaseModel):
    """One latency column of an interleaved comparison (ms; candidate minus compare_to)."""

    baseline_ms: dict[str, float] = Field(
        default_factory=dict, description="per example: compare_to's mean over its timings"
    )
    candidate_ms: dict[str, float] = Field(default_factory=dict)
    baseline_mean: float | None = None
    mean_delta: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    noise_delta: float | None = Field(
        None, description="A-vs-A: compare_to's second timing minus its first (noise floor)"
    )
    noise_ci_low: float | None = None
    noise_ci_high: float | None = None


class PairedLatency(BaseModel):
    """Latency gates against compare_to: both candidates timed interleaved, A, B, A per
    example, repeated in rounds, so drift of the machine hits both sides alike."""

    against: str
    schedule: str = "A,B,A per example and round"
    rounds: int = 0
    n_examples: int = 0
    seconds: float = 0.0
    stopped: str = Field("", description="decided | precise | budget | max_rounds")
    columns: dict[str, PairedLatencyColumn] = Field(default_factory=dict)
    other_cores: float | None = Field(None, description="cores other work kept busy meanwhile")
    cores: int = 0
    contention: str = Field("", description="whether other work competed for the cores")
    skipped: str | None = Field(None, description="why no interleaved comparison was made")


class CandidateRun(BaseModel):
    name: str
    spec: dict[str, Any]
    fingerprint: dict[str, Any]
    fingerprint_hash: str
    generation: dict[str, Any]
    describe: dict[str, Any] = Field(default_factory=dict, description="device, dtype, load time")
    examples: list[ExampleResult]
    aggregates: dict[str, Aggregate]
    generated: bool = Field(
        True,
        description="False when no metric of the suite reads outputs (perplexity only): "
        "nothing was generated, examples have no output and no error",
    )
    n_generated: int = 0
    n_cached: int = 0
    n_errors: int = 0
    cost: float | None = Field(
        None, description="USD of this candidate's outputs (cached ones included); None: unknown"
    )
    equivalence: EquivalenceCheck | None = Field(
        None,
        description="candidates whose outputs must equal another's (Verifiable, or "
        "equivalent_to): did they?",
    )
    flips: dict[str, Flips] = Field(
        default_factory=dict,
        description="per 0/1 metric column: examples that changed against compare_to",
    )
    samples: int = Field(1, description="answers per example (samples: k)")
    latency_pairs: PairedLatency | None = Field(
        None, description="the interleaved timing its latency gates were decided on"
    )
    timings: Timings = Field(default_factory=Timings)


class Power(BaseModel):
    """What a detection rule could see at its number of pairs (``evalkit.power``)."""

    detectable: float | None = Field(
        None,
        description="smallest true change a one-sided test at the gate's alpha tells from no "
        "change 80% of the time; None when there is no spread to judge it by",
    )
    fails_at: float | None = Field(
        None, description="allowance + detectable: the change this rule fails on 80% of the time"
    )
    n: int = 0
    n_needed: int | None = Field(
        None, description="pairs that would bring 'detectable' down to the allowance"
    )
    basis: str = Field("", description="what it was estimated from")
    sd: float | None = Field(None, description="sd of the paired deltas (continuous scores)")
    discordant_rate: float | None = Field(
        None, description="0/1 scores: share of pairs that changed"
    )
    underpowered: bool = False


class Comparison(BaseModel):
    """The paired test behind one change rule of a gate (max_drop, max_increase, min_ratio)."""

    baseline: str = Field(description="'candidate:<name>' or 'accepted:<path>'")
    baseline_mean: float | None = None
    candidate_mean: float | None = None
    n_paired: int = 0
    n_unpaired: int = 0
    mean_delta: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = Field(None, description="one-sided, for a detection rule")
    allowed: float | None = None
    rule: str = Field("", description="max_drop, max_increase or min_ratio")
    test: str = Field("", description="detection or noninferiority")
    method: str = Field("", description="e.g. 'exact McNemar', 'paired bootstrap'")
    ci_method: str = ""
    bound: float | None = Field(
        None, description="the one-sided (1 - alpha) bound a noninferiority rule is judged on"
    )
    ratio: float | None = Field(None, description="min_ratio: candidate mean / baseline mean")
    ratio_low: float | None = None
    ratio_high: float | None = None
    ratio_undefined: float | None = Field(
        None,
        description="min_ratio: share of resamples whose baseline mean was 0 (no ratio); a "
        "bound among them is undefined",
    )
    p_adjusted: float | None = Field(
        None, description="Holm-adjusted p over the run's detection rules (multiple_comparisons)"
    )
    n_tests: int = Field(1, description="size of the family p_adjusted is adjusted over")
    n_up: int | None = Field(None, description="0/1 scores: pairs that went 0 -> 1")
    n_down: int | None = Field(None, description="0/1 scores: pairs that went 1 -> 0")
    untestable: str | None = Field(
        None, description="why no test was possible ('not enough evidence to test')"
    )
    unchanged: bool = Field(
        False, description="no pair changed: no test could reject, so not in the Holm family"
    )
    power: Power | None = None
    outcome: str = Field(
        "", description="what the rule concluded, in words (e.g. 'within noise', 'non-inferior')"
    )
    passed: bool = True


class WorstExample(BaseModel):
    id: str
    reference: str
    output: str | None
    baseline_output: str | None = None
    score: float | None
    baseline_score: float | None = None


class GateVerdict(BaseModel):
    suite: str
    candidate: str
    gate: str
    metric: str
    status: Literal["passed", "failed", "error"]
    message: str
    rules: dict[str, Any] = Field(default_factory=dict)
    mean: float | None = None
    comparisons: list[Comparison] = Field(
        default_factory=list, description="one per change rule (max_drop, max_increase, min_ratio)"
    )
    warnings: list[str] = Field(
        default_factory=list, description="said even when the gate passes (e.g. underpowered)"
    )
    worst: list[WorstExample] = Field(default_factory=list)
    sentinel_flips: list[str] = Field(
        default_factory=list, description="sentinel examples that flipped pass -> fail"
    )
    advisory: str | None = Field(
        None, description="why this gate reports but cannot fail (an uncalibrated judge)"
    )

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def comparison(self) -> Comparison | None:
        """The first change rule's comparison (most gates have one)."""
        return self.comparisons[0] if self.comparisons else None


class RunResult(BaseModel):
    schema_version: int = RESULT_SCHEMA_VERSION
    suite: str
    suite_path: str
    spec_hash: str
    spec: dict[str, Any]
    dataset_path: str
    dataset_hash: str
    n_examples: int
    limit: int | None = None
    created_at: str
    evalkit_version: str
    versions: dict[str, str]
    compare_to: str | None = None
    candidates: dict[str, CandidateRun]
    gates: list[GateVerdict] = Field(default_factory=list)
    cache: dict[str, dict[str, int]] = Field(default_factory=dict)
    baseline_updated: list[str] = Field(default_factory=list)
    timings: Timings = Field(default_factory=Timings)

    @property
    def passed(self) -> bool:
        return all(v.passed for v in self.gates)


def save_run(result: RunResult, report_dir: Path) -> Path:
    """Write ``<dir>/<suite>/run.json``. On a full or read-only disk the previous run.json stays
    as it was, the run is saved elsewhere and the error says where, and the report pages of the
    previous run are renamed ``*.previous.html`` so they are not taken for this run's."""
    path = report_dir / result.suite / "run.json"
    text = result.model_dump_json(indent=1)
    try:
        write_atomic(path, text)
    except OSError as exc:
        kept = keep_elsewhere(text, f"{result.suite}.run.json")
        stale = retire_stale([report_dir / "index.html", report_dir / "summary.md",
                              report_dir / result.suite / "index.html"])  # fmt: skip
        extra = f"; this run's results were saved to {kept}" if kept else "; nothing was saved"
        if stale:
            extra += f" (the previous report was renamed to {stale[0].name})"
        raise disk_error(exc, path, extra=extra) from None
    return path


def load_run(path: Path) -> RunResult:
    return RunResult.model_validate_json(path.read_text(encoding="utf-8"))
