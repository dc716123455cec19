"""Under pytest-xdist each worker gets cores / workers torch threads, so workers do not fight
for the cores (OpenMP threads spin); a user's own OMP_NUM_THREADS stands."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from evalkit import _threads

REPO = Path(__file__).resolve().parents[1]

PROBE = """
def test_threads(worker_id):
    import torch

    with open(f"threads-{worker_id}.txt", "w") as handle:
        handle.write(str(torch.get_num_threads()))

def test_other():
    pass
"""


def _reported(pytester: pytest.Pytester) -> list[int]:
    return [int(p.read_text()) for p in sorted(pytester.path.glob("threads-*.txt"))]


def test_each_xdist_worker_gets_its_share_of_the_cores(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the subprocess imports this checkout
    pytester.makepyfile(test_probe=PROBE)
    result = pytester.runpytest_subprocess("-n", "2", "-p", "xdist")
    result.assert_outcomes(passed=2)
    assert _reported(pytester) == [max(1, len(os.sched_getaffinity(0)) // 2)]


def test_the_users_omp_num_threads_stands(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # torch caps its threads at the cores, so the user's choice is all of them: more than the
    # share of one of two workers (on any machine with two cores or more).
    cores = len(os.sched_getaffinity(0))
    monkeypatch.setenv("OMP_NUM_THREADS", str(cores))
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    pytester.makepyfile(test_probe=PROBE)
    result = pytester.runpytest_subprocess("-n", "2", "-p", "xdist")
    result.assert_outcomes(passed=2)
    assert _reported(pytester) == [cores]


class FakeTorch:
    def __init__(self) -> None:
        self.threads: list[int] = []

    def set_num_threads(self, n: int) -> None:
        self.threads.append(n)


@pytest.mark.parametrize(("cores", "workers", "expected"), [(8, 2, 4), (8, 3, 2), (2, 4, 1)])
def test_share_of_the_cores(
    monkeypatch: pytest.MonkeyPatch, cores: int, workers: int, expected: int
) -> None:
    """Before torch is imported (the environment) and after (torch itself)."""
    monkeypatch.setattr(_threads, "available_cores", lambda: cores)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    fake = FakeTorch()
    monkeypatch.setitem(sys.modules, "torch", fake)
    assert _threads.share_cores(workers) == expected
    assert os.environ["OMP_NUM_THREADS"] == os.environ["MKL_NUM_THREADS"] == str(expected)
    assert fake.threads == [expected]
    assert _threads.share_cores(1) is None  # one process: nothing to share
