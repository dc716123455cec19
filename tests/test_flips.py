"""Flips: per 0/1 metric, the examples that changed against compare_to, in run.json and in the
report (regressions first, with the word diff of the two outputs)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from reportdata import make_run, require_chromium

from evalkit.metrics import create
from evalkit.report.browser import chromium
from evalkit.report.flips import flip_rows
from evalkit.report.publish import publish
from evalkit.results import RunResult
from evalkit.run.flips import is_binary, record_flips


class Plugin:
    """A metric that says nothing about being 0/1."""

    name = "plugin"


class Graded:
    name = "graded"
    binary = False


def expected(run: RunResult, name: str, column: str) -> tuple[list[str], list[str]]:
    """Independently: walk the two example lists side by side."""
    base = {e.id: e.scores.get(column) for e in run.candidates["base"].examples}
    lost, gained = [], []
    for example in run.candidates[name].examples:
        before, after = base.get(example.id), example.scores.get(column)
        if before == 1.0 and after == 0.0:
            lost.append(example.id)
        if before == 0.0 and after == 1.0:
            gained.append(example.id)
    return lost, gained


@pytest.fixture
def run() -> RunResult:
    run = make_run(120)
    metrics = {"exact_match": create("exact_match"), "chrf": create("chrf")}
    record_flips(run.candidates, "base", metrics)
    return run


def test_flips_of_every_binary_column_with_counts_and_ids(run: RunResult) -> None:
    assert run.candidates["base"].flips == {}
    for name in ("lora", "nf4"):
        flips = run.candidates[name].flips
        assert set(flips) == {"exact_match"}  # chrf is not 0/1
        lost, gained = expected(run, name, "exact_match")
        assert flips["exact_match"].pass_to_fail == lost
        assert flips["exact_match"].fail_to_pass == gained
        assert flips["exact_match"].against == "base"
    nf4 = run.candidates["nf4"].flips["exact_match"]
    assert nf4.n_pass_to_fail > 0 and nf4.n_fail_to_pass > 0  # churn in both directions
    dumped = run.model_dump(mode="json")["candidates"]["nf4"]["flips"]["exact_match"]
    assert dumped["n_pass_to_fail"] == len(dumped["pass_to_fail"]) == nf4.n_pass_to_fail
    assert RunResult.model_validate_json(run.model_dump_json()) == run


def test_which_columns_are_binary(run: RunResult) -> None:
    runs = run.candidates
    assert is_binary(create("contains"), runs, "exact_match")
    assert not is_binary(Graded(), runs, "exact_match")  # declared: never
    assert is_binary(Plugin(), runs, "exact_match")  # undeclared: every value is 0 or 1
    assert not is_binary(Plugin(), runs, "chrf")
    assert not is_binary(create("kl_divergence"), runs, "exact_match")


def ordered(kinds: Sequence[str]) -> bool:
    return list(kinds) == sorted(kinds, key=lambda k: k != "regression")


def test_report_lists_regressions_first_with_both_outputs(run: RunResult, tmp_path: Path) -> None:
    rows = flip_rows(run)
    assert ordered([r.kind for r in rows])
    n_flips = sum(
        f.n_pass_to_fail + f.n_fail_to_pass
        for c in run.candidates.values()
        for f in c.flips.values()
    )
    assert len(rows) == n_flips
    first = rows[0]
    assert first.kind == "regression"
    assert first.output == next(
        e.output for e in run.candidates[first.candidate].examples if e.id == first.id
    )
    page = publish([run], tmp_path).index.read_text(encoding="utf-8")
    assert 'data-testid="flips"' in page
    nf4 = run.candidates["nf4"].flips["exact_match"]
    assert (
        f"{nf4.n_pass_to_fail} pass → fail, {nf4.n_fail_to_pass} fail → pass, of "
        f"{nf4.n_paired} paired" in page
    )


def test_flips_table_marks_the_word_diff_in_a_browser(run: RunResult, tmp_path: Path) -> None:
    require_chromium()
    lost = run.candidates["nf4"].flips["exact_match"].pass_to_fail[0]
    for name, text in (
        ("base", "The capital is Paris today"),
        ("nf4", "The capital is Lyon today"),
    ):
        next(e for e in run.candidates[name].examples if e.id == lost).output = text
    index = publish([run], tmp_path).index
    with chromium() as browser:
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(index.as_uri())
        row = page.locator(f"table.flips tr[data-id='{lost}']").filter(has_text="nf4")
        assert row.locator("td.flip-before del").all_inner_texts() == ["Paris "]
        assert row.locator("td.flip-after ins").all_inner_texts() == ["Lyon "]
        assert row.locator("td.flip-after").inner_text() == "The capital is Lyon today"
        kinds = page.eval_on_selector_all(
            "table.flips tbody tr", "rs => rs.map(r => r.cells[0].textContent)"
        )
        assert ordered(["regression" if k == "pass → fail" else "fix" for k in kinds])
        page.close()
    assert errors == []
