"""Prompt variants as candidates, end to end against a real OpenAI-compatible server that echoes
the prompt: per-candidate system/prompt overrides and template files (rendered text checked
against jinja2 called directly), the content hash of a prompt file in the fingerprint (editing it
re-asks exactly that candidate), few-shot examples as chat turns or inline (the seeded draw
recomputed with random.Random), the train/test overlap check, and the answer extractor (checked
against re called directly)."""

from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path
from typing import Any

import jinja2
import pytest
from openai_server import OpenAIServer
from suitefiles import CAPITALS, write_jsonl, write_suite

from evalkit.cache import Cache
from evalkit.errors import SpecError
from evalkit.results import RunResult
from evalkit.run import RunOptions, prepare_suite, run_suite

TRAIN = [
    {"id": "t-pt", "country": "Portugal", "reference": "Lisbon"},
    {"id": "t-gr", "country": "Greece", "reference": "Athens"},
    {"id": "t-no", "country": "Norway", "reference": "Oslo"},
    {"id": "t-eg", "country": "Egypt", "reference": "Cairo"},
    {"id": "t-ca", "country": "Canada", "reference": "Ottawa"},
]
SUITE_PROMPT = "Capital of {{ country }}?"
SUITE_SYSTEM = "You know geography."
FILE_PROMPT = "Which city is the capital of {{ country | upper }}?\n"


def api(server: OpenAIServer, **extra: Any) -> dict[str, Any]:
    return {"model": "echo", "api": {"base": server.base, "max_retries": 0}, **extra}


def project(root: Path, candidates: dict[str, Any], **overrides: Any) -> Path:
    write_jsonl(root / "golden" / "caps.jsonl", overrides.pop("rows", CAPITALS))
    write_jsonl(root / "golden" / "train.jsonl", overrides.pop("train", TRAIN))
    (root / "prompts").mkdir(exist_ok=True)
    (root / "prompts" / "ask.j2").write_text(FILE_PROMPT, encoding="utf-8")
    (root / "prompts" / "system.txt").write_text("Answer tersely.", encoding="utf-8")
    spec = {
        "suite": "caps",
        "dataset": "../golden/caps.jsonl",
        "system": SUITE_SYSTEM,
        "prompt": SUITE_PROMPT,
        "generation": {"max_new_tokens": 200},
        "candidates": candidates,
        "metrics": ["exact_match"],
        **overrides,
    }
    return write_suite(root / "suites" / "caps.yaml", spec)


def run(suite: Path, cache: Cache, root: Path) -> RunResult:
    return run_suite(prepare_suite(suite), RunOptions(report_dir=root / "reports", cache=cache))


def render(source: str, **fields: Any) -> str:
    """jinja2 called directly, outside evalkit's sandbox and limits."""
    return jinja2.Environment(keep_trailing_newline=True).from_string(source).render(**fields)


def messages(result: RunResult, candidate: str) -> dict[str, list[tuple[str, str]]]:
    return {
        e.id: [(m["role"], m["content"]) for m in e.messages]
        for e in result.candidates[candidate].examples
    }


def expected_shots(k: int, seed: int, example_id: str) -> list[dict[str, Any]]:
    """The documented draw: random.Random seeded by SHA-256 of "<seed>:<id>" (first 8 bytes)."""
    digest = hashlib.sha256(f"{seed}:{example_id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big")).sample(TRAIN, k)


