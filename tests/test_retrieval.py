"""evalkit.retrieval against the libraries called directly: chunks against the embedder's
tokenizer (transformers), BM25 against bm25s, dense against sentence-transformers, hybrid
against reciprocal rank fusion of those two rankings; indexes cached by corpus content hash;
corpus errors."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from evalkit.cache import MemoryStore
from evalkit.embeddings import default_model_folder
from evalkit.retrieval.corpus import CorpusError, read_corpus
from evalkit.retrieval.retriever import RetrievalError, Retriever, prepare_retrieval
from evalkit.retrieval.spec import RetrievalSpec

HANDBOOK = Path(__file__).resolve().parents[1] / "golden" / "handbook"
QUERIES = [
    "How many days of paid annual leave do employees receive?",
    "What is the on-call stipend per week?",
    "minimum password length",
    "Which laptop models can engineers choose?",
    "zzz qqq",  # matches nothing lexically: every BM25 score is 0
]


def spec(**overrides: Any) -> RetrievalSpec:
    values: dict[str, Any] = {"corpus": "handbook", "chunk": {"tokens": 64, "overlap": 16}}
    return RetrievalSpec.model_validate({**values, **overrides})


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rag")
    shutil.copytree(HANDBOOK, root / "handbook")
    return root


@pytest.fixture(scope="module")
def shared_indexes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Chunk embeddings computed once for the dense, hybrid and cache tests."""
    return tmp_path_factory.mktemp("indexes")


def retriever(root: Path, index_dir: Path | None = None, **overrides: Any) -> Retriever:
    return Retriever(prepare_retrieval(spec(**overrides), root), index_dir)


@pytest.fixture(scope="module")
def direct_model() -> Any:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(default_model_folder()), device="cpu")


