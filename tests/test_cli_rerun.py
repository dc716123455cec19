"""A cached re-run by `evalkit run` says what still ran: only the latency metrics' timed
requests (never cached, by design)."""

from __future__ import annotations

from pathlib import Path

import pytest
from suitefiles import write_jsonl, write_suite

from evalkit.cli import main


def test_cached_rerun_names_the_timed_requests(
    tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    rows = [{"id": f"w{i}", "word": w, "reference": w} for i, w in enumerate(["cat", "sun", "sky"])]
    write_jsonl(tmp_path / "golden" / "words.jsonl", rows)
    write_suite(
        tmp_path / "suites" / "words.yaml",
        {
            "suite": "words",
            "dataset": "../golden/words.jsonl",
            "prompt": "Say {{ word }}",
            "generation": {"max_new_tokens": 4},
            "candidates": {"tiny": {"model": str(tiny_model)}},
            "metrics": ["chrf", {"latency": {"sample": 2, "warmup": 0}}],
        },
    )
    assert main(["run", "suites/words.yaml"]) == 0
    first = capsys.readouterr().out
    assert "words/tiny: 3 examples, 0 cached" in first and "timed afresh" not in first
    assert main(["run", "suites/words.yaml"]) == 0
    second = capsys.readouterr().out
    assert "words/tiny: 3 examples, 3 cached, 0 errors" in second
    assert "(outputs all cached; 2 requests timed afresh for latency." in second
