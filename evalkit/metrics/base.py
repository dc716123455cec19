"""The metric contract and the registry every metric (built-in or plugin) goes through.

A metric is a small object with a ``name``, a ``version`` (bump it when its code changes what it
returns, so cached scores are recomputed), a ``signature`` of its settings, and a batched
``score(samples)`` returning one value per sample. Corpus-level metrics (BLEU, chrF, TER)
additionally implement ``aggregate`` so the run reports the corpus score beside the mean.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from evalkit.errors import SpecError


@dataclass(frozen=True)
class Sample:
    """What a metric sees for one example of one candidate."""

    id: str
    output: str
    references: tuple[str, ...]
    prompt: str = ""
    fields: Mapping[str, Any] = field(default_factory=dict)

    @property
    def reference(self) -> str:
        """The first reference (most metrics need exactly one)."""
        return self.references[0] if self.references else ""


@runtime_checkable
class Metric(Protocol):
    name: str
    version: str
    higher_is_better: bool

    def signature(self) -> str:
        """Every setting that changes the value, e.g. ``nrefs:1|case:mixed|tok:13a``."""
        ...

    def score(self, samples: Sequence[Sample]) -> list[float]:
        """One score per sample, in order."""
        ...


@runtime_checkable
class CorpusMetric(Metric, Protocol):
    def aggregate(self, samples: Sequence[Sample]) -> float:
        """The corpus-level score (not the mean of sentence scores)."""
        ...


MetricFactory = Callable[..., Metric]

_REGISTRY: dict[str, MetricFactory] = {}


def register(name: str, factory: MetricFactory, *, replace: bool = False) -> None:
    """Make ``name`` usable in suite files; ``factory(**options)`` builds the metric."""
    if name in _REGISTRY and not replace and _REGISTRY[name] is not factory:
        raise ValueError(f"metric '{name}' is already registered")
    _REGISTRY[name] = factory


def registered() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def create(name: str, options: Mapping[str, Any] | None = None) -> Metric:
    """Build a metric by registered name; unknown names and bad options raise SpecError."""
    _load_builtins()
    factory = _REGISTRY.get(name)
    if factory is None:
        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise SpecError(
            f"unknown metric '{name}'.{hint} Registered metrics: {', '.join(sorted(_REGISTRY))}"
        )
    try:
        return factory(**dict(options or {}))
    except (TypeError, ValueError) as exc:
        raise SpecError(f"bad options for metric '{name}': {exc}") from None


def _load_builtins() -> None:
    # Imported here, not at module top: the built-in modules import this one to register.
    from evalkit.metrics import lexical  # noqa: F401
