"""The user's own pipeline as a candidate (``call: module:function``), end to end with two real
small pipelines from tests/apps/ copied into a project: a sync BM25 + template RAG pipeline and an
async one asking the OpenAI-compatible stand-in server over httpx. Expected records come from
calling the pipelines directly; concurrency from the server's in-flight count; errors, timeouts
and malformed returns are per-example errors, never 0; answers are cached by source hash,
version and fields; collection refuses targets outside the project without importing anything;
the plain-Python route (``evalkit_call``) answers like the suite."""

from __future__ import annotations

import hashlib
import inspect
import shutil
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openai_server import Fault, OpenAIServer
from suitefiles import write_jsonl, write_suite

from evalkit.cache import Cache
from evalkit.errors import CandidateError, EvalkitError, SpecError
from evalkit.golden import load_golden
from evalkit.results import RunResult
from evalkit.run import RunOptions, prepare_suite, run_suite
from evalkit.testing import CallPool

APPS = Path(__file__).parent / "apps"
ROWS = [
    {"id": "leave", "question": "How many days of paid leave?", "reference": "27",
     "context_ids": ["leave.md"]},
    {"id": "pay", "question": "On which day of the month is pay?", "reference": "25",
     "context_ids": ["pay.md"]},
    {"id": "oncall", "question": "What is the on-call stipend per week?", "reference": "180",
     "context_ids": ["oncall.md", "pay.md"]},
    {"id": "fridge", "question": "When is the fridge emptied?", "reference": "Friday",
     "context_ids": ["kitchen.md"]},
    {"id": "parking", "question": "How many parking spaces are there?", "reference": "40"},
    {"id": "badge", "question": "Within how many days is the badge returned?", "reference": "10"},
]  # fmt: skip


