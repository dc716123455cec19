"""Where example ids come from: the ``id`` field (default), another field (``ids: FIELD``), or
the line (``ids: line``), so files made for other tools (lm-evaluation-harness' local JSONL has
no id) load as they are."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from suitefiles import write_jsonl, write_suite

from evalkit.cache import Cache
from evalkit.errors import SpecError
from evalkit.golden import load_golden
from evalkit.run import RunOptions, prepare_suite, run_suite

TEXTS = [
    "The cat sees the red ball.",
    "A dog finds fresh water.",
    "Our team reads the answer.",
]


def lm_eval_jsonl(path: Path) -> Path:
    """lm-evaluation-harness' local format: one {"text": ...} per line, no id; a blank line."""
    lines = [json.dumps({"text": TEXTS[0]}), json.dumps({"text": TEXTS[1]}), ""]
    path.write_text("\n".join([*lines, json.dumps({"text": TEXTS[2]})]) + "\n", encoding="utf-8")
    return path


def test_line_ids_are_the_lines_examples_start_on(tmp_path: Path) -> None:
    path = lm_eval_jsonl(tmp_path / "wiki.jsonl")
    examples = load_golden(path, ids="line")
    assert [e.id for e in examples] == ["line-1", "line-2", "line-4"]
    assert [e.fields["text"] for e in examples] == TEXTS
    assert [e.line for e in examples] == [1, 2, 4]


def test_ids_from_another_field_and_the_errors(tmp_path: Path) -> None:
    rows = [{"doc_id": 7, "q": "a"}, {"doc_id": "x9", "q": "b"}]
    path = write_jsonl(tmp_path / "docs.jsonl", rows)
    assert [e.id for e in load_golden(path, ids="doc_id")] == ["7", "x9"]
    with pytest.raises(SpecError, match=r"docs\.jsonl:1 field 'q2': missing 'q2', the field"):
        load_golden(path, ids="q2")
    with pytest.raises(SpecError, match=r"'ids: line' numbers examples by line"):
        load_golden(path)
    write_jsonl(path, [{"doc_id": 1}, {"doc_id": "1"}])
    with pytest.raises(SpecError, match=r"docs\.jsonl:2 field 'doc_id': duplicate example id"):
        load_golden(path, ids="doc_id")


def test_lm_eval_corpus_runs_as_a_suite_with_line_ids(tmp_path: Path, tiny_model: Path) -> None:
    """The same texts with ids: line and with explicit ids give the same perplexities."""
    lm_eval_jsonl(tmp_path / "wiki.jsonl")
    rows = [{"id": f"t{i}", "text": text} for i, text in enumerate(TEXTS)]
    write_jsonl(tmp_path / "ids.jsonl", rows)
    values = {}
    for name, dataset, ids in [("lines", "wiki.jsonl", "line"), ("ids", "ids.jsonl", "id")]:
        suite = {
            "suite": name,
            "dataset": dataset,
            "ids": ids,
            "prompt": "{{ text }}",
            "candidates": {"tiny": {"model": str(tiny_model)}},
            "metrics": [{"perplexity": {"field": "text"}}],
        }
        path = write_suite(tmp_path / f"{name}.yaml", suite)
        options = RunOptions(
            report_dir=tmp_path / "reports", cache=Cache(tmp_path / "c.sqlite"), progress=False
        )
        run = run_suite(prepare_suite(path), options).candidates["tiny"]
        values[name] = [e.scores["perplexity"] for e in run.examples]
        if ids == "line":
            assert [e.id for e in run.examples] == ["line-1", "line-2", "line-4"]
    assert values["lines"] == pytest.approx(values["ids"], rel=1e-9)
    assert all(v is not None and v > 1 for v in values["lines"])
