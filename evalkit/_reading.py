"""Reading untrusted line-based files (golden JSONL/CSV, replay JSONL) defensively.

Each line is read with a size bound (a 100 MB line is never held whole), decoded as UTF-8 with
the first line's byte-order mark skipped, and parsed as JSON without NaN/Infinity; every failure
is one SpecError naming ``file:line`` and what to do.
"""

from __future__ import annotations

import codecs
import itertools
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from evalkit.errors import SpecError

LIMIT_ENV = "EVALKIT_MAX_EXAMPLE_BYTES"
DEFAULT_LIMIT = 1_000_000
MAX_JSON_DEPTH = 100


def max_example_bytes() -> int:
    """Largest line or example accepted, in bytes (``EVALKIT_MAX_EXAMPLE_BYTES``, default 1 MB)."""
    raw = os.environ.get(LIMIT_ENV, "").strip()
    return int(raw) if raw.isdigit() and int(raw) > 0 else DEFAULT_LIMIT


def numbered_lines(handle: IO[bytes], path: Path) -> Iterator[tuple[int, str]]:
    """Decoded lines with their numbers; a line over the size limit is never read whole."""
    limit = max_example_bytes()
    for number in itertools.count(1):
        raw = handle.readline(limit + 2)
        if not raw:
            return
        if len(raw.rstrip(b"\r\n")) > limit:
            raise SpecError(
                f"line longer than {limit:,} bytes; split the example or raise {LIMIT_ENV}",
                path=path,
                line=number,
            )
        if number == 1:
            raw = raw.removeprefix(codecs.BOM_UTF8)
        try:
            yield number, raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SpecError(
                f"not UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); save the "
                "file as UTF-8",
                path=path,
                line=number,
            ) from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number; write it as a string")


def json_line(text: str, path: Path, number: int, shape: str, *, column: bool = True) -> Any:
    """One JSON value from one line; ``shape`` says what the line should hold."""
    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        where = f" at column {exc.colno}" if column else ""
        raise SpecError(
            f"not valid JSON ({exc.msg}{where}); {shape}", path=path, line=number
        ) from None
    except ValueError as exc:  # NaN/Infinity, or a number over 4,300 digits
        problem = str(exc)
        if "digits" in problem:
            problem = "a number longer than 4,300 digits; write it as a string"
        raise SpecError(problem, path=path, line=number) from None
    except RecursionError:
        raise SpecError(
            f"nested deeper than Python can read; flatten it to under {MAX_JSON_DEPTH} levels",
            path=path,
            line=number,
        ) from None


def text_problem(value: Any) -> str | None:
    """Why a string cannot be stored or sent to a model (a lone surrogate such as "\\ud800"
    parses in JSON but cannot be encoded), or None."""
    if not isinstance(value, str):
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"holds an invalid character (lone surrogate U+{ord(value[exc.start]):04X})"
    return None
