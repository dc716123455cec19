"""Candidate fields beyond the model: its own prompt (templates, template files, few-shot
examples), how its answer is read from the output, and the user's own pipeline (``call:``).

``CandidateSpec`` (evalkit.spec) extends ``VariantFields``; kept apart, like the retrieval block,
so the suite spec stays readable. Self-contained: pydantic and the standard library only.
"""

from __future__ import annotations

import keyword
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
CALL_TARGET = re.compile(rf"^{IDENTIFIER}(\.{IDENTIFIER})*:{IDENTIFIER}$")
MAX_PATTERN_CHARS = 1_000

PROMPT_FIELDS = ("system", "prompt", "system_file", "prompt_file", "shots", "train", "shots_as",
                 "shots_seed")  # fmt: skip
"""Fields that shape a model's prompt; candidates without a model (replay, call) have none."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CallSpec(_Strict):
    """The user's own pipeline as a candidate: a function of this project's code."""

    target: str = Field(description="module.path:function, a module of this project")
    concurrency: int = Field(4, ge=1, le=1024, description="calls in flight at once")
    timeout_s: float = Field(
        60.0, gt=0, description="per call; a late call is that example's error"
    )

    @field_validator("target")
    @classmethod
    def _dotted_identifiers(cls, target: str) -> str:
        parts = re.split(r"[.:]", target)
        if not CALL_TARGET.match(target) or any(keyword.iskeyword(p) for p in parts):
            raise ValueError(
                f"'{target}' is not module.path:function; call: names a function of this "
                "project's code by its dotted module path and name, e.g. myapp.pipeline:answer"
            )
        return target


def _call_entry(raw: Any) -> Any:
    return {"target": raw} if isinstance(raw, str) else raw


CallField = Annotated[
    CallSpec | None,
    BeforeValidator(_call_entry),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": CALL_TARGET.pattern},
                CallSpec.model_json_schema(),
                {"type": "null"},
            ],
            "description": "the user's own pipeline: module.path:function (a module of this "
            "project), or {target, concurrency, timeout_s}",
        }
    ),
]


def _version_text(raw: Any) -> Any:
    return str(raw) if isinstance(raw, int | float) and not isinstance(raw, bool) else raw


Version = Annotated[str | None, BeforeValidator(_version_text)]
"""``version: 2`` and ``version: "2"`` are the same version."""


class AnswerSpec(_Strict):
    """Which part of the output the metrics score (chain-of-thought: the final answer); run.json
    keeps the whole output."""

    regex: str = Field(max_length=MAX_PATTERN_CHARS, description="Python regular expression")
    group: int | str | None = Field(
        None, description="group to take (number or name); default: 1 if the pattern has groups"
    )
    select: Literal["first", "last"] = Field("first", description="which match, when several")

    @model_validator(mode="after")
    def _compiles(self) -> AnswerSpec:
        try:
            pattern = re.compile(self.regex)
        except re.error as exc:
            raise ValueError(f"'{self.regex}' is not a valid regular expression ({exc})") from None
        group = self.group
        if isinstance(group, int) and not 0 <= group <= pattern.groups:
            raise ValueError(f"group {group}: the pattern has {pattern.groups} group(s)")
        if isinstance(group, str) and group not in pattern.groupindex:
            raise ValueError(f"group '{group}' is not a named group of the pattern")
        return self

    def extract(self, output: str) -> str:
        """The selected match's group, stripped; "" when nothing matches (a wrong answer for the
        metrics, not a missing score)."""
        pattern = re.compile(self.regex)  # re caches compiled patterns itself
        matches = list(pattern.finditer(output))
        if not matches:
            return ""
        match = matches[0] if self.select == "first" else matches[-1]
        group = self.group if self.group is not None else (1 if pattern.groups else 0)
        return (match.group(group) or "").strip()


class VariantFields(_Strict):
    """What a candidate is asked and how its answer is read, beyond the suite's defaults."""

    system: str | None = Field(None, description="this candidate's system template (jinja2)")
    prompt: str | None = Field(None, description="this candidate's prompt template (jinja2)")
    system_file: str | None = Field(
        None, description="system template read from this file (relative to the suite)"
    )
    prompt_file: str | None = Field(
        None, description="prompt template read from this file (relative to the suite)"
    )
    shots: int | None = Field(
        None, ge=1, le=64, description="few-shot examples drawn from 'train' for each example"
    )
    train: str | None = Field(
        None, description="golden file the shots are drawn from; shares no id or input with the "
        "test set",
    )  # fmt: skip
    shots_as: Literal["turns", "inline"] = Field(
        "turns",
        description="turns: each shot a user and an assistant message; inline: the shots as "
        "text before the prompt (or where the template puts {{ shots }})",
    )
    shots_seed: int = Field(0, description="seed of the per-example draw of shots")
    answer: AnswerSpec | None = Field(
        None, description="score only the part of the output this regex extracts"
    )
    call: CallField = None
    version: Version = Field(
        None, description="call candidates: bump it to invalidate their cached answers"
    )

    @model_validator(mode="after")
    def _consistent_prompt(self) -> VariantFields:
        for inline, from_file in (("system", "system_file"), ("prompt", "prompt_file")):
            if getattr(self, inline) is not None and getattr(self, from_file) is not None:
                raise ValueError(f"give '{inline}' or '{from_file}', not both")
        if (self.shots is None) != (self.train is None):
            raise ValueError("'shots' and 'train' go together: shots: 3, train: <golden file>")
        loose = {"shots_as", "shots_seed"} & self.model_fields_set
        if loose and self.shots is None:
            raise ValueError(f"{', '.join(sorted(loose))} needs 'shots' and 'train'")
        if self.version is not None and self.call is None:
            raise ValueError("'version' versions a 'call' candidate's code; this one has none")
        return self

    def prompt_fields_set(self) -> list[str]:
        """The prompt-shaping fields this spec sets."""
        return [f for f in PROMPT_FIELDS if f in self.model_fields_set]


def check_source(spec: Any) -> None:
    """A candidate spec names exactly one of ``model``, ``replay`` or ``call``, and only a model
    candidate has a prompt, retrieval or an API to call (raises ValueError)."""
    sources = [f for f in ("model", "replay", "call") if getattr(spec, f) is not None]
    if len(sources) != 1:
        raise ValueError("give exactly one of 'model', 'replay' or 'call'")
    if sources != ["model"]:
        model_only = [f for f in ("retrieval", "api") if getattr(spec, f) is not None]
        if wrong := [*spec.prompt_fields_set(), *model_only]:
            raise ValueError(
                f"{', '.join(wrong)}: only a model candidate has a prompt, retrieval or an API; "
                f"this is a {sources[0]} candidate"
            )
