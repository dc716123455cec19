"""One registry of candidate kinds: which spec selects a kind, how it is built, what it accepts.

A kind is picked by ``engine: <name>`` when the spec names one, else by the first kind whose
``selects`` says yes (``replay:``, then ``api:`` or a bare priced ``provider/name``), else by
the default kind (transformers). A new backend is one module plus one ``register_kind`` call
here; its ``build`` imports the module lazily, so collecting a suite imports no backend
(torch, transformers and litellm stay out of a cached run).

Selecting must stay cheap: it runs at collection, for every candidate of every suite.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from evalkit.candidates.api_models import LOCAL_ONLY_OPTIONS
from evalkit.candidates.vllm_options import UNSUPPORTED as VLLM_REFUSALS
from evalkit.errors import CandidateError, SpecError
from evalkit.spec import CandidateSpec, GenerationSpec, LoadedSuite

if TYPE_CHECKING:
    from evalkit.candidates.base import Candidate

Selects = Callable[[CandidateSpec, Path], bool]
Build = Callable[[str, CandidateSpec, Path], "Candidate"]
Resources = Callable[[Mapping[str, CandidateSpec], Path, Path], AbstractContextManager[object]]


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
    refusals: Mapping[str, str] = field(default_factory=dict)
    """Why an option other kinds accept does not apply to this kind, and what to do instead
    (added to the error message); options not named here get the plain message."""
    run_resources: Resources | None = None
    """What this kind's candidates of one run share, held for the whole run (e.g. servers):
    ``run_resources(specs of this kind by name, suite folder, log folder)``; imports its
    backend inside."""


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
        why = "; ".join(kind.refusals[option] for option in wrong if option in kind.refusals)
        raise CandidateError(
            f"candidate '{name}': {', '.join(wrong)} do not apply to {kind.name} candidates"
            + (f": {why}" if why else "")
        )
    return kind


@contextlib.contextmanager
def run_resources(
    specs: Mapping[str, CandidateSpec], base_dir: Path, log_dir: Path
) -> Iterator[None]:
    """What the candidates of one run share, per kind (``CandidateKind.run_resources``), held
    until the run ends, also on errors and Ctrl-C; logs under ``log_dir/<engine or kind>``.
    Nothing for runs whose kinds share nothing."""
    grouped: dict[str, tuple[CandidateKind, dict[str, CandidateSpec]]] = {}
    for name, spec in specs.items():
        try:
            kind = kind_for(spec, base_dir)
        except CandidateError:  # it fails with its own message when it runs
            continue
        if kind.run_resources is not None:
            grouped.setdefault(kind.name, (kind, {}))[1][name] = spec
    with contextlib.ExitStack() as stack:
        for kind, kind_specs in grouped.values():
            assert kind.run_resources is not None
            folder = log_dir / (kind.engine or kind.name)
            stack.enter_context(kind.run_resources(kind_specs, base_dir, folder))
        yield


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


def _speculative_checks_equivalence(spec: CandidateSpec, params: GenerationSpec) -> bool:
    # Speculative decoding verifies every proposal (transformers' assisted generation and
    # vLLM's alike), so greedy outputs must be the target's own.
    return spec.speculative is not None and params.greedy


def _build_vllm(name: str, spec: CandidateSpec, base_dir: Path) -> Candidate:
    from evalkit.candidates.vllm import VllmCandidate

    return VllmCandidate(name, spec, base_dir)


def _vllm_servers(
    specs: Mapping[str, CandidateSpec], base_dir: Path, log_dir: Path
) -> AbstractContextManager[object]:
    from evalkit.candidates.vllm import run_servers

    return run_servers(specs, base_dir, log_dir)


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
        checks_equivalence=_speculative_checks_equivalence,
    ),
    default=True,
)
# engine: vllm (candidates/vllm.py): the same local options on a managed vLLM server, except
# those vLLM decides itself or cannot serve with the same meaning.
register_kind(
    CandidateKind(
        "vLLM",
        _build_vllm,
        engine="vllm",
        options=(LOCAL_MODEL_OPTIONS - {"device", "merge"}) | {"engine_options"},
        checks_equivalence=_speculative_checks_equivalence,
        refusals=VLLM_REFUSALS,
        run_resources=_vllm_servers,
    )
)
