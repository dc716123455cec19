"""Built-in lexical metrics: string matching, sacrebleu (BLEU, chrF, TER; in ``metrics/bleu.py``),
ROUGE, edit similarity.

Scales. ``exact_match``, ``contains`` and ``regex`` give 0.0 or 1.0 per example; ROUGE and
``edit_similarity`` give 0..1. BLEU, chrF and TER are reported on sacrebleu's own 0-100 scale,
not rescaled, so a number here is the number sacrebleu's CLI and papers report. TER is an error
rate (lower is better, and it can exceed 100).

Sentence and corpus level. For BLEU, chrF and TER each example gets its sentence-level score
(BLEU with ``effective_order=True``, exactly as ``sacrebleu.sentence_bleu``), and ``aggregate``
gives the corpus score (``corpus_score``; BLEU without effective order, as
``sacrebleu.corpus_bleu``), which is not the mean of the sentence scores; the run-level hook
``summarize`` reports it as the run's ``corpus`` figure.

Multiple references. Every metric accepts one or more references per example and takes the
best match: any reference for the 0/1 metrics, the maximum for ROUGE (``score_multi``) and edit
similarity, sacrebleu's own multi-reference statistics for BLEU/chrF/TER (TER divides the fewest
edits by the *average* reference length, so multi-reference TER is not the minimum of the
single-reference TERs). For the corpus score, examples with fewer references than others are
padded with ``None``, sacrebleu's documented way to express a variable number of references.

Imports. sacrebleu, rouge-score (which imports nltk, about a second) and rapidfuzz are imported
on first use, not at import or construction time, so collecting suites stays fast. Option names
and types are checked when a metric is built; values only the library can judge (a sacrebleu
tokenizer name) are checked when the library object is first built, with the same kind of
message.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

from evalkit.errors import EvalkitError
from evalkit.metrics.base import MetricFactory, Sample, Score, register
from evalkit.metrics.options import check_type as _check_type
from evalkit.metrics.options import checked_factory as _factory
from evalkit.metrics.options import library_version as _library_version

# --------------------------------------------------------------------------------------------
# Shared by every metric here (option checking lives in evalkit/metrics/options.py).


def _references(metric: str, sample: Sample) -> tuple[str, ...]:
    """The sample's references, or a clear error; a missing reference must not score 0."""
    if not sample.references:
        raise ValueError(f"metric '{metric}' needs a reference; example '{sample.id}' has none")
    return sample.references


# --------------------------------------------------------------------------------------------
# Text normalization shared by exact_match, contains and edit_similarity.

#: The steps in the fixed order they are applied, whatever order a suite lists them in.
NORMALIZE_STEPS: tuple[str, ...] = ("strip", "lower", "punctuation", "articles", "whitespace")
#: The SQuAD answer normalization (lower, drop ASCII punctuation, drop a/an/the, squeeze spaces).
NORMALIZE_PRESETS: dict[str, tuple[str, ...]] = {
    "squad": ("lower", "punctuation", "articles", "whitespace"),
}
DEFAULT_NORMALIZE: tuple[str, ...] = ("strip",)

_PUNCTUATION = str.maketrans("", "", string.punctuation)
# Case-insensitive so "articles" without "lower" still drops "The"; with "lower" first (as in
# the squad preset) this is exactly SQuAD's re.sub(r"\b(a|an|the)\b", " ", text).
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.IGNORECASE)
_STEP_FUNCTIONS: dict[str, Callable[[str], str]] = {
    "strip": str.strip,
    "lower": str.lower,
    # Only ASCII punctuation (string.punctuation), as SQuAD does; "«»", "—" or "。" stay.
    "punctuation": lambda text: text.translate(_PUNCTUATION),
    "articles": lambda text: _ARTICLES.sub(" ", text),
    "whitespace": lambda text: " ".join(text.split()),
}


def normalize_steps(value: Any) -> tuple[str, ...]:
    """Turn a suite's ``normalize`` option into the steps to run, in the fixed order.

    Accepts a list of step names, a single step name, or a preset name ("squad"). The order is
    fixed (strip, lower, punctuation, articles, whitespace) so two suites listing the same steps
    differently compute, sign and cache the same thing.
    """
    if isinstance(value, str):
        value = NORMALIZE_PRESETS.get(value, (value,))
    if not isinstance(value, list | tuple) or not all(isinstance(s, str) for s in value):
        raise TypeError(
            f"option 'normalize' must be a list of steps or a preset name, got {value!r}"
        )
    unknown = [s for s in value if s not in NORMALIZE_STEPS]
    if unknown:
        raise ValueError(
            f"unknown normalize step {unknown[0]!r}; steps: {', '.join(NORMALIZE_STEPS)}; "
            f"presets: {', '.join(NORMALIZE_PRESETS)}"
        )
    return tuple(step for step in NORMALIZE_STEPS if step in value)