def test_chunks_are_token_windows_of_the_embedder_tokenizer(corpus_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokens, overlap = 64, 16
    chunks = retriever(corpus_dir).chunks
    hf = AutoTokenizer.from_pretrained(str(default_model_folder()))
    for doc in sorted((corpus_dir / "handbook").glob("*.md")):
        text = doc.read_text(encoding="utf-8")
        offsets = hf(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        starts = range(0, max(len(offsets) - overlap, 1), tokens - overlap)
        expected = [
            text[offsets[s][0] : offsets[min(s + tokens, len(offsets)) - 1][1]] for s in starts
        ]
        got = [c.text for c in chunks if c.doc_id == doc.name]
        assert got == expected, doc.name
        assert [c.id for c in chunks if c.doc_id == doc.name] == [
            f"{doc.name}#{i}" for i in range(len(expected))
        ]


def test_bm25_equals_bm25s(corpus_dir: Path) -> None:
    import bm25s

    ours = retriever(corpus_dir, retriever="bm25", top_k=4)
    texts = [c.text for c in ours.chunks]
    direct = bm25s.BM25(method="lucene", k1=1.5, b=0.75)
    direct.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
    for query, hits in zip(QUERIES, ours.search(QUERIES), strict=True):
        tokens = bm25s.tokenize([query], stopwords="en", show_progress=False)
        docs, scores = direct.retrieve(tokens, k=4, show_progress=False)
        np.testing.assert_allclose([h.score for h in hits], scores[0], rtol=1e-6, atol=1e-7)
        if scores[0][0] > 0 and len(set(scores[0])) == 4:  # no ties: the order is defined
            assert [h.text for h in hits] == [texts[i] for i in docs[0]]
    first = ours.search(QUERIES[:1])[0]
    assert first[0].doc_id == "annual-leave.md"


def test_dense_equals_sentence_transformers(
    corpus_dir: Path, shared_indexes: Path, direct_model: Any
) -> None:
    from sentence_transformers import util

    ours = retriever(corpus_dir, shared_indexes, retriever="dense", top_k=3)
    texts = [c.text for c in ours.chunks]
    chunk_vectors = direct_model.encode(texts, convert_to_tensor=True)
    query_vectors = direct_model.encode(QUERIES, convert_to_tensor=True)
    cosines = util.cos_sim(query_vectors, chunk_vectors).numpy()
    for row, hits in zip(cosines, ours.search(QUERIES), strict=True):
        best = np.argsort(-row, kind="stable")[:3]
        assert [h.text for h in hits] == [texts[i] for i in best]
        np.testing.assert_allclose([h.score for h in hits], row[best], atol=2e-5)


def test_hybrid_is_reciprocal_rank_fusion(
    corpus_dir: Path, shared_indexes: Path, direct_model: Any
) -> None:
    import bm25s
    from sentence_transformers import util

    ours = retriever(corpus_dir, shared_indexes, retriever="hybrid", top_k=4)
    texts = [c.text for c in ours.chunks]
    sparse = bm25s.BM25(method="lucene", k1=1.5, b=0.75)
    sparse.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
    cosines = util.cos_sim(
        direct_model.encode(QUERIES[:3], convert_to_tensor=True),
        direct_model.encode(texts, convert_to_tensor=True),
    ).numpy()
    for query, row, hits in zip(QUERIES[:3], cosines, ours.search(QUERIES[:3]), strict=True):
        bm25 = sparse.get_scores(bm25s.tokenize([query], stopwords="en", return_ids=False)[0])
        fused: dict[int, float] = {}
        for scores in (bm25, row):
            for rank, index in enumerate(np.argsort(-scores, kind="stable"), start=1):
                fused[int(index)] = fused.get(int(index), 0.0) + 1 / (60 + rank)
        expected = sorted(fused.items(), key=lambda item: (-item[1], item[0]))[:4]
        assert [h.text for h in hits] == [texts[i] for i, _ in expected]
        np.testing.assert_allclose([h.score for h in hits], [s for _, s in expected])


def test_index_is_cached_by_corpus_hash(tmp_path: Path) -> None:
    shutil.copytree(HANDBOOK, tmp_path / "handbook")
    index_dir = tmp_path / "indexes"
    first = retriever(tmp_path, index_dir)
    hits = first.search(QUERIES[:2])
    assert first.built == ["chunks", "bm25"]
    again = retriever(tmp_path, index_dir)
    assert again.search(QUERIES[:2]) == hits
    assert again.built == []  # loaded from disk, not rebuilt
    folders = {p.name for p in index_dir.iterdir()}
    assert len(folders) == 2

    page = tmp_path / "handbook" / "pension.md"
    page.write_text(page.read_text() + "\nThe pension plan is run by Harbourline.\n")
    edited = retriever(tmp_path, index_dir)
    edited.search(QUERIES[:2])
    assert edited.built == ["chunks", "bm25"]  # one edited document: the corpus is re-indexed
    assert len({p.name for p in index_dir.iterdir()} - folders) == 2


def test_cached_search_loads_no_index(corpus_dir: Path, shared_indexes: Path) -> None:
    store = MemoryStore()
    setup = prepare_retrieval(spec(retriever="dense", top_k=2), corpus_dir)
    first = Retriever(setup, shared_indexes, store).search(QUERIES)
    second = Retriever(setup, shared_indexes, store)
    assert second.search(QUERIES) == first
    assert "dense" not in second.__dict__  # the cached_property never ran: no embedder needed


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: None, "does not exist"),
        (lambda d: d.mkdir(), "holds no documents"),
        (lambda d: (d.mkdir(), (d / "a.png").write_bytes(b"\x89PNG")), "holds no documents"),
        (lambda d: (d.mkdir(), (d / "a.md").write_text("  \n")), "only empty documents"),
        (lambda d: (d.mkdir(), (d / "a.md").write_bytes(b"caf\xe9")), "not UTF-8 text"),
        (lambda d: d.write_text("x"), "is a file"),
    ],
)
def test_corpus_errors(tmp_path: Path, make: Any, message: str) -> None:
    make(tmp_path / "docs")
    with pytest.raises(CorpusError, match=message):
        read_corpus(tmp_path / "docs")
    with pytest.raises(RetrievalError, match=message) as caught:
        prepare_retrieval(spec(corpus="docs"), tmp_path)
    assert caught.value.field == "corpus"


def test_chunk_size_limits(corpus_dir: Path) -> None:
    with pytest.raises(RetrievalError, match="do not fit the model's context of 2048") as err:
        prepare_retrieval(spec(chunk={"tokens": 600, "overlap": 0}, top_k=4), corpus_dir, 2048)
    assert err.value.field == "chunk.tokens"
    with pytest.raises(RetrievalError, match="longer than the embedder") as err:
        prepare_retrieval(spec(retriever="dense", chunk={"tokens": 300}), corpus_dir)
    assert err.value.field == "chunk.tokens"
    # BM25 reads no embeddings: long chunks are fine as long as the model's context holds them
    prepare_retrieval(spec(chunk={"tokens": 300}, top_k=2), corpus_dir, 8192)