def test_candidate_templates_inline_and_from_files(
    tmp_path: Path, openai_server: OpenAIServer
) -> None:
    own_system, own_prompt = "Be terse about {{ country }}.", "Name the capital of {{ country }}."
    candidates = {
        "base": api(openai_server),
        "own": api(openai_server, system=own_system, prompt=own_prompt),
        "filed": api(
            openai_server, system_file="../prompts/system.txt", prompt_file="../prompts/ask.j2"
        ),
    }
    suite = project(tmp_path, candidates)
    result = run(suite, Cache(tmp_path / "cache.sqlite"), tmp_path)
    sources = {
        "base": (SUITE_SYSTEM, SUITE_PROMPT),
        "own": (own_system, own_prompt),
        # A template file's final newline is dropped, as editors add one.
        "filed": ("Answer tersely.", FILE_PROMPT.removesuffix("\n")),
    }
    sent = {(r.body["messages"][0]["content"], r.prompt) for r in openai_server.log}
    for name, (system, prompt) in sources.items():
        for row in CAPITALS:
            fields = {k: v for k, v in row.items() if k != "reference"}
            want = [("system", render(system, **fields)), ("user", render(prompt, **fields))]
            assert messages(result, name)[row["id"]] == want
            assert (want[0][1], want[1][1]) in sent
        outputs = {e.id: e.output for e in result.candidates[name].examples}
        assert outputs == {i: m[-1][1] for i, m in messages(result, name).items()}  # the echo
    # Only candidates with a template file carry its content hash in their fingerprint.
    assert "prompt" not in result.candidates["base"].fingerprint
    assert "prompt" not in result.candidates["own"].fingerprint
    assert result.candidates["filed"].fingerprint["prompt"] == {
        "system_file_sha256": hashlib.sha256(b"Answer tersely.").hexdigest()[:16],
        "prompt_file_sha256": hashlib.sha256(FILE_PROMPT.encode()).hexdigest()[:16],
    }


def test_editing_a_prompt_file_re_asks_exactly_that_candidate(
    tmp_path: Path, openai_server: OpenAIServer
) -> None:
    candidates = {
        "base": api(openai_server),
        "own": api(openai_server, prompt="Name the capital of {{ country }}."),
        "filed": api(openai_server, prompt_file="../prompts/ask.j2"),
    }
    suite = project(tmp_path, candidates)
    cache = Cache(tmp_path / "cache.sqlite")
    run(suite, cache, tmp_path)
    assert openai_server.count() == 3 * len(CAPITALS)
    again = run(suite, cache, tmp_path)
    assert openai_server.count() == 3 * len(CAPITALS)
    assert all(c.n_cached == len(CAPITALS) for c in again.candidates.values())
    edited = "Capital city of {{ country }}, one word?"
    (tmp_path / "prompts" / "ask.j2").write_text(edited, encoding="utf-8")
    after = run(suite, cache, tmp_path)
    assert openai_server.count() == 4 * len(CAPITALS)
    assert {r.prompt for r in openai_server.log[-len(CAPITALS) :]} == {
        render(edited, country=row["country"]) for row in CAPITALS
    }
    assert after.candidates["filed"].n_cached == 0
    assert after.candidates["base"].n_cached == after.candidates["own"].n_cached == len(CAPITALS)
    assert (
        after.candidates["filed"].fingerprint["prompt"]["prompt_file_sha256"]
        == (hashlib.sha256(edited.encode()).hexdigest()[:16])
    )


def test_shots_as_chat_turns_are_drawn_reproducibly(
    tmp_path: Path, openai_server: OpenAIServer
) -> None:
    train = {"train": "../golden/train.jsonl"}
    candidates = {
        "shots": api(openai_server, shots=2, **train),
        "reseeded": api(openai_server, shots=2, shots_seed=7, **train),
    }
    suite = project(tmp_path, candidates)
    result = run(suite, Cache(tmp_path / "cache.sqlite"), tmp_path)
    for name, seed in (("shots", 0), ("reseeded", 7)):
        for row in CAPITALS:
            turns = []
            for shot in expected_shots(2, seed, row["id"]):
                turns += [("user", render(SUITE_PROMPT, **shot)), ("assistant", shot["reference"])]
            want = [("system", SUITE_SYSTEM), *turns, ("user", render(SUITE_PROMPT, **row))]
            assert messages(result, name)[row["id"]] == want
    # The server received the turns as chat messages.
    bodies = [r.body["messages"] for r in openai_server.log]
    assert all(len(b) == 6 and [m["role"] for m in b][1:3] == ["user", "assistant"] for b in bodies)
    # Seeded per example: the same shots in every preparation, whatever the limit.
    full = prepare_suite(suite).candidate_requests["shots"]
    assert prepare_suite(suite).candidate_requests["shots"] == full
    assert prepare_suite(suite, limit=2).candidate_requests["shots"] == full[:2]
    draws = [[m for m in messages(result, n)[r["id"]]] for n in candidates for r in CAPITALS]
    assert draws[: len(CAPITALS)] != draws[len(CAPITALS) :]  # another seed, other shots


