"""Errors a user can cause. Each renders as one line naming where and what to do."""

from __future__ import annotations

from pathlib import Path

from evalkit._files import display_path


class EvalkitError(Exception):
    """An error with a message meant for the user; pytest shows it without a traceback."""


class SpecError(EvalkitError):
    """A problem in a suite or golden file, located by file, line and field."""

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = display_path(path) if path is not None else None
        self.line = line
        self.field = field
        self.detail = message
        where = ""
        if self.path:
            where = self.path + (f":{line}" if line else "")
        if field:
            where = f"{where} field '{field}'" if where else f"field '{field}'"
        super().__init__(f"{where}: {message}" if where else message)


class CandidateError(EvalkitError):
    """A candidate model could not be resolved, loaded or run."""