def normalize_text(text: str, steps: Sequence[str]) -> str:
    """Apply normalization steps (already in the fixed order) to one text."""
    for step in steps:
        text = _STEP_FUNCTIONS[step](text)
    return text


def _normalize_signature(steps: Sequence[str]) -> str:
    return "normalize:" + (",".join(steps) if steps else "none")


@dataclass(frozen=True)
class _Normalized:
    """Base for metrics with a ``normalize`` option: canonicalizes it once, at construction."""

    normalize: Any = DEFAULT_NORMALIZE

    def __post_init__(self) -> None:
        object.__setattr__(self, "normalize", normalize_steps(self.normalize))

    def _norm(self, text: str) -> str:
        return self._normalizer(text)

    @cached_property
    def _normalizer(self) -> Callable[[str], str]:
        """The steps as one function, so scoring many short texts pays no per-step lookups."""
        steps = [_STEP_FUNCTIONS[step] for step in self.normalize]
        if len(steps) == 1:
            return steps[0]
        return lambda text: normalize_text(text, self.normalize)


# --------------------------------------------------------------------------------------------
# String matching.


@dataclass(frozen=True)
class ExactMatch(_Normalized):
    """1.0 if the normalized output equals any normalized reference, else 0.0."""

    name: ClassVar[str] = "exact_match"
    binary: ClassVar[bool] = True  # 0/1 per example: runs record flips against compare_to
    version: ClassVar[str] = "1"
    higher_is_better: ClassVar[bool] = True

    def signature(self) -> str:
        return _normalize_signature(self.normalize)

    def score(self, samples: Sequence[Sample]) -> list[float]:
        scores = []
        for sample in samples:
            output = self._norm(sample.output)
            refs = {self._norm(r) for r in _references(self.name, sample)}
            scores.append(1.0 if output in refs else 0.0)
        return scores


@dataclass(frozen=True)
class Contains(_Normalized):
    """1.0 if any normalized reference occurs in the normalized output, else 0.0.

    With ``word_boundary`` the reference must not be glued to word characters on either side
    ("cat" is not found in "concatenate"). This uses ``(?<!\\w)`` / ``(?!\\w)`` rather than
    ``\\b``: the two agree for references that start and end with a letter or digit, and only
    the look-arounds find references that end in punctuation, such as "C++" or "U.S.".
    """

    word_boundary: bool = False

    name: ClassVar[str] = "contains"
    binary: ClassVar[bool] = True  # 0/1 per example: runs record flips against compare_to
    version: ClassVar[str] = "1"
    higher_is_better: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_type("word_boundary", self.word_boundary, (bool,))

    def signature(self) -> str:
        boundary = "yes" if self.word_boundary else "no"
        return f"{_normalize_signature(self.normalize)}|word_boundary:{boundary}"

    def score(self, samples: Sequence[Sample]) -> list[float]:
        return [1.0 if self._contains_any(sample) else 0.0 for sample in samples]

    def _contains_any(self, sample: Sample) -> bool:
        output = self._norm(sample.output)
        for reference in _references(self.name, sample):
            ref = self._norm(reference)
            if not ref:
                # An empty string is in every output: a silent 1.0 would hide a data bug.
                raise ValueError(
                    f"metric '{self.name}': a reference of example '{sample.id}' is empty "
                    f"after normalization ({reference!r} with {self.signature()})"
                )
            if self.word_boundary:
                if re.search(rf"(?<!\w){re.escape(ref)}(?!\w)", output):
                    return True
            elif ref in output:
                return True
        return False


_REGEX_FLAGS: dict[str, re.RegexFlag] = {
    "IGNORECASE": re.IGNORECASE,
    "MULTILINE": re.MULTILINE,
    "DOTALL": re.DOTALL,
}
_REGEX_MODES = ("search", "fullmatch")


