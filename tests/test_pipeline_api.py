"""API candidates end to end: pytest runs a suite against a real local OpenAI-compatible server.

Checks key secrecy (every file written and everything printed or logged is scanned for the key),
caching (a second run sends no request), crash safety, and located spec errors.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path

import pytest
from openai_server import Fault, OpenAIServer
from suitefiles import CAPITALS, write_jsonl, write_suite

from evalkit.cache import Cache
from evalkit.candidates.api_wire import litellm_module as _litellm
from evalkit.results import load_run
from evalkit.run import RunOptions, prepare_suite, run_suite

KEY = "sk-evalkit-DISTINCTIVE-7f3a9c2e51"
KEY_ENV = "EVALKIT_E2E_API_KEY"
RIGHT = {"France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid"}
WRONG = {"Japan": "Kyoto", "Peru": "Cusco"}


MODULE_PROBE = """
import sys
def pytest_sessionfinish(session):
    with open("modules.txt", "w") as handle:
        handle.write(str("litellm" in sys.modules))
"""


def _prompt(country: str) -> str:
    return f"What is the capital of {country}?"


def _suite(server: OpenAIServer, **api: object) -> dict:
    return {
        "suite": "capitals",
        "dataset": "../golden/capitals.jsonl",
        "prompt": "What is the capital of {{ country }}?",
        "generation": {"max_new_tokens": 8},
        "candidates": {
            "remote": {
                "model": "test-model",
                "api": {"base": server.base, "key_env": KEY_ENV, "max_retries": 0, **api},
            }
        },
        "metrics": ["exact_match"],
        "gates": {"exact_match": {"min": 0.5}},
    }


@pytest.fixture(scope="session")
def litellm_imported() -> None:
    """Import litellm before pytester's module snapshot: in-process runs drop modules first
    imported inside them, and every test would then pay litellm's import (~3 s) again."""
    _litellm()


@pytest.fixture
def project(
    litellm_imported: None,
    pytester: pytest.Pytester,
    openai_server: OpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
) -> Path:
    for country, city in {**RIGHT, **WRONG}.items():
        openai_server.replies[_prompt(country)] = city
    openai_server.required_key = KEY
    monkeypatch.setenv(KEY_ENV, KEY)
    write_jsonl(pytester.path / "golden" / "capitals.jsonl", CAPITALS)
    write_suite(pytester.path / "suites" / "capitals.yaml", _suite(openai_server))
    return pytester.path


def _files_containing(root: Path, secret: str) -> list[str]:
    needle = secret.encode()
    return [
        str(path.relative_to(root))
        for path in root.rglob("*")
        if path.is_file() and needle in path.read_bytes()
    ]


