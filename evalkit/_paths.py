"""Paths as users read them."""

from __future__ import annotations

from pathlib import Path


def display_path(path: str | Path) -> str:
    """The path relative to the working directory when it lies below it (shorter to read)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
