"""What tests/test_docs.py checks in each kind of block, as functions that return the problems
found (so a test can also show that a broken doc is rejected).

- ```yaml: a suite, loaded as a user's file is (``load_suite``) and checked as a run checks it
  (``check_rules``: candidate kinds, metric names and options, gates), or with its golden data
  end to end (``prepare_suite``) when its dataset exists. A fragment (``gates:`` alone, a few
  candidates) is completed into a minimal suite first; the added lines are listed at its end.
- ```python: compiled; every ``evalkit`` name it imports or uses resolves; run in a fresh
  interpreter in a temp folder unless marked.
- ```bash / ```console and inline code: every ``evalkit`` command parses with evalkit's own
  argparse parser, every ``make`` target exists, every ``--evalkit-*`` pytest option exists,
  every path into the repository (``bench/...``, ``tests/...``) exists.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import functools
import importlib
import inspect
import io
import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import yaml
from docblocks import REPO, Block, code_spans, prose, where

from evalkit.cli import build_parser
from evalkit.errors import EvalkitError
from evalkit.pytest_plugin import pytest_addoption
from evalkit.run.prepare import check_rules, prepare_suite
from evalkit.spec import SuiteSpec, load_suite

MODEL = "smollm2-135m-instruct"
SUITE_FIELDS = set(SuiteSpec.model_fields)
SHELL_LANGS = {"bash", "sh", "shell", "console"}
REPO_PATH = re.compile(r"^((?:bench|docs|evalkit|golden|plugins|suites|tests)/[^\s:`'\"(),;]*)")
GENERATED = ("golden/adapters/",)
"""Paths the docs name that a run makes: the demo's LoRA adapter (`make demo` trains it)."""

# -- YAML ---------------------------------------------------------------------------------


def yaml_problems(block: Block, workdir: Path) -> list[str]:
    """A suite block checked the way a user's suite file is, or a marked block as what it is."""
    if block.marker and block.marker[0] == "not a suite":
        return other_yaml_problems(block, block.marker[1])
    try:
        text, whole = suite_text(block)
        path = workdir / "suites" / f"{block.path.stem}-{block.line}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        if not (workdir / "golden").exists():  # the docs' suites live in suites/ of a project
            (workdir / "golden").symlink_to(REPO / "golden")
        path.write_text(text, encoding="utf-8")
        loaded = load_suite(path)
        if whole and loaded.dataset_path.is_file():
            prepare_suite(path)  # the golden data, templates, call targets, replay files too
        else:
            check_rules(loaded)
    except (EvalkitError, yaml.YAMLError) as exc:
        return [f"{block.where}: {exc}"]
    return []


def suite_text(block: Block) -> tuple[str, bool]:
    """(suite file text, whether the block is a whole suite). A fragment keeps its own lines
    first, so errors point at them; candidates given alone are put under ``candidates:``."""
    data = yaml.safe_load(block.text)
    if not isinstance(data, dict) or "suite" in data:
        return block.text, True
    text = block.text
    if not set(data) <= SUITE_FIELDS:
        text = "candidates:\n" + textwrap.indent(textwrap.dedent(text), "  ")
        data = {"candidates": data}
    return text + "".join(completion(data)), False


def completion(fragment: dict[str, Any]) -> list[str]:
    """The lines that make a fragment a suite: a name and a dataset; a `base` candidate (and any
    candidate its gates name) unless it gives candidates; the metrics its gates gate unless it
    gives metrics (an unknown metric still fails); ``compare_to: base`` when there is a base."""
    lines = ["# completed by tests/docchecks.py\n"]
    lines += [f"{key}: {value}\n" for key, value in (("suite", "docs"), ("dataset", "golden.jsonl"))
              if key not in fragment]  # fmt: skip
    gates = {c: g if isinstance(g, dict) else {} for c, g in (fragment.get("gates") or {}).items()}
    candidates = list(fragment.get("candidates") or {})
    if "candidates" not in fragment:
        named = {name for gate in gates.values() for name in gate.get("candidates") or []}
        candidates = ["base", *sorted(named - {"base"})]
        lines += ["candidates:\n", *(f"  {name}: {{model: {MODEL}}}\n" for name in candidates)]
    if "metrics" not in fragment:
        columns = [gate.get("metric", column) for column, gate in gates.items()]
        metrics = list(dict.fromkeys(column.split("@")[0] for column in columns))
        lines.append(f"metrics: {json.dumps(metrics or ['exact_match'])}\n")
    if "compare_to" not in fragment and "base" in candidates:
        lines.append("compare_to: base\n")
    return lines


def other_yaml_problems(block: Block, kind: str) -> list[str]:
    """A YAML block marked as something else than a suite: it must parse, and be that thing."""
    checks = {"github actions": _workflow_problem}
    if kind not in checks:
        return [f"{block.where}: 'not a suite: {kind}': unknown kind; known: {', '.join(checks)}"]
    try:
        data = yaml.safe_load(block.text)
    except yaml.YAMLError as exc:
        return [f"{block.where}: not YAML: {exc}"]
    problem = checks[kind](data)
    return [f"{block.where}: {problem}"] if problem else []


