"""The metric contract and the registry every metric (built-in or plugin) goes through.

A metric is a small object with a ``name``, a ``version`` (bump it when its code changes what it
returns, so cached scores are recomputed), a ``signature`` of its settings, and a batched
``score(samples)`` returning one value per sample.

A value is a float, ``None`` (no score for this sample), or a ``Score`` that carries a detail
dict beside the value: a judge's rationale, the spread of several samples, a cost, or the
``error`` that explains a missing value. Missing values are never zeros.

Metrics that need the model under test itself (perplexity of the reference, latency, memory)
implement ``CandidateMetric.score_candidate``; the engine calls it while the candidate is loaded
and caches the values under the candidate's fingerprint (unless ``cacheable`` is False).

A ``RunMetric`` (throughput, peak memory) gives one figure for a candidate's whole run instead
of one per example; it is measured every run and never cached.

Run-level figures. Any metric (a built-in or a plugin class) may implement one hook,
``summarize(scored) -> RunFigures``: from every scored example (its ``Sample``, value and detail,
cached ones included, in example order) it returns a headline figure (``Aggregate.corpus``: the
corpus BLEU, the token-weighted perplexity) and named extra figures (``Aggregate.extra``: p50/p95,
a judge's summed cost, win rates). The runner calls it through ``run_figures`` and nothing else,
so figures computed from details stay right on fully cached runs.

A metric *group* (``latency``) is a name that expands into several columns; register it with
``register(name, factory, group=True)``.

Optional attributes the engine honours (read with ``getattr``, so plain metrics need none):

- ``needs_output = False``: the metric never reads ``Sample.output`` (perplexity). Its cached
  values are not keyed by the output, it scores examples whose generation failed, and a suite
  whose metrics all say so generates nothing.
- ``uses_baseline = True``: the metric reads ``Sample.baseline_output`` (pairwise judges).
- ``uses_decoding = False`` (candidate metrics): the value does not depend on the decoding
  settings, so candidates with the same model share cached values (perplexity).
- ``store_namespace`` + ``use_store(store)``: the metric keeps its own intermediate results
  (sentence embeddings) in the run's cache, in that namespace (see ``UsesStore``).
- ``binary = True``: values are 0/1; the run records flips against ``compare_to``.

Registration has one route: ``register(name, factory)`` (``group=True`` for a group), which the
``@evalkit.metric`` decorator also calls. Built-ins use it exactly as plugins do: each built-in
module calls ``register`` at import, like a user's ``conftest.py``; the registry imports those
modules on first use (they are light: their libraries load on first score). Plugins reach it
three ways: the decorator (at import, e.g. in ``conftest.py``), the pytest hook
``pytest_evalkit_register_metrics(register)``, and the entry point group ``evalkit.metrics``
(``name = "package.module:factory"``), discovered on first use of the registry and imported only
when a suite uses that name.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from evalkit.candidates.base import Candidate, Message, RetrievedChunk
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
    retrieved: tuple[RetrievedChunk, ...] = ()
    """The chunks a RAG candidate retrieved for this example, best first (cached scores are
    keyed by them); empty for other candidates."""
    n_prompt_tokens: int | None = None
    """Tokens of the prompt the model saw, when the candidate reported them."""

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


@dataclass(frozen=True)
class Scored:
    """One scored example as ``summarize`` sees it: what the metric scored, and what it gave
    (from the cache or fresh; ``value`` None with ``detail["error"]`` when it gave no score)."""

    sample: Sample
    value: float | None
    detail: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, sample: Sample, value: ScoreValue) -> Scored:
        """From a value as ``score`` returns it (NaN counts as missing, as in a run)."""
        number, detail = split_score(value)
        return cls(sample, number, detail)


@dataclass(frozen=True)
class RunFigures:
    """A metric's run-level figures: ``corpus`` the headline beside the mean (``Aggregate.corpus``,
    e.g. corpus BLEU, token-weighted perplexity), ``extra`` the named secondary ones
    (``Aggregate.extra``, e.g. p50/p95, word perplexity, a judge's summed cost)."""

    corpus: float | None = None
    extra: Mapping[str, float | None] = field(default_factory=dict)


@runtime_checkable
class Summarizing(Protocol):
    """The one run-level hook: any metric may implement it (see the module docstring)."""

    def summarize(self, scored: Sequence[Scored]) -> RunFigures:
        """From every scored example of the run, in example order (may be empty)."""
        ...


def run_figures(metric: Any, scored: Sequence[Scored]) -> RunFigures:
    """What the runner stores beside the mean: the metric's ``summarize``, or nothing."""
    summarize = getattr(metric, "summarize", None)
    if summarize is None:
        return RunFigures()
    figures = summarize(list(scored))
    if not isinstance(figures, RunFigures):
        raise ValueError(
            f"summarize() returned {type(figures).__name__}; return "
            "evalkit.metrics.RunFigures(corpus, extra)"
        )
    return figures


@runtime_checkable
class CorpusMetric(Metric, Summarizing, Protocol):
    """A metric with a corpus score (BLEU, chrF, TER): ``summarize`` reports it as the headline;
    ``aggregate`` computes it directly from samples (the runner calls only ``summarize``)."""

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


@dataclass(frozen=True)
class BaseRef:
    """The ``compare_to`` candidate for metrics that compare models (KL): ``open()`` makes an
    unloaded one (the metric closes it); ``is_self``: the base itself is being scored."""

    name: str
    fingerprint_hash: str
    open: Callable[[], Candidate]
    is_self: bool = False


@runtime_checkable
class BaseComparingMetric(Protocol):
    """A candidate metric that compares with the ``compare_to`` model (``uses_base_model``): the
    runner calls ``score_against`` and keys cached values by both models' fingerprints."""

    def score_against(
        self, samples: Sequence[Sample], candidate: Candidate, base: BaseRef, params: GenerationSpec
    ) -> Sequence[ScoreValue]: ...


@dataclass(frozen=True)
class RunValue:
    """A run-level figure. ``value`` None means not measured and ``detail["error"]`` says why;
    ``extra`` holds secondary figures, ``detail`` how it was measured."""

    value: float | None
    extra: Mapping[str, float | None] = field(default_factory=dict)
    detail: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class RunMetric(Protocol):
    """One figure for a candidate's whole run (tokens/s of a batched run, peak memory), measured
    with the loaded candidate in every run. Gates compare it as one number: with one value per
    run there is nothing to resample, so no significance test is possible."""

    name: str
    version: str
    higher_is_better: bool

    def signature(self) -> str: ...

    def score_run(
        self, samples: Sequence[Sample], candidate: Candidate, params: GenerationSpec
    ) -> RunValue: ...


AnyMetric = Metric | CandidateMetric | RunMetric
MetricFactory = Callable[..., AnyMetric]
GroupFactory = Callable[..., dict[str, AnyMetric]]
"""``factory(**options)`` -> {column: metric}, for a name that expands into several columns."""


class Store(Protocol):
    """A namespaced key-value store: the run's cache, or memory when there is none."""

    def get_many(self, keys: Sequence[str]) -> dict[str, Any]: ...

    def put_many(self, items: Mapping[str, Any]) -> None: ...


@runtime_checkable
class UsesStore(Protocol):
    """A metric that keeps intermediate results (embeddings) across candidates and runs.

    The engine calls ``use_store`` once per run with the run's cache restricted to
    ``store_namespace``; without that call the metric keeps them in memory. Values must be
    JSON-serializable and keyed by everything that changes them (model fingerprint, text).
    """

    store_namespace: str

    def use_store(self, store: Store) -> None: ...


BUILTIN_MODULES = (
    "lexical", "bleu", "semantic", "perplexity", "fidelity", "latency", "judge", "rag",
)  # fmt: skip
ENTRY_POINT_GROUP = "evalkit.metrics"

_REGISTRY: dict[str, MetricFactory] = {}
_GROUPS: dict[str, GroupFactory] = {}
"""The registry ``register`` fills: metric names, and group names (``group=True``)."""
_PLUGINS: dict[str, metadata.EntryPoint] | None = None
"""Entry points of installed plugin packages, by metric name; discovered on first use of the
registry, imported only when a suite uses the name (a broken plugin then fails only there)."""


def origin(factory: Any) -> str:
    """Where a factory was defined, ``module.qualname``: re-importing a conftest.py defines a
    new object with the same origin, which may replace the old one; anything else may not."""
    module = getattr(factory, "__module__", None) or "?"
    return f"{module}.{getattr(factory, '__qualname__', repr(factory))}"


def register(
    name: str,
    factory: MetricFactory | GroupFactory,
    *,
    group: bool = False,
    replace: bool = False,
) -> None:
    """Make ``name`` usable in suite files; ``factory(**options)`` builds the metric, or with
    ``group=True`` returns ``{column: metric}`` for a name that expands into several columns.

    Built-ins and plugins alike register here. Registering a name again with a factory from the
    same place (a reloaded conftest.py) replaces it; a factory from anywhere else raises
    ValueError naming both, so a plugin can never silently shadow a built-in or another plugin's
    metric, and a metric and a group never share a name.
    """
    if not callable(factory):
        raise ValueError(f"metric '{name}': the factory {factory!r} is not callable")
    existing = _REGISTRY.get(name) or _GROUPS.get(name)
    if not replace and _conflicts(existing, factory):
        raise ValueError(
            f"metric '{name}' is already registered by {origin(existing)}; "
            f"{origin(factory)} cannot register it too: choose another name"
        )
    # One name, one kind: re-registering as the other kind moves it.
    _REGISTRY.pop(name, None)
    _GROUPS.pop(name, None)
    if group:
        _GROUPS[name] = factory  # type: ignore[assignment]
    else:
        _REGISTRY[name] = factory  # type: ignore[assignment]


def _conflicts(existing: Any, factory: Any) -> bool:
    return existing is not None and existing is not factory and origin(existing) != origin(factory)


def registered() -> list[str]:
    """Every usable metric name: built-ins, registered plugins and installed plugin packages."""
    _load_builtins()
    return sorted({*_REGISTRY, *_plugins()})


def registered_groups() -> list[str]:
    _load_builtins()
    return sorted(_GROUPS)


def create_columns(
    name: str,
    options: Mapping[str, Any] | None = None,
    alias: str | None = None,
    *,
    base_dir: Path | None = None,
) -> dict[str, AnyMetric]:
    """The columns one entry of a suite's metrics list makes: one metric, or a group's."""
    _load_builtins()
    group = _GROUPS.get(name)
    if group is None:
        return {alias or name: create(name, options, base_dir=base_dir)}
    if alias is not None:
        raise SpecError(
            f"'{name}' is a group of metrics ({', '.join(group())}); 'as:' cannot rename it, "
            "list its metrics one by one to rename them"
        )
    try:
        return group(**dict(options or {}))
    except (TypeError, ValueError) as exc:
        raise SpecError(f"bad options for metric group '{name}': {exc}") from None


def create(
    name: str, options: Mapping[str, Any] | None = None, *, base_dir: Path | None = None
) -> AnyMetric:
    """Build a metric by registered name; unknown names and bad options raise SpecError.

    A factory that takes a ``base_dir`` keyword gets the suite file's folder, so the paths in
    its options (a judge's rubric file or model folder) are relative to the suite file."""
    _load_builtins()
    factory = _REGISTRY.get(name)
    if name in _plugins():
        factory = _load_plugin(name, factory)
    if factory is None:
        known = sorted({*registered(), *_GROUPS})
        close = difflib.get_close_matches(name, known, n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise SpecError(f"unknown metric '{name}'.{hint} Registered metrics: {', '.join(known)}")
    kwargs = dict(options or {})
    if base_dir is not None and "base_dir" in inspect.signature(factory).parameters:
        kwargs["base_dir"] = base_dir
    try:
        return factory(**kwargs)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"bad options for metric '{name}': {exc}") from None


def _plugins() -> dict[str, metadata.EntryPoint]:
    global _PLUGINS
    if _PLUGINS is None:
        _PLUGINS = {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    return _PLUGINS


def _load_plugin(name: str, registered_factory: MetricFactory | None) -> MetricFactory:
    """Import a plugin package's metric; any failure names the package and the entry point."""
    entry = _plugins()[name]
    package = entry.dist.name if entry.dist is not None else "an installed package"
    where = f"plugin package '{package}' (entry point {ENTRY_POINT_GROUP}: {name} = {entry.value})"
    try:
        loaded = entry.load()
    except Exception as exc:  # an ImportError, or anything the plugin's import raises
        raise SpecError(
            f"metric '{name}' comes from {where}, which failed to load: "
            f"{type(exc).__name__}: {exc}. Fix or reinstall '{package}', or uninstall it"
        ) from exc
    # A function decorated with @evalkit.metric carries its factory; classes are factories.
    factory = getattr(loaded, "__evalkit_metric__", loaded)
    if not callable(factory):
        raise SpecError(f"metric '{name}' from {where} is {factory!r}, not a metric factory")
    if _conflicts(registered_factory, factory):
        raise SpecError(
            f"metric '{name}' is defined twice: by {origin(registered_factory)} and by "
            f"{where}; uninstall one or rename its metric"
        )
    _REGISTRY[name] = factory
    return factory


def reset_plugins() -> None:
    """Forget discovered entry points (after installing a plugin in the same process; tests)."""
    global _PLUGINS
    _PLUGINS = None


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
    # The built-in modules register with ``register`` at import, as a user's conftest.py does;
    # importing them here (not at module top: they import this module) is all that is special.
    # Each is light to import (its libraries are imported on first use).
    import importlib

    for module in BUILTIN_MODULES:
        importlib.import_module(f"evalkit.metrics.{module}")