@dataclass(frozen=True)
class RegexMatch:
    """1.0 if the output matches the pattern (or any reference used as a pattern), else 0.0.

    ``pattern`` set: one pattern for every example, compiled (and checked) when the metric is
    built. ``pattern`` null: each example's references are its patterns, compiled on first use.
    ``mode`` "search" finds the pattern anywhere; "fullmatch" needs the whole output to match
    (the output is not stripped: add ``\\s*`` to the pattern to allow trailing whitespace).
    """

    pattern: str | None = None
    mode: str = "search"
    flags: Any = ()

    name: ClassVar[str] = "regex"
    binary: ClassVar[bool] = True  # 0/1 per example: runs record flips against compare_to
    version: ClassVar[str] = "1"
    higher_is_better: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _check_type("pattern", self.pattern, (str, type(None)))
        _check_type("mode", self.mode, (str,))
        if self.mode not in _REGEX_MODES:
            raise ValueError(f"option 'mode' must be one of {', '.join(_REGEX_MODES)}")
        flags = (self.flags,) if isinstance(self.flags, str) else self.flags
        if not isinstance(flags, list | tuple) or not all(isinstance(f, str) for f in flags):
            raise TypeError(f"option 'flags' must be a list of flag names, got {self.flags!r}")
        unknown = [f for f in flags if f not in _REGEX_FLAGS]
        if unknown:
            raise ValueError(f"unknown regex flag {unknown[0]!r}; flags: {', '.join(_REGEX_FLAGS)}")
        object.__setattr__(self, "flags", tuple(f for f in _REGEX_FLAGS if f in flags))
        if self.pattern is not None:
            self._compile(self.pattern)  # a bad fixed pattern is a suite error, found early

    @cached_property
    def _flag_bits(self) -> int:
        bits = 0
        for flag in self.flags:
            bits |= _REGEX_FLAGS[flag]
        return bits

    def _compile(self, pattern: str, sample_id: str | None = None) -> re.Pattern[str]:
        try:
            return re.compile(pattern, self._flag_bits)  # re caches compiled patterns itself
        except re.error as exc:
            # Without a sample id this is an option error; the registry names the metric.
            where = f"metric '{self.name}': example '{sample_id}' has an " if sample_id else ""
            raise ValueError(f"{where}invalid regular expression {pattern!r}: {exc}") from None

    def signature(self) -> str:
        pattern = "<reference>" if self.pattern is None else json.dumps(self.pattern)
        flags = ",".join(self.flags) if self.flags else "none"
        return f"pattern:{pattern}|mode:{self.mode}|flags:{flags}"

    def score(self, samples: Sequence[Sample]) -> list[float]:
        scores = []
        for sample in samples:
            if self.pattern is not None:
                patterns = [self._compile(self.pattern)]
            else:
                patterns = [self._compile(p, sample.id) for p in _references(self.name, sample)]
            matched = any(getattr(p, self.mode)(sample.output) for p in patterns)
            scores.append(1.0 if matched else 0.0)
        return scores


# --------------------------------------------------------------------------------------------
# ROUGE: one class for rouge1/rouge2/rougeL/rougeLsum.

#: A text has rouge-score tokens exactly when its lowercased form holds one of these: its
#: tokenizer lowercases, replaces everything else by spaces and keeps the non-empty pieces.
#: Checked this way, not by tokenizing (rouge-score tokenizes again, with the stemmer).
_ROUGE_TOKEN = re.compile(r"[a-z0-9]")

#: evalkit name -> rouge-score type.
ROUGE_TYPES: dict[str, str] = {
    "rouge1": "rouge1",
    "rouge2": "rouge2",
    "rouge_l": "rougeL",
    "rouge_lsum": "rougeLsum",
}