def _workflow_problem(data: Any) -> str | None:
    if not isinstance(data, dict) or (True not in data and "on" not in data):  # YAML 1.1: on=True
        return "a GitHub Actions workflow needs 'on:' (its triggers)"
    jobs = data.get("jobs")
    if not isinstance(jobs, dict) or not jobs:
        return "a GitHub Actions workflow needs 'jobs:'"
    for name, job in jobs.items():
        if not isinstance(job, dict) or "runs-on" not in job or not job.get("steps"):
            return f"job '{name}' needs 'runs-on:' and 'steps:'"
    return None


# -- Python -------------------------------------------------------------------------------


def python_static_problems(block: Block) -> list[str]:
    """It compiles, and every evalkit module and name it imports or uses exists."""
    try:
        tree = ast.parse(block.text, filename=block.where)
        compile(tree, block.where, "exec")
    except SyntaxError as exc:
        return [f"{block.where}: does not compile: {exc}"]
    aliases: dict[str, str] = {}
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for name in node.names:
                if name.name.split(".")[0] == "evalkit":
                    problems += _importable(block, name.name)
                    aliases[name.asname or "evalkit"] = name.name if name.asname else "evalkit"
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "evalkit":
            problems += [p for n in node.names for p in _importable(block, node.module, n.name)]
    for node in ast.walk(tree):
        chain = _dotted(node)
        if chain and chain[0] in aliases:
            problems += _importable(block, aliases[chain[0]], *chain[1:])
    return sorted(set(problems))


def _dotted(node: ast.AST) -> list[str] | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.insert(0, node.attr)
        node = node.value
    return [node.id, *parts] if isinstance(node, ast.Name) and parts else None


def _importable(block: Block, module: str | None, *names: str) -> list[str]:
    """``module`` imports and ``module.name1.name2`` resolves (attribute or submodule)."""
    try:
        obj: Any = importlib.import_module(module or "")
    except ImportError as exc:
        return [f"{block.where}: import {module}: {exc}"]
    for name in names:
        if hasattr(obj, name):
            obj = getattr(obj, name)
        elif inspect.ismodule(obj):
            try:
                obj = importlib.import_module(f"{obj.__name__}.{name}")
            except ImportError:
                return [f"{block.where}: {module}.{'.'.join(names)}: no '{name}' in evalkit"]
        else:
            return [f"{block.where}: {module}.{'.'.join(names)}: no '{name}'"]
        if not (inspect.ismodule(obj) or inspect.isclass(obj)):
            break  # a function or a value: what follows is an attribute of what it returns
    return []


def offline_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "EVALKIT_PROGRESS": "0", "HF_HUB_OFFLINE": "1"}
    env.update(TRANSFORMERS_OFFLINE="1", LITELLM_LOCAL_MODEL_COST_MAP="True", **extra)
    return env


def run_script_problems(block: Block, workdir: Path) -> list[str]:
    """Run the block as a script in a fresh interpreter, in an empty folder, offline."""
    script = workdir / f"{block.path.stem}_{block.line}.py"
    script.write_text(block.text, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, script.name], cwd=workdir, env=offline_env(), capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    if done.returncode != 0:
        return [f"{block.where}: exited {done.returncode}:\n{done.stderr[-2000:]}"]
    return []


