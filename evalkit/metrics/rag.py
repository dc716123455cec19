"""Metrics of retrieval-augmented (RAG) candidates: retrieval quality, faithfulness, context cost.

Retrieval quality needs golden examples that name their supporting documents in a
``context_ids`` field: a list of document ids (``leave.md``, the path relative to the corpus
folder) or chunk ids (``leave.md#2``). A retrieved chunk is relevant when its own id or its
document's id is listed. Over the candidate's retrieved chunks (``top_k``, or the first ``k``):

- ``hit_at_k``: 1 if any retrieved chunk is relevant, else 0;
- ``recall_at_k``: the share of listed ids that some retrieved chunk matches;
- ``mrr``: 1 / the rank of the first relevant chunk (0 when none is), the reciprocal rank whose
  mean over examples is the mean reciprocal rank.

``faithfulness``: the share of the answer's claims supported by the retrieved text. With
``judge: {model: ...}`` (any judge options but the rubric) an LLM judge grades it on its scale
against the retrieved text, rescaled to 0-1 (``JudgedFaithfulness``). Without a judge it is a
lexical check, see ``LexicalFaithfulness`` for what it can and cannot see. No
small NLI cross-encoder ships offline on PyPI (checked 2026-12: the packaged models are
embedders, and rerankers such as flashrank download their weights at run time).

``prompt_tokens``: tokens of the prompt the model saw (candidate-reported): the context cost of
retrieval, shots or a longer system prompt. Its effect on the time to the first token is the
``latency.ttft_ms`` column.

Every metric here gives no value (never 0) for a candidate without retrieval or an example
without ``context_ids``, with the reason in the detail.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from evalkit.candidates.base import Candidate, RetrievedChunk
from evalkit.metrics.base import Sample, Score, ScoreValue, register
from evalkit.metrics.options import check_option_names, check_type, checked_factory
from evalkit.spec import GenerationSpec

NO_RETRIEVAL = "this candidate retrieves nothing (no 'retrieval' block)"
NO_CONTEXT_IDS = "the example names no 'context_ids'"


def context_ids(sample: Sample) -> list[str] | None:
    raw = sample.fields.get("context_ids")
    if raw is None or raw == []:
        return None
    if isinstance(raw, str):
        return [raw]
    if not isinstance(raw, list) or not all(isinstance(i, str) for i in raw):
        raise ValueError(
            f"example '{sample.id}': 'context_ids' must be a list of document or chunk ids"
        )
    return raw


def relevant(chunk: RetrievedChunk, wanted: set[str]) -> bool:
    return chunk.id in wanted or chunk.doc_id in wanted


class _RetrievalMetric:
    version: ClassVar[str] = "1"
    higher_is_better: ClassVar[bool] = True
    name: ClassVar[str]

    def __init__(self, k: int | None = None) -> None:
        check_type("k", k, (int, type(None)))
        if k is not None and k < 1:
            raise ValueError("option 'k' must be at least 1")
        self.k = k

    def signature(self) -> str:
        return f"k:{self.k or 'top_k'}|match:chunk-or-doc"

    def score(self, samples: Sequence[Sample]) -> list[ScoreValue]:
        return [self._score_one(s) for s in samples]

    def _score_one(self, sample: Sample) -> ScoreValue:
        if not sample.retrieved:
            return Score(None, {"error": NO_RETRIEVAL})
        wanted = context_ids(sample)
        if wanted is None:
            return Score(None, {"error": NO_CONTEXT_IDS})
        ranked = sample.retrieved[: self.k] if self.k else sample.retrieved
        return self.value(ranked, wanted)

    def value(self, ranked: Sequence[RetrievedChunk], wanted: list[str]) -> float:
        raise NotImplementedError


class HitAtK(_RetrievalMetric):
    name = "hit_at_k"

    def value(self, ranked: Sequence[RetrievedChunk], wanted: list[str]) -> float:
        return float(any(relevant(c, set(wanted)) for c in ranked))


class RecallAtK(_RetrievalMetric):
    name = "recall_at_k"

    def value(self, ranked: Sequence[RetrievedChunk], wanted: list[str]) -> float:
        found = [w for w in dict.fromkeys(wanted) if any(relevant(c, {w}) for c in ranked)]
        return len(found) / len(set(wanted))


class ReciprocalRank(_RetrievalMetric):
    name = "mrr"

    def value(self, ranked: Sequence[RetrievedChunk], wanted: list[str]) -> float:
        for rank, chunk in enumerate(ranked, start=1):
            if relevant(chunk, set(wanted)):
                return 1.0 / rank
        return 0.0


_WORD = re.compile(r"[0-9]+(?:[.,][0-9]+)*|[^\W\d_]+")  # "25th" -> "25", "th"
_CLAIM_END = re.compile(r"(?<=[.!?;])\s+|\n+")
_NUMBER = re.compile(r"^[0-9][0-9.,]*$")
_STOPWORD_TEXT = """
    a an the and or but if of to in on at by for with from as is are was were be been being
    it its this that these those there here which who whom what when where why how i you he she
    we they me him her us them my your his our their do does did done have has had can could
    will would shall should may might must not no yes so than then too very just also only any
    all each per about into over under up down out off again more most some such own same"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())


