"""A RAG candidate's retriever: checked at collection, indexes built or loaded at run time.

``prepare_retrieval`` does the cheap checks a suite must pass at collection (the corpus folder
is readable and holds text, the embedder exists, a chunk fits the embedder and the retrieved
context fits the model) and raises ``RetrievalError`` naming the ``retrieval`` field at fault.

``Retriever.search`` answers queries from the run's cache first (namespace ``retrieval``, keyed
by the index identity, retriever, top_k and query text), so a fully cached run neither builds
an index nor loads the embedder (no torch); only the chunk texts are read back, from disk.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

from evalkit.cache import make_key
from evalkit.candidates.base import RetrievedChunk
from evalkit.embeddings import EmbeddingModel, load_embedder
from evalkit.retrieval.chunking import (
    Chunk,
    ChunkTokenizer,
    chunk_corpus,
    load_chunks,
    save_chunks,
)
from evalkit.retrieval.corpus import Corpus, CorpusError, read_corpus
from evalkit.retrieval.index import (
    BM25_PARAMS,
    RRF_DEPTH,
    RRF_K,
    BM25Index,
    DenseIndex,
    Ranking,
    fuse,
    index_key,
    persist,
    stored_folder,
)
from evalkit.retrieval.spec import RetrievalSpec

SPECIAL_TOKENS = 2
"""[CLS] and [SEP]: what a BERT-style embedder adds to every chunk it reads."""


class RetrievalError(ValueError):
    """A problem with a candidate's ``retrieval`` block; ``field`` is the key at fault."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class Store(Protocol):
    def get_many(self, keys: Sequence[str]) -> dict[str, Any]: ...

    def put_many(self, items: Mapping[str, Any]) -> None: ...


@dataclass(frozen=True)
class RetrievalSetup:
    """What collection checked, handed to the run: the corpus is read once."""

    spec: RetrievalSpec
    corpus: Corpus
    embedder: EmbeddingModel
    tokenizer: ChunkTokenizer


def prepare_retrieval(
    spec: RetrievalSpec, base_dir: Path, model_context: int | None = None
) -> RetrievalSetup:
    """Check a retrieval block; ``model_context`` is the candidate model's context in tokens
    (None when unknown: API models)."""
    try:
        corpus = read_corpus((base_dir / spec.corpus).resolve())
    except CorpusError as exc:
        raise RetrievalError(str(exc), "corpus") from None
    try:
        embedder = EmbeddingModel(spec.embedder)
    except ValueError as exc:
        raise RetrievalError(str(exc), "embedder") from None
    tokenizer = ChunkTokenizer(_tokenizer_file(embedder))
    tokens = spec.chunk.tokens
    max_seq = _max_seq_length(embedder)
    if spec.retriever != "bm25" and max_seq is not None and tokens + SPECIAL_TOKENS > max_seq:
        raise RetrievalError(
            f"a chunk of {tokens} tokens is longer than the embedder {embedder.label} reads "
            f"({max_seq} tokens with its 2 special tokens): it would embed only the start of each "
            f"chunk; use at most {max_seq - SPECIAL_TOKENS} tokens",
            "chunk.tokens",
        )
    if model_context is not None and tokens * spec.top_k > model_context:
        raise RetrievalError(
            f"top_k ({spec.top_k}) chunks of {tokens} tokens ({tokens * spec.top_k} tokens) do "
            f"not fit the model's context of {model_context} tokens; make the chunks or top_k "
            "smaller",
            "chunk.tokens",
        )
    return RetrievalSetup(spec=spec, corpus=corpus, embedder=embedder, tokenizer=tokenizer)


def _tokenizer_file(embedder: EmbeddingModel) -> Path:
    if embedder.path is not None and (embedder.path / "tokenizer.json").is_file():
        return embedder.path / "tokenizer.json"
    if embedder.path is None:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(embedder.label, "tokenizer.json")
        if isinstance(found, str):
            return Path(found)
    raise RetrievalError(
        f"the embedder {embedder.source} has no tokenizer.json (local folder or the local "
        "Hugging Face cache); chunks are counted in its tokens: give a folder that has one",
        "embedder",
    )


def _max_seq_length(embedder: EmbeddingModel) -> int | None:
    config = embedder.path / "sentence_bert_config.json" if embedder.path else None
    if config is None or not config.is_file():
        return None
    value = json.loads(config.read_text(encoding="utf-8")).get("max_seq_length")
    return int(value) if isinstance(value, int) else None