def run_as_test_problems(block: Block, workdir: Path, golden: list[dict[str, Any]]) -> list[str]:
    """Write the block where its marker says (``run as: tests/test_x.py``) in a project whose
    ``golden/capitals.jsonl`` holds ``golden``, and run it with pytest: every test must pass."""
    relative = block.marker[1].split()[0] if block.marker else ""
    test_file = workdir / relative
    test_file.parent.mkdir(parents=True, exist_ok=True)
    test_file.write_text(block.text, encoding="utf-8")
    rows = "".join(json.dumps(row) + "\n" for row in golden)
    (workdir / "golden").mkdir(exist_ok=True)
    (workdir / "golden" / "capitals.jsonl").write_text(rows, encoding="utf-8")
    (workdir / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    command = [sys.executable, "-m", "pytest", relative, "-q", "-p", "no:xdist"]
    done = subprocess.run(command, cwd=workdir, env=offline_env(OMP_NUM_THREADS="1"),
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    if done.returncode != 0 or f"{len(golden)} passed" not in done.stdout:
        tail = done.stdout[-3000:]
        return [f"{block.where}: pytest {relative} exited {done.returncode}:\n{tail}"]
    return []


# -- commands -----------------------------------------------------------------------------


@functools.cache
def evalkit_commands() -> dict[str, argparse.ArgumentParser]:
    """evalkit's subcommands and their parsers, from the CLI's own parser."""
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def options_of(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings} - {"-h"}


@functools.cache
def pytest_options() -> tuple[set[str], set[str]]:
    """(command-line options, ini names) that evalkit's pytest plugin adds."""
    options: set[str] = set()
    inis: set[str] = set()

    class Group:
        def addoption(self, *names: str, **_: Any) -> None:
            options.update(names)

    class Parser:
        def getgroup(self, *_: Any, **__: Any) -> Group:
            return Group()

        def addini(self, name: str, *_: Any, **__: Any) -> None:
            inis.add(name)

    pytest_addoption(Parser())  # type: ignore[arg-type]
    return options, inis


@functools.cache
def make_targets() -> set[str]:
    text = (REPO / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([A-Za-z][\w.-]*)\s*:(?!=)", text, re.MULTILINE))


def shell_problems(block: Block) -> list[str]:
    """Every command line of a shell block: evalkit, make and pytest's evalkit options."""
    text = re.sub(r"\\\n", " ", block.text)
    problems = []
    for number, line in enumerate(text.splitlines()):
        line = line.removeprefix("$ ") if block.lang == "console" else line
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError as exc:
            problems.append(f"{block.where}+{number + 1}: cannot split '{line}': {exc}")
            continue
        for command in _commands(tokens):
            problems += [f"{block.where}: {p}" for p in command_problems(command, inline=False)]
        problems += [f"{block.where}: {p}" for p in path_problems(tokens)]
    return problems


def path_problems(tokens: list[str]) -> list[str]:
    """Paths into the repository (``bench/gate_statistics.py``) that name nothing there; globs
    and placeholders (``suites/*.yaml``, ``baselines/<suite>/``) and generated paths aside."""
    problems = []
    for token in tokens:
        match = REPO_PATH.match(token)
        if not match or re.search(r"[*<>{}$]", match[1]) or match[1].startswith(GENERATED):
            continue
        path = match[1].rstrip(".")
        if not (REPO / path).exists():
            problems.append(f"{path}: no such file or folder in the repository")
    return problems


def _commands(tokens: list[str]) -> list[list[str]]:
    commands: list[list[str]] = [[]]
    for token in tokens:
        if token in {"&&", "||", ";", "|"}:
            commands.append([])
        else:
            commands[-1].append(token)
    return [c for c in commands if c]


def command_problems(tokens: list[str], *, inline: bool) -> list[str]:
    """One command. ``inline`` (prose) commands may abbreviate: their options must exist, but
    they are not parsed whole (``evalkit run SUITE [--limit N]``)."""
    while tokens and re.match(r"^[A-Za-z_]\w*=", tokens[0]):
        tokens = tokens[1:]  # VAR=value before the command
    if not tokens:
        return []
    program, rest = Path(tokens[0]).name, tokens[1:]
    if program.startswith("python") and rest[:2] in (["-m", "evalkit.cli"], ["-m", "evalkit"]):
        program, rest = "evalkit", rest[2:]
    problems = [f"'{t}' is no option of evalkit's pytest plugin"
                for t in tokens if t.startswith("--evalkit-")
                and t.split("=")[0] not in pytest_options()[0]]  # fmt: skip
    if program == "evalkit":
        problems += _evalkit_problems(rest, inline)
    elif program == "make":
        targets = [t for t in rest if not t.startswith("-") and "=" not in t]
        problems += [f"make {t}: no such target in the Makefile" for t in targets
                     if t not in make_targets()]  # fmt: skip
    return problems


def _evalkit_problems(argv: list[str], inline: bool) -> list[str]:
    commands = evalkit_commands()
    if not argv or argv[0] not in commands:
        return [f"evalkit {' '.join(argv[:1])}: no such command; commands: {', '.join(commands)}"]
    if inline:
        known = options_of(commands[argv[0]])
        flags = [a.split("=")[0] for a in argv if a.startswith("--")]
        return [f"evalkit {argv[0]} {flag}: no such option" for flag in flags if flag not in known]
    errors = io.StringIO()
    with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
        try:
            build_parser().parse_args(argv)
        except SystemExit as exc:
            if exc.code:
                return [f"evalkit {' '.join(argv)}: {errors.getvalue().strip().splitlines()[-1]}"]
    return []


def inline_problems(path: Path) -> list[str]:
    """Inline code in prose that names an evalkit command, a make target or a pytest option,
    and every ``--evalkit-*`` anywhere in the file (blocks included)."""
    text = prose(path)
    problems = []
    for offset, code in code_spans(text):
        tokens = code.replace("[", " ").replace("]", " ").split()
        line = text.count("\n", 0, offset) + 1
        problems += [f"{where(path, line)}: {p}" for p in path_problems(tokens)]
        named = bool(tokens) and tokens[0] in {"evalkit", "make"}
        if named or any(t.startswith("--evalkit-") for t in tokens):
            problems += [f"{where(path, line)}: {p}" for p in command_problems(tokens, inline=True)]
    known = pytest_options()[0]
    for match in re.finditer(r"--evalkit-[\w-]+", path.read_text(encoding="utf-8")):
        if match[0] not in known:
            problems.append(f"{path.name}: '{match[0]}' is no option of evalkit's pytest plugin")
    return sorted(set(problems))
