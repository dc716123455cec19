"""``@evalkit.metric``: make a function or a class a metric, registered when its module is
imported (your test module, ``conftest.py``, or a plugin package).

A function gets the output first and, optionally, the reference second; every further
parameter must have a default and becomes an option suites can set::

    @evalkit.metric
    def shouts(output: str, reference: str, threshold: float = 0.5) -> float:
        letters = [c for c in output if c.isalpha()]
        return float(sum(c.isupper() for c in letters) >= threshold * len(letters))

    # suites: metrics: [shouts, {shouts: {threshold: 0.8, as: loud}}]

Several references: the function is called once per reference and the best value counts (the
highest, or the lowest with ``higher_is_better=False``), as the built-in metrics do; name the
second parameter ``references`` to get them all at once instead. Return a number, a bool, None
(no score; say why with ``Score(None, {"error": ...})``) or a ``Score``.

Caching. Scores are cached by name, ``version``, options and a hash of the function's source,
so editing the function recomputes them (code it calls is not hashed: bump ``version`` when
that changes). A class must have ``name``, ``version``, ``higher_is_better``, ``signature()``
and ``score(samples)`` (or ``score_candidate``, see ``CandidateMetric``); its constructor's
keyword arguments are its options. It may also implement the run-level hook
``summarize(scored) -> RunFigures`` (see ``evalkit.metrics.base``), as the built-ins do.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from evalkit.metrics.base import Sample, Score, ScoreValue, register
from evalkit.metrics.options import check_option_names

T = TypeVar("T")
_SAMPLE_PARAMETERS = 2
"""output, then reference(s); the rest are options."""


@overload
def metric(target: T, /) -> T: ...


@overload
def metric(
    target: str | None = None,
    /,
    *,
    name: str | None = None,
    version: str = "1",
    higher_is_better: bool = True,
) -> Callable[[T], T]: ...


def metric(
    target: Any = None,
    /,
    *,
    name: str | None = None,
    version: str = "1",
    higher_is_better: bool = True,
) -> Any:
    """Register a metric: ``@metric``, ``@metric("name")`` or ``@metric(name=..., version=...,
    higher_is_better=...)``. Returns the function or class unchanged (still callable in tests)."""
    if isinstance(target, str):
        name, target = target, None

    def apply(obj: T) -> T:
        if inspect.isclass(obj):
            return _register_class(obj, name)
        if callable(obj):
            return _register_function(obj, name, version, higher_is_better)
        raise TypeError(f"@evalkit.metric decorates a function or a class, not {obj!r}")

    return apply(target) if target is not None else apply


def _register_class(cls: Any, name: str | None) -> Any:
    own = getattr(cls, "name", None)
    if name is not None and own is not None and own != name:
        raise TypeError(f"@evalkit.metric('{name}') on {cls.__qualname__}, whose name is '{own}'")
    if name is not None and own is None:
        cls.name = name
    missing = [
        a for a in ("name", "version", "higher_is_better", "signature") if not hasattr(cls, a)
    ]
    if not (hasattr(cls, "score") or hasattr(cls, "score_candidate")):
        missing.append("score")
    if hasattr(cls, "summarize") and not callable(cls.summarize):
        missing.append("a callable summarize(scored) -> RunFigures")
    if missing:
        raise TypeError(
            f"metric class {cls.__qualname__} lacks {', '.join(missing)}; see "
            "evalkit.metrics.Metric for what a metric needs"
        )
    register(cls.name, cls)
    return cls


@dataclass(frozen=True)
class FunctionSpec:
    """What the decorator learned about a function metric."""

    function: Callable[..., Any]
    name: str
    version: str
    higher_is_better: bool
    reference: str | None
    """Name of the reference parameter: ``references`` gets all of them, anything else one."""
    options: Mapping[str, Any]
    """Option names with their defaults."""
    code_hash: str


def _register_function(
    function: Callable[..., Any], name: str | None, version: str, higher_is_better: bool
) -> Any:
    spec = _inspect(function, name or function.__name__, version, higher_is_better)

    def factory(**options: Any) -> FunctionMetric:
        check_option_names(options, spec.options)
        return FunctionMetric(spec, {**spec.options, **options})

    # The origin the registry compares: re-importing conftest.py may replace its own metric.
    factory.__module__ = function.__module__
    factory.__qualname__ = function.__qualname__
    function.__evalkit_metric__ = factory  # type: ignore[attr-defined]
    register(spec.name, factory)
    return function


def _inspect(
    function: Callable[..., Any], name: str, version: str, higher_is_better: bool
) -> FunctionSpec:
    where = f"@evalkit.metric {function.__qualname__}"
    parameters = list(inspect.signature(function).parameters.values())
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in parameters):
        raise TypeError(f"{where}: *args and **kwargs are not supported; name each option")
    positional = [p for p in parameters if p.kind != p.KEYWORD_ONLY][:_SAMPLE_PARAMETERS]
    if not positional:
        raise TypeError(f"{where}: the function must take the output as its first parameter")
    reference = positional[1].name if len(positional) > 1 else None
    rest = [p for p in parameters if p not in positional]
    no_default = [p.name for p in rest if p.default is p.empty]
    if no_default:
        raise TypeError(
            f"{where}: parameter(s) {', '.join(no_default)} need a default; parameters after "
            "the output and the reference are options set in suites"
        )
    return FunctionSpec(
        function=function,
        name=name,
        version=str(version),
        higher_is_better=higher_is_better,
        reference=reference,
        options={p.name: p.default for p in rest},
        code_hash=_code_hash(function),
    )


def _code_hash(function: Callable[..., Any]) -> str:
    """The source (without it, e.g. in a REPL, the bytecode and constants)."""
    try:
        text = inspect.getsource(function)
    except (OSError, TypeError):
        code = function.__code__
        text = code.co_code.hex() + repr(code.co_consts)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class FunctionMetric:
    """A decorated function with its options, as the engine sees it."""

    def __init__(self, spec: FunctionSpec, options: Mapping[str, Any]) -> None:
        self.spec = spec
        self.options = dict(options)
        self.name = spec.name
        self.version = spec.version
        self.higher_is_better = spec.higher_is_better

    def signature(self) -> str:
        settings = "".join(
            f"|{key}:{json.dumps(value, sort_keys=True, default=str)}"
            for key, value in sorted(self.options.items())
        )
        function = self.spec.function
        return (
            f"fn:{function.__module__}.{function.__qualname__}|code:{self.spec.code_hash}{settings}"
        )

    def score(self, samples: Sequence[Sample]) -> list[ScoreValue]:
        return [self._score_one(sample) for sample in samples]

    def _score_one(self, sample: Sample) -> ScoreValue:
        call = self.spec.function
        if self.spec.reference is None:
            return self._checked(call(sample.output, **self.options))
        if not sample.references:
            raise ValueError(
                f"metric '{self.name}' needs a reference; example '{sample.id}' has none"
            )
        if self.spec.reference == "references":
            return self._checked(call(sample.output, sample.references, **self.options))
        values = [self._checked(call(sample.output, r, **self.options)) for r in sample.references]
        return self._best(values)

    def _best(self, values: list[ScoreValue]) -> ScoreValue:
        numbered = [(v.value if isinstance(v, Score) else v, v) for v in values]
        present = [(number, v) for number, v in numbered if number is not None]
        if not present:
            return values[0]
        choose = max if self.higher_is_better else min
        return choose(present, key=lambda pair: pair[0])[1]

    def _checked(self, value: Any) -> ScoreValue:
        if isinstance(value, bool):
            return float(value)
        if value is None or isinstance(value, Score):
            return value
        if isinstance(value, numbers.Real):  # numpy numbers too
            return float(value)
        raise ValueError(
            f"metric '{self.name}' returned {type(value).__name__} {value!r}; return a number, "
            "a bool, None or evalkit.metrics.Score"
        )
