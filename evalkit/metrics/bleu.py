"""BLEU, chrF and TER computed by sacrebleu: one wrapper parametrized by the sacrebleu class.

Scales, sentence and corpus level, multiple references: see ``metrics.lexical``'s docstring
(these were part of it; kept apart so each module stays one job). sacrebleu is imported on first
use, not at import or construction time, so collecting suites stays fast.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar

from evalkit.metrics.base import MetricFactory, RunFigures, Sample, Scored, register
from evalkit.metrics.lexical import _references
from evalkit.metrics.options import check_option_names as _check_option_names
from evalkit.metrics.options import check_type as _check_type

# --------------------------------------------------------------------------------------------
# sacrebleu: BLEU, chrF, TER through one wrapper parametrized by the sacrebleu class.


@dataclass(frozen=True)
class _SacrebleuKind:
    """What differs between BLEU, chrF and TER as far as evalkit is concerned."""

    name: str
    class_name: str  # the class in sacrebleu.metrics
    higher_is_better: bool
    #: Constructor options a suite may set, with their YAML types. A test checks these against
    #: the sacrebleu constructor so a sacrebleu upgrade cannot silently drift from this table.
    options: Mapping[str, tuple[type, ...]]
    #: Fixed constructor arguments for the per-example (sentence-level) scorer.
    sentence_overrides: Mapping[str, Any] = field(default_factory=dict)
    #: Smallest sensible value of integer options (sacrebleu accepts e.g. max_ngram_order: 0
    #: and then scores everything 0.0).
    minimums: Mapping[str, int] = field(default_factory=dict)


_NONE = type(None)
_SACREBLEU_KINDS: dict[str, _SacrebleuKind] = {
    "bleu": _SacrebleuKind(
        name="bleu",
        class_name="BLEU",
        higher_is_better=True,
        options={
            "lowercase": (bool,),
            "force": (bool,),
            "tokenize": (str, _NONE),
            "smooth_method": (str,),
            "smooth_value": (int, float, _NONE),
            "max_ngram_order": (int,),
            "trg_lang": (str,),
        },
        # As sacrebleu.sentence_bleu; the corpus score keeps sacrebleu.corpus_bleu's default
        # (no effective order). Fixed rather than an option, so the signature, which shows the
        # sentence-level setting, also determines the corpus score.
        sentence_overrides={"effective_order": True},
        minimums={"max_ngram_order": 1},
    ),
    "chrf": _SacrebleuKind(
        name="chrf",
        class_name="CHRF",
        higher_is_better=True,
        options={
            "char_order": (int,),
            "word_order": (int,),
            "beta": (int,),
            "lowercase": (bool,),
            "whitespace": (bool,),
            "eps_smoothing": (bool,),
        },
        minimums={"char_order": 1, "word_order": 0, "beta": 0},
    ),
    "ter": _SacrebleuKind(
        name="ter",
        class_name="TER",
        higher_is_better=False,
        options={
            "normalized": (bool,),
            "no_punct": (bool,),
            "asian_support": (bool,),
            "case_sensitive": (bool,),
        },
    ),
}


@dataclass(frozen=True)
class SacrebleuMetric:
    """BLEU, chrF or TER computed by sacrebleu with sacrebleu's defaults and signature.

    Options are passed to the sacrebleu constructor unchanged (``tokenize``, ``lowercase``,
    ``word_order: 2`` for chrF++ ...). ``score`` gives sentence-level scores, ``aggregate`` the
    corpus score, both on sacrebleu's 0-100 scale.
    """

    kind: _SacrebleuKind = field(compare=False)
    options: tuple[tuple[str, Any], ...] = ()

    version: ClassVar[str] = "1"
    name: str = field(init=False)
    higher_is_better: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", self.kind.name)
        object.__setattr__(self, "higher_is_better", self.kind.higher_is_better)
        for option, value in self.options:
            _check_type(option, value, self.kind.options[option])
            minimum = self.kind.minimums.get(option)
            if minimum is not None and value < minimum:
                raise ValueError(f"option '{option}' must be at least {minimum}, got {value}")

    @classmethod
    def factory(cls, kind: _SacrebleuKind) -> MetricFactory:
        def build(**options: Any) -> SacrebleuMetric:
            if kind.name == "bleu" and "effective_order" in options:
                raise TypeError(
                    "option 'effective_order' is fixed: per-example BLEU uses it (as "
                    "sacrebleu.sentence_bleu does), the corpus BLEU does not (as "
                    "sacrebleu.corpus_bleu does)"
                )
            _check_option_names(options, kind.options)
            return cls(kind=kind, options=tuple(sorted(options.items())))

        build.__name__ = f"create_{kind.name}"
        return build

    def _build(self, *, sentence: bool) -> Any:
        """A fresh sacrebleu metric object; turns sacrebleu's odd exceptions into ValueError."""
        import sacrebleu.metrics

        cls = getattr(sacrebleu.metrics, self.kind.class_name)
        kwargs = dict(self.options)
        if sentence:
            kwargs.update(self.kind.sentence_overrides)
        # sacrebleu reports these as a KeyError and an AssertionError; say what is valid.
        for option, valid in (("tokenize", "TOKENIZERS"), ("smooth_method", "SMOOTH_DEFAULTS")):
            value, choices = kwargs.get(option), list(getattr(cls, valid, ()))
            if value is not None and value not in choices:
                raise ValueError(
                    f"metric '{self.name}': unknown {option} {value!r}; sacrebleu "
                    f"{sacrebleu.__version__} offers: {', '.join(choices)}"
                )
        try:
            return cls(**kwargs)
        except (KeyError, ValueError, TypeError, AssertionError, RuntimeError) as exc:
            # e.g. trg_lang: ja (ja-mecab) without the sacrebleu[ja] extra installed.
            detail = " ".join(str(exc).split()) or type(exc).__name__
            raise ValueError(
                f"metric '{self.name}': sacrebleu rejected options {dict(self.options)}: {detail}"
            ) from None

    @cached_property
    def _sentence_scorer(self) -> Any:
        return self._build(sentence=True)

    @cached_property
    def _corpus_scorer(self) -> Any:
        return self._build(sentence=False)

    @staticmethod
    def _settings_signature(scorer: Any) -> str:
        # sacrebleu only knows the number of references after scoring (get_signature raises
        # before that). Score an empty pair on a throwaway object, then drop nrefs: it describes
        # the data (already in every cache key), not a setting.
        scorer.corpus_score([""], [[""]])
        signature = scorer.get_signature()
        signature.update("nrefs", None)  # format() leaves out None entries
        return str(signature.format())

    @cached_property
    def _signature(self) -> str:
        return self._settings_signature(self._build(sentence=True))

    def signature(self) -> str:
        """sacrebleu's signature of the per-example scorer, without ``nrefs``.

        For BLEU it reads ``eff:yes``; :meth:`corpus_signature` (``eff:no``) belongs beside the
        corpus score. Both follow from the same options, so this one is enough for cache keys.
        """
        return self._signature

    def corpus_signature(self) -> str:
        """sacrebleu's signature of the corpus scorer, to print beside :meth:`aggregate`."""
        return self._settings_signature(self._build(sentence=False))

    def score(self, samples: Sequence[Sample]) -> list[float]:
        scorer = self._sentence_scorer
        return [
            float(scorer.sentence_score(s.output, list(_references(self.name, s))).score)
            for s in samples
        ]

    def aggregate(self, samples: Sequence[Sample]) -> float:
        """The corpus score: n-gram (or edit) statistics summed over examples, then combined."""
        if not samples:
            raise ValueError(f"metric '{self.name}': a corpus score needs at least one example")
        hypotheses = [s.output for s in samples]
        references = [_references(self.name, s) for s in samples]
        # sacrebleu wants reference *streams* of equal length; None marks "no reference here".
        n_streams = max(len(refs) for refs in references)
        streams: list[list[str | None]] = [
            [refs[i] if i < len(refs) else None for refs in references] for i in range(n_streams)
        ]
        return float(self._corpus_scorer.corpus_score(hypotheses, streams).score)

    def summarize(self, scored: Sequence[Scored]) -> RunFigures:
        """The run-level hook: the corpus score over every scored output as the headline."""
        return RunFigures(self.aggregate([s.sample for s in scored]) if scored else None)


# --------------------------------------------------------------------------------------------
# Registration (runs once, when the registry first loads the built-ins).

for _kind in _SACREBLEU_KINDS.values():
    register(_kind.name, SacrebleuMetric.factory(_kind))
