"""The sqlite cache: round trips, key sensitivity, a disabled cache, and concurrent writers."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

from evalkit.cache import Cache, make_key


def test_round_trip_and_counters(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "c.sqlite")
    cache.put_many("generation", {"k1": {"output": "Paris"}, "k2": {"output": "Rome"}})
    assert cache.get_many("generation", ["k1", "k3"]) == {"k1": {"output": "Paris"}}
    assert cache.get_many("score", ["k1"]) == {}  # namespaces are separate
    assert cache.hits["generation"] == 1 and cache.misses["generation"] == 1
    reopened = Cache(tmp_path / "c.sqlite")
    assert reopened.get_many("generation", ["k2"]) == {"k2": {"output": "Rome"}}
    mode = sqlite3.connect(tmp_path / "c.sqlite").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_keys_change_with_any_part() -> None:
    base = make_key(model="m", decoding={"t": 0}, messages=[("user", "hi")])
    assert base == make_key(messages=[("user", "hi")], decoding={"t": 0}, model="m")
    assert base != make_key(model="m2", decoding={"t": 0}, messages=[("user", "hi")])
    assert base != make_key(model="m", decoding={"t": 1}, messages=[("user", "hi")])
    assert base != make_key(model="m", decoding={"t": 0}, messages=[("user", "hi!")])


def test_disabled_cache_stores_nothing(tmp_path: Path) -> None:
    cache = Cache(None)
    cache.put_many("generation", {"k": 1})
    assert cache.get_many("generation", ["k"]) == {}
    assert not list(tmp_path.iterdir())


def _writer(path: str, worker: int) -> None:
    cache = Cache(Path(path))
    for batch in range(20):
        cache.put_many("score", {f"{worker}-{batch}-{i}": i for i in range(50)})


def test_concurrent_processes_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    Cache(path).put_many("score", {"seed": 0})
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(path), w)) for w in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    keys = [f"{w}-{b}-{i}" for w in range(4) for b in range(20) for i in range(50)]
    found = Cache(path).get_many("score", keys)
    assert len(found) == 4 * 20 * 50
    assert found["3-19-49"] == 49
