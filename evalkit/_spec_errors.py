"""A suite file's validation errors as one SpecError: every problem with its line and field (a
user fixing a file wants them all at once, not one per run), and "did you mean" for a misspelled
option such as ``gates.contains.max_dorp``."""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from evalkit._yaml import LineMap
from evalkit.errors import SpecError


def located(exc: ValidationError, model: type[BaseModel], path: Path, lines: LineMap) -> SpecError:
    """The first problem as the error's place; every other one listed below it."""
    problems = [_problem(error, model, lines) for error in exc.errors(include_url=False)]
    (line, field, message), rest = problems[0], problems[1:]
    if rest:
        listed = "\n".join(
            f"  {_where(p_line, p_field)}: {p_message}" for p_line, p_field, p_message in rest
        )
        more = f"{len(rest)} more problem{'s' if len(rest) > 1 else ''}"
        message = f"{message}\n{more} in this file:\n{listed}"
    return SpecError(message, path=path, line=line, field=field)


def _where(line: int | None, field: str | None) -> str:
    place = f"line {line}" if line else "top level"
    return f"{place} field '{field}'" if field else place


def _problem(
    error: Mapping[str, Any], model: type[BaseModel], lines: LineMap
) -> tuple[int | None, str | None, str]:
    loc = tuple(part for part in error["loc"] if not str(part).startswith("function-"))
    field = ".".join(str(part) for part in loc) or None
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = f"unknown option '{loc[-1]}'"
        close = _closest(str(loc[-1]), _fields_at(model, loc[:-1]))
        message += f"; did you mean '{close}'?" if close else ""
        message += " See `evalkit schema` for the allowed fields"
    elif error["type"] == "missing":
        message = "this required field is missing"
    return lines.line_of(loc), field, message


def _closest(typo: str, fields: dict[str, str]) -> str | None:
    """The allowed option most like ``typo`` (by its own name), if any is close enough."""
    scored = [
        (difflib.SequenceMatcher(None, typo, leaf).ratio(), -len(shown), shown)
        for shown, leaf in fields.items()
    ]
    best = max(scored, default=None)
    return best[2] if best is not None and best[0] >= 0.6 else None


def _fields_at(model: type[BaseModel], loc: Sequence[Any]) -> dict[str, str]:
    """The options allowed where ``loc`` points, and those one level down (``temprature``
    on a candidate means ``generation.temperature``), as {shown name: own name}; empty when
    ``loc`` cannot be followed."""
    kinds: list[Any] = [model]
    for part in loc:
        kinds = [step for kind in kinds for step in _step(kind, part)]
    fields: dict[str, str] = {}
    for kind in kinds:
        for name in _model_fields(kind):
            for inner in _step(kind, name):
                fields.update({f"{name}.{sub}": sub for sub in _model_fields(inner)})
    for kind in kinds:
        fields.update({name: name for name in _model_fields(kind)})
    return fields


def _step(kind: Any, part: Any) -> list[Any]:
    """What the value at ``part`` inside a value of type ``kind`` may be."""
    options = _unwrap(kind)
    found: list[Any] = []
    for option in options:
        origin = typing.get_origin(option)
        if isinstance(option, type) and issubclass(option, BaseModel):
            info = option.model_fields.get(str(part))
            if info is not None:
                found.append(info.annotation)
        elif origin in (dict, Mapping) and typing.get_args(option):
            found.append(typing.get_args(option)[-1])
        elif origin in (list, tuple, Sequence) and isinstance(part, int):
            found.extend(a for a in typing.get_args(option) if a is not Ellipsis)
    return found


def _unwrap(kind: Any) -> list[Any]:
    """The members of a Union/Optional/Annotated type, recursively."""
    origin = typing.get_origin(kind)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(kind)[0])
    if origin in (typing.Union, types.UnionType):
        return [member for arg in typing.get_args(kind) for member in _unwrap(arg)]
    return [kind]


def _model_fields(kind: Any) -> list[str]:
    names: list[str] = []
    for option in _unwrap(kind):
        if isinstance(option, type) and issubclass(option, BaseModel):
            for name, info in option.model_fields.items():
                names.append(info.alias or name)
    return names