def test_inline_shots_before_the_prompt_or_where_the_template_puts_them(
    tmp_path: Path, openai_server: OpenAIServer
) -> None:
    placed = "Examples:\n{{ shots }}\n---\nCapital of {{ country }}?"
    candidates = {
        "inline": api(openai_server, shots=3, train="../golden/train.jsonl", shots_as="inline"),
        "placed": api(
            openai_server, shots=3, train="../golden/train.jsonl", shots_as="inline",
            prompt=placed,
        ),
    }  # fmt: skip
    suite = project(tmp_path, candidates)
    result = run(suite, Cache(tmp_path / "cache.sqlite"), tmp_path)
    for row in CAPITALS:
        shots = expected_shots(3, 0, row["id"])
        block = "\n\n".join(f"{render(SUITE_PROMPT, **s)}\n{s['reference']}" for s in shots)
        want = f"{block}\n\n{render(SUITE_PROMPT, **row)}"
        assert messages(result, "inline")[row["id"]] == [("system", SUITE_SYSTEM), ("user", want)]
        shot_block = "\n\n".join(
            f"{render(placed, shots='', **s)}\n{s['reference']}" for s in shots
        )
        placed_want = render(placed, shots=shot_block, **row)
        assert messages(result, "placed")[row["id"]][-1] == ("user", placed_want)


@pytest.mark.parametrize(
    ("clash", "field"),
    [
        ({"id": "de", "country": "Austria", "reference": "Vienna"}, "id"),
        # the same input up to case and whitespace is the same question
        ({"id": "t-fr", "country": "  FRANCE ", "reference": "Paris"}, "country"),
    ],
)
def test_a_train_file_sharing_an_id_or_input_with_the_test_set_fails_collection(
    tmp_path: Path, openai_server: OpenAIServer, clash: dict[str, str], field: str
) -> None:
    candidates = {"shots": api(openai_server, shots=2, train="../golden/train.jsonl")}
    suite = project(tmp_path, candidates, train=[*TRAIN, clash])
    with pytest.raises(SpecError) as caught:
        prepare_suite(suite)
    error = caught.value
    assert Path(error.path or "").resolve() == tmp_path / "golden" / "train.jsonl"
    assert (error.line, error.field) == (len(TRAIN) + 1, field)
    assert "candidates.shots.train" in str(error) and "caps.yaml" in str(error)


def test_answer_regex_scores_the_extracted_answer_and_keeps_the_output(
    tmp_path: Path, openai_server: OpenAIServer
) -> None:
    rows = [
        {"id": "fr", "city": "Paris", "reference": "Paris"},
        {"id": "de", "city": "Munich", "reference": "Berlin"},
        {"id": "it", "city": "", "reference": "Rome"},
        {"id": "es", "city": "Sevilla, no: Madrid", "reference": "Madrid"},
    ]
    prompt = "Let me think. {% if city %}The answer is {{ city }}.{% else %}No idea.{% endif %}"
    regex = r"answer is (?:\w+, no: )?(\w+)"
    candidates = {
        "cot": api(openai_server, answer={"regex": regex}),
        "plain": api(openai_server),
        "last": api(openai_server, answer={"regex": r"\w+", "group": 0, "select": "last"}),
        "sampled": api(
            openai_server, answer={"regex": regex}, samples=2, generation={"temperature": 0.5}
        ),
    }
    suite = project(tmp_path, candidates, rows=rows, prompt=prompt)
    result = run(suite, Cache(tmp_path / "cache.sqlite"), tmp_path)
    for row in rows:
        full = render(prompt, **row)
        found = re.search(regex, full)
        answers = {
            "cot": found.group(1) if found else "",
            "sampled": found.group(1) if found else "",
            "plain": None,
            "last": re.findall(r"\w+", full)[-1],
        }
        for name, answer in answers.items():
            example = next(e for e in result.candidates[name].examples if e.id == row["id"])
            assert example.output == full and example.answer == answer
            scored = full if answer is None else answer
            assert example.scores["exact_match"] == float(scored == row["reference"])
            for sample in example.samples:  # every sample is scored through the extractor
                assert sample.output == full
                assert sample.scores["exact_match"] == float(scored == row["reference"])
    # No match is a wrong answer (0), not a missing score.
    assert result.candidates["cot"].aggregates["exact_match"].n == len(rows)


