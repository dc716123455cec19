"""Every class of bad golden, replay and suite file the adversarial review found ends in ONE
SpecError naming the file and line (or field), quickly, never a traceback or a silent accept."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from suitefiles import write_jsonl

from evalkit._yaml import MAX_ALIAS_NODES, load_yaml
from evalkit.candidates.replay import read_replay
from evalkit.errors import SpecError
from evalkit.golden import iter_golden, load_golden
from evalkit.spec import load_suite

BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)

GOLDEN_CASES = {
    # name: (file name, bytes, line, fragments of the message)
    "not UTF-8": ("g.jsonl", b'{"id": "a"}\n{"id": "b", "x": "caf\xe9"}\n', 2, ["not UTF-8"]),
    "lone surrogate": ("g.jsonl", b'{"id": "a", "reference": "\\ud800"}\n', 1,
                       ["lone surrogate U+D800", "field 'reference'"]),
    "5,000-digit id": ("g.jsonl", b'{"id": ' + b"9" * 5000 + b"}\n", 1, ["4,300 digits"]),
    "deep JSON": ("g.jsonl", b'{"id": "a", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n", 1,
                  ["nested deeper"]),
    "deepish JSON": ("g.jsonl", b'{"id": "a", "x": ' + b"[" * 500 + b"]" * 500 + b"}\n", 1,
                     ["nested deeper than 100", "field 'x'"]),
    "deep YAML": ("g.yaml", b"- {id: a, x: " + b"[" * 5000 + b"]" * 5000 + b"}\n", 1,
                  ["nested deeper than 100"]),
    "NaN reference": ("g.jsonl", b'{"id": "a", "reference": NaN}\n', 1, ["NaN is not a JSON"]),
    "1e999 reference": ("g.jsonl", b'{"id": "a", "reference": 1e999}\n', 1,
                        ["reference is inf", "write it as a string"]),
    ".nan YAML reference": ("g.yaml", b"- {id: a, reference: .nan}\n", 1, ["reference is nan"]),
    "ids differ by whitespace": ("g.jsonl", b'{"id": "e0"}\n{"id": "e0 "}\n', 2,
                                 ["duplicate example id 'e0 '", "up to whitespace"]),
    "ids differ by normalisation": ("g.jsonl", '{"id": "é"}\n{"id": "e\u0301"}\n'.encode(), 2,
                                    ["duplicate example id"]),
    "unclosed CSV quote": ("g.csv", b'id,reference\na,"x\nb,y\nc,z\n', 2,
                           ["starts on line 2 is never closed"]),
    "CSV field over the limit": ("g.csv", b"id,reference\na," + b"x" * 1_100_000 + b"\n", 2,
                                 ["longer than 1,000,000", "EVALKIT_MAX_EXAMPLE_BYTES"]),
    "JSONL line over the limit": ("g.jsonl", b'{"id": "a", "x": "' + b"x" * 1_100_000 + b'"}\n',
                                  1, ["line longer than 1,000,000 bytes"]),
    "YAML example over the limit": ("g.yaml", b"- {id: a, x: " + b"y" * 1_100_000 + b"}\n", 1,
                                    ["over the limit of 1,000,000"]),
    "CSV stray quote": ("g.csv", b'id,reference\na,"x"y\n', 2, ["malformed CSV"]),
    "YAML alias bomb": ("g.yaml", BOMB.encode(), None, ["aliases", "alias bomb"]),
    "YAML integer keys": ("g.yaml", b"- {id: a, 1: x}\n", 1, ["field name 1 is not a string"]),
    "YAML 5,000-digit number": ("g.yaml", b"- {id: " + b"7" * 5000 + b"}\n", 1, ["too long"]),
    "YAML control character": ("g.yaml", b"- {id: a, x: \x07}\n", None, ["invalid YAML"]),
    "empty file": ("g.jsonl", b"\n\n", None, ["holds no examples"]),
}  # fmt: skip


@pytest.mark.parametrize("case", GOLDEN_CASES, ids=list(GOLDEN_CASES))
def test_bad_golden_file_is_one_located_error(tmp_path: Path, case: str) -> None:
    name, data, line, fragments = GOLDEN_CASES[case]
    path = tmp_path / name
    path.write_bytes(data)
    started = time.monotonic()
    with pytest.raises(SpecError) as info:
        load_golden(path)
    assert time.monotonic() - started < 5, "bad input must fail fast"
    message = str(info.value)
    assert message.startswith(str(path) + (f":{line}" if line else "")), message
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.parametrize("name", ["g.jsonl", "g.csv", "g.yaml"])
def test_a_byte_order_mark_is_skipped_in_every_format(tmp_path: Path, name: str) -> None:
    text = {
        "g.jsonl": '{"id": "a", "reference": "x"}\n',
        "g.csv": "id,reference\na,x\n",
        "g.yaml": "- {id: a, reference: x}\n",
    }[name]
    with_bom, without = tmp_path / name, tmp_path / f"plain_{name}"
    with_bom.write_bytes(b"\xef\xbb\xbf" + text.encode())
    without.write_text(text, encoding="utf-8")
    (got,), (want,) = load_golden(with_bom), load_golden(without)
    assert (got.id, got.references, got.content_hash) == (want.id, want.references,
                                                          want.content_hash)  # fmt: skip


def test_example_limit_is_configurable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_jsonl(tmp_path / "g.jsonl", [{"id": "a", "x": "y" * 5000}])
    assert load_golden(path)[0].fields["x"] == "y" * 5000
    monkeypatch.setenv("EVALKIT_MAX_EXAMPLE_BYTES", "1000")
    with pytest.raises(SpecError, match="line longer than 1,000 bytes"):
        load_golden(path)


def test_valid_edge_cases_still_load(tmp_path: Path) -> None:
    csv_path = tmp_path / "g.csv"
    csv_path.write_bytes(b'id,reference\r\na,"x\r\ny"\r\n\r\nb,"say ""hi"""\r\n')
    examples = load_golden(csv_path)
    assert [(e.id, e.references, e.line) for e in examples] == [
        ("a", ("x\r\ny",), 2),
        ("b", ('say "hi"',), 5),
    ]
    yaml_path = tmp_path / "g.yaml"
    yaml_path.write_text("- &d {id: a, lang: en, reference: x}\n- {<<: *d, id: b}\n")
    assert [(e.id, e.fields) for e in load_golden(yaml_path)] == [
        ("a", {"id": "a", "lang": "en"}),
        ("b", {"id": "b", "lang": "en"}),
    ]


