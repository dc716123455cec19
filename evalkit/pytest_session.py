"""One evalkit pytest session: the state of a session and every job evalkit does in it, once.

pytest_plugin.py declares the options and forwards each hook here in one line (syrupy's
pattern). This object collects suite files into items, runs each suite once (on its first selected
item, for the candidates the selected items need), and is the one listener to test reports: from
their ``user_properties``, which pytest-xdist carries from the workers to the controller, it
gathers the verdicts and run.json paths. So the controller alone (after every worker finished)
prints the verdict table and writes the HTML report, summary.md and the step summary, once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from evalkit._files import display_path
from evalkit._threads import share_cores
from evalkit.cache import Cache, cache_file
from evalkit.errors import EvalkitError
from evalkit.gate_spec import RUN_GATE
from evalkit.metrics import register
from evalkit.report.table import format_table
from evalkit.results import GateVerdict, RunResult
from evalkit.run import PreparedSuite, RunOptions, gate_plan, prepare_suite

RUN_PROPERTY = "evalkit_run_json"
VERDICT_PROPERTY = "evalkit_verdict"


@dataclass(eq=False)  # registered as a pluggy plugin: must stay hashable
class EvalkitSession:
    options: RunOptions
    candidates: list[str] | None
    suite_patterns: list[str] = field(default_factory=list)
    prepared: dict[Path, PreparedSuite] = field(default_factory=dict)
    wanted: dict[Path, set[str]] = field(default_factory=dict)
    results: dict[Path, RunResult | Exception] = field(default_factory=dict)
    verdicts: list[GateVerdict] = field(default_factory=list)
    runs: set[Path] = field(default_factory=set)
    report_lines: list[str] = field(default_factory=list)

    @classmethod
    def from_config(cls, config: pytest.Config) -> EvalkitSession:
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
        return cls(
            options=RunOptions(
                report_dir=report_dir.resolve(),
                cache=Cache(cache_path),
                limit=limit,
                device=config.getoption("evalkit_device"),
                update_baseline=config.getoption("evalkit_update_baseline"),
                full=config.getoption("evalkit_full"),
                seed=config.getoption("evalkit_seed"),
            ),
            candidates=[n.strip() for n in names.split(",") if n.strip()] if names else None,
            suite_patterns=list(config.getini("evalkit_suites")),
        )

    @classmethod
    def start(cls, config: pytest.Config) -> EvalkitSession:
        worker = getattr(config, "workerinput", None)
        if worker is not None:  # a pytest-xdist worker: share the cores with the others
            share_cores(int(worker.get("workercount", 1)))
        session = cls.from_config(config)
        config.stash[SESSION_KEY] = session
        config.pluginmanager.register(session, "evalkit-session")
        # Historic: conftest.py files pytest loads later (deeper folders) are called on loading,
        # which pytest does before it collects the suites of their folder.
        config.hook.pytest_evalkit_register_metrics.call_historic(kwargs={"register": register})
        return session

    @staticmethod
    def stop(config: pytest.Config) -> None:
        session = config.stash.get(SESSION_KEY, None)
        if session is not None:  # None: configuring failed (a bad option)
            session.options.cache.close()

    # -- collection and runs ------------------------------------------------------------------

    def collect_file(self, file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
        if file_path.suffix not in (".yaml", ".yml"):
            return None
        if any(file_path.match(pattern) for pattern in self.suite_patterns):
            return SuiteFile.from_parent(parent, path=file_path)
        if named_on_command_line(parent.config, file_path) and looks_like_suite(file_path):
            # Instead of pytest's bare "not found": say why, and what to rename it to.
            return MisnamedSuite.from_parent(parent, path=file_path)
        return None

    def suite_items(self, suite: SuiteFile) -> Iterator[GateItem]:
        prepared = prepare_suite(suite.path, limit=self.options.limit)
        self.prepared[suite.path] = prepared
        spec = prepared.loaded.spec
        names = [n for n in spec.candidates if self.candidates is None or n in self.candidates]
        for candidate in names:
            for gate in gate_plan(prepared, candidate):
                yield GateItem.from_parent(
                    suite, name=f"{candidate}::{gate}", candidate=candidate, gate=gate
                )

    def collection_finish(self, items: Sequence[pytest.Item]) -> None:
        for item in items:
            if isinstance(item, GateItem):
                self.wanted.setdefault(item.suite_path, set()).add(item.candidate)

    def run_item(self, item: GateItem) -> None:
        result = self._suite_result(item)
        run_json = self.options.report_dir / result.suite / "run.json"
        item.user_properties.append((RUN_PROPERTY, str(run_json)))
        if item.gate == RUN_GATE:
            # Not a gate of the suite: checked here, not recorded in run.json or the table.
            from evalkit.gates import run_verdict  # loaded with the run, not at every pytest start

            verdict = run_verdict(result.suite, result.candidates[item.candidate])
        else:
            verdict = next(
                v for v in result.gates if v.candidate == item.candidate and v.gate == item.gate
            )
            item.user_properties.append((VERDICT_PROPERTY, verdict.model_dump_json()))
        if not verdict.passed:
            raise GateFailed(verdict.message)
        for text in verdict.warnings:  # a passing item still says what it could not see
            warnings.warn(GateWarning(f"{item.reportinfo()[2]}: {text}"), stacklevel=1)

    def _suite_result(self, item: GateItem) -> RunResult:
        from evalkit.run import run_suite  # the runner, gates and numpy load when a suite runs

        path = item.suite_path
        if path not in self.results:
            options = dataclasses.replace(
                self.options, candidates=sorted(self.wanted.get(path, {item.candidate}))
            )
            capture = item.config.pluginmanager.getplugin("capturemanager")
            # Show progress bars live: the run is long and happens inside one item.
            live = capture is not None and options.progress
            try:
                with capture.global_and_fixture_disabled() if live else contextlib.nullcontext():
                    self.results[path] = run_suite(self.prepared[path], options)
            except Exception as exc:
                # Remembered so the suite's other items report it instead of running it again.
                self.results[path] = exc
        outcome = self.results[path]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    # -- the one listener (registered as a plugin, so pytest calls these methods) -------------

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call":
            return
        for key, value in report.user_properties:
            if key == RUN_PROPERTY:
                self.runs.add(Path(value))
            elif key == VERDICT_PROPERTY:
                self.verdicts.append(GateVerdict.model_validate(json.loads(value)))

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if hasattr(session.config, "workerinput") or not self.runs:
            return  # an xdist worker: the controller writes the report
        from evalkit.report.publish import load_runs, publish

        try:
            published = publish(
                load_runs(sorted(p for p in self.runs if p.is_file())),
                self.options.report_dir,
                seed=self.options.seed,
            )
        except Exception as exc:  # a report problem must not hide the test results
            self.report_lines = [f"evalkit: no HTML report written: {exc}"]
            return
        self.report_lines = [
            f"report: {display_path(published.index)}",
            f"summary: {display_path(published.summary)}",
        ]

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.verdicts:
            terminalreporter.write_sep("=", "evalkit verdicts")
            terminalreporter.write_line(
                format_table(sorted(self.verdicts, key=lambda v: (v.suite, v.candidate, v.gate)))
            )
            terminalreporter.write_line("")
            for suite in sorted({v.suite for v in self.verdicts}):
                path = self.options.report_dir / suite / "run.json"
                terminalreporter.write_line(f"results: {display_path(path)}")
        for line in self.report_lines:
            terminalreporter.write_line(line)


SESSION_KEY = pytest.StashKey[EvalkitSession]()


def session_of(config: pytest.Config) -> EvalkitSession:
    return config.stash[SESSION_KEY]


class SuiteFile(pytest.File):
    def collect(self) -> Iterator[pytest.Item]:
        return session_of(self.config).suite_items(self)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, EvalkitError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)  # a Collector's takes no style


class MisnamedSuite(SuiteFile):
    """A suite file named on the command line that no ``evalkit_suites`` pattern matches."""

    def collect(self) -> Iterator[pytest.Item]:
        patterns = ", ".join(session_of(self.config).suite_patterns)
        raise EvalkitError(
            f"{display_path(self.path)} looks like an evalkit suite, but pytest collects only "
            f"files matching {patterns} (ini option evalkit_suites): rename it to "
            f"{self.path.stem}.suite.yaml, move it into suites/, or add a pattern to "
            "evalkit_suites (`evalkit run` takes any file)"
        )


def named_on_command_line(config: pytest.Config, path: Path) -> bool:
    here = config.invocation_params.dir
    named = (Path(here, str(arg).split("::")[0]) for arg in config.invocation_params.args)
    return any(candidate.resolve() == path.resolve() for candidate in named)


def looks_like_suite(path: Path) -> bool:
    """A top-level ``suite:`` key in the first 64 kB: a suite, not some other YAML file."""
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            head = handle.read(65536)
    except OSError:
        return False
    return re.search(r"^suite\s*:", head, flags=re.MULTILINE) is not None


class GateWarning(UserWarning):
    """A gate passed but says something a reviewer must see (e.g. it is underpowered): pytest
    lists it in its warnings summary; ``-W error::evalkit.pytest_session.GateWarning`` makes it
    fail."""


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
        session_of(self.config).run_item(self)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, GateFailed | EvalkitError):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        suite = session_of(self.config).prepared[self.suite_path].name
        return self.path, None, f"{suite}::{self.candidate}::{self.gate}"
