"""A small real RAG pipeline, written the way a user writes one: BM25 retrieval (bm25s) over a
folder of notes beside this file, and a jinja2 template that words the answer from the best
note. tests/test_call_candidate.py copies it into a project and evaluates it as a ``call:``
candidate; it imports nothing from evalkit."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import bm25s
import jinja2

NOTES = Path(__file__).parent / "notes"
"""Four short notes, committed beside this file."""
TOP_K = 2
ANSWER = jinja2.Template("{% if number %}{{ number }}{% else %}unknown{% endif %}")


@functools.cache
def _index() -> tuple[list[str], list[str], bm25s.BM25]:
    names = sorted(path.name for path in NOTES.glob("*.md"))
    texts = [(NOTES / name).read_text(encoding="utf-8") for name in names]
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(texts, show_progress=False), show_progress=False)
    return names, texts, retriever


def answer(question: str) -> dict[str, Any]:
    """The number in the best-matching note, with the notes retrieved as context."""
    names, texts, retriever = _index()
    query = bm25s.tokenize([question], show_progress=False)
    found, scores = retriever.retrieve(query, k=TOP_K, show_progress=False)
    best = texts[int(found[0][0])]
    number = re.search(r"\d+", best)
    return {
        "output": ANSWER.render(number=number.group() if number else None),
        "context": [
            {"id": names[int(i)], "text": texts[int(i)], "score": float(s)}
            for i, s in zip(found[0], scores[0], strict=True)
        ],
        "tokens": {"prompt": len(question.split()), "output": 1},
    }
