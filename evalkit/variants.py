"""Which templates and shots a candidate's prompt is made of: the suite's ``system`` and
``prompt``, or the candidate's own (inline, or read from ``system_file``/``prompt_file``), plus
its few-shot examples (``shots``, ``train``). Rendering them is evalkit.prompts' job.

Template files and train files are read once, at collection. Their content hashes form the
variant's ``identity``, which joins the candidate's fingerprint: editing a prompt file changes
exactly the cache keys of the candidates that read it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalkit._files import display_path
from evalkit.errors import SpecError
from evalkit.golden import Example
from evalkit.shots import load_train
from evalkit.spec import LoadedSuite

MAX_TEMPLATE_FILE_BYTES = 4_000_000
"""A template file larger than this cannot render within the prompt limit anyway."""


@dataclass(frozen=True)
class Template:
    """A template's text and where it is written, for located errors: the suite file (an inline
    ``prompt``/``system``) or a ``prompt_file``/``system_file``."""

    source: str
    field: str
    """The suite field that holds or names it, e.g. ``candidates.cot.prompt_file``."""
    path: Path
    line: int | None = None
    """Its line in the suite file (inline templates)."""
    in_file: bool = False
    """Read from its own file (``path``), whose lines jinja2's errors count."""

    @property
    def where(self) -> str:
        if self.in_file:
            return f"the '{self.field}' template {display_path(self.path)}"
        return f"the suite's '{self.field}' template ({display_path(self.path)}:{self.line})"


@dataclass(frozen=True)
class PromptVariant:
    """What one candidate is asked: its templates (its own or the suite's) and its shots."""

    system: Template | None
    prompt: Template
    shots: int = 0
    shots_as: str = "turns"
    shots_seed: int = 0
    train: tuple[Example, ...] = ()
    identity: Mapping[str, Any] = field(default_factory=dict)
    """Content hashes of its template files and train file (empty for the suite's own prompt),
    added to the candidate's fingerprint."""

    def templates(self) -> list[Template]:
        return [t for t in (self.system, self.prompt) if t is not None]


def suite_variant(suite: LoadedSuite) -> PromptVariant:
    """The suite's own ``system`` and ``prompt``, as every candidate without overrides uses."""
    spec = suite.spec
    system = None
    if spec.system is not None:
        system = Template(spec.system, "system", suite.path, suite.line_of("system"))
    return PromptVariant(
        system, Template(spec.prompt, "prompt", suite.path, suite.line_of("prompt"))
    )


def candidate_variant(suite: LoadedSuite, name: str) -> PromptVariant:
    """Candidate ``name``'s prompt: its own ``system``/``prompt`` (inline or from a file) where
    it gives them, else the suite's, and its train file. Files are read here, at collection."""
    spec = suite.spec.candidates[name]
    base = suite_variant(suite)
    identity: dict[str, Any] = {}
    system = _own_template(suite, name, "system", identity) or base.system
    prompt = _own_template(suite, name, "prompt", identity) or base.prompt
    train: tuple[Example, ...] = ()
    if spec.train is not None and spec.shots is not None:
        path = suite.resolve(spec.train)
        if not path.is_file():
            raise SpecError(
                f"train file {display_path(path)} not found; 'train' is relative to the suite file",
                path=suite.path,
                line=suite.line_of("candidates", name, "train"),
                field=f"candidates.{name}.train",
            )
        train = tuple(load_train(path))
        if len(train) < spec.shots:
            raise SpecError(
                f"shots: {spec.shots} needs at least {spec.shots} train examples; "
                f"{display_path(path)} has {len(train)}",
                path=suite.path,
                line=suite.line_of("candidates", name, "shots"),
                field=f"candidates.{name}.shots",
            )
        digest = hashlib.sha256("".join(e.content_hash for e in train).encode()).hexdigest()
        identity["shots"] = {"k": spec.shots, "as": spec.shots_as, "seed": spec.shots_seed,
                             "train_sha256": digest[:16]}  # fmt: skip
    return PromptVariant(
        system, prompt, spec.shots or 0, spec.shots_as, spec.shots_seed, train, identity
    )


def _own_template(
    suite: LoadedSuite, name: str, kind: str, identity: dict[str, Any]
) -> Template | None:
    """The candidate's inline ``kind`` template, or the one its ``<kind>_file`` names (whose
    content hash goes into ``identity``); None when it gives neither."""
    spec = suite.spec.candidates[name]
    inline, file_name = getattr(spec, kind), getattr(spec, f"{kind}_file")
    if inline is not None:
        field_path = ("candidates", name, kind)
        return Template(inline, ".".join(field_path), suite.path, suite.line_of(*field_path))
    if file_name is None:
        return None
    field_name = f"candidates.{name}.{kind}_file"
    path = suite.resolve(file_name)
    raw = _template_bytes(path, suite, field_name)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpecError(
            f"{display_path(path)} is not UTF-8 text (byte {exc.start}); save it as UTF-8",
            path=suite.path, line=suite.line_of(*field_name.split(".")), field=field_name,
        ) from None  # fmt: skip
    identity[f"{kind}_file_sha256"] = hashlib.sha256(raw).hexdigest()[:16]
    # Editors end files with a newline; the prompt should not (as YAML's |- does not).
    return Template(text.removesuffix("\n"), field_name, path, in_file=True)


def _template_bytes(path: Path, suite: LoadedSuite, field_name: str) -> bytes:
    where = {"path": suite.path, "line": suite.line_of(*field_name.split(".")),
             "field": field_name}  # fmt: skip
    try:
        if path.stat().st_size > MAX_TEMPLATE_FILE_BYTES:
            raise SpecError(f"{display_path(path)} is larger than a prompt may be", **where)
        return path.read_bytes()
    except FileNotFoundError:
        raise SpecError(
            f"{display_path(path)} not found; the path is relative to the suite file", **where
        ) from None
    except OSError as exc:
        raise SpecError(f"cannot read {display_path(path)} ({exc.strerror})", **where) from None
