"""Full and read-only disks: one clear message, finished work kept, the previous run.json and
report intact (and never shown as this run's), files created with the umask's mode.

A real small tmpfs is used where the test can mount one (root in CI); otherwise ENOSPC/EROFS
are simulated in the writer, and the same outcomes are asserted."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from suitefiles import write_jsonl, write_suite

from evalkit._files import write_atomic
from evalkit.cache import Cache, CacheWriteWarning
from evalkit.errors import DiskError
from evalkit.results import load_run


@contextlib.contextmanager
def small_tmpfs(folder: Path, size: str = "4m") -> Iterator[bool]:
    """Mount a tmpfs at ``folder``; yields False (and mounts nothing) where mounting fails."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = (
        os.geteuid() == 0
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
            capture_output=True,
        ).returncode == 0
    )  # fmt: skip
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path) -> None:
    """Write zeros until the disk holding ``folder`` is full."""
    with (folder / "filler").open("wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    with contextlib.suppress(OSError):  # the page cache may still hold a partial block
        os.sync()


def fail_writes_under(monkeypatch: pytest.MonkeyPatch, folder: Path, code: int) -> None:
    """Simulate a full or read-only disk: fsync of any file below ``folder`` fails."""
    real = os.fsync

    def fsync(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(folder)):
            raise OSError(code, os.strerror(code))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


SUITE = {
    "suite": "s", "dataset": "../golden/g.jsonl", "prompt": "{{ q }}",
    "candidates": {"old": {"replay": "../golden/r.jsonl"}}, "metrics": ["exact_match"],
    "gates": {"exact_match": {"min": 0.5}},
}  # fmt: skip


def write_project(root: Path, outputs: list[str]) -> None:
    write_jsonl(
        root / "golden" / "g.jsonl",
        [{"id": f"e{i}", "q": f"q{i}", "reference": "yes"} for i in range(4)],
    )
    write_jsonl(
        root / "golden" / "r.jsonl",
        [{"id": f"e{i}", "output": out} for i, out in enumerate(outputs)],
    )
    write_suite(root / "suites" / "s.yaml", SUITE)  # fmt: skip


@pytest.mark.parametrize("how", ["tmpfs", "simulated"])
def test_full_report_disk_keeps_the_run_and_retires_the_stale_report(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    reports = pytester.path / "reports"
    fallback = pytester.path / "kept"
    monkeypatch.setenv("EVALKIT_FALLBACK_DIR", str(fallback))
    with small_tmpfs(reports) if how == "tmpfs" else contextlib.nullcontext(False) as mounted:
        write_project(pytester.path, ["yes"] * 4)
        first = pytester.runpytest("suites/", "-p", "no:xdist")
        first.assert_outcomes(passed=1)
        previous = (reports / "s" / "run.json").read_bytes()
        assert (reports / "index.html").is_file()

        write_project(pytester.path, ["no"] * 4)  # this run's verdict differs: FAILED
        if mounted:
            fill(reports)
        else:  # no tmpfs here (not root, or no mount permission): the writer fails as it would
            fail_writes_under(monkeypatch, reports, errno.ENOSPC)
        second = pytester.runpytest("suites/", "-p", "no:xdist")
        out = second.stdout.str()
        second.assert_outcomes(failed=1)
        assert "Traceback" not in out and 'File "' not in out, out
        assert "the disk holding reports/s is full: reports/s/run.json was not written" in out, out
        assert (reports / "s" / "run.json").read_bytes() == previous  # previous run intact
        assert not (reports / "index.html").exists()  # the old PASSED page is not "current"
        assert (reports / "index.previous.html").is_file()
        assert not [p for p in (reports / "s").iterdir() if p.name.endswith(".tmp")]
        (kept,) = fallback.glob("evalkit-*-s.run.json")
        assert f"saved to {kept}" in out.replace("\n", "")
        result = load_run(kept)
        assert [e.output for e in result.candidates["old"].examples] == ["no"] * 4
        assert not result.passed


def test_read_only_disk_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from evalkit.results import save_run

    monkeypatch.setenv("EVALKIT_FALLBACK_DIR", str(tmp_path / "kept"))
    run = load_run(_a_run_json(tmp_path))
    reports = tmp_path / "ro-reports"
    with small_tmpfs(reports, "1m") as mounted:
        if mounted:
            subprocess.run(["mount", "-o", "remount,ro", str(reports)], check=True)
        else:
            fail_writes_under(monkeypatch, reports, errno.EROFS)
        with pytest.raises(DiskError) as info:
            save_run(run, reports)
    assert "ro-reports/qa is on a read-only disk" in str(info.value)
    assert "saved to" in str(info.value)


def _a_run_json(tmp_path: Path) -> Path:
    from reportdata import make_run

    from evalkit.results import save_run

    return save_run(make_run(5, ("base",)), tmp_path / "first")


def test_cache_full_disk_keeps_finished_batches_and_names_the_cause(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "c.sqlite")
    cache.put_many("generation", {"a": {"output": "x"}})
    conn = cache._connection()
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    # sqlite's own SQLITE_FULL, exactly what a full disk gives: the file may not grow.
    conn.execute(f"PRAGMA max_page_count={pages}")
    with pytest.warns(CacheWriteWarning) as caught:
        cache.put_many("generation", {uuid.uuid4().hex: "y" * 20_000 for _ in range(50)})
    message = str(caught[0].message)
    assert "database or disk is full" in message and "cannot rollback" not in message
    assert str(tmp_path) in message
    assert not cache.enabled  # the run goes on without caching
    cache.put_many("generation", {"b": 1})  # no error, nothing written
    reopened = Cache(tmp_path / "c.sqlite")
    assert reopened.get_many("generation", ["a", "b"]) == {"a": {"output": "x"}}
    # The masking bug itself: without the fix, ROLLBACK after sqlite's own rollback raised.
    raw = sqlite3.connect(tmp_path / "c.sqlite", isolation_level=None)
    raw.execute(f"PRAGMA max_page_count={pages}")
    raw.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError, match="full"):
        raw.executemany("INSERT INTO entries VALUES (?, ?, ?, 0)",
                        [("n", uuid.uuid4().hex, "z" * 20_000) for _ in range(50)])  # fmt: skip
    assert not raw.in_transaction  # sqlite rolled back by itself
    with pytest.raises(sqlite3.OperationalError, match="cannot rollback"):
        raw.execute("ROLLBACK")


def test_cache_on_a_read_only_disk_warns_and_runs_without_it(tmp_path: Path) -> None:
    folder = tmp_path / "ro-cache"
    with small_tmpfs(folder, "1m") as mounted:
        if mounted:
            subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
            cache = Cache(folder / "sub" / "c.sqlite")
        else:
            (folder / "file").write_text("")  # a file where the folder should be: cannot open
            cache = Cache(folder / "file" / "c.sqlite")
        with pytest.warns(CacheWriteWarning, match="cache disabled"):
            assert cache.get_many("generation", ["k"]) == {}
        cache.put_many("generation", {"k": 1})  # silently skipped now
        assert cache.misses["generation"] == 1


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_follow_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        with open(tmp_path / "plain.txt", "w") as handle:
            handle.write("x")
        write_atomic(tmp_path / "atomic.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "atomic.txt").stat().st_mode == (tmp_path / "plain.txt").stat().st_mode
    # Rewriting keeps the mode the file has, as open() would.
    os.chmod(tmp_path / "atomic.txt", 0o640)
    write_atomic(tmp_path / "atomic.txt", json.dumps({"again": True}))
    assert (tmp_path / "atomic.txt").stat().st_mode & 0o777 == 0o640
