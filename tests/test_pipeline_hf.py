"""End to end with a real (tiny) transformers model: caching, recompute, light collection."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from suitefiles import write_jsonl, write_suite

from evalkit.results import load_run

REPO = Path(__file__).resolve().parents[1]
N = 12

MODULE_PROBE = """
import sys
def pytest_sessionfinish(session):
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers"))
    with open("modules.txt", "w") as handle:
        handle.write("\\n".join(heavy))
"""


def _rows() -> list[dict]:
    words = [
        "cat",
        "dog",
        "sun",
        "tree",
        "book",
        "rain",
        "blue",
        "fish",
        "bird",
        "moon",
        "road",
        "star",
    ]
    return [{"id": f"w{i}", "word": w, "reference": w} for i, w in enumerate(words[:N])]


@pytest.fixture
def project(pytester: pytest.Pytester, tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # Subprocesses import this checkout's evalkit, not whichever one the venv installed.
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    root = pytester.path
    write_jsonl(root / "golden" / "words.jsonl", _rows())
    write_suite(
        root / "suites" / "words.yaml",
        {
            "suite": "words",
            "dataset": "../golden/words.jsonl",
            "prompt": "Say the word {{ word }}",
            "generation": {"max_new_tokens": 6, "batch_size": 4},
            "candidates": {"tiny": {"model": str(tiny_model)}},
            "metrics": ["chrf", "edit_similarity"],
            "gates": {"chrf": {"min": 0.0}},
        },
    )
    (root / "conftest.py").write_text(MODULE_PROBE)
    return root


def _run(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, list[str]]:
    result = pytester.runpytest_subprocess("suites/", "-p", "no:xdist", *args)
    modules = (pytester.path / "modules.txt").read_text().split()
    return result, modules


def test_cached_rerun_loads_no_model_and_one_change_recomputes_one(
    pytester: pytest.Pytester, project: Path
) -> None:
    result, modules = _run(pytester)
    result.assert_outcomes(passed=1)
    first = load_run(project / "reports" / "words" / "run.json")
    tiny = first.candidates["tiny"]
    assert (tiny.n_generated, tiny.n_cached) == (N, 0)
    assert "transformers" in modules
    assert tiny.describe["device"] == "cpu" and tiny.describe["load_seconds"] > 0
    assert all(e.output is not None and e.prompt.startswith("<|im_start|>") for e in tiny.examples)

    result, modules = _run(pytester)
    result.assert_outcomes(passed=1)
    second = load_run(project / "reports" / "words" / "run.json")
    assert (second.candidates["tiny"].n_generated, second.candidates["tiny"].n_cached) == (0, N)
    assert "transformers" not in modules  # no model (not even its library) was loaded
    assert "torch" not in modules  # nor torch, to learn the device for the fingerprint
    assert [e.output for e in second.candidates["tiny"].examples] == [
        e.output for e in tiny.examples
    ]
    assert second.candidates["tiny"].aggregates == tiny.aggregates

    rows = _rows()
    rows[3]["word"] = "lamp"
    write_jsonl(project / "golden" / "words.jsonl", rows)
    _run(pytester)
    third = load_run(project / "reports" / "words" / "run.json").candidates["tiny"]
    assert (third.n_generated, third.n_cached) == (1, N - 1)
    assert [e.id for e in third.examples if not e.cached] == ["w3"]

    # A decoding change is a different key: everything is generated again.
    spec = (
        (project / "suites" / "words.yaml")
        .read_text()
        .replace("max_new_tokens: 6", "max_new_tokens: 5")
    )
    (project / "suites" / "words.yaml").write_text(spec)
    _run(pytester, "--evalkit-no-cache")
    assert load_run(project / "reports" / "words" / "run.json").candidates["tiny"].n_cached == 0


CLI_PROBE = """
import json, sys
from evalkit.cli import main
code = main(sys.argv[1:])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers"))
print("MODULES " + json.dumps(heavy))
print("EVALKIT " + sys.modules["evalkit"].__file__)
raise SystemExit(code)
"""


def _cli_run(root: Path) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    result = subprocess.run(
        [sys.executable, "-c", CLI_PROBE, "run", "suites/words.yaml"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(),
    )
    line = next(x for x in result.stdout.splitlines() if x.startswith("MODULES "))
    return result, json.loads(line.removeprefix("MODULES "))


def test_cli_cached_rerun_imports_neither_torch_nor_transformers(project: Path) -> None:
    first, modules = _cli_run(project)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "torch" in modules and "transformers" in modules
    second, modules = _cli_run(project)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"words/tiny: {N} examples, {N} cached" in second.stdout
    assert modules == []
    assert f"EVALKIT {REPO / 'evalkit' / '__init__.py'}" in second.stdout


def test_model_error_is_one_message_per_item(pytester: pytest.Pytester, project: Path) -> None:
    spec = {
        "suite": "words",
        "dataset": "../golden/words.jsonl",
        "prompt": "{{ word }}",
        "candidates": {"gone": {"model": "./no/such/model"}},
        "metrics": ["chrf"],
        "gates": {"chrf": {"min": 0.0}},
    }
    write_suite(project / "suites" / "words.yaml", spec)
    result = pytester.runpytest("suites/", "-p", "no:xdist")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "does not exist" in out and "Traceback" not in out


def test_device_option_reaches_the_candidate(pytester: pytest.Pytester, project: Path) -> None:
    result = pytester.runpytest("suites/", "-p", "no:xdist", "--evalkit-device", "cuda")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "cuda" in out and "not available" in out and "Traceback" not in out


def test_collecting_the_shipped_suites_imports_no_torch(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(MODULE_PROBE.replace('"modules.txt"', repr(str(tmp_path / "modules.txt"))))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "suites/",
            "-p",
            "no:xdist",
            "-p",
            "probe",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**_env(), "PYTHONPATH": str(tmp_path)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    items = [line for line in result.stdout.splitlines() if "::" in line]
    assert "suites/capitals.yaml::base::contains" in items
    assert "suites/units.yaml::sampled::regex" in items
    assert (tmp_path / "modules.txt").read_text() == ""


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
