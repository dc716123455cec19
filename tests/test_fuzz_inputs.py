"""Property-based tests: random and malformed suite, golden (JSONL, CSV, YAML) and replay files
end in exactly one of two ways, evalkit's own located error or a valid run, within a per-case
time limit (a hang fails the test). Hypothesis uses a fixed seed (derandomize); large example
counts run only with EVALKIT_FUZZ=deep."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from evalkit.cache import Cache
from evalkit.candidates.replay import read_replay
from evalkit.errors import EvalkitError, SpecError
from evalkit.golden import load_golden
from evalkit.run import RunOptions, prepare_suite, run_suite
from evalkit.spec import load_suite

DEEP = os.environ.get("EVALKIT_FUZZ") == "deep"
CASE_SECONDS = 10.0
FUZZ = settings(
    max_examples=2000 if DEEP else 40,
    derandomize=True,  # a fixed seed: CI sees the same cases every run
    deadline=None,  # the alarm below bounds each case; hypothesis' deadline cannot stop a hang
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class CaseTimeout(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float = CASE_SECONDS) -> Iterator[None]:
    """Interrupt a case that runs too long: a hang becomes a test failure, not a stuck job."""

    def expire(signum: int, frame: Any) -> None:
        raise CaseTimeout(f"a case ran over {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def located_or_valid(path: Path, load: Callable[[Path], Any]) -> Any:
    """Run ``load``; only a SpecError that names ``path`` (or a result) is allowed."""
    with time_limit():
        try:
            return load(path)
        except SpecError as exc:
            assert str(exc).startswith(str(path)), f"error does not name the file: {exc}"
            event(f"located error: {exc.detail[:25]}")
            return None


# -- strategies: text an adversary would write -----------------------------------------------

TRICKY = [  # a 5,000-digit number and 2,000 open brackets among them
    "\ufeff", "\x00", "\x07", "\r", "\n", '"', ",", "\\ud800", "NaN", "Infinity", "-1e999",
    "9" * 5000, "[" * 2000, "{" * 50, "&a", "*a", "<<:", "{{", "}}", " ", "\t", "é", "e\u0301",
    "---", "- ", ": ", "#", "!!python/object:os.system", "%YAML 1.1",
]  # fmt: skip
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30), st.sampled_from(TRICKY),
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)  # fmt: skip
good_row = st.fixed_dictionaries(
    {"id": st.one_of(st.text(min_size=1, max_size=8), st.integers(0, 10**6))},
    optional={"reference": st.one_of(st.text(max_size=10), st.lists(st.text(max_size=5),
                                                                    min_size=1, max_size=3)),
              "input": st.text(max_size=20), "extra": values},
)  # fmt: skip
rows = st.lists(st.one_of(good_row, values), min_size=0, max_size=8)
noise = st.lists(st.one_of(st.sampled_from(TRICKY), st.text(max_size=20)), max_size=12).map("".join)
raw_bytes = st.binary(max_size=200)


@st.composite
def jsonl_file(draw: st.DrawFn) -> bytes:
    lines = []
    for row in draw(rows):
        text = json.dumps(row, ensure_ascii=draw(st.booleans()))
        if draw(st.integers(0, 5)) == 0:  # mutate: cut, splice noise or raw bytes
            cut = draw(st.integers(0, len(text)))
            text = text[:cut] + draw(noise)
        lines.append(text.encode("utf-8", "surrogatepass"))
        if draw(st.integers(0, 9)) == 0:
            lines.append(draw(raw_bytes).replace(b"\n", b""))
    return b"\n".join(lines) + b"\n"


@st.composite
def csv_file(draw: st.DrawFn) -> bytes:
    header = draw(st.sampled_from(["id,input,reference", "id,reference", "input", "", "id,id"]))
    cell = st.one_of(st.text(max_size=8), st.sampled_from(TRICKY))
    body = [
        ",".join(draw(st.lists(cell, min_size=0, max_size=4)))
        for _ in range(draw(st.integers(0, 6)))
    ]
    text = "\n".join([header, *body]) + draw(st.sampled_from(["", "\n", "\r\n", '"']))
    return text.encode("utf-8", "surrogatepass")


@st.composite
def yaml_file(draw: st.DrawFn, base: Any = None) -> bytes:
    data = draw(rows) if base is None else base
    text = yaml.safe_dump(data, allow_unicode=True, sort_keys=False)
    if draw(st.booleans()):  # anchors, aliases and merge keys an adversary may add
        text = "x: &a [1, 2]\ny: [*a, *a]\nz: {<<: {k: 1}, k: 2}\n" + text
    if draw(st.integers(0, 2)) == 0:
        cut = draw(st.integers(0, len(text)))
        text = text[:cut] + draw(noise) + text[cut:]
    return text.encode("utf-8", "surrogatepass")


def write_case(data: bytes, name: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="evalkit-fuzz-"))
    path = folder / name
    path.write_bytes(data)
    return path


def check_examples(examples: list[Any]) -> None:
    ids = [e.id for e in examples]
    assert len(set(ids)) == len(ids) and all(isinstance(i, str) for i in ids)
    for example in examples:
        assert len(example.content_hash) == 16 and all(
            isinstance(r, str) for r in example.references
        )
        json.dumps(example.fields, ensure_ascii=False).encode()  # storable as UTF-8


# -- the properties ----------------------------------------------------------------------------


@FUZZ
@given(data=jsonl_file())
def test_random_jsonl_golden(data: bytes) -> None:
    examples = located_or_valid(write_case(data, "g.jsonl"), load_golden)
    if examples is not None:
        check_examples(examples)


@FUZZ
@given(data=csv_file())
def test_random_csv_golden(data: bytes) -> None:
    examples = located_or_valid(write_case(data, "g.csv"), load_golden)
    if examples is not None:
        check_examples(examples)


@FUZZ
@given(data=yaml_file())
def test_random_yaml_golden(data: bytes) -> None:
    examples = located_or_valid(write_case(data, "g.yaml"), load_golden)
    if examples is not None:
        check_examples(examples)


@FUZZ
@given(data=jsonl_file())
def test_random_replay_file(data: bytes) -> None:
    rows = located_or_valid(write_case(data, "r.jsonl"), read_replay)
    if rows is not None:
        for example_id, row in rows.items():
            assert isinstance(example_id, str)
            assert row.output is None or isinstance(row.output, str)


SUITE: dict[str, Any] = {
    "suite": "fuzz",
    "dataset": "g.jsonl",
    "prompt": "Q: {{ input }}",
    "generation": {"max_new_tokens": 4},
    "candidates": {"old": {"replay": "r.jsonl"}},
    "metrics": ["exact_match", "chrf"],
    "gates": {"exact_match": {"min": 0.0}},
}
SUITE_KEYS = [*SUITE, "system", "compare_to", "baseline_dir", "x-anchor"]


@st.composite
def suite_file(draw: st.DrawFn) -> bytes:
    spec = json.loads(json.dumps(SUITE))
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(SUITE_KEYS))
        spec[key] = draw(st.one_of(values, st.sampled_from(TRICKY), st.just("{{ input }}")))
    return draw(yaml_file(base=spec))


@st.composite
def suite_case(draw: st.DrawFn) -> tuple[bytes, bytes, bytes]:
    """A suite, a golden file and a replay file (with outputs for some of the golden ids):
    valid, or with a mutated suite, or all random."""
    golden_rows = draw(st.lists(st.fixed_dictionaries(
        {"id": st.text("abcdef0123", min_size=1, max_size=6), "input": st.text(max_size=12),
         "reference": st.text(max_size=8)}), min_size=1, max_size=6,
        unique_by=lambda r: r["id"].strip()))  # fmt: skip
    mode = draw(st.integers(0, 3))  # 0-1: clean suite, 2: mutated suite, 3: all random
    if mode < 3:
        golden = "".join(json.dumps(r) + "\n" for r in golden_rows).encode()
        outputs = [{"id": r["id"], "output": draw(st.one_of(st.none(), st.text(max_size=8)))}
                   for r in golden_rows if draw(st.booleans())]  # fmt: skip
        replay = "".join(json.dumps(o) + "\n" for o in outputs).encode()
    else:
        golden, replay = draw(jsonl_file()), draw(jsonl_file())
    clean = yaml.safe_dump(SUITE, allow_unicode=True, sort_keys=False).encode()
    return clean if mode < 2 else draw(suite_file()), golden, replay


@settings(FUZZ, max_examples=FUZZ.max_examples // 2)  # a run per case: half as many
@given(case=suite_case())
def test_random_suite_runs_or_fails_located(case: tuple[bytes, bytes, bytes]) -> None:
    data, golden, replay = case
    suite = write_case(data, "s.yaml")
    (suite.parent / "g.jsonl").write_bytes(golden)
    (suite.parent / "r.jsonl").write_bytes(replay)
    with time_limit():
        try:
            prepared = prepare_suite(suite)
        except SpecError as exc:
            # The file at fault: the suite, the golden or replay file, or a path the suite names.
            assert exc.path and str(exc).startswith(exc.path), str(exc)
            event(f"located error in {Path(exc.path).name}")
            return
        options = RunOptions(report_dir=suite.parent / "reports", cache=Cache(None),
                             progress=False)  # fmt: skip
        try:
            result = run_suite(prepared, options)
        except EvalkitError as exc:
            assert str(exc), "evalkit's own error, with a message"
            event("run error")
            return
    event("valid run")
    assert result.n_examples == len(prepared.examples)
    assert (suite.parent / "reports" / result.suite / "run.json").is_file()


def test_fuzz_settings_are_fixed_and_bounded() -> None:
    assert FUZZ.derandomize and (FUZZ.max_examples == 40 or DEEP)
    with pytest.raises(CaseTimeout), time_limit(0.2):
        while True:
            pass
    assert load_suite  # the suite loader is the one evalkit uses at collection
