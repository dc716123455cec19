"""Suite templates are untrusted: they render sandboxed, with bounded work, and fail with one
located message (never code execution, a hang or a memory blow-up)."""

from __future__ import annotations

import time
from pathlib import Path

import jinja2
import pytest
from suitefiles import write_jsonl, write_suite

from evalkit.errors import SpecError
from evalkit.golden import load_golden
from evalkit.prompts import MAX_PROMPT_CHARS, render_request
from evalkit.spec import load_suite


def render(tmp_path: Path, prompt: str, system: str | None = None) -> str:
    write_jsonl(tmp_path / "g.jsonl", [{"id": "a", "x": "X", "reference": "r"}])
    spec = {
        "suite": "s", "dataset": "g.jsonl", "prompt": prompt,
        "candidates": {"c": {"replay": "r.jsonl"}}, "metrics": ["exact_match"],
    }  # fmt: skip
    if system is not None:
        spec["system"] = system
    suite = load_suite(write_suite(tmp_path / "s.yaml", spec))
    (example,) = load_golden(tmp_path / "g.jsonl")
    return render_request(suite, example).messages[-1].content


def test_os_system_payload_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    payload = f"{{{{ cycler.__init__.__globals__.os.system('touch {marker}') }}}}"
    # The same payload in an unsandboxed jinja2 environment does run the command: the test
    # would prove nothing if the payload were harmless.
    jinja2.Environment().from_string(payload).render()
    assert marker.exists()
    marker.unlink()
    for where in ("prompt", "system"):
        with pytest.raises(SpecError) as info:
            render(tmp_path, payload if where == "prompt" else "{{ x }}",
                   system=payload if where == "system" else None)  # fmt: skip
        message = str(info.value)
        assert "g.jsonl:1" in message and f"'{where}' template" in message, message
        assert "sandboxed" in message and "__init__" in message, message
        assert not marker.exists()


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("{% for i in range(10**9) %}x{% endfor %}", "range()"),
        # Each range is allowed alone; nested they multiply, and the budget is per render.
        ("{% for i in range(90000) %}{% for j in range(90000) %}{% endfor %}{% endfor %}",
         "range()"),
        ("{{ 'x' * 10**9 }}", "1,000,000 characters"),
        ("{{ x|center(10**9) }}", "filter argument"),
        ("{{ x.ljust(10**8) }}", "call argument"),
        ("{{ 7 ** 100000 }}", "power"),
        ("{% for i in range(99999) %}{{ x * 20 }}{% endfor %}", "output passed"),
    ],
)  # fmt: skip
def test_unbounded_work_is_stopped_quickly(tmp_path: Path, template: str, reason: str) -> None:
    started = time.monotonic()
    with pytest.raises(SpecError) as info:
        render(tmp_path, template)
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert "was stopped" in message and reason in message and "g.jsonl:1" in message, message


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}", "RecursionError"),
        ("{{ 1 / 0 }}", "ZeroDivisionError"),
        ("{{ x[5] }}", "has no element 5"),
    ],
)
def test_template_runtime_errors_are_located(tmp_path: Path, template: str, reason: str) -> None:
    with pytest.raises(SpecError) as info:
        render(tmp_path, template)
    assert reason in str(info.value) and "'prompt' template" in str(info.value)


def test_ordinary_templates_render_unchanged(tmp_path: Path) -> None:
    template = (
        "{% for i in range(3) %}{{ i }}{{ x|lower }}{% endfor %} {{ 2 ** 10 }} {{ 'ab' * 2 }}"
    )
    assert render(tmp_path, template) == jinja2.Environment().from_string(template).render(x="X")
    big = "{% for i in range(1000) %}" + "y" * 999 + "{% endfor %}"
    assert len(render(tmp_path, big)) == 999_000 < MAX_PROMPT_CHARS


def test_strict_undefined_still_names_the_fields(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        render(tmp_path, "{{ missing }}")
    assert "'missing' is undefined" in str(info.value) and "fields id, x" in str(info.value)


def test_payload_at_collection_is_one_error(pytester: pytest.Pytester) -> None:
    marker = pytester.path / "PWNED"
    write_jsonl(pytester.path / "golden" / "g.jsonl", [{"id": "a", "x": "X", "reference": "r"}])
    write_suite(
        pytester.path / "suites" / "s.yaml",
        {
            "suite": "s", "dataset": "../golden/g.jsonl",
            "prompt": f"{{{{ cycler.__init__.__globals__.os.system('touch {marker}') }}}}",
            "candidates": {"c": {"replay": "../golden/r.jsonl"}}, "metrics": ["exact_match"],
        },
    )  # fmt: skip
    result = pytester.runpytest("--collect-only", "suites/")
    out = result.stdout.str()
    result.assert_outcomes(errors=1)
    assert "Traceback" not in out and "sandboxed" in out and not marker.exists(), out
