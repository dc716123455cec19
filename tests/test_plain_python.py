"""The plain-Python route: golden_params, the evalkit_model fixture and score()."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import sacrebleu
from suitefiles import CAPITALS, write_jsonl

from evalkit.testing import score

USER_TEST = """
import sys

import pytest

from evalkit.testing import golden_params, score

MODEL = {model!r}


@pytest.mark.parametrize("example", golden_params("golden/capitals.jsonl"))
def test_answers_are_cached_strings(example, evalkit_model):
    model = evalkit_model(MODEL, max_new_tokens=5)
    answer = model.generate(f"Capital of {{example.fields['country']}}?")
    assert isinstance(answer, str)
    assert model.generate_many([f"Capital of {{example.fields['country']}}?"]) == [answer]
    assert 0.0 <= score("chrf", answer, example.references) <= 100.0


def test_zz_modules():
    with open("modules.txt", "w") as handle:
        handle.write(str("transformers" in sys.modules))
"""


def test_user_style_tests_run_and_rerun_from_cache(
    pytester: pytest.Pytester, tiny_model: Path
) -> None:
    write_jsonl(pytester.path / "tests" / "golden" / "capitals.jsonl", CAPITALS)
    (pytester.path / "tests" / "test_user.py").write_text(
        textwrap.dedent(USER_TEST.format(model=str(tiny_model)))
    )
    result = pytester.runpytest_subprocess("tests/", "-p", "no:xdist", "-v")
    result.assert_outcomes(passed=len(CAPITALS) + 1)
    assert "test_answers_are_cached_strings[fr] PASSED" in result.stdout.str()
    assert (pytester.path / "modules.txt").read_text() == "True"
    result = pytester.runpytest_subprocess("tests/", "-p", "no:xdist")
    result.assert_outcomes(passed=len(CAPITALS) + 1)
    assert (pytester.path / "modules.txt").read_text() == "False"  # all answers came from cache


def test_score_matches_the_library() -> None:
    hyp, ref = "The capital is Paris.", "Paris"
    assert score("chrf", hyp, ref) == pytest.approx(sacrebleu.sentence_chrf(hyp, [ref]).score)
    assert score("contains", hyp, ["Lyon", "paris"], normalize=["lower"]) == 1.0
    assert score("exact_match", hyp, "Paris") == 0.0
