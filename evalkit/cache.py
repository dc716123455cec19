"""Content-addressed sqlite cache for generations and scores.

Keys are sha256 digests of canonical JSON holding everything that changes an answer (model
fingerprint, decoding parameters, rendered messages; metric name, version and signature), so a
stale entry can never be returned: changing anything simply misses. WAL mode and a generous busy
timeout let several processes (pytest-xdist workers) share one file; each batch is committed as
soon as it is computed, so a crash loses at most the batch in flight.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import time
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

_CHUNK = 500  # sqlite's bound-parameter limit is 999 on old builds
_STORAGE_ERRORS = ("disk is full", "readonly database", "unable to open database",
                   "disk I/O error", "read-only file system")  # fmt: skip


class CacheWriteWarning(UserWarning):
    """The cache could not be written (full or read-only disk); the run went on without it."""


def cache_file(directory: str | Path | None, root: Path) -> Path:
    """The cache file in ``directory``, ``$EVALKIT_CACHE_DIR`` or ``<root>/.evalkit_cache``."""
    chosen = directory or os.environ.get("EVALKIT_CACHE_DIR") or root / ".evalkit_cache"
    return Path(chosen) / "evalkit.sqlite"


def make_key(**parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class Cache:
    """``get_many``/``put_many`` over named namespaces; ``Cache(None)`` is a disabled cache."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._pid = -1
        self.hits: Counter[str] = Counter()
        self.misses: Counter[str] = Counter()

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def _storage_failed(self, exc: sqlite3.Error | OSError) -> None:
        """A full or read-only cache disk stops caching, not the run: the batches stored so far
        stay, later ones are simply not cached, and one warning says why. Any other sqlite
        error (a corrupt file, a lock held past the timeout) is raised."""
        if not isinstance(exc, OSError) and not any(s in str(exc) for s in _STORAGE_ERRORS):
            raise exc
        warnings.warn(
            f"evalkit cache disabled for this run: {exc} ({self.path}); the disk holding "
            f"{self.path.parent if self.path else '?'} is full or read-only. Results already "
            "cached are kept; free space or set --evalkit-cache-dir / EVALKIT_CACHE_DIR",
            CacheWriteWarning,
            stacklevel=3,
        )
        self.close()
        self.path = None

    def _connection(self) -> sqlite3.Connection:
        # A connection must not cross a fork (xdist, multiprocessing): reopen in a new process.
        if self._conn is None or self._pid != os.getpid():
            assert self.path is not None
            self._conn, self._pid = _open(self.path), os.getpid()
        return self._conn

    def get_many(self, namespace: str, keys: Iterable[str]) -> dict[str, Any]:
        wanted = list(dict.fromkeys(keys))
        found: dict[str, Any] = {}
        try:
            self._read(namespace, wanted, found)
        except (sqlite3.OperationalError, OSError) as exc:  # cannot even open it (read-only)
            self._storage_failed(exc)
        self.hits[namespace] += len(found)
        self.misses[namespace] += len(wanted) - len(found)
        return found

    def _read(self, namespace: str, wanted: list[str], found: dict[str, Any]) -> None:
        if self.enabled:
            conn = self._connection()
            for start in range(0, len(wanted), _CHUNK):
                chunk = wanted[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT key, value FROM entries WHERE namespace=? AND key IN ({marks})",
                    (namespace, *chunk),
                )
                found.update((key, json.loads(value)) for key, value in rows)

    def put_many(self, namespace: str, items: Mapping[str, Any]) -> None:
        if not self.enabled or not items:
            return
        conn = self._connection()
        now = time.time()
        rows = [
            (namespace, key, json.dumps(value, ensure_ascii=False), now)
            for key, value in items.items()
        ]
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT OR REPLACE INTO entries (namespace, key, value, created)"
                    " VALUES (?, ?, ?, ?)",
                    rows,
                )
                conn.execute("COMMIT")
            except BaseException:
                # sqlite rolls back by itself on some errors (SQLITE_FULL): a second ROLLBACK
                # would raise "no transaction is active" and hide the real cause.
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise
        except (sqlite3.OperationalError, OSError) as exc:
            self._storage_failed(exc)

    def close(self) -> None:
        if self._conn is not None and self._pid == os.getpid():
            self._conn.close()
        self._conn = None

    def namespace(self, name: str) -> CacheNamespace:
        """This cache restricted to one namespace: what a metric gets for its own entries."""
        if name in RESERVED_NAMESPACES:
            raise ValueError(f"cache namespace '{name}' is evalkit's own; pick another")
        return CacheNamespace(self, name)


RESERVED_NAMESPACES = frozenset({"generation", "score"})


class CacheNamespace:
    """One namespace of a Cache, with the Store interface metrics use (hits and misses are
    counted under the namespace, so run.json reports them)."""

    def __init__(self, cache: Cache, name: str) -> None:
        self.cache = cache
        self.name = name

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        return self.cache.get_many(self.name, keys)

    def put_many(self, items: Mapping[str, Any]) -> None:
        self.cache.put_many(self.name, items)


class MemoryStore:
    """The Store of a metric used outside a run (``evalkit.testing.score``): the process's
    memory, bounded so a long session cannot grow without limit (oldest entries go first)."""

    def __init__(self, max_items: int = 20_000) -> None:
        self.max_items = max_items
        self._items: dict[str, Any] = {}

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        return {key: self._items[key] for key in keys if key in self._items}

    def put_many(self, items: Mapping[str, Any]) -> None:
        self._items.update(items)
        while len(self._items) > self.max_items:
            del self._items[next(iter(self._items))]


def _open(path: Path, wait_s: float = 60.0) -> sqlite3.Connection:
    """Open (and on first use create) the cache file.

    Switching to WAL needs a moment of exclusive access and sqlite reports "database is locked"
    at once instead of waiting when another process holds the file, so the setup is retried.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    while True:
        conn = sqlite3.connect(path, timeout=wait_s, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout={int(wait_s * 1000)}")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS entries ("
                " namespace TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,"
                " created REAL NOT NULL, PRIMARY KEY (namespace, key)) WITHOUT ROWID"
            )
            return conn
        except sqlite3.OperationalError as exc:
            conn.close()
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