def write_bad(root: Path, name: str, text: str) -> None:
    (root / "prompts" / name).write_text(text, encoding="utf-8")


@pytest.mark.parametrize(
    ("candidate", "setup", "where", "message"),
    [
        ({"prompt_file": "../prompts/missing.j2"}, None, ("suite", "candidates.own.prompt_file"),
         "not found"),
        ({"prompt_file": "../prompts/bad.j2"}, ("bad.j2", "line one\n{% if %}"),
         ("bad.j2", "candidates.own.prompt_file"), "bad jinja2 template"),
        ({"prompt_file": "../prompts/evil.j2"},
         ("evil.j2", "{{ cycler.__init__.__globals__.os.system('touch pwned') }}"),
         ("golden", None), "refused"),
        ({"shots": 9, "train": "../golden/train.jsonl"}, None, ("suite", "candidates.own.shots"),
         "at least 9 train examples"),
        ({"prompt": "x", "prompt_file": "../prompts/ask.j2"}, None, ("suite", "candidates.own"),
         "not both"),
        ({"train": "../golden/nothing.jsonl", "shots": 1}, None,
         ("suite", "candidates.own.train"), "not found"),
    ],
)  # fmt: skip
def test_collection_errors_name_the_file_and_field(
    tmp_path: Path,
    openai_server: OpenAIServer,
    candidate: dict[str, Any],
    setup: tuple[str, str] | None,
    where: tuple[str, str | None],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    suite = project(tmp_path, {"own": api(openai_server, **candidate)})
    if setup is not None:
        write_bad(tmp_path, *setup)
    with pytest.raises(SpecError) as caught:
        prepare_suite(suite)
    error = caught.value
    expected_file = {"suite": suite, "golden": tmp_path / "golden" / "caps.jsonl"}.get(
        where[0], tmp_path / "prompts" / where[0]
    )
    assert (tmp_path / (error.path or "")).resolve() == expected_file.resolve()
    assert error.field == where[1] and message in str(error)
    if setup is not None and setup[0] == "bad.j2":
        assert error.line == 2
    assert not (tmp_path / "pwned").exists()


def test_the_handbook_train_file_is_disjoint_and_its_answers_are_in_the_handbook() -> None:
    """The demo's 3-shot candidate: its train file shares no id or question with the test set
    (read here as plain JSON, apart from evalkit's own check), and every answer is a number
    stated on the handbook page the example names."""
    root = Path(__file__).resolve().parent.parent
    read = [json.loads(line) for line in (root / "golden" / "handbook_train.jsonl").open()]
    test = [json.loads(line) for line in (root / "golden" / "handbook.jsonl").open()]
    assert len(read) >= 12
    assert not {r["id"] for r in read} & {t["id"] for t in test}
    folded = {" ".join(t["question"].casefold().split()) for t in test}
    assert not {" ".join(r["question"].casefold().split()) for r in read} & folded
    for row in read:
        (page,) = row["context_ids"]
        text = (root / "golden" / "handbook" / page).read_text(encoding="utf-8")
        assert re.search(rf"(?<![\d.]){re.escape(row['reference'])}(?![\d.])", text), row["id"]
    prepared = prepare_suite(root / "suites" / "handbook.yaml", limit=2)  # evalkit's check
    assert len(prepared.variants["shots3"].train) == len(read)
