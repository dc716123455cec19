"""Small file and environment helpers shared by every layer (they import nothing of evalkit)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def display_path(path: str | Path) -> str:
    """The path relative to the working directory when it lies below it (shorter to read)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _new_file_mode(path: Path) -> int:
    """The mode a plain ``open(path, "w")`` would give: the existing file's, or 0o666 less the
    umask (mkstemp alone makes 0600 files that teammates and CI artifact uploaders cannot read)."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        pass
    try:  # Linux: read the umask without changing it (os.umask would race other threads)
        status = Path("/proc/self/status").read_text()
        mask = int(
            next(line.split()[1] for line in status.splitlines() if line.startswith("Umask")), 8
        )
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so readers see the old file or the new one, never a mix; a
    failure (a full or read-only disk) leaves the old file as it was and no temporary file, and
    its OSError names ``path`` (not the temporary file)."""
    try:
        _write_atomic(path, text)
    except OSError as exc:
        exc.filename = str(path)
        raise


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _new_file_mode(path))
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def keep_elsewhere(text: str, name: str) -> Path | None:
    """Save ``text`` outside the directory that failed (``$EVALKIT_FALLBACK_DIR`` or the system
    temp folder), so finished work survives a full report disk; None if that fails too."""
    folder = Path(os.environ.get("EVALKIT_FALLBACK_DIR") or tempfile.gettempdir())
    path = folder / f"evalkit-{os.getpid()}-{name}"
    try:
        write_atomic(path, text)
    except OSError:
        return None
    return path


def retire_stale(paths: list[Path]) -> list[Path]:
    """Rename report pages a failed write leaves behind to ``*.previous.*``: they show an older
    run, and must not be taken for this one. Content is kept; a rename needs no free space."""
    moved = []
    for path in paths:
        if path.is_file():
            target = path.with_name(f"{path.stem}.previous{path.suffix}")
            try:
                os.replace(path, target)
            except OSError:
                continue
            moved.append(target)
    return moved


def env_flag(name: str, default: bool = False) -> bool:
    """An on/off environment variable: 1/true/yes/on or 0/false/no/off, else ``default``."""
    value = os.environ.get(name, "").strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    return default


def progress_enabled() -> bool:
    """Progress bars are on unless ``EVALKIT_PROGRESS=0`` (CI logs, tests)."""
    return env_flag("EVALKIT_PROGRESS", default=True)
