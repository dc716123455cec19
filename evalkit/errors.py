"""Errors a user can cause. Each renders as one line naming where and what to do."""

from __future__ import annotations

import errno
from pathlib import Path

from evalkit._files import display_path

UPDATE_COMMAND = "pytest --evalkit-update-baseline"
"""How a user accepts baselines, for messages; `evalkit run` passes its own command."""


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


class DiskError(EvalkitError):
    """A file could not be written: its disk is full or read-only, or permission is missing."""


def disk_error(exc: OSError, path: Path, *, extra: str = "") -> DiskError:
    """One line naming the folder and the cause, instead of the writer's traceback."""
    folder = display_path(path.parent)
    causes = {
        errno.ENOSPC: f"the disk holding {folder} is full",
        errno.EDQUOT: f"the disk quota for {folder} is used up",
        errno.EROFS: f"{folder} is on a read-only disk",
        errno.EACCES: f"no permission to write in {folder}",
        errno.EPERM: f"no permission to write in {folder}",
    }
    cause = causes.get(exc.errno or 0, f"cannot write {display_path(path)} ({exc.strerror or exc})")
    return DiskError(f"{cause}: {display_path(path)} was not written{extra}")


class CandidateError(EvalkitError):
    """A candidate model could not be resolved, loaded or run."""
