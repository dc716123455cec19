"""The metric contract the engine honours: Score details, missing values, candidate metrics,
pairwise metrics that read the compare_to candidate's output, and how each is cached."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from suitefiles import write_jsonl, write_suite

from evalkit.cache import Cache
from evalkit.candidates.base import Candidate
from evalkit.metrics import Sample, Score, register
from evalkit.metrics.base import _REGISTRY
from evalkit.run import RunOptions, prepare_suite, run_suite
from evalkit.spec import GenerationSpec

CALLS: list[tuple[str, list[str]]] = []


class LengthWithNote:
    """Output length; a detail for long outputs, a missing value (with its reason) for empty."""

    name, version, higher_is_better = "length_note", "1", True

    def signature(self) -> str:
        return "length_note"

    def score(self, samples: Sequence[Sample]) -> list[Any]:
        CALLS.append((self.name, [s.id for s in samples]))
        out: list[Any] = []
        for s in samples:
            if s.output == "":
                out.append(Score(None, {"error": "empty output"}))
            elif len(s.output) > 8:
                out.append(Score(float(len(s.output)), {"note": "long"}))
            else:
                out.append(float(len(s.output)))
        return out


class CandidateName:
    """A candidate metric: sees the candidate object; never cached when cacheable is False."""

    name, version, higher_is_better = "candidate_name_len", "1", True

    def __init__(self, cacheable: bool = True) -> None:
        self.cacheable = cacheable

    def signature(self) -> str:
        return f"cacheable:{self.cacheable}"

    def score_candidate(
        self, samples: Sequence[Sample], candidate: Candidate, params: GenerationSpec
    ) -> list[float]:
        CALLS.append((f"{self.name}:{candidate.name}", [s.id for s in samples]))
        return [float(len(candidate.name) + params.max_new_tokens) for _ in samples]


class AgreesWithBaseline:
    """Pairwise: 1 when the output equals the compare_to candidate's output."""

    name, version, higher_is_better, uses_baseline = "agrees", "1", True, True

    def signature(self) -> str:
        return "agrees"

    def score(self, samples: Sequence[Sample]) -> list[float | None]:
        CALLS.append((self.name, [s.id for s in samples]))
        return [
            None if s.baseline_output is None else float(s.output == s.baseline_output)
            for s in samples
        ]


@pytest.fixture(autouse=True)
def _registered() -> Iterator[None]:
    names = {"length_note": LengthWithNote, "candidate_name_len": CandidateName,
             "agrees": AgreesWithBaseline}  # fmt: skip
    for name, factory in names.items():
        register(name, factory)
    CALLS.clear()
    yield
    for name in names:
        _REGISTRY.pop(name, None)


def _project(root: Path, cacheable: bool) -> Path:
    golden = [{"id": f"e{i}", "input": f"q{i}", "reference": "r"} for i in range(4)]
    write_jsonl(root / "golden.jsonl", golden)
    base = ["short", "a longer output", "", "same"]
    other = ["short", "changed output", "x", "diff"]
    write_jsonl(root / "base.jsonl", [{"id": f"e{i}", "output": o} for i, o in enumerate(base)])
    write_jsonl(root / "new.jsonl", [{"id": f"e{i}", "output": o} for i, o in enumerate(other)])
    suite = {
        "suite": "contract",
        "dataset": "golden.jsonl",
        "generation": {"max_new_tokens": 3},
        "candidates": {"base": {"replay": "base.jsonl"}, "new": {"replay": "new.jsonl"}},
        "metrics": ["length_note", {"candidate_name_len": {"cacheable": cacheable}}, "agrees"],
        "compare_to": "base",
    }
    return write_suite(root / "suite.yaml", suite)


def _run(path: Path, cache: Cache, tmp_path: Path) -> Any:
    options = RunOptions(report_dir=tmp_path / "reports", cache=cache, progress=False)
    return run_suite(prepare_suite(path), options)


def test_details_missing_values_and_pairwise(tmp_path: Path) -> None:
    result = _run(_project(tmp_path, True), Cache(tmp_path / "c.sqlite"), tmp_path)
    base, new = result.candidates["base"], result.candidates["new"]
    by_id = {e.id: e for e in base.examples}
    assert by_id["e1"].scores["length_note"] == 15.0
    assert by_id["e1"].details["length_note"] == {"note": "long"}
    assert by_id["e2"].scores["length_note"] is None  # missing, not 0
    assert by_id["e2"].details["length_note"] == {"error": "empty output"}
    assert "length_note" not in by_id["e0"].details
    assert base.aggregates["length_note"].n == 3
    assert base.aggregates["length_note"].n_missing == 1
    assert base.aggregates["length_note"].mean == pytest.approx((5 + 15 + 4) / 3)
    # candidate metric: saw each candidate object and the run's decoding parameters
    assert {e.scores["candidate_name_len"] for e in base.examples} == {4.0 + 3}
    assert {e.scores["candidate_name_len"] for e in new.examples} == {3.0 + 3}
    # pairwise: the baseline candidate has nothing to compare with; "new" agrees on e0 only
    assert {e.scores["agrees"] for e in base.examples} == {None}
    assert [e.scores["agrees"] for e in new.examples] == [1.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("cacheable", [True, False])
def test_caching_of_candidate_and_pairwise_metrics(tmp_path: Path, cacheable: bool) -> None:
    path = _project(tmp_path, cacheable)
    ids = ["e0", "e1", "e2", "e3"]
    cache = Cache(tmp_path / "c.sqlite")
    _run(path, cache, tmp_path)
    first = list(CALLS)
    CALLS.clear()
    _run(path, cache, tmp_path)
    # Output metrics: base's e0 ("short") was already scored when new's e0 came along.
    assert ("length_note", ["e1", "e2", "e3"]) in first  # new: e0 "short" is shared
    # The missing value (error) is not cached: asked again on the second run, alone.
    assert CALLS[0] == ("length_note", ["e2"])
    # Candidate metrics are keyed by candidate, never shared; uncacheable ones always re-run.
    rerun = [c for c in CALLS if c[0].startswith("candidate_name_len")]
    expected = [("candidate_name_len:base", ["e0", "e1", "e2", "e3"]),
                ("candidate_name_len:new", ["e0", "e1", "e2", "e3"])]  # fmt: skip
    assert [c for c in first if c[0].startswith("candidate_name_len")] == expected
    assert rerun == ([] if cacheable else expected)
    # Pairwise scores are keyed by the baseline's output too; nothing is new on a re-run except
    # the baseline candidate's own values, which are missing (nothing to compare) so uncached.
    assert [c for c in first if c[0] == "agrees"] == [("agrees", ids), ("agrees", ids)]
    assert [c for c in CALLS if c[0] == "agrees"] == [("agrees", ids)]


def test_nan_is_missing_with_a_reason(tmp_path: Path) -> None:
    class Nan(LengthWithNote):
        name = "nan"

        def score(self, samples: Sequence[Sample]) -> list[Any]:
            return [float("nan") for _ in samples]

    register("nan", Nan)
    try:
        path = _project(tmp_path, True)
        text = path.read_text().replace("- length_note", "- nan")
        path.write_text(text)
        result = _run(path, Cache(None), tmp_path)
    finally:
        _REGISTRY.pop("nan", None)
    example = result.candidates["base"].examples[0]
    assert example.scores["nan"] is None
    assert example.details["nan"] == {"error": "the metric returned nan"}