def test_limit_reads_only_the_lines_it_needs(tmp_path: Path) -> None:
    path = tmp_path / "g.jsonl"
    good = "".join(json.dumps({"id": f"e{i}", "reference": "x"}) + "\n" for i in range(5))
    path.write_text(good + "this line is broken\n")
    assert [e.id for e in load_golden(path, limit=5)] == [f"e{i}" for i in range(5)]
    with pytest.raises(SpecError, match=":6: not valid JSON"):
        load_golden(path)
    reader = iter_golden(path)
    assert next(reader).id == "e0"  # lazy: nothing after the first line was parsed yet


def test_limit_on_a_large_file_costs_what_its_first_lines_cost(tmp_path: Path) -> None:
    """--evalkit-limit 5 on a 100 MB golden file: measured in a fresh process (RSS and time)."""
    path = tmp_path / "big.jsonl"
    row = {"id": "", "text": "word " * 2000, "reference": "x"}
    with path.open("w") as handle:
        for i in range(10_000):  # 10,000 lines of 10 kB: 100 MB
            row["id"] = f"e{i}"
            handle.write(json.dumps(row) + "\n")
    assert path.stat().st_size > 100_000_000
    script = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from evalkit.golden import load_golden
        t = time.perf_counter()
        examples = load_golden(Path({str(path)!r}), limit=5)
        # VmHWM, not ru_maxrss: Linux keeps the parent's ru_maxrss across exec.
        status = Path("/proc/self/status").read_text().splitlines()
        hwm = next(line.split()[1] for line in status if line.startswith("VmHWM"))
        print(len(examples), time.perf_counter() - t, hwm)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True,
        cwd=Path(__file__).parents[1], env={**os.environ, "PYTHONPATH": "."},
    ).stdout.split()  # fmt: skip
    count, seconds, max_rss_kb = int(out[0]), float(out[1]), int(out[2])
    assert count == 5 and seconds < 1.0
    assert max_rss_kb < 200_000  # the interpreter plus pydantic; the file would be 100 MB more


REPLAY_CASES = {
    "not UTF-8": (b'{"id": "a", "output": "\xe9"}\n', 1, ["not UTF-8"]),
    "lone surrogate": (b'{"id": "a", "output": "\\ud800"}\n', 1, ["lone surrogate", "'output'"]),
    "NaN": (b'{"id": "a", "output": NaN}\n', 1, ["NaN is not a JSON number"]),
    "5,000-digit id": (b'{"id": ' + b"1" * 5000 + b', "output": "x"}\n', 1, ["4,300 digits"]),
    "deep": (b'{"id": "a", "output": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n", 1,
             ["nested deeper"]),
    "ids differ by whitespace": (b'{"id": "a", "output": "x"}\n{"id": "a\\t", "output": "y"}\n',
                                 2, ["duplicate id", "up to whitespace"]),
    "line over the limit": (b'{"id": "a", "output": "' + b"x" * 1_100_000 + b'"}\n', 1,
                            ["line longer than"]),
    "not an object": (b"[1, 2]\n", 1, ["not a JSON object"]),
}  # fmt: skip