def content_words(text: str) -> list[str]:
    return [w for w in (m.group(0).lower() for m in _WORD.finditer(text)) if w not in STOPWORDS]


class LexicalFaithfulness:
    """``faithfulness`` without a judge: the share of the answer's claims whose words occur in
    the retrieved text.

    A claim is a sentence or clause of the answer (split at ``. ! ? ;`` and line breaks) with at
    least one content word (stopwords dropped, lower-cased). It is supported when every number in
    it occurs in the retrieved text and at least ``min_overlap`` of its other content words do.

    Limits, stated plainly: it sees words, not meaning. A paraphrase with other words counts as
    unsupported; a claim that recombines words of the context wrongly ("27 weeks" where the
    context says 27 days and 22 weeks), or negates it, counts as supported; numbers must match
    as written (1,200 vs 1200). An answer that is only a number is supported exactly when that
    number appears in the retrieved text. Use it to compare candidates on the same data, not as
    an absolute truth; give a judge for a semantic check.
    """

    name: ClassVar[str] = "faithfulness"
    version: ClassVar[str] = "1"
    higher_is_better: ClassVar[bool] = True

    def __init__(self, min_overlap: float = 0.8) -> None:
        check_type("min_overlap", min_overlap, (int, float))
        if not 0 < min_overlap <= 1:
            raise ValueError("option 'min_overlap' must be in (0, 1]")
        self.min_overlap = float(min_overlap)

    def signature(self) -> str:
        return f"lexical|min_overlap:{self.min_overlap:g}|numbers:all"

    def score(self, samples: Sequence[Sample]) -> list[ScoreValue]:
        return [self._score_one(s) for s in samples]

    def _score_one(self, sample: Sample) -> ScoreValue:
        if not sample.retrieved:
            return Score(None, {"error": NO_RETRIEVAL})
        context = set(content_words(" ".join(c.text for c in sample.retrieved)))
        claims = [c for c in _CLAIM_END.split(sample.output) if content_words(c)]
        if not claims:
            return Score(None, {"error": "the answer makes no claim (no content words)"})
        unsupported = [c.strip() for c in claims if not self.supported(c, context)]
        detail: dict[str, Any] = {"claims": len(claims)}
        if unsupported:
            detail["unsupported"] = unsupported[:5]
        return Score(1 - len(unsupported) / len(claims), detail)

    def supported(self, claim: str, context: set[str]) -> bool:
        words = content_words(claim)
        numbers = [w for w in words if _NUMBER.match(w)]
        others = [w for w in words if not _NUMBER.match(w)]
        if any(n not in context for n in numbers):
            return False
        if not others:
            return True
        return sum(w in context for w in others) / len(others) >= self.min_overlap


