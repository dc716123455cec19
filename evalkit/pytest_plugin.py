"""pytest plugin: suite files become test items, one per (suite, candidate, gate).

Collection validates each suite completely (spec, golden data, templates, metrics) without
importing torch, so a broken suite fails in milliseconds with one clear message. A suite runs once,
on its first selected item, for the candidates that the selected items need; the other items read
its verdicts. With pytest-xdist, ``-n N --dist loadfile`` keeps each suite file on one worker
(spread over several, each worker would run the suite itself: correct, but slower).

This file declares the options; every hook forwards, in one line, to the session object of
evalkit/pytest_session.py, which does the work (and is itself registered as the one listener to
test reports).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from evalkit.pytest_session import EvalkitSession, session_of
from evalkit.testing import CallPool, ModelPool

DEFAULT_PATTERNS = ["suites/*.yaml", "suites/*.yml", "*.suite.yaml", "*.suite.yml"]


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from evalkit import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("evalkit", "evalkit golden-suite evaluation")
    group.addoption(
        "--evalkit-update-baseline",
        action="store_true",
        help="accept this run's results as the baselines (written beside the data)",
    )
    group.addoption(
        "--evalkit-no-cache",
        action="store_true",
        help="ignore and do not write the generation/score cache",
    )
    group.addoption(
        "--evalkit-limit",
        type=int,
        default=None,
        metavar="N",
        help="evaluate only the first N examples of each suite (a quick look)",
    )
    group.addoption(
        "--evalkit-full",
        action="store_true",
        help="ignore candidates' own 'limit:' (run every example for every candidate)",
    )
    group.addoption(
        "--evalkit-candidates",
        default=None,
        metavar="A,B",
        help="run only these candidates (plus what they compare to)",
    )
    group.addoption(
        "--evalkit-device",
        default=None,
        metavar="DEVICE",
        help="device for local models (cpu, cuda, cuda:1); default: cuda if present",
    )
    group.addoption(
        "--evalkit-report-dir",
        default=None,
        metavar="DIR",
        help="where run.json files go (default: <rootdir>/reports)",
    )
    group.addoption(
        "--evalkit-cache-dir",
        default=None,
        metavar="DIR",
        help="cache folder (default: $EVALKIT_CACHE_DIR or <rootdir>/.evalkit_cache)",
    )
    group.addoption(
        "--evalkit-seed", type=int, default=0, help="seed for bootstrap resampling (default 0)"
    )
    parser.addini(
        "evalkit_suites",
        type="args",
        default=DEFAULT_PATTERNS,
        help="glob patterns (matched from the right) of suite files to collect",
    )


def pytest_configure(config: pytest.Config) -> None:
    EvalkitSession.start(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    EvalkitSession.stop(config)


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    return session_of(parent.config).collect_file(file_path, parent)


def pytest_collection_finish(session: pytest.Session) -> None:
    session_of(session.config).collection_finish(session.items)


@pytest.fixture(scope="session")
def evalkit_model(request: pytest.FixtureRequest) -> Iterator[ModelPool]:
    """Models for ordinary test functions: ``evalkit_model("smollm2-135m-instruct")`` returns a
    handle with ``generate``/``generate_many``; answers are cached like a suite's."""
    state = session_of(request.config)
    pool = ModelPool(state.options.cache, Path(request.config.rootpath), state.options.device)
    yield pool
    pool.close()


@pytest.fixture(scope="session")
def evalkit_call(request: pytest.FixtureRequest) -> CallPool:
    """The user's own pipeline in ordinary test functions: ``evalkit_call(answer, version="2")``
    returns a handle whose answers (``handle(example)``, ``handle.many(examples)``) are cached
    like a ``call:`` candidate's."""
    return CallPool(session_of(request.config).options.cache)
