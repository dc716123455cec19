"""A candidate's own ``limit:``: a slow variant runs on N of the suite's examples (chosen by id
hash, as latency samples are), its gates pair those N with the baseline, the report says so,
and ``full`` runs everything."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from suitefiles import write_jsonl, write_suite

from evalkit.cache import Cache
from evalkit.errors import EvalkitError
from evalkit.report.publish import publish
from evalkit.run import RunOptions, prepare_suite, run_suite

N = 12
WRONG = {1, 4, 9}


def _project(root: Path) -> Path:
    golden = [{"id": f"q{i:02d}", "q": f"question {i}", "reference": f"a{i}"} for i in range(N)]
    write_jsonl(root / "golden" / "qa.jsonl", golden)
    for name, wrong in (("good", set()), ("slow", WRONG)):
        rows = [{"id": f"q{i:02d}", "output": f"x{i}" if i in wrong else f"a{i}"} for i in range(N)]
        write_jsonl(root / "golden" / f"{name}.jsonl", rows)
    return write_suite(
        root / "suites" / "qa.yaml",
        {
            "suite": "qa",
            "dataset": "../golden/qa.jsonl",
            "prompt": "{{ q }}",
            "candidates": {
                "good": {"replay": "../golden/good.jsonl"},
                "slow": {"replay": "../golden/slow.jsonl", "limit": 5},
            },
            "metrics": ["exact_match"],
            "gates": {"exact_match": {"max_drop": 0.5}},
            "compare_to": "good",
        },
    )


def by_hash(ids: list[str], n: int) -> list[str]:
    """The n ids with the smallest SHA-256, in file order."""
    chosen = set(sorted(ids, key=lambda i: (hashlib.sha256(i.encode()).hexdigest(), i))[:n])
    return [i for i in ids if i in chosen]


def _options(root: Path, **extra: object) -> RunOptions:
    cache = Cache(root / "cache.sqlite")
    reports = root / "reports"
    return RunOptions(report_dir=reports, cache=cache, progress=False, **extra)  # type: ignore[arg-type]


def test_a_limited_candidate_is_compared_on_its_examples(tmp_path: Path) -> None:
    result = run_suite(prepare_suite(_project(tmp_path)), _options(tmp_path))
    good, slow = result.candidates["good"], result.candidates["slow"]
    ids = [f"q{i:02d}" for i in range(N)]
    assert [e.id for e in good.examples] == ids
    assert [e.id for e in slow.examples] == by_hash(ids, 5)
    assert set(by_hash(ids, 3)) <= set(by_hash(ids, 5))  # nested: smaller limits pair too
    comparison = next(v for v in result.gates if v.candidate == "slow").comparison
    assert comparison is not None and comparison.n_paired == 5
    # Its mean and the paired delta are over its own five.
    wrong_in_five = len({f"q{i:02d}" for i in WRONG} & set(by_hash(ids, 5)))
    assert slow.aggregates["exact_match"].mean == pytest.approx(1 - wrong_in_five / 5)
    assert comparison.mean_delta == pytest.approx(-wrong_in_five / 5)
    page = publish([result], tmp_path / "reports").suite_pages[0].read_text(encoding="utf-8")
    assert f"5 of {N} examples (its limit)" in page


def test_full_runs_every_example_and_baselines_need_it(tmp_path: Path) -> None:
    suite = _project(tmp_path)
    full = run_suite(prepare_suite(suite), _options(tmp_path, full=True))
    assert len(full.candidates["slow"].examples) == N
    with pytest.raises(EvalkitError, match=r"slow of suite 'qa' have 'limit:'.*--evalkit-full"):
        run_suite(prepare_suite(suite), _options(tmp_path, update_baseline=True))
    accepted = run_suite(prepare_suite(suite), _options(tmp_path, update_baseline=True, full=True))
    assert sorted(Path(p).name for p in accepted.baseline_updated) == ["good.json", "slow.json"]
