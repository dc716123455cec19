"""The pytest side of the reports: at the end of a session, HTML reports and summary.md for the
suites that ran in it.

Each suite item records its run.json path in ``user_properties``; pytest-xdist carries those
from the workers to the controller with the test reports, so the controller alone (after every
worker has finished) renders the reports, from the run.json files on disk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

RUN_PROPERTY = "evalkit_run_json"


class SessionReport:
    """Registered by the evalkit plugin as ``evalkit-report``."""

    def __init__(self, report_dir: Path, *, seed: int = 0) -> None:
        self.report_dir = report_dir
        self.seed = seed
        self.runs: set[Path] = set()
        self.lines: list[str] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for key, value in report.user_properties:
            if key == RUN_PROPERTY:
                self.runs.add(Path(value))

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if hasattr(session.config, "workerinput") or not self.runs:
            return  # an xdist worker: the controller writes the report
        from evalkit._files import display_path
        from evalkit.report.publish import load_runs, publish

        try:
            published = publish(
                load_runs(sorted(p for p in self.runs if p.is_file())),
                self.report_dir,
                seed=self.seed,
            )
        except Exception as exc:  # a report problem must not hide the test results
            self.lines = [f"evalkit: no HTML report written: {exc}"]
            return
        self.lines = [
            f"report: {display_path(published.index)}",
            f"summary: {display_path(published.summary)}",
        ]

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        for line in self.lines:
            terminalreporter.write_line(line)
