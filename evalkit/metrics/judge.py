"""LLM-as-a-judge metrics: ``judge`` (a rubric score) and ``judge_pairwise`` (against baseline).

The judge is any candidate, built with ``make_candidate``: a local transformers model (its
score is the probability-weighted mean over the score tokens of its next-token distribution,
G-Eval style, so nothing is parsed and nothing can fail to parse) or an API model through
litellm (top log-probabilities when the API gives them, else strict JSON validated by pydantic,
re-asked a bounded number of times; after that the value is missing with the error, never 0).

``judge_pairwise`` asks the judge twice per example, with the candidate's output shown first
and then second, to cancel position bias; an example whose two orders disagree counts as a tie.
Both metrics keep the judge's numbers per example in the detail (probabilities, argmax, mass on
the choice tokens, rationale, tokens, cost) and sum cost and tokens in ``summarize``.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from evalkit.candidates import make_candidate
from evalkit.candidates.base import ChatCompleter, LocalModel, OnDevice
from evalkit.errors import CandidateError
from evalkit.metrics.base import RunFigures, Sample, Score, Scored, ScoreValue, register
from evalkit.metrics.judge_identity import calibration_file
from evalkit.metrics.judge_options import (
    JudgeOptions,
    PairwiseOptions,
    _JudgeModelOptions,
    options_error,
)
from evalkit.metrics.judge_prompts import (
    PAIR_CHOICES,
    PROMPT_VERSION,
    AnchorExample,
    JudgePrompt,
    Reading,
    pairwise_prompt,
    rubric_prompt,
)
from evalkit.metrics.rubrics import Rubric, parse_levels, resolve_rubric

PromptsFor = Callable[[str], list[JudgePrompt]]
"""Builds the judge prompts for a reply kind: ``score``, ``rationale`` or ``json``."""


class _Judge:
    """What both judge metrics share: the rubric, the judge candidate and its reader."""

    version = "1"
    higher_is_better = True

    def __init__(self, options: _JudgeModelOptions, base_dir: Path | None) -> None:
        self.options = options
        self.base_dir = base_dir or Path.cwd()
        self.rubric: Rubric = resolve_rubric(
            options.rubric or ("correctness" if options.rubric_file is None else None),
            options.rubric_file,
            self.base_dir,
        )
        self._candidate: Any = None
        self._signature: str | None = None

    @property
    def use_reference(self) -> bool:
        chosen = self.options.reference
        return self.rubric.uses_reference if chosen is None else chosen

    @property
    def candidate(self) -> Any:
        """The judge model as a candidate; built on first use, loaded on first read."""
        if self._candidate is None:
            self._candidate = make_candidate(
                f"judge:{self.options.model}", self.options.candidate_spec(), self.base_dir
            )
        return self._candidate

    @property
    def is_api(self) -> bool:
        return self.options.is_api

    def judge_signature(self) -> str:
        """The judge's identity: model fingerprint, rubric, prompt version, reading mode."""
        from evalkit.cache import make_key

        options = self.options
        fingerprint = make_key(**self.candidate.fingerprint())[:12]
        parts = [
            f"judge:{options.model}@{fingerprint}",
            f"rubric:{self.rubric.name}#{self.rubric.digest()}",
            f"ref:{'yes' if self.use_reference else 'no'}",
            f"prompt:v{PROMPT_VERSION}",
        ]
        if self.is_api:
            parts.append(f"read:{options.read}|t:{options.temperature:g}|n:{options.samples}")
            parts.append(f"reasks:{options.max_reasks}")
        else:
            parts.append("read:next-token")
        if options.rationale:
            parts.append(f"rationale:{options.rationale_tokens if not self.is_api else 'json'}")
        return "|".join(parts)

    def read(
        self, prompts_for: PromptsFor, choices: Sequence[str], field: str
    ) -> list[list[Reading]]:
        """Readings per prompt (one per sample), from whichever kind of judge this is;
        ``field`` names the choice in a JSON reply (``score`` or ``verdict``)."""
        if self.is_api:
            from evalkit.metrics.judge_api import ApiJudge

            if not isinstance(self.candidate, ChatCompleter):
                raise CandidateError(
                    f"judge model '{self.options.model}' is not an API model (its candidate "
                    f"{type(self.candidate).__name__} has no complete_many)"
                )
            return ApiJudge(self.candidate, self.options).read(prompts_for, choices, field)
        from evalkit.metrics.judge_local import LocalJudge

        if not isinstance(self.candidate, LocalModel) or not isinstance(self.candidate, OnDevice):
            raise CandidateError(
                f"judge model '{self.options.model}' is not a local model (its candidate "
                f"{type(self.candidate).__name__} gives no loaded weights and device)"
            )
        local = LocalJudge(self.candidate, batch_size=self.options.batch_size)
        reply = "rationale" if self.options.rationale else "score"
        tokens = self.options.rationale_tokens if self.options.rationale else 0
        try:
            readings = local.read(prompts_for(reply), choices, rationale_tokens=tokens)
        finally:
            # Freed after each batch of judgments: a run then holds at most the candidate
            # under test and one judge, and a cached re-run loads neither.
            self.candidate.close()
        return [[r] for r in readings]

    def close(self) -> None:
        if self._candidate is not None:
            self._candidate.close()


