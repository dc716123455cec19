"""The demo adapter's TRAIN split (golden/train_terse.jsonl) never shows the model a test input,
and is exactly what its generator writes."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

from evalkit.golden import load_golden
from evalkit.prompts import render_request
from evalkit.spec import load_suite

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "golden"


def load_script(name: str) -> Any:
    """A script under golden/ as a module (registered first: its dataclasses look it up)."""
    spec = importlib.util.spec_from_file_location(name, GOLDEN / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def rendered_inputs(examples: list[Any], suite: Any) -> set[str]:
    """What the model is asked: every message of the rendered request, whitespace and case
    folded so that near-duplicates count as overlaps too."""
    return {
        " ".join(" ".join(m.content for m in render_request(suite, e).messages).lower().split())
        for e in examples
    }


def test_no_train_input_is_a_golden_input() -> None:
    train = load_golden(GOLDEN / "train_terse.jsonl")
    assert len(train) >= 100
    for name in ("capitals", "units"):
        suite = load_suite(ROOT / "suites" / f"{name}.yaml")
        golden = load_golden(suite.dataset_path)
        mine = [e for e in train if e.fields["suite"] == name]
        assert len(mine) >= 50, name
        overlap = rendered_inputs(mine, suite) & rendered_inputs(golden, suite)
        assert not overlap, f"train inputs that are {name} test inputs: {sorted(overlap)}"
        # The raw fields too: not even a country or question reworded by the template.
        key = "country" if name == "capitals" else "question"
        golden_fields = {str(e.fields[key]).lower() for e in golden}
        assert not {str(e.fields[key]).lower() for e in mine} & golden_fields


def test_answers_are_terse_and_correct() -> None:
    """The format the adapter learns: the city only, or the number only (checked by
    recomputing every unit answer from the question)."""
    factors = {
        ("meters", "millimeters"): 1000,
        ("kilometers", "centimeters"): 100000,
        ("hours", "seconds"): 3600,
        ("days", "minutes"): 1440,
        ("weeks", "hours"): 168,
        ("yards", "inches"): 36,
        ("kilograms", "milligrams"): 1000000,
        ("decades", "years"): 10,
        ("centuries", "years"): 100,
        ("dollars", "cents"): 100,
    }
    singular = {"meter", "kilometer", "hour", "day", "week", "yard", "kilogram", "decade"}
    singular |= {"century", "dollar", "second", "minute", "millimeter", "inch"}
    for example in load_golden(GOLDEN / "train_terse.jsonl"):
        (answer,) = example.references
        if example.fields["suite"] == "capitals":
            assert answer and not answer.endswith(".") and "capital" not in answer.lower()
            continue
        words = example.fields["question"].rstrip("?").split()
        # "How many <target> are in <amount> <source>"
        target, amount, source = words[2], int(words[5]), words[6]
        source = source if source not in singular else _plural(source)
        if (source, target) in factors:
            expected = amount * factors[(source, target)]
        else:
            expected = amount // factors[(target, source)]
            assert expected * factors[(target, source)] == amount
        assert answer == str(expected), example.id


def _plural(word: str) -> str:
    return {"century": "centuries", "inch": "inches"}.get(word, word + "s")


def test_committed_split_is_what_the_generator_writes() -> None:
    rows = load_script("make_train_terse").build_rows()
    lines = (GOLDEN / "train_terse.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == rows
