"""pytest plugin: suite files become test items, one per (suite, candidate, gate).

Collection validates each suite completely (spec, golden data, templates, metrics) without
importing torch, so a broken suite fails in milliseconds with one clear message. A suite runs once,
on its first selected item, for the candidates that the selected items need; the other items read
its verdicts. With pytest-xdist, ``-n N --dist loadfile`` keeps each suite file on one worker
(spread over several, each worker would run the suite itself: correct, but slower).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from evalkit._files import display_path
from evalkit.cache import Cache, cache_file
from evalkit.errors import EvalkitError
from evalkit.metrics import register
from evalkit.report.session import RUN_PROPERTY, SessionReport
from evalkit.report.table import format_table
from evalkit.results import GateVerdict, RunResult
from evalkit.run import PreparedSuite, RunOptions, gate_plan, prepare_suite, run_suite
from evalkit.run.prepare import RUN_GATE
from evalkit.testing import ModelPool

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


@dataclass
class EvalkitSession:
    options: RunOptions
    candidates: list[str] | None
    prepared: dict[Path, PreparedSuite] = field(default_factory=dict)
    wanted: dict[Path, set[str]] = field(default_factory=dict)
    results: dict[Path, RunResult | Exception] = field(default_factory=dict)
    verdicts: list[GateVerdict] = field(default_factory=list)


SESSION_KEY = pytest.StashKey[EvalkitSession]()


def _session_options(config: pytest.Config) -> EvalkitSession:
    root = Path(config.rootpath)
    report_dir = Path(config.getoption("evalkit_report_dir") or root / "reports")
    cache_path = (
        None
        if config.getoption("evalkit_no_cache")
        else cache_file(config.getoption("evalkit_cache_dir"), root)
    )
    limit = config.getoption("evalkit_limit")
    if limit is not None and limit < 1:
        raise pytest.UsageError("--evalkit-limit must be at least 1")
    names = config.getoption("evalkit_candidates")
    return EvalkitSession(
        options=RunOptions(
            report_dir=report_dir.resolve(),
            cache=Cache(cache_path),
            limit=limit,
            device=config.getoption("evalkit_device"),
            update_baseline=config.getoption("evalkit_update_baseline"),
            seed=config.getoption("evalkit_seed"),
        ),
        candidates=[n.strip() for n in names.split(",") if n.strip()] if names else None,
    )


def pytest_configure(config: pytest.Config) -> None:
    state = _session_options(config)
    config.stash[SESSION_KEY] = state
    config.pluginmanager.register(VerdictCollector(state), "evalkit-verdicts")
    # Historic: conftest.py files pytest loads later (deeper folders) are called on loading,
    # which pytest does before it collects the suites of their folder.
    config.hook.pytest_evalkit_register_metrics.call_historic(kwargs={"register": register})
    config.pluginmanager.register(
        SessionReport(state.options.report_dir, seed=state.options.seed), "evalkit-report"
    )


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(SESSION_KEY, None)
    if state is not None:
        state.options.cache.close()


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.suffix not in (".yaml", ".yml"):
        return None
    patterns = parent.config.getini("evalkit_suites")
    if any(file_path.match(pattern) for pattern in patterns):
        return SuiteFile.from_parent(parent, path=file_path)
    return None


class SuiteFile(pytest.File):
    def collect(self) -> Iterator[pytest.Item]:
        state = self.config.stash[SESSION_KEY]
        prepared = prepare_suite(self.path, limit=state.options.limit)
        state.prepared[self.path] = prepared
        spec = prepared.loaded.spec
        names = [n for n in spec.candidates if state.candidates is None or n in state.candidates]
        for candidate in names:
            for gate in gate_plan(prepared, candidate):
                yield GateItem.from_parent(
                    self, name=f"{candidate}::{gate}", candidate=candidate, gate=gate
                )

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, EvalkitError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)  # a Collector's takes no style


class GateFailed(Exception):
    """A gate's verdict was 'failed' or 'error'; its message is the whole explanation."""


class GateItem(pytest.Item):
    def __init__(self, *, candidate: str, gate: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.candidate = candidate
        self.gate = gate

    @property
    def suite_path(self) -> Path:
        return Path(self.path)

    def runtest(self) -> None:
        state = self.config.stash[SESSION_KEY]
        result = _suite_result(self, state)
        run_json = state.options.report_dir / result.suite / "run.json"
        self.user_properties.append((RUN_PROPERTY, str(run_json)))
        if self.gate == RUN_GATE:
            run = result.candidates[self.candidate]
            if run.n_errors == len(run.examples):
                raise GateFailed(
                    f"{self.candidate}: every example failed; first error: {run.examples[0].error}"
                )
            return
        verdict = next(
            v for v in result.gates if v.candidate == self.candidate and v.gate == self.gate
        )
        self.user_properties.append(("evalkit_verdict", verdict.model_dump_json()))
        if not verdict.passed:
            raise GateFailed(verdict.message)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, GateFailed | EvalkitError):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        suite = self.config.stash[SESSION_KEY].prepared[self.suite_path].name
        return self.path, None, f"{suite}::{self.candidate}::{self.gate}"


def pytest_collection_finish(session: pytest.Session) -> None:
    state = session.config.stash[SESSION_KEY]
    for item in session.items:
        if isinstance(item, GateItem):
            state.wanted.setdefault(item.suite_path, set()).add(item.candidate)


def _suite_result(item: GateItem, state: EvalkitSession) -> RunResult:
    path = item.suite_path
    if path not in state.results:
        options = dataclasses.replace(
            state.options, candidates=sorted(state.wanted.get(path, {item.candidate}))
        )
        capture = item.config.pluginmanager.getplugin("capturemanager")
        # Show progress bars live: the run is long and happens inside one item.
        live = capture is not None and options.progress
        try:
            with capture.global_and_fixture_disabled() if live else contextlib.nullcontext():
                state.results[path] = run_suite(state.prepared[path], options)
        except Exception as exc:
            # Remembered so the suite's other items report it instead of running it again.
            state.results[path] = exc
    outcome = state.results[path]
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


@pytest.fixture(scope="session")
def evalkit_model(request: pytest.FixtureRequest) -> Iterator[ModelPool]:
    """Models for ordinary test functions: ``evalkit_model("smollm2-135m-instruct")`` returns a
    handle with ``generate``/``generate_many``; answers are cached like a suite's."""
    state = request.config.stash[SESSION_KEY]
    pool = ModelPool(state.options.cache, Path(request.config.rootpath), state.options.device)
    yield pool
    pool.close()


class VerdictCollector:
    """Gathers verdicts from test reports (user_properties survive the xdist hop to the
    controller) for the table printed at the end of the session."""

    def __init__(self, state: EvalkitSession) -> None:
        self.state = state

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call":
            return
        for key, value in report.user_properties:
            if key == "evalkit_verdict":
                self.state.verdicts.append(GateVerdict.model_validate(json.loads(value)))


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash.get(SESSION_KEY, None)
    if state is None or not state.verdicts:
        return
    terminalreporter.write_sep("=", "evalkit verdicts")
    terminalreporter.write_line(
        format_table(sorted(state.verdicts, key=lambda v: (v.suite, v.candidate, v.gate)))
    )
    suites = sorted({v.suite for v in state.verdicts})
    report_dir = state.options.report_dir
    terminalreporter.write_line("")
    for suite in suites:
        terminalreporter.write_line(f"results: {display_path(report_dir / suite / 'run.json')}")