class Retriever:
    """Search one candidate's corpus; indexes live under ``root`` (None: in memory only)."""

    def __init__(
        self,
        setup: RetrievalSetup,
        root: Path | None,
        store: Store | None = None,
        device: str | None = None,
    ) -> None:
        self.setup = setup
        self.spec = setup.spec
        self.root = root
        self.store = store
        self.device = device
        self.built: list[str] = []
        """The indexes this instance built (not loaded): 'chunks', 'bm25', 'dense'."""

    @cached_property
    def chunks_key(self) -> str:
        return index_key(
            "chunks",
            corpus=self.setup.corpus.content_hash,
            tokens=self.spec.chunk.tokens,
            overlap=self.spec.chunk.overlap,
            tokenizer=self.setup.tokenizer.identity,
        )

    @cached_property
    def bm25_key(self) -> str:
        return index_key(
            "bm25", chunks=self.chunks_key, bm25s=metadata.version("bm25s"), **BM25_PARAMS
        )

    @cached_property
    def dense_key(self) -> str:
        return index_key(
            "dense",
            chunks=self.chunks_key,
            embedder=self.setup.embedder.fingerprint,
            st=metadata.version("sentence-transformers"),
        )

    @cached_property
    def chunks(self) -> list[Chunk]:
        folder = stored_folder(self.root, self.chunks_key)
        if folder is not None:
            return load_chunks(folder / "chunks.jsonl")
        spec = self.spec.chunk
        chunks = chunk_corpus(self.setup.corpus, self.setup.tokenizer, spec.tokens, spec.overlap)
        self.built.append("chunks")
        persist(self.root, self.chunks_key, lambda f: save_chunks(chunks, f / "chunks.jsonl"))
        return chunks

    @cached_property
    def bm25(self) -> BM25Index:
        folder = stored_folder(self.root, self.bm25_key)
        if folder is not None:
            return BM25Index.load(folder)
        index = BM25Index.build([c.text for c in self.chunks])
        self.built.append("bm25")
        persist(self.root, self.bm25_key, index.save)
        return index

    @cached_property
    def dense(self) -> DenseIndex:
        folder = stored_folder(self.root, self.dense_key)
        if folder is not None:
            return DenseIndex.load(folder, self._encode)
        index = DenseIndex(self._encode([c.text for c in self.chunks]), self._encode)
        self.built.append("dense")
        persist(self.root, self.dense_key, index.save)
        return index

    def _encode(self, texts: Sequence[str]) -> Any:
        import numpy as np

        model = load_embedder(self.setup.embedder.source, self.device)
        vectors = model.encode(
            list(texts),
            batch_size=64,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    @property
    def identity(self) -> str:
        """What a search result depends on, for the result cache."""
        keys = {"bm25": [self.bm25_key], "dense": [self.dense_key]}
        used = keys.get(self.spec.retriever, [self.bm25_key, self.dense_key])
        fusion = f"rrf:{RRF_K}:{RRF_DEPTH}" if self.spec.retriever == "hybrid" else None
        return make_key(indexes=used, retriever=self.spec.retriever, fusion=fusion)

    def rank(self, queries: Sequence[str]) -> list[Ranking]:
        """Uncached search: (chunk index, score) lists, best first."""
        k = self.spec.top_k
        if self.spec.retriever == "bm25":
            return self.bm25.rank(queries, k)
        if self.spec.retriever == "dense":
            return self.dense.rank(queries, k)
        sparse, dense = self.bm25.rank(queries, RRF_DEPTH), self.dense.rank(queries, RRF_DEPTH)
        return [fuse(pair, k) for pair in zip(sparse, dense, strict=True)]

    def search(self, queries: Sequence[str]) -> list[tuple[RetrievedChunk, ...]]:
        """The top_k chunks of each query, best first, from the result cache where possible."""
        identity, k = self.identity, self.spec.top_k
        keys = [make_key(kind="retrieval", index=identity, top_k=k, query=q) for q in queries]
        found = self.store.get_many(keys) if self.store is not None else {}
        todo = sorted({q for q, key in zip(queries, keys, strict=True) if key not in found})
        if todo:
            fresh = {
                make_key(kind="retrieval", index=identity, top_k=k, query=q): [
                    [self.chunks[i].id, score] for i, score in ranking
                ]
                for q, ranking in zip(todo, self.rank(todo), strict=True)
            }
            if self.store is not None:
                self.store.put_many(fresh)
            found = {**found, **fresh}
        by_id = {c.id: c for c in self.chunks}
        return [
            tuple(
                RetrievedChunk(id=cid, doc_id=by_id[cid].doc_id, score=score, text=by_id[cid].text)
                for cid, score in found[key]
            )
            for key in keys
        ]