@dataclass(frozen=True)
class Rouge:
    """ROUGE F-measure (0..1) from Google's rouge-score package.

    ``use_stemmer`` defaults to true (Porter stemming: "running" matches "run"), the setting
    most papers report; rouge-score itself defaults to false. With several references the best
    one counts (``score_multi``). ``split_summaries`` (rouge_lsum only) splits sentences with
    NLTK's punkt data instead of on newlines.

    rouge-score's tokenizer lowercases and keeps only ``a-z0-9``: "café" is "caf", and text in
    other scripts has no tokens at all. An example whose references have no tokens therefore
    gets no score (missing, with the reason), not a silent 0.0, and the run goes on; use chrf
    for such data. References without tokens beside ones with tokens are left out (they could
    only score 0.0 in the best-of).
    """

    name: str
    use_stemmer: bool = True
    split_summaries: bool = False

    version: ClassVar[str] = "1"
    higher_is_better: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _check_type("use_stemmer", self.use_stemmer, (bool,))
        _check_type("split_summaries", self.split_summaries, (bool,))

    @classmethod
    def factory(cls, name: str) -> MetricFactory:
        allowed = ["use_stemmer"] + (["split_summaries"] if name == "rouge_lsum" else [])
        return _factory(name, lambda **options: cls(name=name, **options), allowed)

    @property
    def rouge_type(self) -> str:
        return ROUGE_TYPES[self.name]

    @cached_property
    def _scorer(self) -> Any:
        from rouge_score import rouge_scorer

        return rouge_scorer.RougeScorer(
            [self.rouge_type], use_stemmer=self.use_stemmer, split_summaries=self.split_summaries
        )

    def signature(self) -> str:
        return (
            f"rouge-score {_library_version('rouge-score')}|type:{self.rouge_type}"
            f"|stemmer:{'yes' if self.use_stemmer else 'no'}"
            f"|split_summaries:{'yes' if self.split_summaries else 'no'}|fmeasure|refs:max"
        )

    def score(self, samples: Sequence[Sample]) -> list[float | Score]:
        return [self._score_one(sample) for sample in samples]

    def _score_one(self, sample: Sample) -> float | Score:
        given = _references(self.name, sample)
        references = [r for r in given if _ROUGE_TOKEN.search(r.lower())]
        if not references:
            return Score(None, {"error": (
                f"metric '{self.name}': reference {given[0][:200]!r} of example '{sample.id}' "
                "has no tokens rouge-score can see (it keeps only a-z and 0-9); "
                "use chrf for text in other scripts"
            )})  # fmt: skip
        try:
            scores = self._scorer.score_multi(references, sample.output)
        except LookupError as exc:  # split_summaries without NLTK's sentence-splitter data
            missing = re.search(r"Resource '?([\w.-]+)'? not found", str(exc))
            resource = missing.group(1) if missing else "punkt_tab"
            raise EvalkitError(
                f"metric '{self.name}' with split_summaries needs NLTK's '{resource}' data, "
                f"which is not installed: run `python -m nltk.downloader {resource}`, or set "
                "split_summaries: false and put one sentence per line"
            ) from None
        return float(scores[self.rouge_type].fmeasure)


# --------------------------------------------------------------------------------------------
# Edit similarity.


@dataclass(frozen=True)
class EditSimilarity(_Normalized):
    """1 - normalized Levenshtein distance (rapidfuzz), best over references, 0..1.

    Character-level and script-agnostic, so it works where ROUGE's tokenizer sees nothing.
    """

    name: ClassVar[str] = "edit_similarity"
    version: ClassVar[str] = "1"
    higher_is_better: ClassVar[bool] = True

    def signature(self) -> str:
        return (
            f"rapidfuzz {_library_version('rapidfuzz')}"
            f"|scorer:Levenshtein.normalized_similarity|{_normalize_signature(self.normalize)}"
            "|refs:max"
        )

    def score(self, samples: Sequence[Sample]) -> list[float]:
        """All pairs in one rapidfuzz call (``cpdist``, float64: the same function, the same
        values as calling it pair by pair), so 10,000 examples cost what the library costs."""
        norm = self._normalizer
        if all(len(sample.references) == 1 for sample in samples):  # the usual case
            outputs = [norm(sample.output) for sample in samples]
            return _similarities(outputs, [norm(sample.references[0]) for sample in samples])
        for sample in samples:
            _references(self.name, sample)  # a missing reference is an error, not a 0.0
        outputs = [norm(sample.output) for sample in samples]
        pairs = [(i, norm(ref)) for i, sample in enumerate(samples) for ref in sample.references]
        values = _similarities([outputs[i] for i, _ in pairs], [ref for _, ref in pairs])
        scores = [0.0] * len(samples)
        for (index, _), value in zip(pairs, values, strict=True):
            scores[index] = max(scores[index], value)
        return scores


def _similarities(outputs: list[str], references: list[str]) -> list[float]:
    """``Levenshtein.normalized_similarity`` of each pair, computed by rapidfuzz in one call."""
    if not outputs:
        return []
    import numpy as np
    from rapidfuzz.distance import Levenshtein
    from rapidfuzz.process import cpdist

    similarity = Levenshtein.normalized_similarity
    return list(cpdist(outputs, references, scorer=similarity, dtype=np.float64).tolist())


# --------------------------------------------------------------------------------------------
# Registration (runs once, when the registry first loads the built-ins).

register("exact_match", _factory("exact_match", ExactMatch, ["normalize"]))
register("contains", _factory("contains", Contains, ["normalize", "word_boundary"]))
register("regex", _factory("regex", RegexMatch, ["pattern", "mode", "flags"]))
for _name in ROUGE_TYPES:
    register(_name, Rouge.factory(_name))
register("edit_similarity", _factory("edit_similarity", EditSimilarity, ["normalize"]))