def test_suite_with_an_api_candidate_end_to_end(
    pytester: pytest.Pytester,
    project: Path,
    openai_server: OpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = pytester.runpytest("suites/", "-v", "-p", "no:xdist")
    result.assert_outcomes(passed=1)
    run = load_run(project / "reports" / "capitals" / "run.json")
    remote = run.candidates["remote"]
    assert remote.aggregates["exact_match"].mean == pytest.approx(len(RIGHT) / len(CAPITALS))
    by_country = {e.id: e for e in remote.examples}
    for row in CAPITALS:
        example = by_country[row["id"]]
        expected = {**RIGHT, **WRONG}[row["country"]]
        assert example.output == expected and example.error is None
        assert example.n_prompt_tokens == len(_prompt(row["country"]).split())
        assert example.n_output_tokens == 1 and example.cost is None
    assert remote.fingerprint == {"kind": "api", "model": "test-model", "base": openai_server.base}
    assert remote.describe["requests"] == len(CAPITALS) and remote.cost is None
    assert openai_server.count() == len(CAPITALS)
    # A second run, in a fresh process without the key, is answered from the cache: no request
    # reaches the server and litellm is not even imported.
    monkeypatch.delenv(KEY_ENV)
    pytester.makeconftest(MODULE_PROBE)
    result = pytester.runpytest_subprocess("suites/", "-p", "no:xdist")
    result.assert_outcomes(passed=1)
    assert openai_server.count() == len(CAPITALS)
    assert (project / "modules.txt").read_text() == "False"
    again = load_run(project / "reports" / "capitals" / "run.json").candidates["remote"]
    assert again.n_cached == len(CAPITALS) and again.n_generated == 0
    assert [e.output for e in again.examples] == [e.output for e in remote.examples]


def test_the_key_is_sent_but_never_written_printed_or_logged(
    pytester: pytest.Pytester,
    project: Path,
    openai_server: OpenAIServer,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "httpx", "httpcore", "openai"):
        caplog.set_level(logging.DEBUG, logger=name)
    outputs = []
    # A good run that also accepts baselines, then a run the server refuses with 401 while
    # echoing the key it was sent (as some providers do).
    result = pytester.runpytest(
        "suites/", "-p", "no:xdist", "--evalkit-update-baseline", "-o", "log_cli=true",
        "--log-cli-level=DEBUG",
    )  # fmt: skip
    result.assert_outcomes(passed=1)
    outputs += [result.stdout.str(), result.stderr.str()]
    assert {r.authorization for r in openai_server.log} == {f"Bearer {KEY}"}
    openai_server.required_key = "sk-some-other-key-0000"
    result = pytester.runpytest("suites/", "-p", "no:xdist", "--evalkit-no-cache", "-rA")
    result.assert_outcomes(failed=1)
    outputs += [result.stdout.str(), result.stderr.str()]
    assert "authentication failed" in result.stdout.str()
    assert f"check the key in ${KEY_ENV}" in result.stdout.str()
    refused = [r for r in openai_server.log if r.status == 401]
    assert refused and all(r.authorization == f"Bearer {KEY}" for r in refused)
    captured = capfd.readouterr()
    outputs += [captured.out, captured.err, caplog.text]
    outputs += [str(record.__dict__) for record in caplog.records]
    assert any("LiteLLM" in record.name for record in caplog.records)  # the logs were seen
    assert (project / "golden" / "baselines" / "capitals" / "remote.json").exists()
    assert (project / ".evalkit_cache" / "evalkit.sqlite").exists()
    assert _files_containing(project, KEY) == []
    assert not [text for text in outputs if KEY in text]
    assert KEY[-10:] not in "".join(outputs)  # not even the tail of it


def test_a_crash_mid_run_keeps_finished_generations(
    project: Path, openai_server: OpenAIServer
) -> None:
    openai_server.fail_next(Fault(delay_s=1.0), prompt=_prompt("Peru"))

    class CrashAfterFirstBatch(Cache):
        def put_many(self, namespace: str, items: dict) -> None:
            super().put_many(namespace, items)
            if namespace == "generation":
                raise RuntimeError("simulated crash")

    cache_path = project / "cache.sqlite"
    prepared = prepare_suite(project / "suites" / "capitals.yaml")
    options = RunOptions(report_dir=project / "out", cache=CrashAfterFirstBatch(cache_path))
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_suite(prepared, options)
    with sqlite3.connect(cache_path) as db:
        (stored,) = db.execute(
            "SELECT count(*) FROM entries WHERE namespace='generation'"
        ).fetchone()
    # Re-run: what the first batch stored is reused, only the rest is requested again.
    rerun_started = time.perf_counter()
    rerun = run_suite(prepared, RunOptions(report_dir=project / "out", cache=Cache(cache_path)))
    remote = rerun.candidates["remote"]
    reused = {e.id for e in remote.examples if e.cached}
    assert 1 <= stored == len(reused) < len(CAPITALS) and "pe" not in reused
    asked_again = {r.prompt for r in openai_server.log if r.started >= rerun_started}
    assert asked_again == {_prompt(row["country"]) for row in CAPITALS if row["id"] not in reused}
    assert all(e.error is None for e in remote.examples)


def test_errors_are_recorded_not_scored(project: Path, openai_server: OpenAIServer) -> None:
    openai_server.fail_always(Fault(status=500), prompt=_prompt("France"))
    prepared = prepare_suite(project / "suites" / "capitals.yaml")
    options = RunOptions(report_dir=project / "out", cache=Cache(project / "c.sqlite"))
    options.progress = False
    remote = run_suite(prepared, options).candidates["remote"]
    france = next(e for e in remote.examples if e.id == "fr")
    assert france.output is None and france.scores["exact_match"] is None
    assert "HTTP 500" in str(france.error)
    aggregate = remote.aggregates["exact_match"]
    assert (aggregate.n, aggregate.n_missing) == (5, 1)
    assert aggregate.mean == pytest.approx((len(RIGHT) - 1) / 5)
    # The failure was not cached: the next run asks again for France only.
    before = openai_server.count()
    openai_server.reset()
    remote = run_suite(prepared, options).candidates["remote"]
    assert [r.prompt for r in openai_server.log] == [_prompt("France")] and before == 6
    assert remote.n_errors == 0


@pytest.mark.parametrize(
    ("api", "expected"),
    [
        (
            "{model: m, api: {base: 'localhost:8000/v1'}}",
            ["capitals.yaml:5", "candidates.remote.api.base", "is not an http(s) URL"],
        ),
        (
            "{model: m, device: cpu, api: {}}",
            ["capitals.yaml:5", "device do not apply to API candidates"],
        ),
        (
            "{model: m, api: {concurrency: 0}}",
            ["candidates.remote.api.concurrency", "greater than or equal to 1"],
        ),
    ],
)
def test_bad_api_options_fail_collection(
    pytester: pytest.Pytester, api: str, expected: list[str]
) -> None:
    write_jsonl(pytester.path / "golden" / "capitals.jsonl", CAPITALS)
    write_suite(
        pytester.path / "suites" / "capitals.yaml",
        "suite: capitals\ndataset: ../golden/capitals.jsonl\nprompt: '{{ country }}'\n"
        f"candidates:\n  remote: {api}\nmetrics: [exact_match]\n",
    )
    result = pytester.runpytest("--collect-only", "suites/")
    result.assert_outcomes(errors=1)
    out = result.stdout.str()
    for text in expected:
        assert text in out, out


PLAIN_TEST = """
import pytest
from evalkit.testing import golden_params

@pytest.mark.parametrize("example", golden_params("golden/capitals.jsonl"))
def test_capital(example, evalkit_model):
    model = evalkit_model("test-model", api={{"base": {base!r}}}, max_new_tokens=4)
    answer = model.generate(f"What is the capital of {{example.fields['country']}}?")
    assert answer == example.references[0]
"""


def test_api_models_in_plain_test_functions(
    pytester: pytest.Pytester, project: Path, openai_server: OpenAIServer
) -> None:
    openai_server.required_key = None
    write_jsonl(project / "tests" / "golden" / "capitals.jsonl", CAPITALS)
    (project / "tests" / "test_user.py").write_text(PLAIN_TEST.format(base=openai_server.base))
    result = pytester.runpytest("tests/", "-p", "no:xdist", "-v")
    # The server answers Kyoto and Cusco for Japan and Peru (WRONG): those two fail.
    result.assert_outcomes(passed=len(RIGHT), failed=len(WRONG))
    assert "test_capital[jp] FAILED" in result.stdout.str()
    assert openai_server.count() == len(CAPITALS)
