"""evalkit's own cache folder: models built once (atomically, across processes) and memoized
file hashes. The lowest layer of candidates/: models.py and drafts.py both build on it."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from evalkit._files import write_atomic

try:  # POSIX only; without it conversions are still atomic, just not serialized.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

EMBEDDED_NAME = "smollm2-135m-instruct"
MARKER = ".evalkit-complete.json"
"""Written last inside a converted folder: a folder without it is an interrupted conversion."""

_SKIP_NAMES = {"README.md", "readme.md", ".gitattributes", "LICENSE", "LICENSE.txt", MARKER}
_SKIP_SUFFIXES = (".lock", ".md", ".tmp", ".incomplete")
_TRAINING_ONLY = {
    "optimizer.pt",
    "scheduler.pt",
    "trainer_state.json",
    "training_args.bin",
}


def evalkit_home() -> Path:
    """evalkit's cache folder: ``$EVALKIT_HOME``, else ``$XDG_CACHE_HOME/evalkit``, else
    ``~/.cache/evalkit``; converted models and file hashes live here, shared across runs."""
    if os.environ.get("EVALKIT_HOME"):
        return Path(os.environ["EVALKIT_HOME"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "evalkit"
    return Path.home() / ".cache" / "evalkit"


def materialize_once(target: Path, build: Callable[[Path], None], source: dict) -> Path:
    """Run ``build(tmp)`` once and move ``tmp`` to ``target``, safe across processes.

    A file lock makes concurrent callers wait for the first and then reuse its result; building
    in a temporary sibling folder, writing the marker last and renaming means an interrupted
    build never leaves a folder that looks complete. ``source`` is stored in the marker; a
    different ``source`` (e.g. a new package version) triggers a rebuild.
    """
    if _is_complete(target, source):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(evalkit_home() / "locks" / f"{target.name}.lock"):
        if _is_complete(target, source):  # another process built it while we waited
            return target
        _remove_leftovers(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            build(tmp)
            (tmp / MARKER).write_text(json.dumps(source, sort_keys=True))
            tmp.chmod(0o755)  # mkdtemp makes it private; the result is an ordinary cache folder
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _is_complete(target: Path, source: dict) -> bool:
    try:
        return json.loads((target / MARKER).read_text()) == source
    except (OSError, ValueError):
        return False


def _remove_leftovers(target: Path) -> None:
    """Temp folders of interrupted builds; safe to delete because we hold the lock."""
    for stale in target.parent.glob(f".{target.name}.*"):
        shutil.rmtree(stale, ignore_errors=True)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        if fcntl is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def fingerprint_files(folder: Path) -> str:
    """sha256 over the names and contents of the files in ``folder`` that decide the answers.

    Every top-level regular file counts (weights, config, generation config, tokenizer, chat
    template) except docs, locks and training leftovers, because transformers reads only the top
    level. Each file's digest is memoized by (path, size, mtime) so a 500 MB model costs
    a few stat calls after its first run.
    """
    total = hashlib.sha256()
    for file in sorted(p for p in Path(folder).iterdir() if _defines_answers(p)):
        total.update(f"{file.name}\0{_file_digest(file)}\n".encode())
    return total.hexdigest()


def _defines_answers(path: Path) -> bool:
    name = path.name
    if name.startswith(".") or name in _SKIP_NAMES or name in _TRAINING_ONLY:
        return False
    return not name.endswith(_SKIP_SUFFIXES) and path.is_file()


def _file_digest(file: Path) -> str:
    stat = file.stat()
    key = f"{file.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}"
    memo = evalkit_home() / "hashes" / hashlib.sha1(key.encode()).hexdigest()
    with contextlib.suppress(OSError):
        cached = memo.read_text().strip()
        if re.fullmatch(r"[0-9a-f]{64}", cached):
            return cached
    with open(file, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    # Best effort: a read-only cache folder only costs hashing again next time.
    with contextlib.suppress(OSError):
        write_atomic(memo, digest)
    return digest
