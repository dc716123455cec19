"""What `evalkit run` imports before it reads suites, so that metrics written for pytest work
without it: the conftest.py files pytest would load for each suite, and modules named with
``--plugins``. Each registers its metrics as under pytest: ``@evalkit.metric`` at import, or a
``pytest_evalkit_register_metrics(register)`` function, which is called here."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from evalkit._files import display_path
from evalkit.errors import EvalkitError
from evalkit.metrics import register

HOOK = "pytest_evalkit_register_metrics"


def conftest_files(suites: Sequence[Path], root: Path) -> list[Path]:
    """pytest's rule: every conftest.py from ``root`` down to each suite's folder, outer first;
    for a suite outside ``root``, the one in its own folder."""
    root = root.resolve()
    found: list[Path] = []
    for suite in suites:
        folder = suite.resolve().parent
        if folder == root or root in folder.parents:
            parts = folder.relative_to(root).parts
            chain = [root.joinpath(*parts[:depth]) for depth in range(len(parts) + 1)]
        else:
            chain = [folder]
        for directory in chain:
            candidate = directory / "conftest.py"
            if candidate.is_file() and candidate not in found:
                found.append(candidate)
    return found


def load_plugins(
    suites: Sequence[Path], modules: Sequence[str], root: Path, *, conftest: bool = True
) -> list[str]:
    """Import the conftest.py files (unless ``conftest`` is False) and ``modules``; returns what
    was loaded, for the user to see."""
    loaded: list[str] = []
    for path in conftest_files(suites, root) if conftest else []:
        _call_hook(_import_conftest(path))
        loaded.append(display_path(path))
    if modules and str(root) not in sys.path:
        sys.path.insert(0, str(root))  # `--plugins mymetrics` finds ./mymetrics.py, as python -m
    for name in modules:
        try:
            module = importlib.import_module(name)
        except Exception as exc:
            raise EvalkitError(
                f"--plugins {name}: could not import it ({type(exc).__name__}: {exc}); give an "
                "importable module name (a file mymetrics.py in this folder is `mymetrics`)"
            ) from exc
        _call_hook(module)
        loaded.append(name)
    return loaded


def _import_conftest(path: Path) -> ModuleType:
    """Imported like pytest does by default: its folder on sys.path, as module ``conftest``."""
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location("conftest", path)
    assert spec is not None and spec.loader is not None  # a .py file always has both
    module = importlib.util.module_from_spec(spec)
    previous = sys.modules.get("conftest")
    sys.modules["conftest"] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise EvalkitError(
            f"{display_path(path)}: evalkit run imports it for its metrics, and importing it "
            f"failed ({type(exc).__name__}: {exc}); fix it, or pass --no-conftest"
        ) from exc
    finally:
        if previous is not None:
            sys.modules["conftest"] = previous
        else:
            sys.modules.pop("conftest", None)
    return module


def _call_hook(module: ModuleType) -> None:
    hook = getattr(module, HOOK, None)
    if callable(hook):
        hook(register=register)