class JudgeMetric(_Judge):
    """``judge``: a score on ``scale`` (default 1-5) for each output, by rubric."""

    name = "judge"

    def __init__(self, options: JudgeOptions, base_dir: Path | None = None) -> None:
        super().__init__(options, base_dir)
        self.scale = options.scale
        low, high = options.scale
        builtin_levels = self.rubric.levels if (low, high) == (1, 5) else {}
        self.levels = options.levels if options.levels is not None else builtin_levels
        self.examples = [
            AnchorExample(e.answer, e.score, e.question, e.reference, e.why)
            for e in options.examples
        ]
        self.choices = [str(s) for s in range(low, high + 1)]

    def signature(self) -> str:
        if self._signature is None:
            from evalkit.cache import make_key

            low, high = self.scale
            extra = make_key(levels=sorted(self.levels.items()), examples=self.examples)[:8]
            self._signature = f"{self.judge_signature()}|scale:{low}-{high}|anchors:{extra}"
        return self._signature

    def score(self, samples: Sequence[Sample]) -> list[ScoreValue]:
        out: list[ScoreValue] = [None] * len(samples)
        todo = []
        for index, sample in enumerate(samples):
            if self.use_reference and not sample.references:
                out[index] = Score(None, {"error": _NO_REFERENCE})
            else:
                todo.append((index, sample))

        def prompts_for(reply: str) -> list[JudgePrompt]:
            return [self.prompt(sample, reply) for _, sample in todo]

        readings = self.read(prompts_for, self.choices, "score") if todo else []
        for (index, _), sample_readings in zip(todo, readings, strict=True):
            out[index] = self.to_score(sample_readings)
        return out

    def prompt(self, sample: Sample, reply: str) -> JudgePrompt:
        return rubric_prompt(
            id=sample.id,
            question=sample.prompt,
            answer=sample.output,
            references=sample.references,
            rubric=self.rubric,
            scale=self.scale,
            levels=self.levels,
            examples=self.examples,
            use_reference=self.use_reference,
            reply=reply,
        )

    def to_score(self, readings: Sequence[Reading]) -> Score:
        """The mean over samples of each reading's expected score (or its parsed score)."""
        values = [v for v in (expected_score(r) for r in readings) if v is not None]
        detail = _costs(readings)
        first = readings[0]
        if first.probs is not None:
            probs = {c: round(p, 6) for c, p in first.probs.items()}
            detail["probs"] = probs
            detail["argmax"] = int(max(probs, key=probs.__getitem__))
            detail["mass"] = round(first.mass or 0.0, 6)
            detail["read"] = "distribution"
        elif first.choice is not None:
            detail["argmax"] = int(first.choice)
            detail["read"] = "json"
        if first.extra.get("fallback"):
            detail["fallback"] = first.extra["fallback"]
        if len(readings) > 1:
            detail["samples"] = [
                None if v is None else round(v, 6) for v in map(expected_score, readings)
            ]
            detail["spread"] = round(statistics.pstdev(values), 6) if values else None
        _add_rationales(detail, readings)
        if not values:
            errors = [r.error for r in readings if r.error]
            detail["error"] = errors[0] if errors else "the judge gave no score"
            return Score(None, detail)
        return Score(statistics.fmean(values), detail)

    def summarize(self, scored: Sequence[Scored]) -> RunFigures:
        """Run-level figures beside the mean: cost and tokens summed, mean mass on score tokens,
        from every scored example's detail (failed ones included: they may have cost too)."""
        if not scored:
            return RunFigures()
        details = [s.detail for s in scored]
        figures = _sum_costs(details)
        masses = [d["mass"] for d in details if isinstance(d.get("mass"), int | float)]
        figures["mass_mean"] = statistics.fmean(masses) if masses else None
        spreads = [d["spread"] for d in details if isinstance(d.get("spread"), int | float)]
        if spreads:
            figures["spread_mean"] = statistics.fmean(spreads)
        return RunFigures(extra=figures)


