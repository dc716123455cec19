"""The sparse (BM25) and dense indexes over a corpus's chunks, built once and kept on disk.

BM25 is ``bm25s`` (Lucene's variant, k1=1.5, b=0.75, English stopwords, no stemming): its
sparse score matrix gives every chunk's score for a query, and we take the top k ourselves with
ties broken by chunk order, so results are deterministic. Dense retrieval embeds chunks and
queries with the sentence-transformers embedder (normalized, so a dot product is the cosine)
and searches by exact brute force in numpy: ``bench/retrieval_index.py`` measured it against
faiss and usearch at 100k chunks (see bench/README.md for the figures and the reasoning).

Each index lives in its own folder under ``<cache dir>/retrieval/``, named by a hash of what
decides its content: the corpus content hash, the chunk settings and tokenizer, and the library
(bm25s) or embedder fingerprint and sentence-transformers version. Editing one document changes
the corpus hash, so the next run builds new indexes; an unchanged corpus is never re-indexed.
A folder is written under a temporary name and renamed when complete, so an interrupted build
or a concurrent xdist worker never leaves a half-written index that looks finished.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from evalkit.cache import make_key

BM25_PARAMS = {"method": "lucene", "k1": 1.5, "b": 0.75, "stopwords": "en"}
RRF_K = 60
"""Reciprocal rank fusion constant (Cormack, Clarke and Buettcher, 2009): 1 / (60 + rank)."""
RRF_DEPTH = 1000
"""How deep each ranking goes into the fusion; a chunk below it in both adds nothing."""

Ranking = list[tuple[int, float]]
"""(chunk index, score), best first."""


def top_k(scores: Any, k: int) -> Ranking:
    """The k best (index, score) pairs; equal scores keep chunk order (a stable sort)."""
    import numpy as np

    k = min(k, len(scores))
    if k < len(scores):  # partition first: a full sort of 100k scores per query is wasteful
        keep = np.argpartition(-scores, k - 1)[:k]
        threshold = scores[keep].min()
        keep = np.flatnonzero(scores >= threshold)  # every tie at the cut, then sort
    else:
        keep = np.arange(len(scores))
    order = keep[np.lexsort((keep, -scores[keep]))][:k]
    return [(int(i), float(scores[i])) for i in order]


def bm25_tokens(texts: Sequence[str]) -> list[list[str]]:
    import bm25s

    return bm25s.tokenize(
        list(texts), stopwords=BM25_PARAMS["stopwords"], return_ids=False, show_progress=False
    )


class BM25Index:
    def __init__(self, model: Any) -> None:
        self.model = model

    @classmethod
    def build(cls, texts: Sequence[str]) -> BM25Index:
        import bm25s

        model = bm25s.BM25(method=BM25_PARAMS["method"], k1=BM25_PARAMS["k1"], b=BM25_PARAMS["b"])
        model.index(bm25_tokens(texts), show_progress=False)
        return cls(model)

    def save(self, folder: Path) -> None:
        self.model.save(str(folder), show_progress=False)

    @classmethod
    def load(cls, folder: Path) -> BM25Index:
        import bm25s

        return cls(bm25s.BM25.load(str(folder)))

    def rank(self, queries: Sequence[str], k: int) -> list[Ranking]:
        return [top_k(self.model.get_scores(tokens), k) for tokens in bm25_tokens(queries)]


class DenseIndex:
    """Normalized float32 chunk embeddings; exact inner-product search."""

    def __init__(self, vectors: Any, encode: Callable[[Sequence[str]], Any]) -> None:
        self.vectors = vectors
        self.encode = encode

    def save(self, folder: Path) -> None:
        import numpy as np

        np.save(folder / "embeddings.npy", self.vectors)

    @classmethod
    def load(cls, folder: Path, encode: Callable[[Sequence[str]], Any]) -> DenseIndex:
        import numpy as np

        return cls(np.load(folder / "embeddings.npy"), encode)

    def rank(self, queries: Sequence[str], k: int) -> list[Ranking]:
        scores = self.encode(queries) @ self.vectors.T
        return [top_k(row, k) for row in scores]


def fuse(rankings: Sequence[Ranking], k: int) -> Ranking:
    """Reciprocal rank fusion: a chunk scores the sum of 1 / (RRF_K + rank) over the rankings
    it appears in (rank 1 is the best); ties keep chunk order."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, (index, _) in enumerate(ranking, start=1):
            fused[index] = fused.get(index, 0.0) + 1.0 / (RRF_K + rank)
    ordered = sorted(fused.items(), key=lambda item: (-item[1], item[0]))
    return ordered[:k]


def index_key(kind: str, **parts: Any) -> str:
    return make_key(kind=kind, **parts)[:24]


def persist(root: Path | None, key: str, save: Callable[[Path], None]) -> None:
    """Write an index into ``root/key`` through a temporary folder renamed when complete;
    a folder another worker finished first is kept. Without a root (the cache is off) the
    index lives in memory only."""
    if root is None or (root / key).is_dir():
        return
    root.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root))
    try:
        save(temporary)
        os.replace(temporary, root / key)
    except OSError:
        if not (root / key).is_dir():  # not a race lost to another worker: a real failure
            raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def stored_folder(root: Path | None, key: str) -> Path | None:
    """The finished folder of an index, if one was written."""
    if root is None or not (root / key).is_dir():
        return None
    return root / key
