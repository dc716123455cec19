"""Where a ``call:`` candidate's function lives, found without running any code.

Suite files may come from a pull request, and a suite file alone must never make evalkit run
code (see the hostile-input rules in docs/report-and-ci.md). So ``call:`` names *project code*,
the code a reviewer reads as code, exactly as pytest imports a project's ``conftest.py`` files:

- the target is ``dotted.module:function``, identifiers only (checked by the spec);
- the module is a ``.py`` file (or a package's ``__init__.py``) inside the project root, found
  in the root, ``<root>/src`` or a ``sys.path`` entry inside the root. The root is the nearest
  folder above the suite file holding one of ``ROOT_MARKERS`` (else the suite's folder). An
  installed package, the interpreter's own files and the standard library are refused, also
  through a symbolic link: ``call: subprocess:run`` or ``os:system`` cannot run;
- the function is defined by the module's own top-level code (``def``, ``async def`` or an
  assignment such as ``answer = build_chain()``), not imported into it: a project module that
  does ``from subprocess import run`` does not make ``run`` callable from a suite;
- collection reads and parses the file (``ast``) and imports nothing. The module is imported
  when the candidate first needs an answer (a fully cached run never imports it), from the file
  found here: a module of the same name found first elsewhere on ``sys.path`` is refused.

The cache identity is the SHA-256 of the function's own source (its ``def`` with decorators;
the whole module for an assigned name) plus the user's ``version:``, which covers what the
source hash cannot see (helpers, prompts, data, a model behind an API).
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalkit._files import display_path
from evalkit.errors import CandidateError

ROOT_MARKERS = ("pyproject.toml", "setup.cfg", "setup.py", "pytest.ini", "tox.ini", ".git")
MAX_SOURCE_BYTES = 5_000_000


@dataclass(frozen=True)
class CallTarget:
    """A resolved ``module:function``: its file, how to import it, and its identity."""

    target: str
    module: str
    name: str
    file: Path
    search_dir: Path
    """The folder the module is imported from (put on ``sys.path`` if missing)."""
    source_sha256: str
    required: tuple[str, ...] | None
    """Parameters without a default (None: not known from the source, e.g. an assignment)."""


def project_root(start: Path) -> Path:
    """The nearest folder at or above ``start`` holding a ``ROOT_MARKERS`` file, else ``start``."""
    start = start.resolve()
    for folder in (start, *start.parents):
        if any((folder / marker).exists() for marker in ROOT_MARKERS):
            return folder
    return start


def _installed_roots() -> list[Path]:
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    return [Path(p).resolve() for p in prefixes]


def _is_project_file(path: Path, root: Path) -> bool:
    real = path.resolve()
    if not real.is_relative_to(root):
        return False
    if {"site-packages", "dist-packages"} & set(real.parts):
        return False
    installed = [p for p in _installed_roots() if not root.is_relative_to(p)]
    return not any(real.is_relative_to(p) for p in installed)


def search_dirs(root: Path) -> list[Path]:
    """Folders a project module may be imported from: the root, ``root/src``, and the
    ``sys.path`` entries inside the root (never an installed-package folder)."""
    dirs = [root, root / "src"]
    for entry in sys.path:
        folder = Path(entry or ".").resolve()
        if folder.is_dir() and _is_project_file(folder, root) and folder not in dirs:
            dirs.append(folder)
    return [d for d in dirs if d.is_dir()]


def resolve_target(target: str, start: Path) -> CallTarget:
    """Find ``target``'s file in the project above ``start`` and check, by reading its source,
    that it defines the function. Raises CandidateError saying what is wrong."""
    module, name = target.split(":")
    root = project_root(start)
    relative = Path(*module.split("."))
    tried: list[str] = []
    for folder in search_dirs(root):
        for path in (folder / relative.with_suffix(".py"), folder / relative / "__init__.py"):
            tried.append(display_path(path))
            if path.is_file():
                if not _is_project_file(path, root):
                    raise CandidateError(
                        f"{display_path(path)} is not project code (it lies outside "
                        f"{display_path(root)}, or in an installed package); call: names "
                        "modules of this project only, as pytest imports conftest.py"
                    )
                return _checked(target, module, name, path.resolve(), folder)
    raise CandidateError(
        f"no module '{module}' in the project {display_path(root)} (looked for "
        f"{', '.join(tried[:4])}); call: names a module of this project, not an installed one"
    )


def _checked(target: str, module: str, name: str, path: Path, folder: Path) -> CallTarget:
    source = _source(path)
    try:
        tree = ast.parse(source, filename=str(path))
    except (SyntaxError, ValueError, RecursionError) as exc:
        line = getattr(exc, "lineno", None)
        raise CandidateError(
            f"{display_path(path)}{f':{line}' if line else ''} does not parse: {exc}"
        ) from None
    node = _definition(tree, name, path)
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        first = min([d.lineno for d in node.decorator_list] + [node.lineno])
        text = "\n".join(source.splitlines()[first - 1 : node.end_lineno])
        required: tuple[str, ...] | None = _required(node.args)
    else:  # an assigned callable: its behaviour is the whole module's
        text, required = source, None
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return CallTarget(target, module, name, path, folder, digest, required)


def _source(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CandidateError(f"cannot read {display_path(path)} ({exc.strerror})") from None
    if len(raw) > MAX_SOURCE_BYTES:
        raise CandidateError(f"{display_path(path)} is over {MAX_SOURCE_BYTES:,} bytes")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise CandidateError(f"{display_path(path)} is not UTF-8 Python source") from None


def _definition(tree: ast.Module, name: str, path: Path) -> ast.stmt:
    """The top-level statement that defines ``name`` (the last one, as Python would bind)."""
    found: ast.stmt | None = None
    for node in tree.body:
        if name in _bound(node):
            found = node
    if found is None:
        raise CandidateError(
            f"{display_path(path)} defines no top-level function '{name}' (a def, async def or "
            "assignment at module level)"
        )
    if isinstance(found, ast.Import | ast.ImportFrom):
        raise CandidateError(
            f"'{name}' is imported into {display_path(path)}:{found.lineno}, not defined there; "
            "call: names a function the project defines (wrap it: def answer(...): ...)"
        )
    return found


def _bound(node: ast.stmt) -> set[str]:
    """Names a top-level statement binds: a def, an assignment, or an import."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return {node.name}
    if isinstance(node, ast.Assign | ast.AnnAssign):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return {t.id for t in targets if isinstance(t, ast.Name)}
    if isinstance(node, ast.Import | ast.ImportFrom):
        return {(a.asname or a.name).split(".")[0] for a in node.names}
    return set()


def _required(args: ast.arguments) -> tuple[str, ...]:
    positional = [*args.posonlyargs, *args.args]
    without_default = positional[: len(positional) - len(args.defaults)]
    keyword_only = [a for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is None]
    return tuple(a.arg for a in [*without_default, *keyword_only])


def import_target(target: CallTarget) -> Callable[..., Any]:
    """Import the module from the file ``resolve_target`` found and return the function."""
    if str(target.search_dir) not in sys.path:
        sys.path.insert(0, str(target.search_dir))
    where = f"call target '{target.target}' ({display_path(target.file)})"
    try:
        module = importlib.import_module(target.module)
    except Exception as exc:  # the user's module failed while importing: say so in one line
        raise CandidateError(f"{where}: importing it failed: {type(exc).__name__}: {exc}") from None
    loaded = getattr(module, "__file__", None)
    if loaded is None or Path(loaded).resolve() != target.file:
        raise CandidateError(
            f"{where}: the name '{target.module}' imports {loaded or 'a namespace package'} "
            "instead; rename the project module or the installed one"
        )
    function = getattr(module, target.name, None)
    if not callable(function):
        raise CandidateError(f"{where}: '{target.name}' is not callable")
    return function