_NO_REFERENCE = (
    "this example has no reference, which the rubric compares with; add one or set reference: false"
)
VERDICT_VALUE = {"win": 1.0, "tie": 0.5, "loss": 0.0}
# Which letter means what, seen from the candidate, in each order.
_ORDERS = {
    "candidate_first": {"1": "win", "2": "loss", "0": "tie"},
    "baseline_first": {"1": "loss", "2": "win", "0": "tie"},
}


class PairwiseJudgeMetric(_Judge):
    """``judge_pairwise``: win 1, tie 0.5, loss 0 against the ``compare_to`` candidate's output,
    asked in both orders; orders that disagree make a tie."""

    name = "judge_pairwise"
    uses_baseline = True

    def signature(self) -> str:
        if self._signature is None:
            self._signature = f"{self.judge_signature()}|orders:both|inconsistent:tie"
        return self._signature

    def score(self, samples: Sequence[Sample]) -> list[ScoreValue]:
        out: list[ScoreValue] = [None] * len(samples)
        todo = []
        for index, sample in enumerate(samples):
            if sample.baseline_output is None:
                out[index] = Score(None, {"error": _NO_BASELINE})
            elif self.use_reference and not sample.references:
                out[index] = Score(None, {"error": _NO_REFERENCE})
            elif sample.output.strip() == sample.baseline_output.strip():
                out[index] = Score(0.5, {"verdict": "tie", "identical": True})
            else:
                todo.append((index, sample))

        def prompts_for(reply: str) -> list[JudgePrompt]:
            return [p for _, sample in todo for p in self.prompts(sample, reply)]

        readings = self.read(prompts_for, PAIR_CHOICES, "verdict") if todo else []
        for n, (index, _) in enumerate(todo):
            out[index] = self.to_score(readings[2 * n], readings[2 * n + 1])
        return out

    def prompts(self, sample: Sample, reply: str) -> list[JudgePrompt]:
        baseline = sample.baseline_output or ""
        shown = {
            "candidate_first": (sample.output, baseline),
            "baseline_first": (baseline, sample.output),
        }
        return [
            pairwise_prompt(
                id=f"{sample.id}::{order}",
                question=sample.prompt,
                first=first,
                second=second,
                references=sample.references,
                rubric=self.rubric,
                use_reference=self.use_reference,
                reply=reply,
            )
            for order, (first, second) in shown.items()
        ]

    def to_score(self, first: Sequence[Reading], second: Sequence[Reading]) -> Score:
        detail: dict[str, Any] = _costs([*first, *second])
        orders: dict[str, dict[str, float]] = {}
        for order, readings in zip(_ORDERS, (first, second), strict=True):
            probs = _mean_probs(readings)
            if probs is None:
                errors = [r.error for r in readings if r.error]
                detail["error"] = f"{order}: {errors[0] if errors else 'no verdict'}"
                return Score(None, detail)
            outcome = {_ORDERS[order][c]: p for c, p in probs.items()}
            orders[order] = {k: round(outcome[k], 6) for k in ("win", "tie", "loss")}
        verdicts = {order: max(p, key=p.__getitem__) for order, p in orders.items()}
        agree = verdicts["candidate_first"] == verdicts["baseline_first"]
        verdict = verdicts["candidate_first"] if agree else "tie"
        detail.update(
            verdict=verdict,
            orders_disagree=not agree,
            order_verdicts=verdicts,
            orders=orders,
            p_win=round(statistics.fmean(o["win"] + 0.5 * o["tie"] for o in orders.values()), 6),
        )
        reads = {"distribution" if r.probs is not None else "json" for r in (*first, *second)}
        detail["read"] = "+".join(sorted(reads))
        masses = [r.mass for r in (*first, *second) if r.mass is not None]
        if masses:
            detail["mass"] = round(statistics.fmean(masses), 6)
        _add_rationales(detail, [*first, *second])
        return Score(VERDICT_VALUE[verdict], detail)

    def summarize(self, scored: Sequence[Scored]) -> RunFigures:
        """Win/tie/loss rates, how often the two orders disagreed, cost and tokens."""
        if not scored:
            return RunFigures()
        details = [s.detail for s in scored]
        figures = _sum_costs(details)
        verdicts = [d["verdict"] for d in details if d.get("verdict") in VERDICT_VALUE]
        judged = [d for d in details if "orders_disagree" in d]
        for name in VERDICT_VALUE:
            figures[f"{name}_rate"] = verdicts.count(name) / len(verdicts) if verdicts else None
        figures["order_disagreement_rate"] = (
            sum(bool(d["orders_disagree"]) for d in judged) / len(judged) if judged else None
        )
        figures["identical_rate"] = (
            sum(bool(d.get("identical")) for d in details if "verdict" in d) / len(verdicts)
            if verdicts
            else None
        )
        return RunFigures(extra=figures)