@pytest.fixture
def clean_imports(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test's project has its own ``notesapp``: forget the previous one."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield
    for name in [m for m in sys.modules if m == "notesapp" or m.startswith("notesapp.")]:
        del sys.modules[name]


def make_project(root: Path, candidates: dict[str, Any], **extra: Any) -> Path:
    """A user's project: pyproject.toml (the root marker), the pipelines as package notesapp,
    a golden file and a suite."""
    (root / "pyproject.toml").write_text('[project]\nname = "notes"\n', encoding="utf-8")
    shutil.copytree(APPS / "notes", root / "notesapp" / "notes")
    (root / "notesapp" / "__init__.py").write_text("", encoding="utf-8")
    shutil.copy(APPS / "notes_rag.py", root / "notesapp" / "rag.py")
    shutil.copy(APPS / "notes_chat.py", root / "notesapp" / "chat.py")
    write_jsonl(root / "golden" / "notes.jsonl", extra.pop("rows", ROWS))
    spec = {
        "suite": "notes",
        "dataset": "../golden/notes.jsonl",
        "prompt": "{{ question }}",
        "candidates": candidates,
        "metrics": extra.pop("metrics", ["exact_match"]),
        **extra,
    }
    return write_suite(root / "suites" / "notes.yaml", spec)


def write_module(root: Path, name: str, source: str) -> None:
    (root / "notesapp" / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")


def run(suite: Path, cache: Cache) -> RunResult:
    return run_suite(prepare_suite(suite), RunOptions(report_dir=suite.parent / "r", cache=cache))


def test_a_rag_pipeline_is_a_candidate_with_context_metrics(
    tmp_path: Path, clean_imports: None
) -> None:
    metrics = ["exact_match", "recall_at_k", "faithfulness", "prompt_tokens"]
    candidates = {"app": {"call": "notesapp.rag:answer", "version": 1}}
    suite = make_project(tmp_path, candidates, metrics=metrics)
    prepare_suite(suite)
    assert "notesapp.rag" not in sys.modules  # collection reads the file, imports nothing
    result = run(suite, Cache(tmp_path / "cache.sqlite"))
    module = sys.modules["notesapp.rag"]
    assert Path(module.__file__ or "").resolve() == tmp_path / "notesapp" / "rag.py"
    app = result.candidates["app"]
    for row, example in zip(ROWS, app.examples, strict=True):
        direct = module.answer(row["question"])
        assert example.output == direct["output"] and example.error is None
        assert example.retrieved == [
            {"id": c["id"], "score": c["score"]} for c in direct["context"]
        ]
        assert example.n_prompt_tokens == len(row["question"].split())
        assert example.scores["exact_match"] == float(direct["output"] == row["reference"])
        if "context_ids" in row:
            got = {c["id"] for c in direct["context"]}
            share = len(set(row["context_ids"]) & got) / len(row["context_ids"])
            assert example.scores["recall_at_k"] == pytest.approx(share)
    source = inspect.getsource(module.answer).removesuffix("\n")
    assert app.fingerprint == {
        "call": "notesapp.rag:answer",
        "source_sha256": hashlib.sha256(source.encode()).hexdigest()[:16],
        "version": "1",
    }
    assert app.describe["calls"] == len(ROWS) and app.describe["errors"] == 0


def test_an_async_pipeline_runs_concurrently_with_errors_and_timeouts_per_example(
    tmp_path: Path,
    clean_imports: None,
    openai_server: OpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NOTES_CHAT_BASE", openai_server.base)
    for row in ROWS:
        openai_server.replies[row["question"]] = row["reference"]
    broken, slow = ROWS[4]["question"], ROWS[5]["question"]
    openai_server.fail_always(Fault(status=500), prompt=broken)
    openai_server.fail_always(Fault(delay_s=4.0), prompt=slow)
    openai_server.delay_s = 0.5
    call = {"target": "notesapp.chat:answer", "concurrency": 3, "timeout_s": 1.5}
    suite = make_project(tmp_path, {"app": {"call": call, "version": "1"}})
    cache = Cache(tmp_path / "cache.sqlite")
    result = run(suite, cache)
    app = result.candidates["app"]
    assert openai_server.max_in_flight == 3
    by_id = {e.id: e for e in app.examples}
    for row in ROWS[:4]:
        example = by_id[row["id"]]
        assert example.output == row["reference"] and example.scores["exact_match"] == 1.0
        assert (example.n_prompt_tokens, example.n_output_tokens) == (
            len(row["question"].split()),
            1,
        )
        assert example.cost == pytest.approx(0.0001)
    failed, late = by_id["parking"], by_id["badge"]
    assert failed.output is None and failed.scores["exact_match"] is None
    assert "raised HTTPStatusError" in (failed.error or "") and "chat.py:" in (failed.error or "")
    assert late.error == "notesapp.chat:answer timed out after 1.5 s (call.timeout_s)"
    assert late.scores["exact_match"] is None
    aggregate = app.aggregates["exact_match"]
    assert (aggregate.n, aggregate.n_missing, aggregate.mean) == (4, 2, 1.0)  # errors are not 0
    assert app.cost == pytest.approx(0.0004) and app.n_errors == 2
    # Answers are cached; errors are not, so only the two failures are called again.
    again = run(suite, cache).candidates["app"]
    assert again.n_cached == 4 and again.describe["calls"] == 2
    assert {e.id for e in again.examples if not e.cached} == {"parking", "badge"}
    # A new version: every example is called again.
    make_project_version(suite, "2")
    bumped = run(suite, cache).candidates["app"]
    assert bumped.n_cached == 0 and bumped.describe["calls"] == len(ROWS)


def make_project_version(suite: Path, version: str) -> None:
    text = suite.read_text(encoding="utf-8").replace("version: '1'", f"version: '{version}'")
    suite.write_text(text, encoding="utf-8")


def test_editing_the_function_re_asks_editing_other_code_does_not(
    tmp_path: Path, clean_imports: None
) -> None:
    suite = make_project(tmp_path, {"app": {"call": "notesapp.rag:answer"}})
    cache = Cache(tmp_path / "cache.sqlite")
    run(suite, cache)
    path = tmp_path / "notesapp" / "rag.py"
    # Another part of the module (its version: says when that matters) keeps the answers.
    path.write_text(path.read_text(encoding="utf-8") + "\nUNUSED = 1\n", encoding="utf-8")
    assert run(suite, cache).candidates["app"].n_cached == len(ROWS)
    edited = path.read_text(encoding="utf-8").replace('"output": ANSWER', '"output":  ANSWER')
    path.write_text(edited, encoding="utf-8")
    assert run(suite, cache).candidates["app"].n_cached == 0


def test_each_sample_of_a_call_candidate_is_a_call(tmp_path: Path, clean_imports: None) -> None:
    candidates = {"app": {"call": "notesapp.rag:answer", "samples": 3}}
    app = run(make_project(tmp_path, candidates), Cache(tmp_path / "c.sqlite")).candidates["app"]
    assert app.describe["calls"] == 3 * len(ROWS)
    for example in app.examples:  # this pipeline is deterministic: three equal answers
        assert [s.output for s in example.samples] == [example.output] * 3


def test_sync_errors_timeouts_and_malformed_returns_are_per_example(
    tmp_path: Path, clean_imports: None
) -> None:
    suite = make_project(
        tmp_path, {"app": {"call": {"target": "notesapp.flaky:answer", "timeout_s": 0.5}}}
    )
    write_module(
        tmp_path,
        "flaky",
        """
        import time

        def answer(id, question):
            if id == "leave":
                time.sleep(3)
            if id == "pay":
                return 42
            if id == "oncall":
                raise ValueError("no note for this one")
            if id == "fridge":
                return {"output": "Friday", "confidence": 0.9}
            if id == "parking":
                return {"output": "40", "context": "not a list"}
            return {"output": "10", "context": ["Return the badge within 10 days."]}
        """,
    )
    result = run(suite, Cache(tmp_path / "cache.sqlite"))
    errors = {e.id: e.error for e in result.candidates["app"].examples}
    assert errors == {
        "leave": "notesapp.flaky:answer timed out after 0.5 s (call.timeout_s)",
        "pay": "notesapp.flaky:answer returned int; return a str or a dict with 'output' (and "
        "optionally 'context', 'tokens', 'cost')",
        "oncall": "notesapp.flaky:answer raised ValueError: no note for this one (flaky.py:10)",
        "fridge": "notesapp.flaky:answer returned unknown keys ['confidence']; allowed: "
        "['context', 'cost', 'output', 'tokens']",
        "parking": "notesapp.flaky:answer returned a 'context' that is not a list of texts or "
        "{text, id, score}",
        "badge": None,
    }
    badge = result.candidates["app"].examples[-1]
    assert badge.scores["exact_match"] == 1.0
    assert badge.retrieved == [{"id": "context#0", "score": 0.0}]


LOUD = """
from pathlib import Path

Path(__file__).with_name("imported.txt").write_text("imported")

def answer(question):
    return "x"
"""


@pytest.mark.parametrize(
    ("target", "module", "message"),
    [
        ("os:system", None, "no module 'os' in the project"),
        ("subprocess:run", None, "no module 'subprocess' in the project"),
        ("notesapp.reexport:run", "from subprocess import run\n",
         "'run' is imported into notesapp/reexport.py:1, not defined there"),
        ("notesapp.rag:nothing", None, "defines no top-level function 'nothing'"),
        ("notesapp.broken:answer", "def answer(:\n", "does not parse"),
        ("notesapp.needs:answer", "def answer(question, topic):\n    return topic\n",
         "notesapp.needs:answer requires 'topic', which example 'leave'"),
        ("notesapp.missing:answer", None, "no module 'notesapp.missing' in the project"),
        ("notesapp.linked:run", "LINK", "is not project code"),
        ("notesapp.loud:nothing", LOUD, "defines no top-level function 'nothing'"),
    ],
)  # fmt: skip
def test_collection_refuses_what_is_not_a_project_function_and_imports_nothing(
    tmp_path: Path,
    clean_imports: None,
    monkeypatch: pytest.MonkeyPatch,
    target: str,
    module: str | None,
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    suite = make_project(tmp_path, {"app": {"call": target}})
    name = target.split(":")[0].split(".")[-1]
    if module == "LINK":
        (tmp_path / "notesapp" / "linked.py").symlink_to(Path(inspect.getfile(shutil)))
    elif module is not None:
        write_module(tmp_path, name, module)
    with pytest.raises(SpecError) as caught:
        prepare_suite(suite)
    error = caught.value
    assert Path(error.path or "").resolve() == suite.resolve()
    assert error.field == "candidates.app.call" and error.line == 6
    assert message in str(error)
    assert not (tmp_path / "notesapp" / "imported.txt").exists()
    assert not [m for m in sys.modules if m.startswith("notesapp")]


def test_a_target_that_is_not_dotted_identifiers_fails_at_its_field(tmp_path: Path) -> None:
    suite = make_project(tmp_path, {"app": {"call": "../notesapp/rag.py:answer"}})
    with pytest.raises(SpecError) as caught:
        prepare_suite(suite)
    assert caught.value.field == "candidates.app.call.target"
    assert "is not module.path:function" in str(caught.value)


def test_a_module_failing_to_import_is_named_when_the_candidate_runs(
    tmp_path: Path, clean_imports: None
) -> None:
    suite = make_project(tmp_path, {"app": {"call": "notesapp.needy:answer"}})
    write_module(
        tmp_path, "needy", "import not_installed_anywhere\n\ndef answer(question):\n    1\n"
    )
    prepared = prepare_suite(suite)  # the file defines answer: collection passes
    with pytest.raises(CandidateError) as caught:
        run_suite(prepared, RunOptions(report_dir=tmp_path / "r", cache=Cache(None)))
    assert str(caught.value).endswith(
        "importing it failed: ModuleNotFoundError: No module named 'not_installed_anywhere'"
    )
    assert "call target 'notesapp.needy:answer' (" in str(caught.value)


def test_plain_python_route_answers_like_the_suite(
    tmp_path: Path,
    clean_imports: None,
    openai_server: OpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from apps import notes_chat, notes_rag

    cache = Cache(tmp_path / "cache.sqlite")
    examples = load_golden(write_jsonl(tmp_path / "notes.jsonl", ROWS))
    app = CallPool(cache)(notes_rag.answer, version="1", concurrency=2)
    outputs = app.many(examples)
    assert outputs == [notes_rag.answer(e.fields["question"])["output"] for e in examples]
    assert app({"question": ROWS[0]["question"]}) == "27"
    results = app.results(examples)
    assert [c.id for c in results[0].context] == ["leave.md", "pay.md"]
    assert app.candidate.counts["calls"] == len(ROWS) + 1  # results() came from the cache
    fresh = CallPool(cache)(notes_rag.answer, version="1")
    assert fresh.many(examples) == outputs and fresh.candidate.counts["calls"] == 0
    assert CallPool(cache)(notes_rag.answer, version="2").candidate.fingerprint()["version"] == "2"
    # An async function takes the same route; an error raises, naming the example.
    monkeypatch.setenv("NOTES_CHAT_BASE", openai_server.base)
    for row in ROWS:
        openai_server.replies[row["question"]] = row["reference"]
    chat = CallPool(cache)(notes_chat.answer, concurrency=3)
    assert chat.many(examples[:4]) == [row["reference"] for row in ROWS[:4]]
    openai_server.fail_always(Fault(status=503), prompt=ROWS[4]["question"])
    with pytest.raises(EvalkitError) as caught:
        chat(examples[4])
    assert str(caught.value).startswith(
        "example 'parking': apps.notes_chat:answer raised HTTPStatusError: Server error '503"
    )


def test_the_evalkit_call_fixture(pytester: pytest.Pytester) -> None:
    shutil.copytree(APPS, pytester.path / "apps")
    write_jsonl(pytester.path / "notes.jsonl", ROWS[:3])
    pytester.makepyfile(
        test_app="""
        import pytest
        from apps.notes_rag import answer
        from evalkit.testing import golden_params, score

        @pytest.mark.parametrize("example", golden_params("notes.jsonl"))
        def test_answer(example, evalkit_call):
            app = evalkit_call(answer, version="1")
            assert score("exact_match", app(example), example.references) == 1.0
        """
    )
    result = pytester.runpytest("-p", "no:xdist", "--evalkit-cache-dir", str(pytester.path / "c"))
    result.assert_outcomes(passed=3)
