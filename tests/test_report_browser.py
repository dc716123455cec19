"""The report in a real browser: Debian's Chromium, headless, driven by playwright.

These tests never skip: without /usr/bin/chromium they fail and say to run `make setup`.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from reportdata import HOSTILE, make_run, require_chromium

from evalkit.report.browser import chromium
from evalkit.report.publish import publish
from evalkit.report.view import build_suite_view
from evalkit.results import RunResult

DIFF_ID = "ex-00001"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require_chromium()
    with chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def run() -> RunResult:
    run = make_run(150)
    # One example whose outputs differ by exactly one word, for the diff view.
    base = next(e for e in run.candidates["base"].examples if e.id == DIFF_ID)
    lora = next(e for e in run.candidates["lora"].examples if e.id == DIFF_ID)
    base.output, lora.output = "The capital is Paris today", "The capital is Lyon today"
    lora.details["judge.correctness"] = {"rationale": HOSTILE[2]}
    return run


@pytest.fixture(scope="module")
def report(run: RunResult, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return publish([run], tmp_path_factory.mktemp("browser-report")).index


@dataclass
class Visit:
    """A loaded report page and everything it said or asked for while loading."""

    page: Any
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)


@pytest.fixture
def visit(browser: Any, report: Path) -> Iterator[Visit]:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    seen = Visit(page)
    page.on("console", lambda m: seen.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: seen.errors.append(str(e)))
    page.on("request", lambda r: seen.requests.append(r.url))
    page.on("dialog", lambda d: (seen.dialogs.append(d.message), d.dismiss()))
    page.goto(report.as_uri())
    page.wait_for_selector(".examples[data-ready='1']", state="attached")
    yield seen
    page.close()


def rows(page: Any) -> int:
    return int(page.get_attribute(".examples", "data-rows"))


def first_ids(page: Any, n: int = 3) -> list[str]:
    return page.eval_on_selector_all(
        "table.ex-table > tbody > tr", f"rs => rs.slice(0, {n}).map(r => r.dataset.id)"
    )


def test_loads_offline_without_errors_and_shows_verdict_table_chart(
    visit: Visit, run: RunResult
) -> None:
    page = visit.page
    assert visit.errors == []
    assert visit.requests == [page.url], "nothing but the file itself is fetched"
    failed = [v for v in run.gates if not v.passed]
    verdict = page.inner_text("[data-testid=verdict]")
    assert verdict.startswith("FAILED")
    assert f"{len(run.gates) - len(failed)} of {len(run.gates)} gates passed" in verdict
    for gate in failed:
        assert f"{gate.candidate}::{gate.gate}" in verdict
    n_rows = sum(len(c.aggregates) for c in run.candidates.values())
    assert page.locator("[data-testid=metrics-table] tbody tr").count() == n_rows
    assert page.locator("svg.chart").count() >= 20
    view = build_suite_view(run)
    changed = [r for r in view.rows if r.change is not None and r.relative is not None]
    first_chart = page.locator("svg.chart").first
    assert first_chart.locator("circle").count() == len(changed)
    assert first_chart.bounding_box()["height"] > 200
    assert rows(page) == len(run.candidates["base"].examples)
    assert page.locator("table.ex-table > tbody > tr").count() == 50  # one page at a time


def test_word_diff_marks_the_changed_word(visit: Visit) -> None:
    page = visit.page
    page.fill(".ex-search", DIFF_ID)
    page.wait_for_selector(".examples[data-rows='1']", state="attached")
    row = page.locator(f"table.ex-table tr[data-id='{DIFF_ID}']")
    assert row.locator("td.base-out del").all_inner_texts() == ["Paris "]  # with its space
    assert row.locator("td.base-out ins").count() == 0
    assert row.locator("td.cand-out ins").all_inner_texts() == ["Lyon "]
    assert row.locator("td.cand-out").inner_text() == "The capital is Lyon today"
    assert row.locator("td.notes").inner_text().count(HOSTILE[2]) == 1  # rationale, as text


def test_sort_filter_and_regressions_only(visit: Visit, run: RunResult) -> None:
    page = visit.page
    ids = sorted(e.id for e in run.candidates["base"].examples)
    page.select_option(".ex-sort", "id")
    assert first_ids(page) == ids[:3]
    page.click(".ex-dir")
    assert first_ids(page) == ids[::-1][:3]
    # regressions only: lora (the default candidate) scores below base on exact_match
    base = {e.id: e.scores.get("exact_match") for e in run.candidates["base"].examples}
    worse = [
        e.id
        for e in run.candidates["lora"].examples
        if (s := e.scores.get("exact_match")) is not None
        and base[e.id] is not None
        and s < base[e.id]
    ]
    assert 0 < len(worse) < len(ids)
    page.check(".ex-regr")
    assert rows(page) == len(worse)
    page.select_option(".ex-sort", "original")
    assert (
        page.eval_on_selector_all("table.ex-table > tbody > tr", "rs => rs.map(r => r.dataset.id)")
        == sorted(worse)[:50]
    )
    page.uncheck(".ex-regr")
    page.check(".ex-err")  # remote has API errors; lora has none; base none
    assert rows(page) == 0
    page.select_option(".ex-cand", label="remote")
    assert rows(page) == sum(e.error is not None for e in run.candidates["remote"].examples)
    assert "APIError: 503" in page.inner_text("table.ex-table > tbody > tr >> nth=0")


def test_metrics_table_sorts_by_a_column(visit: Visit, run: RunResult) -> None:
    page = visit.page
    header = page.locator("[data-testid=metrics-table] th", has_text="p").last
    assert header.inner_text() == "p"
    header.click()
    values = page.eval_on_selector_all(
        "[data-testid=metrics-table] tbody tr", "rs => rs.map(r => r.cells[8].dataset.v)"
    )
    expected = sorted(r.change.p_value for r in build_suite_view(run).rows if r.change)
    assert [float(v) for v in values if v] == expected
    assert values[len(expected) :] == [""] * (len(values) - len(expected))  # blanks last
    header.click()
    values = page.eval_on_selector_all(
        "[data-testid=metrics-table] tbody tr", "rs => rs.map(r => r.cells[8].dataset.v)"
    )
    assert [float(v) for v in values if v] == expected[::-1]


def test_hostile_golden_text_and_outputs_render_as_text(visit: Visit, run: RunResult) -> None:
    page = visit.page
    page.select_option(".ex-sort", "original")
    hostile_inputs = [
        e.messages[-1]["content"]
        for e in run.candidates["base"].examples
        if any(h in e.messages[-1]["content"] for h in HOSTILE)
    ]
    page.fill(".ex-search", "alert(")
    page.wait_for_selector(".examples:not([data-rows='150'])", state="attached")
    shown = page.locator("table.ex-table td.input").all_inner_texts()
    assert [s for s in shown if "<script>" in s or "onerror" in s]
    for text in shown:
        if any(h in text for h in HOSTILE):
            assert text in hostile_inputs
    outputs = {
        e.id: e.output
        for e in run.candidates["lora"].examples
        if e.output and any(h in e.output for h in HOSTILE)
    }
    assert outputs
    for example_id, output in outputs.items():
        cell = page.locator(f"table.ex-table tr[data-id='{example_id}'] td.cand-out")
        assert cell.inner_text() == output
    assert page.locator("img, textarea, iframe").count() == 0
    assert visit.dialogs == []
    assert page.evaluate("document.scripts.length") == 2
    assert visit.errors == []


def test_csp_blocks_any_script_the_report_does_not_ship(visit: Visit) -> None:
    page = visit.page
    page.evaluate(
        """() => { const s = document.createElement('script');
                   s.textContent = 'window.injected = 1'; document.body.appendChild(s); }"""
    )
    assert page.evaluate("window.injected") is None
    assert any("Content Security Policy" in e for e in visit.errors)


def _lcs(a: list[str], b: list[str]) -> int:
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i + 1][j + 1] = (
                table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
            )
    return table[-1][-1]


def test_word_diff_is_a_longest_common_subsequence(visit: Visit) -> None:
    """Both sides rebuild their text exactly, and the unchanged words (whitespace aside) are
    the same on both sides and as many as the longest common subsequence of the two word
    lists (computed here by plain DP)."""
    rng = random.Random(0)
    vocab = ["the", "a", "Paris", "Lyon", "is", "capital", "answer", ",", "."]
    pairs = [
        ("The capital is Paris today", "The capital is Lyon today"),
        ("", "new words here"),
        ("same  text\nkept", "same  text\nkept"),
        ("  lead and trail  ", "lead and  trail"),
        ("The answer is Paris.", "I think it is Lyon, near the coast."),
    ] + [
        (" ".join(rng.choices(vocab, k=rng.randint(0, 30))), " ".join(rng.choices(vocab, k=30)))
        for _ in range(20)
    ]
    results = visit.page.evaluate(
        "pairs => pairs.map(p => window.evalkitReport.wordDiff(p[0], p[1]))", pairs
    )
    for (before, after), (left, right) in zip(pairs, results, strict=True):
        assert "".join(text for _, text in left) == before
        assert "".join(text for _, text in right) == after
        assert {kind for kind, _ in left} <= {"", "del"}
        assert {kind for kind, _ in right} <= {"", "ins"}
        kept = [w for kind, text in left if kind == "" for w in text.split()]
        assert kept == [w for kind, text in right if kind == "" for w in text.split()]
        assert len(kept) == _lcs(before.split(), after.split())