_NO_BASELINE = (
    "no baseline output to compare with: this is the compare_to candidate itself, the suite "
    "has no compare_to, or the baseline failed on this example"
)


def expected_score(reading: Reading) -> float | None:
    """Σ score × p(score) over the score tokens, or the score the judge wrote."""
    if reading.probs is not None:
        return sum(int(c) * p for c, p in reading.probs.items())
    if reading.choice is not None:
        return float(int(reading.choice))
    return None


def _mean_probs(readings: Sequence[Reading]) -> dict[str, float] | None:
    """Mean distribution over samples; a written choice counts as all its mass on it."""
    vectors = []
    for reading in readings:
        if reading.probs is not None:
            vectors.append(dict(reading.probs))
        elif reading.choice is not None:
            vectors.append({c: float(c == reading.choice) for c in PAIR_CHOICES})
    if not vectors:
        return None
    return {c: statistics.fmean(v.get(c, 0.0) for v in vectors) for c in PAIR_CHOICES}


def _costs(readings: Sequence[Reading]) -> dict[str, Any]:
    costs = [r.cost for r in readings if r.cost is not None]
    detail: dict[str, Any] = {
        "judge_prompt_tokens": sum(r.n_prompt_tokens for r in readings),
        "judge_output_tokens": sum(r.n_output_tokens for r in readings),
        "judge_seconds": round(sum(r.seconds for r in readings), 6),
    }
    if costs:
        detail["judge_cost_usd"] = sum(costs)
    reasks = sum(r.reasks for r in readings)
    if reasks:
        detail["reasks"] = reasks
    return detail


def _add_rationales(detail: dict[str, Any], readings: Sequence[Reading]) -> None:
    rationales = [r.rationale for r in readings if r.rationale]
    if len(rationales) == 1:
        detail["rationale"] = rationales[0]
    elif rationales:
        detail["rationales"] = rationales


def _sum_costs(details: Sequence[Mapping[str, Any]]) -> dict[str, float | None]:
    """Judge cost and tokens summed over examples (cached judgments count what they cost)."""

    def total(key: str) -> float:
        return float(sum(d.get(key, 0) or 0 for d in details))

    costs = [d["judge_cost_usd"] for d in details if d.get("judge_cost_usd") is not None]
    return {
        "judge_cost_usd": float(sum(costs)) if costs else None,
        "judge_prompt_tokens": total("judge_prompt_tokens"),
        "judge_output_tokens": total("judge_output_tokens"),
        "judge_seconds": total("judge_seconds"),
        "judge_reasks": total("reasks"),
        "n_judge_errors": float(sum("error" in d for d in details)),
    }


def make_judge(base_dir: Path | None = None, **options: Any) -> JudgeMetric:
    levels = options.get("levels")
    if levels is not None:
        options = {**options, "levels": parse_levels(levels, where="option 'levels'")}
    try:
        parsed = JudgeOptions.model_validate(options)
    except ValidationError as exc:
        raise options_error("judge", exc) from None
    metric = JudgeMetric(parsed, base_dir)
    labels = calibration_file(metric)
    if labels is not None and not labels.is_file():
        raise ValueError(f"calibration file {labels} not found (paths are relative to the suite)")
    return metric


def make_pairwise_judge(base_dir: Path | None = None, **options: Any) -> PairwiseJudgeMetric:
    try:
        parsed = PairwiseOptions.model_validate(options)
    except ValidationError as exc:
        raise options_error("judge_pairwise", exc) from None
    return PairwiseJudgeMetric(parsed, base_dir)


register("judge", make_judge)
register("judge_pairwise", make_pairwise_judge)
