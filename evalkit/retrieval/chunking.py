"""Split documents into overlapping windows of tokens.

Tokens are the embedder's own (its ``tokenizer.json``, read with the ``tokenizers`` library:
no torch), for every retriever, so BM25, dense and hybrid candidates with the same ``chunk``
settings index the very same chunks (their ids and scores compare), and a chunk never holds more
tokens than the embedder reads. A window of ``tokens`` starts every ``tokens - overlap`` tokens;
its text is the original document text from its first token's start to its last token's end
(case, spacing and markdown kept). Windows ignore sentence and section boundaries: simple and
predictable, at the price of chunks that start mid-sentence.

A chunk's id is ``<document id>#<index>`` (``policies/leave.md#2``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from evalkit.retrieval.corpus import Corpus, Document


@dataclass(frozen=True)
class Chunk:
    id: str
    doc_id: str
    text: str

    def to_json(self) -> dict[str, str]:
        return {"id": self.id, "doc_id": self.doc_id, "text": self.text}


class ChunkTokenizer:
    """The embedder's tokenizer, without special tokens, truncation or padding."""

    def __init__(self, tokenizer_file: Path) -> None:
        self.file = tokenizer_file

    @cached_property
    def _tokenizer(self) -> Any:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(self.file))
        # sentence-transformers folders ship the tokenizer set to truncate at 128 and pad: a
        # chunker must see every token of a document.
        tokenizer.no_truncation()
        tokenizer.no_padding()
        return tokenizer

    @cached_property
    def identity(self) -> str:
        """Hash of the tokenizer file: a different vocabulary makes different chunks."""
        return hashlib.sha256(self.file.read_bytes()).hexdigest()[:16]

    def offsets(self, text: str) -> list[tuple[int, int]]:
        """(start, end) character offsets of each token of ``text``."""
        return list(self._tokenizer.encode(text, add_special_tokens=False).offsets)

    def count(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)


def chunk_document(
    document: Document, tokenizer: ChunkTokenizer, tokens: int, overlap: int
) -> list[Chunk]:
    offsets = tokenizer.offsets(document.text)
    step = tokens - overlap
    chunks: list[Chunk] = []
    start = 0
    while start < len(offsets):
        window = offsets[start : start + tokens]
        text = document.text[window[0][0] : window[-1][1]]
        chunks.append(Chunk(f"{document.id}#{len(chunks)}", document.id, text))
        if start + tokens >= len(offsets):
            break  # the last window reached the end: another would only repeat its tail
        start += step
    return chunks


def chunk_corpus(
    corpus: Corpus, tokenizer: ChunkTokenizer, tokens: int, overlap: int
) -> list[Chunk]:
    return [
        chunk
        for document in corpus.documents
        for chunk in chunk_document(document, tokenizer, tokens, overlap)
    ]


def save_chunks(chunks: list[Chunk], path: Path) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for chunk in chunks:
            handle.write(json.dumps(chunk.to_json(), ensure_ascii=False) + "\n")


def load_chunks(path: Path) -> list[Chunk]:
    with path.open(encoding="utf-8") as handle:
        return [Chunk(**json.loads(line)) for line in handle if line.strip()]
