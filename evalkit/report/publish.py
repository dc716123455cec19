"""Saved runs in, reports out: the one entry point the CLI and the pytest plugin share."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from evalkit._files import display_path, retire_stale
from evalkit.errors import EvalkitError, disk_error
from evalkit.report.html import write_reports
from evalkit.report.summary import write_summary
from evalkit.report.view import build_suite_view
from evalkit.results import RunResult, load_run


@dataclass(frozen=True)
class Published:
    index: Path
    suite_pages: list[Path]
    summary: Path


def find_runs(report_dir: Path) -> list[Path]:
    """``<dir>/<suite>/run.json`` files, sorted by suite folder."""
    return sorted(report_dir.glob("*/run.json"))


def load_runs(paths: Sequence[Path]) -> list[RunResult]:
    runs = []
    for path in paths:
        try:
            runs.append(load_run(path))
        except (OSError, ValueError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
            raise EvalkitError(
                f"{path}: not a readable evalkit run.json ({first}); "
                "run the suite again to rewrite it"
            ) from exc
    return runs


def publish(runs: Sequence[RunResult], report_dir: Path, *, seed: int = 0) -> Published:
    """HTML pages and the Markdown summary for these runs: failed suites first (what a
    reviewer must look at), then by name."""
    if not runs:
        raise EvalkitError(f"{report_dir}: no run.json to report on; run the suites first")
    views = [build_suite_view(run, seed=seed) for run in runs]
    views.sort(key=lambda v: (v.gate_status != "failed", v.name))
    try:
        pages = write_reports(views, report_dir)
        summary = write_summary(views, report_dir, display_path(pages[0]))
    except OSError as exc:
        stale = retire_stale([report_dir / "index.html", report_dir / "summary.md"])
        note = f" (the previous report was renamed to {stale[0].name})" if stale else ""
        raise disk_error(exc, Path(exc.filename or report_dir / "index.html"), extra=note) from None
    return Published(index=pages[0], suite_pages=pages[1:], summary=summary)