@pytest.mark.parametrize("case", REPLAY_CASES, ids=list(REPLAY_CASES))
def test_bad_replay_file_is_one_located_error(tmp_path: Path, case: str) -> None:
    data, line, fragments = REPLAY_CASES[case]
    path = tmp_path / "r.jsonl"
    path.write_bytes(data)
    with pytest.raises(SpecError) as info:
        read_replay(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}"), message
    for fragment in fragments:
        assert fragment in message, message


def test_replay_with_a_bom_reads_like_without(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"id": "a", "output": "x"}\n')
    assert read_replay(path)["a"].output == "x"


SUITE = "suite: s\ndataset: g.jsonl\ncandidates: {c: {replay: r.jsonl}}\nmetrics: [chrf]\n"


@pytest.mark.parametrize(
    ("text", "line", "fragments"),
    [
        (SUITE.replace("[chrf]", "\n  - chrf: [1, 2]"), 5,
         ["field 'metrics.0.options'", "valid dictionary"]),
        (BOMB + SUITE, None, ["alias bomb"]),
        ("x: &x [*x]\n" + SUITE, 1, ["recursive"]),
        ("suite: s\nsuite: t\n", 2, ["duplicate key 'suite'"]),
    ],
)  # fmt: skip
def test_bad_suite_is_one_located_error(
    tmp_path: Path, text: str, line: int | None, fragments: list[str]
) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SpecError) as info:
        load_suite(path)
    message = str(info.value)
    assert message.startswith(str(path) + (f":{line}" if line else "")), message
    for fragment in fragments:
        assert fragment in message, message


def test_alias_bomb_is_refused_fast_and_small_aliases_still_work(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    # What the bomb would expand to: 9**9 leaves (computed, not built).
    expanded_leaves = 9**9
    assert expanded_leaves > 1000 * MAX_ALIAS_NODES
    started = time.monotonic()
    with pytest.raises(SpecError, match="over the limit of 10,000"):
        load_yaml(path)
    assert time.monotonic() - started < 1
    defaults = "defaults: &d {max_new_tokens: 8, temperature: 0}\n"
    path.write_text(defaults + "a: {<<: *d, temperature: 1}\nb: *d\n")
    data, lines = load_yaml(path)
    assert data == yaml.safe_load(path.read_text())
    assert data["a"] == {"max_new_tokens": 8, "temperature": 1}
    assert lines.line_of(("b",)) == 3


def test_merge_key_in_a_suite(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "g.jsonl", [{"id": "a", "input": "q", "reference": "x"}])
    (tmp_path / "s.yaml").write_text(
        "x-gen: &gen {max_new_tokens: 8, seed: 3}\n"
        "suite: s\ndataset: g.jsonl\nmetrics: [chrf]\n"
        "candidates:\n  c: {replay: r.jsonl, generation: {<<: *gen, seed: 4}}\n"
    )
    with pytest.raises(SpecError, match="unknown option 'x-gen'"):
        load_suite(tmp_path / "s.yaml")  # the anchor's key itself is still checked
    text = (tmp_path / "s.yaml").read_text().replace("x-gen: &gen", "generation: &gen")
    (tmp_path / "s.yaml").write_text(text)
    spec = load_suite(tmp_path / "s.yaml").spec
    assert spec.generation.seed == 3
    assert spec.candidates["c"].generation is not None
    assert (spec.candidates["c"].generation.max_new_tokens,
            spec.candidates["c"].generation.seed) == (8, 4)  # fmt: skip


def test_failing_gate_quotes_huge_outputs_briefly_and_counts_only_answers(
    pytester: pytest.Pytester,
) -> None:
    from evalkit.results import load_run

    write_jsonl(
        pytester.path / "golden" / "g.jsonl",
        [{"id": f"e{i}", "q": "q", "reference": "yes"} for i in range(3)],
    )
    huge = "no " * 300_000  # 900,000 characters, under the 1 MB line limit
    write_jsonl(
        pytester.path / "golden" / "r.jsonl",
        [{"id": "e0", "output": huge}, {"id": "e1", "output": huge}],
    )  # e2: no output
    (pytester.path / "suites").mkdir()
    (pytester.path / "suites" / "s.yaml").write_text(
        "suite: s\ndataset: ../golden/g.jsonl\nprompt: '{{ q }}'\n"
        "candidates: {old: {replay: ../golden/r.jsonl}}\nmetrics: [exact_match]\n"
        "gates: {exact_match: {min: 0.5}}\n"
    )  # fmt: skip
    result = pytester.runpytest("suites/", "-p", "no:xdist")
    result.assert_outcomes(failed=1)
    lines = result.stdout.lines
    assert max(len(line) for line in lines) < 2_000
    assert any("900,000 characters; all of it in run.json" in line for line in lines)
    run = load_run(pytester.path / "reports" / "s" / "run.json").candidates["old"]
    assert (run.n_generated, run.n_errors, run.n_cached) == (2, 1, 0)
    assert run.examples[0].output == huge.strip() or run.examples[0].output == huge
