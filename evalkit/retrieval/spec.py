"""The ``retrieval:`` block of a candidate (evalkit.spec imports it; kept apart so the suite
spec stays readable). Self-contained: pydantic only."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChunkSpec(_Strict):
    """How documents are cut: windows of ``tokens`` tokens (the embedder's tokenizer), each
    sharing ``overlap`` tokens with the previous one."""

    tokens: int = Field(200, ge=8, description="tokens per chunk")
    overlap: int = Field(20, ge=0, description="tokens shared by consecutive chunks")

    @model_validator(mode="after")
    def _overlap_below_size(self) -> ChunkSpec:
        if self.overlap >= self.tokens:
            raise ValueError(
                f"overlap ({self.overlap}) must be smaller than tokens ({self.tokens})"
            )
        return self


class RetrievalSpec(_Strict):
    """Retrieval-augmented generation: the top_k chunks of ``corpus`` for each example are
    rendered into the prompt as ``{{ context }}`` (text) and ``{{ chunks }}`` (a list)."""

    corpus: str = Field(
        description="folder of .md/.markdown/.txt/.rst files, relative to the suite file"
    )
    chunk: ChunkSpec = Field(default_factory=ChunkSpec)
    retriever: Literal["bm25", "dense", "hybrid"] = Field(
        "bm25", description="bm25 (bm25s), dense (embeddings), hybrid (reciprocal rank fusion)"
    )
    top_k: int = Field(4, ge=1, le=100)
    embedder: str | None = Field(
        None,
        description="sentence-transformers folder or hub id (default: the embedded "
        "all-MiniLM-L6-v2); its tokenizer also counts the chunk tokens",
    )
    query: str | None = Field(
        None,
        description="jinja2 template of the search query over the example's fields (default: "
        "the rendered user prompt)",
    )
