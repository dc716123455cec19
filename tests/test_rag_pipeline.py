"""RAG candidates end to end with a tiny transformers model: chunks rendered into the prompt
and the generation key, retrieved ids and scores in run.json, retrieval metrics, prompt tokens
against the tokenizer called directly, cached re-runs, and collection errors with their place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from suitefiles import write_jsonl, write_suite

from evalkit.cache import Cache
from evalkit.errors import SpecError
from evalkit.results import RunResult
from evalkit.retrieval.retriever import Retriever
from evalkit.run import RunOptions, prepare_suite, run_suite

DOCS = {
    "leave.md": "Annual leave. Staff receive 27 days of paid leave each year.",
    "pay.md": "Salary. Pay arrives on the 25th day of every month by bank transfer.",
    "oncall.md": "On-call. The stipend for one week of on-call duty is 180 euros.",
    "kitchen.md": "Kitchen. The fridge is emptied every Friday afternoon at four.",
}
ROWS = [
    {"id": "leave", "question": "How many days of paid leave?", "reference": "27",
     "context_ids": ["leave.md"]},
    {"id": "pay", "question": "On which day of the month is pay?", "reference": "25",
     "context_ids": ["pay.md", "kitchen.md"]},
    {"id": "oncall", "question": "What is the on-call stipend per week?", "reference": "180",
     "context_ids": ["oncall.md#0"]},
    {"id": "none", "question": "Is there a fridge?", "reference": "yes"},
]  # fmt: skip
PROMPT = "{% if context %}Notes:\n{{ context }}\n{% endif %}Q: {{ question }}"
RETRIEVAL = {"corpus": "../docs", "retriever": "bm25", "top_k": 2, "chunk": {"tokens": 24}}


def write_project(root: Path, model: Path, **overrides: Any) -> Path:
    for name, text in DOCS.items():
        (root / "docs").mkdir(parents=True, exist_ok=True)
        (root / "docs" / name).write_text(text, encoding="utf-8")
    write_jsonl(root / "golden" / "notes.jsonl", overrides.pop("rows", ROWS))
    spec = {
        "suite": "notes",
        "dataset": "../golden/notes.jsonl",
        "prompt": PROMPT,
        "generation": {"max_new_tokens": 4, "batch_size": 4},
        "candidates": {
            "plain": {"model": str(model)},
            "rag": {"model": str(model), "retrieval": RETRIEVAL},
        },
        "metrics": ["hit_at_k", "recall_at_k", "mrr", "faithfulness", "prompt_tokens"],
        **overrides,
    }
    return write_suite(root / "suites" / "notes.yaml", spec)


def run(suite: Path, cache: Cache, report_dir: Path) -> RunResult:
    return run_suite(prepare_suite(suite), RunOptions(report_dir=report_dir, cache=cache))


@pytest.fixture
def first_run(tmp_path: Path, tiny_model: Path) -> tuple[Path, Cache, RunResult]:
    suite = write_project(tmp_path, tiny_model)
    cache = Cache(tmp_path / "cache" / "evalkit.sqlite")
    return suite, cache, run(suite, cache, tmp_path / "reports")


def test_chunks_reach_prompt_run_json_and_metrics(
    first_run: tuple[Path, Cache, RunResult], tiny_model: Path
) -> None:
    from transformers import AutoTokenizer

    suite, _, result = first_run
    prepared = prepare_suite(suite)
    direct = Retriever(prepared.retrieval["rag"], None)
    expected = direct.search([f"Q: {row['question']}" for row in ROWS])
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model))
    plain = {e.id: e for e in result.candidates["plain"].examples}
    for row, example, hits in zip(ROWS, result.candidates["rag"].examples, expected, strict=True):
        assert example.retrieved == [{"id": h.id, "score": h.score} for h in hits]
        user = example.messages[-1]["content"]
        assert all(h.text.strip() in user for h in hits)
        assert plain[row["id"]].messages[-1]["content"] == f"Q: {row['question']}"
        # prompt_tokens is the chat-templated prompt's length, as the tokenizer counts it
        ids = tokenizer.apply_chat_template(
            example.messages, add_generation_prompt=True, return_dict=False
        )
        assert example.scores["prompt_tokens"] == len(ids)
        assert example.scores["prompt_tokens"] > plain[row["id"]].scores["prompt_tokens"]
        wanted = row.get("context_ids")
        if wanted is None:
            assert example.scores["recall_at_k"] is None
            assert "context_ids" in example.details["recall_at_k"]["error"]
            continue
        matched = [w for w in wanted if any(w in (h.id, h.doc_id) for h in hits)]
        assert example.scores["recall_at_k"] == len(matched) / len(wanted)
        assert example.scores["hit_at_k"] == float(bool(matched))
        ranks = [r for r, h in enumerate(hits, 1) if h.id in wanted or h.doc_id in wanted]
        assert example.scores["mrr"] == (1 / ranks[0] if ranks else 0.0)
    assert all(e.scores["recall_at_k"] is None for e in plain.values())
    assert "no 'retrieval' block" in plain["leave"].details["faithfulness"]["error"]


def test_cached_rerun_and_corpus_edit(first_run: tuple[Path, Cache, RunResult]) -> None:
    suite, cache, result = first_run
    indexes = cache.path.parent / "retrieval"  # type: ignore[union-attr]
    folders = set(indexes.iterdir())
    again = run(suite, cache, suite.parent.parent / "reports2")
    assert again.cache["misses"].get("generation", 0) == 0
    assert again.cache["hits"]["retrieval"] == len(ROWS)
    assert set(indexes.iterdir()) == folders
    for name in ("plain", "rag"):
        assert [e.output for e in again.candidates[name].examples] == [
            e.output for e in result.candidates[name].examples
        ]

    leave = suite.parent.parent / "docs" / "leave.md"
    leave.write_text(leave.read_text() + " Unused days expire in March.")
    edited = run(suite, cache, suite.parent.parent / "reports3")
    assert edited.cache["misses"]["retrieval"] == len(ROWS)  # a new corpus hash: new searches
    assert len(set(indexes.iterdir()) - folders) == 2  # chunks and BM25 rebuilt
    assert edited.cache["misses"].get("generation", 0) >= 1  # the leave chunk text changed


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"corpus": "../empty"}, "candidates.rag.retrieval.corpus", "holds no documents"),
        ({"corpus": "../nowhere"}, "candidates.rag.retrieval.corpus", "does not exist"),
        (
            {"chunk": {"tokens": 200}, "top_k": 4},
            "candidates.rag.retrieval.chunk.tokens",
            "do not fit the model's context of 512 tokens",
        ),
        (
            {"retriever": "dense", "chunk": {"tokens": 300}},
            "candidates.rag.retrieval.chunk.tokens",
            "longer than the embedder",
        ),
    ],
)
def test_retrieval_errors_at_collection(
    tmp_path: Path, tiny_model: Path, change: dict, field: str, message: str
) -> None:
    (tmp_path / "empty").mkdir()
    suite = write_project(tmp_path, tiny_model)
    text = suite.read_text()
    spec = {**RETRIEVAL, **change}
    write_project(
        tmp_path,
        tiny_model,
        candidates={"rag": {"model": str(tiny_model), "retrieval": spec}},
    )
    with pytest.raises(SpecError, match=message) as caught:
        prepare_suite(suite)
    assert caught.value.field == field
    assert caught.value.path is not None and caught.value.path.endswith("notes.yaml")
    assert caught.value.line is not None and caught.value.line > 1
    assert text  # the project was valid before the change


def test_template_and_golden_errors_at_collection(tmp_path: Path, tiny_model: Path) -> None:
    suite = write_project(tmp_path, tiny_model, prompt="Q: {{ question }}")
    with pytest.raises(SpecError, match=r"neither the 'prompt' nor the 'system'") as caught:
        prepare_suite(suite)
    assert caught.value.field == "candidates.rag.retrieval"

    rows = [*ROWS[:2], {**ROWS[2], "context_ids": ["on-call.md"]}]
    write_project(tmp_path, tiny_model, rows=rows)
    with pytest.raises(SpecError, match=r"did you mean 'oncall\.md'") as caught:
        prepare_suite(suite)
    assert (caught.value.field, caught.value.line) == ("context_ids", 3)
    assert caught.value.path is not None and caught.value.path.endswith("notes.jsonl")

    write_project(tmp_path, tiny_model, rows=[{**ROWS[0], "context": "mine"}])
    with pytest.raises(SpecError, match="fills with its retrieved chunks") as caught:
        prepare_suite(suite)
    assert caught.value.field == "context"
