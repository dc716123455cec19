"""The metric contract and the registry every metric (built-in or plugin) goes through.

A metric is a small object with a ``name``, a ``version`` (bump it when its code changes what it
returns, so cached scores are recomputed), a ``signature`` of its settings, and a batched
``score(samples)`` returning one value per sample. Corpus-level metrics (BLEU, chrF, TER)
additionally implement ``aggregate`` so the run reports the corpus score beside the mean.

A value is a float, ``None`` (no score for this sample), or a ``Score`` that carries a detail
dict beside the value: a judge's rationale, the spread of several samples, a cost, or the
``error`` that explains a missing value. Missing values are never zeros.

Metrics that need the model under test itself (perplexity of the reference, latency, memory)
implement ``CandidateMetric.score_candidate``; the engine calls it while the candidate is loaded
and caches the values under the candidate's fingerprint (unless ``cacheable`` is False).
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from evalkit.candidates.base import Candidate, Message
from evalkit.errors import SpecError
from evalkit.spec import GenerationSpec


@dataclass(frozen=True)
class Sample:
    """What a metric sees for one example of one candidate."""

    id: str
    output: str
    references: tuple[str, ...]
    prompt: str = ""
    """The last (user) message as rendered from the suite's prompt template."""
    fields: Mapping[str, Any] = field(default_factory=dict)
    messages: tuple[Message, ...] = ()
    """The full request (system + user), before the candidate's chat template."""
    baseline_output: str | None = None
    """The ``compare_to`` candidate's output for this example, if any. A metric that reads it
    (a pairwise judge) sets ``uses_baseline = True`` so its cached scores are keyed by it."""

    @property
    def reference(self) -> str:
        """The first reference (most metrics need exactly one)."""
        return self.references[0] if self.references else ""


@dataclass(frozen=True)
class Score:
    """A value with what explains it. ``value`` None means "no score" and ``detail["error"]``
    should say why; such values are reported as missing and never cached."""

    value: float | None
    detail: Mapping[str, Any] = field(default_factory=dict)


ScoreValue = float | Score | None


@runtime_checkable
class Metric(Protocol):
    name: str
    version: str
    higher_is_better: bool

    def signature(self) -> str:
        """Every setting that changes the value, e.g. ``nrefs:1|case:mixed|tok:13a``."""
        ...

    def score(self, samples: Sequence[Sample]) -> Sequence[ScoreValue]:
        """One value per sample, in order."""
        ...


@runtime_checkable
class CorpusMetric(Metric, Protocol):
    def aggregate(self, samples: Sequence[Sample]) -> float:
        """The corpus-level score (not the mean of sentence scores)."""
        ...


@runtime_checkable
class CandidateMetric(Protocol):
    """A metric computed with the candidate itself rather than from its output alone.

    ``score_candidate`` gets the candidate (still loaded if generation loaded it) and the
    decoding parameters of the run. Such a metric cannot re-score an accepted baseline's outputs,
    so regression gates against an accepted baseline use the per-example values stored in it.
    ``cacheable`` False (latency, memory) means: measured afresh in every run.
    """

    name: str
    version: str
    higher_is_better: bool
    cacheable: bool

    def signature(self) -> str: ...

    def score_candidate(
        self, samples: Sequence[Sample], candidate: Candidate, params: GenerationSpec
    ) -> Sequence[ScoreValue]: ...


@runtime_checkable
class SummarizingMetric(Protocol):
    """A metric with run-level figures of its own beside the mean (a judge's summed cost, a
    pairwise judge's win/tie/loss rates); the engine stores them in ``Aggregate.extra``."""

    def summarize(self, details: Sequence[Mapping[str, Any]]) -> dict[str, float | None]:
        """From the per-example details (cached ones included) of the scored examples."""
        ...


AnyMetric = Metric | CandidateMetric
MetricFactory = Callable[..., AnyMetric]

_REGISTRY: dict[str, MetricFactory] = {}


def register(name: str, factory: MetricFactory, *, replace: bool = False) -> None:
    """Make ``name`` usable in suite files; ``factory(**options)`` builds the metric."""
    if name in _REGISTRY and not replace and _REGISTRY[name] is not factory:
        raise ValueError(f"metric '{name}' is already registered")
    _REGISTRY[name] = factory


def registered() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def create(
    name: str, options: Mapping[str, Any] | None = None, *, base_dir: Path | None = None
) -> AnyMetric:
    """Build a metric by registered name; unknown names and bad options raise SpecError.

    A factory that takes a ``base_dir`` keyword gets the suite file's folder, so the paths in
    its options (a judge's rubric file or model folder) are relative to the suite file."""
    _load_builtins()
    factory = _REGISTRY.get(name)
    if factory is None:
        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise SpecError(
            f"unknown metric '{name}'.{hint} Registered metrics: {', '.join(sorted(_REGISTRY))}"
        )
    kwargs = dict(options or {})
    if base_dir is not None and "base_dir" in inspect.signature(factory).parameters:
        kwargs["base_dir"] = base_dir
    try:
        return factory(**kwargs)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"bad options for metric '{name}': {exc}") from None


def split_score(value: ScoreValue) -> tuple[float | None, dict[str, Any]]:
    """A metric's value as (number or None, detail); NaN and infinities count as missing."""
    if isinstance(value, Score):
        number, detail = value.value, dict(value.detail)
    else:
        number, detail = value, {}
    if number is None:
        return None, detail
    number = float(number)
    if number != number or number in (float("inf"), float("-inf")):
        return None, {**detail, "error": detail.get("error", f"the metric returned {number}")}
    return number, detail


def _load_builtins() -> None:
    # Imported here, not at module top: the built-in modules import this one to register.
    from evalkit.metrics import judge, lexical  # noqa: F401
