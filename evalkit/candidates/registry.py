"""One registry of candidate kinds: which spec selects a kind, how it is built, what it accepts.

A kind is picked by ``engine: <name>`` when the spec names one, else by the first kind whose
``selects`` says yes (``replay:``, then ``api:`` or a bare priced ``provider/name``), else by
the default kind (transformers). A new backend is one module plus one ``register_kind`` call
here; its ``build`` imports the module lazily, so collecting a suite imports no backend
(torch, transformers and litellm stay out of a cached run).

Selecting must stay cheap: it runs at collection, for every candidate of every suite.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from evalkit.candidates.api_models import LOCAL_ONLY_OPTIONS
from evalkit.errors import CandidateError, SpecError
from evalkit.spec import CandidateSpec, GenerationSpec, LoadedSuite

if TYPE_CHECKING:
    from evalkit.candidates.base import Candidate

Selects = Callable[[CandidateSpec, Path], bool]
Build = Callable[[str, CandidateSpec, Path], "Candidate"]


@dataclass(frozen=True)
class CandidateKind:
    name: str
    """Shown in messages: "device do not apply to <name> candidates"."""
    build: Build
    """``build(name, spec, base_dir)``; imports its backend inside."""
    engine: str | None = None
    """The ``engine:`` value that picks this kind explicitly."""
    selects: Selects | None = None
    """Picks this kind for specs without ``engine:`` (checked in registration order)."""
    options: frozenset[str] = frozenset()
    """Kind-specific spec fields this kind accepts; a field another kind registers and this one
    does not is an error for candidates of this kind."""
    checks_equivalence: Callable[[CandidateSpec, GenerationSpec], bool] | None = None
    """Whether such a candidate's outputs must equal another's under these settings (the
    implicit ``lossless`` gate); the candidate says which through ``Verifiable``."""


_KINDS: list[CandidateKind] = []
_DEFAULT: list[CandidateKind] = []


def register_kind(kind: CandidateKind, *, default: bool = False) -> None:
    """Add ``kind`` (replacing one of the same name); ``default`` makes it the fallback."""
    unregister_kind(kind.name)
    if default:
        _DEFAULT[:] = [kind]
    else:
        _KINDS.append(kind)


def unregister_kind(name: str) -> None:
    _KINDS[:] = [k for k in _KINDS if k.name != name]
    _DEFAULT[:] = [k for k in _DEFAULT if k.name != name]


def kinds() -> list[CandidateKind]:
    """Every registered kind, the default last."""
    return [*_KINDS, *_DEFAULT]


def engines() -> list[str]:
    return sorted(k.engine for k in kinds() if k.engine is not None)


def kind_for(spec: CandidateSpec, base_dir: Path) -> CandidateKind:
    """The kind that builds ``spec``; raises CandidateError for an unknown ``engine``."""
    if spec.engine is not None:
        for kind in kinds():
            if kind.engine == spec.engine:
                return kind
        raise CandidateError(
            f"unknown engine '{spec.engine}'; registered engines: {', '.join(engines())}"
        )
    for kind in _KINDS:
        if kind.selects is not None and kind.selects(spec, base_dir):
            return kind
    if not _DEFAULT:  # pragma: no cover - the built-ins register one
        raise CandidateError("no default candidate kind is registered")
    return _DEFAULT[0]


def misplaced_options(spec: CandidateSpec, kind: CandidateKind) -> list[str]:
    """Fields set in ``spec`` that some kind accepts but ``kind`` does not."""
    known = frozenset().union(*(k.options for k in kinds()))
    return sorted((known - kind.options) & spec.model_fields_set)


def checked_kind(name: str, spec: CandidateSpec, base_dir: Path) -> CandidateKind:
    """``kind_for`` plus the option check, as one CandidateError naming the candidate."""
    try:
        kind = kind_for(spec, base_dir)
    except CandidateError as exc:
        raise CandidateError(f"candidate '{name}': {exc}") from None
    if wrong := misplaced_options(spec, kind):
        raise CandidateError(
            f"candidate '{name}': {', '.join(wrong)} do not apply to {kind.name} candidates"
        )
    return kind


def check_suite_candidates(loaded: LoadedSuite) -> None:
    """Collection-time check of every candidate's kind and options, located in the file."""
    base_dir = loaded.path.parent
    for name, spec in loaded.spec.candidates.items():
        try:
            checked_kind(name, spec, base_dir)
        except CandidateError as exc:
            raise SpecError(
                exc.args[0] if exc.args else str(exc),
                path=loaded.path,
                line=loaded.line_of("candidates", name),
                field=f"candidates.{name}",
            ) from None


def checks_equivalence(loaded: LoadedSuite, name: str) -> bool:
    """Whether candidate ``name`` gets the implicit equivalence gate (decided from the spec)."""
    spec = loaded.spec.candidates[name]
    kind = kind_for(spec, loaded.path.parent)
    params = loaded.spec.generation.merged(spec.generation)
    return kind.checks_equivalence is not None and kind.checks_equivalence(spec, params)


# -- the built-in kinds ---------------------------------------------------------------------


def _build_replay(name: str, spec: CandidateSpec, base_dir: Path) -> Candidate:
    from evalkit.candidates.replay import ReplayCandidate

    assert spec.replay is not None
    return ReplayCandidate(name, (base_dir / spec.replay).resolve())


def _is_api(spec: CandidateSpec, base_dir: Path) -> bool:
    from evalkit.candidates.api_models import is_bare_api_model

    return spec.api is not None or is_bare_api_model(spec, base_dir)


def _build_api(name: str, spec: CandidateSpec, base_dir: Path) -> Candidate:
    from evalkit.candidates.api import ApiCandidate

    return ApiCandidate(name, spec)


def _build_call(name: str, spec: CandidateSpec, base_dir: Path) -> Candidate:
    from evalkit.candidates.call import CallCandidate
    from evalkit.candidates.call_target import resolve_target

    assert spec.call is not None
    target = resolve_target(spec.call.target, base_dir)
    return CallCandidate(
        name,
        target,
        version=spec.version,
        concurrency=spec.call.concurrency,
        timeout_s=spec.call.timeout_s,
    )


def _build_hf(name: str, spec: CandidateSpec, base_dir: Path) -> Candidate:
    from evalkit.candidates.hf import HFCandidate

    return HFCandidate(name, spec, base_dir)


def _hf_checks_equivalence(spec: CandidateSpec, params: GenerationSpec) -> bool:
    # Assisted generation verifies every proposal, so greedy outputs must be the target's own.
    return spec.speculative is not None and params.greedy


LOCAL_MODEL_OPTIONS = frozenset(LOCAL_ONLY_OPTIONS)
"""What the transformers engine accepts beyond ``model`` and ``generation`` (the same options
make a bare ``provider/name`` a local model rather than an API one)."""

register_kind(CandidateKind("replay", _build_replay, selects=lambda s, _: s.replay is not None))
register_kind(CandidateKind("API", _build_api, selects=_is_api, options=frozenset({"api"})))
register_kind(
    CandidateKind(
        "call",
        _build_call,
        selects=lambda s, _: s.call is not None,
        options=frozenset({"call", "version"}),
    )
)
register_kind(
    CandidateKind(
        "transformers",
        _build_hf,
        engine="transformers",
        options=LOCAL_MODEL_OPTIONS,
        checks_equivalence=_hf_checks_equivalence,
    ),
    default=True,
)
