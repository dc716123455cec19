"""The HTML report as a file: self-contained, escaped, with a CSP that names its one script, and
everything in the run (metrics of any kind, metadata) present; `evalkit report` re-renders."""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from reportdata import HOSTILE, make_run

from evalkit.cli import main as cli_main
from evalkit.report.html import json_for_script
from evalkit.report.publish import publish
from evalkit.results import RunResult, save_run

SCRIPT = re.compile(r"<script([^>]*)>(.*?)</script>", re.S)


class Tags(HTMLParser):
    """Every element and attribute name in a page, as a browser's tokenizer sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()
        self.attributes: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.names.add(tag)
        self.attributes.update(name for name, _ in attrs)


@pytest.fixture(scope="module")
def run() -> RunResult:
    run = make_run(120)
    # Hostile text wherever a run carries free text: describe values and judge rationales too.
    run.candidates["lora"].describe["note"] = HOSTILE[1]
    example = run.candidates["nf4"].examples[4]
    example.details["judge.correctness"] = {"rationale": HOSTILE[0]}
    return run


@pytest.fixture(scope="module")
def page(run: RunResult, tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("report")
    published = publish([run], out)
    assert published.suite_pages == [out / "qa" / "index.html"]
    return published.index.read_text(encoding="utf-8")


def test_self_contained_no_url_of_any_kind(page: str) -> None:
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", page.split("<body>")[0])
    assert "<link" not in page
    assert not re.search(r"<(script|img|iframe)[^>]+src=", page)
    assert "url(" not in page
    # the only external-looking URL is the SVG namespace, which browsers never fetch
    body_urls = set(re.findall(r"https?://[^\s\"'<)]+", page))
    assert body_urls <= {"http://www.w3.org/2000/svg", "http://127.0.0.1:8011/v1"}


def test_csp_allows_exactly_the_inline_script_and_style(page: str) -> None:
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page)
    assert csp is not None
    text = html.unescape(csp.group(1))  # as the browser reads the attribute
    policy = {part.split()[0]: part.split()[1:] for part in text.split(";") if part.strip()}
    assert policy["default-src"] == ["'none'"]
    scripts = SCRIPT.findall(page)
    code = [body for attrs, body in scripts if "application/json" not in attrs]
    assert len(code) == 1, "one executable script, nothing else"
    digest = base64.b64encode(hashlib.sha256(code[0].encode()).digest()).decode()
    assert policy["script-src"] == [f"'sha256-{digest}'"]
    style = re.search(r"<style>(.*?)</style>", page, re.S)
    assert style is not None
    style_digest = base64.b64encode(hashlib.sha256(style.group(1).encode()).digest()).decode()
    assert policy["style-src"] == [f"'sha256-{style_digest}'"]
    tags = Tags()
    tags.feed(page)
    assert not [a for a in tags.attributes if a.startswith("on")], "no inline event handlers"
    assert "style" not in tags.attributes, "no style attributes (the CSP would block them)"


def test_hostile_strings_never_appear_as_markup(page: str, run: RunResult) -> None:
    for hostile in HOSTILE[:4]:
        assert hostile not in page
    tags = Tags()
    tags.feed(page)
    assert not tags.names & {"img", "iframe", "object", "embed", "link", "textarea"}
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in page  # the describe value, as text
    # exactly one executable script plus one data block per suite
    assert len(SCRIPT.findall(page)) == 2


def test_example_data_round_trips_every_output_and_reference(page: str, run: RunResult) -> None:
    _, body = next((a, b) for a, b in SCRIPT.findall(page) if "application/json" in a)
    assert "<" not in body and ">" not in body and "&" not in body
    data = json.loads(body)
    assert data["candidates"][0] == "base" and data["baseline"] == 0
    ids = data["ids"]
    for i, name in enumerate(data["candidates"]):
        cand = run.candidates[name]
        outputs = {
            e.id: data["strings"][k]
            if (k := data["runs"][i]["out"][ids.index(e.id)]) >= 0
            else None
            for e in cand.examples
        }
        assert outputs == {e.id: e.output for e in cand.examples}
        errors = {ids[int(k)]: v for k, v in data["runs"][i]["errors"].items()}
        assert errors == {e.id: e.error for e in cand.examples if e.error}
    first = run.candidates["base"].examples
    assert data["refs"] == [e.references[0] for e in first]
    assert data["inputs"] == [e.messages[-1]["content"] for e in first]  # system shown once
    metric = data["metrics"].index(next(m for m in data["metrics"] if m["name"] == "chrf"))
    got = data["runs"][0]["scores"][metric]
    want = [e.scores["chrf"] for e in first]
    assert got == pytest.approx(want, rel=1e-5)


def test_json_for_script_escapes_what_could_close_the_block() -> None:
    text = str(json_for_script({"a": "</script><!-- & \u2028"}))
    assert text == '{"a":"\\u003c/script\\u003e\\u003c!-- \\u0026 \\u2028"}'
    assert json.loads(text) == {"a": "</script><!-- & \u2028"}


def test_every_metric_and_the_run_metadata_are_shown(page: str, run: RunResult) -> None:
    for column in run.candidates["base"].aggregates:
        assert f">{column} <span" in page  # a table row per metric
        assert run.candidates["base"].aggregates[column].signature.replace('"', "&#34;") in page
    for fact in (
        "acceptance_rate",  # speculative
        "prompt_lookup",
        "9f2c01ab77e4d1c3",  # adapter hash
        "nf4",
        "cost_usd",
        run.candidates["spec"].fingerprint_hash,
        "transformers",
        "5.23.0",
        "hits",
        "Answer with the city only.",  # the shared system message
    ):
        assert fact in page, fact
    assert page.count('class="chart"') >= 1 + 2 * 10  # changes, means, distributions, ...
    assert "No memory figures" not in page
    assert "p95" in page


def test_a_run_with_only_lexical_metrics_still_renders(tmp_path: Path) -> None:
    run = make_run(20, ("base", "lora"))
    for cand in run.candidates.values():
        cand.aggregates = {"exact_match": cand.aggregates["exact_match"]}
        cand.describe = {}
        for example in cand.examples:
            example.scores = {"exact_match": example.scores.get("exact_match")}
            example.details = {}
    run.gates = []
    page = publish([run], tmp_path).index.read_text(encoding="utf-8")
    assert "NO GATES" in page
    assert "No memory figures in this run" in page
    assert "No <code>latency.*</code> metric" in page


def test_cli_report_rerenders_saved_runs_without_models(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    save_run(make_run(20, ("base", "lora"), suite="alpha"), tmp_path)
    save_run(make_run(20, ("base", "nf4"), suite="beta", seed=1), tmp_path)
    assert cli_main(["report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in ("index.html", "alpha/index.html", "beta/index.html", "summary.md"):
        assert (tmp_path / name).is_file()
        assert name in out
    index = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert 'id="suite-alpha"' in index and 'id="suite-beta"' in index
    own = (tmp_path / "beta" / "index.html").read_text(encoding="utf-8")
    assert 'id="suite-alpha"' not in own and 'href="../index.html"' in own


def test_cli_report_says_what_is_wrong(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["report", str(tmp_path)]) == 2
    assert "no run.json to report on" in capsys.readouterr().err
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "run.json").write_text("{not json", encoding="utf-8")
    assert cli_main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "broken/run.json: not a readable evalkit run.json" in err


def test_a_suite_without_compare_to_renders_without_changes(tmp_path: Path) -> None:
    run = make_run(20, ("base", "lora"))
    run.compare_to = None
    page = publish([run], tmp_path).index.read_text(encoding="utf-8")
    assert "accepted baselines only" in page
    assert "no <code>compare_to</code> candidate" in page
    assert '"baseline":null' in page
