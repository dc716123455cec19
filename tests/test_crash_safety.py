"""A run interrupted mid-generation keeps every finished batch and leaves no corrupt file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from suitefiles import write_jsonl, write_suite

from evalkit.cache import Cache
from evalkit.candidates.hf import HFCandidate
from evalkit.results import load_run
from evalkit.run import RunOptions, prepare_suite, run_suite


def test_interrupted_run_keeps_finished_batches(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_jsonl(
        tmp_path / "golden" / "g.jsonl",
        [{"id": f"e{i}", "text": "word " * (i + 1), "reference": "word"} for i in range(10)],
    )
    suite = write_suite(
        tmp_path / "suites" / "s.yaml",
        {
            "suite": "s",
            "dataset": "../golden/g.jsonl",
            "prompt": "{{ text }}",
            "generation": {"max_new_tokens": 4, "batch_size": 4},
            "candidates": {"tiny": {"model": str(tiny_model)}},
            "metrics": ["chrf"],
        },
    )
    prepared = prepare_suite(suite)
    options = RunOptions(
        report_dir=tmp_path / "reports", cache=Cache(tmp_path / "c.sqlite"), progress=False
    )
    # A previous complete run exists; the crash must leave it intact.
    run_suite(prepared, dataclasses.replace(options, cache=Cache(None)))
    before = (tmp_path / "reports" / "s" / "run.json").read_text()

    real = HFCandidate._generate_batch
    calls = {"n": 0}

    def crash_on_second_batch(self: HFCandidate, *args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # e.g. Ctrl-C or the CI job's time limit
        return real(self, *args, **kwargs)

    monkeypatch.setattr(HFCandidate, "_generate_batch", crash_on_second_batch)
    with pytest.raises(KeyboardInterrupt):
        run_suite(prepared, options)
    assert (tmp_path / "reports" / "s" / "run.json").read_text() == before
    assert list((tmp_path / "reports" / "s").iterdir()) == [tmp_path / "reports" / "s" / "run.json"]

    monkeypatch.setattr(HFCandidate, "_generate_batch", real)
    result = run_suite(prepared, dataclasses.replace(options, cache=Cache(tmp_path / "c.sqlite")))
    tiny = result.candidates["tiny"]
    assert (tiny.n_cached, tiny.n_generated) == (4, 6)  # the first batch survived the crash
    assert load_run(tmp_path / "reports" / "s" / "run.json").candidates["tiny"].n_cached == 4