FAITHFULNESS_CRITERIA = (
    "Faithfulness: is every claim of the answer supported by the retrieved context shown as the "
    "reference? A claim the context does not state counts against the answer even if it is "
    "true; whether the answer is helpful or complete does not matter."
)
FAITHFULNESS_LEVELS = {
    1: "no claim of the answer is supported by the context",
    2: "a few claims are supported, most are not",
    3: "about half of the claims are supported",
    4: "all claims but a minor one are supported",
    5: "every claim is supported by the context",
}


class JudgedFaithfulness:
    """``faithfulness`` graded by an LLM judge: the retrieved chunks are shown as the reference,
    with a faithfulness rubric; the judge's score on its scale is rescaled to 0-1, so 1 means
    every claim supported. The judge's details (probabilities, rationale, cost) are kept."""

    name: ClassVar[str] = "faithfulness"
    version: ClassVar[str] = "1"
    higher_is_better: ClassVar[bool] = True

    def __init__(self, judge: Mapping[str, Any], base_dir: Path | None = None) -> None:
        from evalkit.metrics.judge import make_judge

        if not isinstance(judge, Mapping):
            raise TypeError(f"option 'judge' must be a mapping of judge options, got {judge!r}")
        own = {"rubric", "rubric_file", "reference", "levels"} & set(judge)
        if own:
            raise ValueError(f"faithfulness sets its own {', '.join(sorted(own))}; remove it")
        self.judge = make_judge(
            base_dir,
            **judge,
            rubric=FAITHFULNESS_CRITERIA,
            reference=True,
            levels=FAITHFULNESS_LEVELS,
        )

    def signature(self) -> str:
        return f"judged|{self.judge.signature()}"

    def score(self, samples: Sequence[Sample]) -> list[ScoreValue]:
        out: list[ScoreValue] = [Score(None, {"error": NO_RETRIEVAL})] * len(samples)
        todo = [i for i, s in enumerate(samples) if s.retrieved]
        shown = [
            dataclasses.replace(
                samples[i], references=("\n\n".join(c.text for c in samples[i].retrieved),)
            )
            for i in todo
        ]
        low, high = self.judge.scale
        for index, value in zip(todo, self.judge.score(shown) if shown else [], strict=True):
            grade = value if isinstance(value, Score) else Score(value)
            detail = {**grade.detail, "judge_score": grade.value}
            scaled = None if grade.value is None else (grade.value - low) / (high - low)
            out[index] = Score(scaled, detail)
        return out


def make_faithfulness(
    base_dir: Path | None = None, **options: Any
) -> LexicalFaithfulness | JudgedFaithfulness:
    """``faithfulness``: judged with ``judge: {...}``, else lexical (``min_overlap``)."""
    check_option_names(options, ["judge", "min_overlap"])
    if "judge" in options:
        if "min_overlap" in options:
            raise ValueError("'min_overlap' is for the lexical check; a judge reads meaning")
        return JudgedFaithfulness(options["judge"], base_dir)
    return LexicalFaithfulness(**options)


class PromptTokens:
    """``prompt_tokens``: tokens of the prompt as the candidate counted them (chat template
    included). A candidate metric so its cached values are keyed by the model (tokenizers
    differ); it reads the count the generation reported and never runs the model."""

    name: ClassVar[str] = "prompt_tokens"
    version: ClassVar[str] = "1"
    higher_is_better: ClassVar[bool] = False
    cacheable: ClassVar[bool] = True
    uses_decoding: ClassVar[bool] = False

    def signature(self) -> str:
        return "tokens:candidate-reported"

    def score_candidate(
        self, samples: Sequence[Sample], candidate: Candidate, params: GenerationSpec
    ) -> list[ScoreValue]:
        return [
            float(s.n_prompt_tokens)
            if s.n_prompt_tokens
            else Score(None, {"error": "the candidate reported no prompt token count"})
            for s in samples
        ]


for _metric in (HitAtK, RecallAtK, ReciprocalRank):
    register(_metric.name, checked_factory(_metric.name, _metric, ["k"]))
register("faithfulness", make_faithfulness)
register("prompt_tokens", checked_factory("prompt_tokens", PromptTokens, []))
