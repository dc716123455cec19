"""faithfulness (lexical rule and the judged route against the judge metric called directly),
retrieval metrics on hand-built samples, and the options' errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from evalkit.candidates.base import RetrievedChunk
from evalkit.errors import SpecError
from evalkit.metrics import Sample, create, split_score
from evalkit.metrics.rag import FAITHFULNESS_CRITERIA, FAITHFULNESS_LEVELS, content_words

CHUNKS = (
    RetrievedChunk("leave.md#0", "leave.md", 3.2, "Staff receive 27 days of paid annual leave."),
    RetrievedChunk("pay.md#1", "pay.md", 1.1, "Salaries are paid on the 25th of each month."),
)


def sample(output: str, retrieved: tuple[RetrievedChunk, ...] = CHUNKS, **fields: object) -> Sample:
    return Sample(id="x", output=output, references=("27",), fields=fields, retrieved=retrieved)


def values(metric_name: str, samples: list[Sample], **options: object) -> list[float | None]:
    metric = create(metric_name, options)
    return [split_score(v)[0] for v in metric.score(samples)]  # type: ignore[union-attr]


def test_lexical_faithfulness_rule() -> None:
    context = set(content_words(" ".join(c.text for c in CHUNKS)))
    outputs = {
        "27": 1.0,  # a bare number found in the context
        "28": 0.0,  # a number the context does not hold
        "Staff receive 27 days of paid leave. Leave is unlimited for managers.": 0.5,
        "Employees get twenty-seven vacation days.": 0.0,  # a paraphrase: the rule cannot see it
        "Staff receive 25 days of annual leave.": 1.0,  # wrong recombination: a stated limit
    }
    got = values("faithfulness", [sample(o) for o in outputs])
    assert got == list(outputs.values())
    # the stated rule, recomputed: every number present and >= 80% of the other content words
    claim = "Leave is unlimited for managers"
    words = content_words(claim)
    assert sum(w in context for w in words) / len(words) < 0.8
    assert values("faithfulness", [sample("27")], min_overlap=0.5) == [1.0]
    assert values("faithfulness", [sample("27", retrieved=())]) == [None]
    assert values("faithfulness", [sample(" . ")]) == [None]


def test_retrieval_metrics_on_samples() -> None:
    ranked = [sample("", context_ids=ids) for ids in (["pay.md"], ["leave.md#0", "x.md"], [])]
    hits = [[c for c in CHUNKS if c.id in s.fields["context_ids"] or c.doc_id in s.fields[
        "context_ids"]] for s in ranked]  # fmt: skip
    assert values("hit_at_k", ranked) == [1.0, 1.0, None]
    assert values("recall_at_k", ranked) == [1.0, 0.5, None]
    assert values("mrr", ranked) == [1 / (CHUNKS.index(hits[0][0]) + 1), 1.0, None]
    assert values("hit_at_k", ranked[:1], k=1) == [0.0]  # pay.md is ranked second
    assert values("recall_at_k", [sample("", retrieved=(), context_ids=["pay.md"])]) == [None]


def test_judged_faithfulness_is_the_judge_on_the_retrieved_text(tiny_model: Path) -> None:
    judged = create("faithfulness", {"judge": {"model": str(tiny_model), "batch_size": 2}})
    direct = create(
        "judge",
        {
            "model": str(tiny_model),
            "batch_size": 2,
            "rubric": FAITHFULNESS_CRITERIA,
            "reference": True,
            "levels": FAITHFULNESS_LEVELS,
        },
    )
    samples = [sample("27"), sample("Pay comes on the 3rd."), sample("27", retrieved=())]
    shown = [
        dataclasses.replace(s, references=("\n\n".join(c.text for c in s.retrieved),))
        for s in samples[:2]
    ]
    expected = [(split_score(v)[0] - 1) / 4 for v in direct.score(shown)]  # type: ignore[union-attr,operator]
    got = [split_score(v)[0] for v in judged.score(samples)]  # type: ignore[union-attr]
    assert got[:2] == pytest.approx(expected, abs=1e-9)
    assert got[2] is None
    assert "judged|judge:" in judged.signature()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"min_overlap": 0}, "min_overlap"),
        ({"judge": {"model": "x", "rubric": "correctness"}}, "sets its own rubric"),
        ({"judge": {"model": "x"}, "min_overlap": 0.5}, "lexical check"),
        ({"overlap": 0.5}, "Did you mean 'min_overlap'"),
    ],
)
def test_faithfulness_option_errors(options: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        create("faithfulness", options)
