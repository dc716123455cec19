"""The three plugin routes (decorator, pytest hook, entry point), each end to end, and the
errors a user meets: unknown names with the plugins listed, clashes, a plugin that fails."""

from __future__ import annotations

import importlib.util
import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from suitefiles import write_jsonl

import evalkit
from evalkit.errors import SpecError
from evalkit.metrics import Sample, Score, create, registered, split_score
from evalkit.metrics.base import _REGISTRY, reset_plugins
from evalkit.testing import score


@pytest.fixture(autouse=True)
def clean_registry() -> Iterator[None]:
    """Metrics registered by a test (or a conftest.py it runs) leave with it."""
    registered()  # built-ins register on import, once: they must be in the snapshot
    before = dict(_REGISTRY)
    yield
    _REGISTRY.clear()
    _REGISTRY.update(before)


# --- the decorator ----------------------------------------------------------------------------


def test_decorated_function_is_a_metric() -> None:
    @evalkit.metric
    def overlap(output: str, reference: str, lower: bool = True) -> float:
        a, b = (output.lower(), reference.lower()) if lower else (output, reference)
        words = set(b.split())
        return len(words & set(a.split())) / len(words)

    assert overlap("a b", "b c") == 0.5  # still a plain function
    assert score("overlap", "Paris France", ["paris", "Lyon France"]) == 1.0  # best reference
    assert score("overlap", "Paris France", ["paris"], lower=False) == 0.0
    metric = create("overlap", {"lower": False})
    assert metric.signature().startswith("fn:test_metric_plugins.")
    assert "|lower:false" in metric.signature()
    with pytest.raises(SpecError, match=r"unknown option 'lowr'\. Did you mean 'lower'"):
        create("overlap", {"lowr": True})


def test_decorator_options_references_and_return_values() -> None:
    @evalkit.metric(name="length_gap", higher_is_better=False, version="2")
    def gap(output: str, reference: str) -> int:
        return abs(len(output) - len(reference))

    @evalkit.metric("n_refs")
    def n_refs(output: str, references: tuple[str, ...]) -> float:
        return float(len(references))

    @evalkit.metric
    def is_upper(output: str) -> Score | bool:
        return Score(None, {"error": "empty"}) if not output else output.isupper()

    metric = create("length_gap")
    assert (metric.name, metric.version, metric.higher_is_better) == ("length_gap", "2", False)
    assert score("length_gap", "abc", ["a", "abcd", "abcdefg"]) == 1.0  # lower is better: min
    assert score("n_refs", "x", ["a", "b", "c"]) == 3.0
    assert score("is_upper", "ABC", []) == 1.0
    assert split_score(create("is_upper").score([Sample("e", "", ())])[0]) == (
        None,
        {"error": "empty"},
    )


def test_decorator_rejects_what_it_cannot_call() -> None:
    with pytest.raises(TypeError, match="need a default"):

        @evalkit.metric
        def needs(output: str, reference: str, threshold: float) -> float:
            return 0.0

    @evalkit.metric
    def text(output: str) -> str:
        return output

    with pytest.raises(ValueError, match="returned str 'x'; return a number"):
        create("text").score([Sample("a", "x", ())])


def test_decorated_class_and_clash_with_a_builtin() -> None:
    @evalkit.metric
    class Shouting:
        name, version, higher_is_better = "shouting", "1", True

        def __init__(self, min_ratio: float = 0.5) -> None:
            self.min_ratio = min_ratio

        def signature(self) -> str:
            return f"min_ratio:{self.min_ratio}"

        def score(self, samples: list[Sample]) -> list[float]:
            return [float(s.output.isupper()) for s in samples]

    assert score("shouting", "HELLO", []) == 1.0
    assert create("shouting", {"min_ratio": 0.9}).signature() == "min_ratio:0.9"
    with pytest.raises(ValueError, match=r"'exact_match' is already registered by evalkit\."):

        @evalkit.metric("exact_match")
        def mine(output: str, reference: str) -> float:
            return 1.0


def test_editing_a_function_changes_its_signature(tmp_path: Path) -> None:
    """Cached scores are keyed by the signature: an edited function must not reuse them."""
    source = "import evalkit\n\n@evalkit.metric\ndef edited(output, reference):\n    return {}\n"
    signatures = []
    for body in ("1.0", "0.0"):
        path = tmp_path / "edited_metric.py"
        path.write_text(source.format(body))
        spec = importlib.util.spec_from_file_location("edited_metric", path)
        assert spec is not None and spec.loader is not None
        spec.loader.exec_module(importlib.util.module_from_spec(spec))  # a reload: may replace
        signatures.append(create("edited").signature())
    assert signatures[0] != signatures[1]


# --- conftest.py and the pytest hook, end to end ------------------------------------------------


def suite_project(pytester: pytest.Pytester, folder: str, metric: str) -> None:
    root = pytester.path / folder
    write_jsonl(
        root / "golden.jsonl", [{"id": "a", "reference": "x"}, {"id": "b", "reference": "y"}]
    )
    write_jsonl(root / "replay.jsonl", [{"id": "a", "output": "HI"}, {"id": "b", "output": "hi"}])
    (root / "plugin.yaml").write_text(
        f"suite: plugin_{metric}\ndataset: golden.jsonl\nprompt: say hi\n"
        f"candidates: {{replay: {{replay: replay.jsonl}}}}\nmetrics: [{metric}]\n"
        f"gates: {{{metric}: {{min: 0.5}}}}\n"
    )


def test_metric_decorated_in_conftest_is_there_before_collection(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import evalkit

        @evalkit.metric
        def loud(output, reference):
            return output.isupper()
        """
    )
    suite_project(pytester, "suites", "loud")
    result = pytester.runpytest("suites", "-p", "no:xdist")
    result.assert_outcomes(passed=1)
    run = json.loads((pytester.path / "reports" / "plugin_loud" / "run.json").read_text())
    assert [e["scores"]["loud"] for e in run["candidates"]["replay"]["examples"]] == [1.0, 0.0]


def test_hook_in_a_nested_conftest_registers_before_its_suites(pytester: pytest.Pytester) -> None:
    """suites/deep/conftest.py is loaded during collection, after configure: the historic hook
    still reaches it before pytest collects the suite beside it."""
    (pytester.path / "suites" / "deep").mkdir(parents=True)
    (pytester.path / "suites" / "deep" / "conftest.py").write_text(
        textwrap.dedent(
            """
            class Quiet:
                name, version, higher_is_better = "quiet", "1", True

                def signature(self):
                    return "quiet"

                def score(self, samples):
                    return [float(s.output.islower()) for s in samples]

            def pytest_evalkit_register_metrics(register):
                register("quiet", Quiet)
            """
        )
    )
    suite_project(pytester, "suites/deep", "quiet")
    pytester.makeini("[pytest]\nevalkit_suites = suites/*/*.yaml\n")
    result = pytester.runpytest("suites", "-p", "no:xdist")
    result.assert_outcomes(passed=1)
    run = json.loads((pytester.path / "reports" / "plugin_quiet" / "run.json").read_text())
    assert [e["scores"]["quiet"] for e in run["candidates"]["replay"]["examples"]] == [0.0, 1.0]


def test_unknown_metric_lists_every_kind_of_plugin(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        "import evalkit\n\n@evalkit.metric\ndef loud(output, reference):\n    return 1.0\n"
    )
    suite_project(pytester, "suites", "lowd")
    result = pytester.runpytest("suites", "-p", "no:xdist")
    result.stdout.fnmatch_lines(["*unknown metric 'lowd'. Did you mean 'loud'?*"])
    result.stdout.fnmatch_lines(["*Registered metrics: *json_schema_valid*loud*"])


# --- installed packages (entry points) ----------------------------------------------------------


def fake_distribution(root: Path, name: str, entry_points: dict[str, str]) -> None:
    """An installed distribution, as importlib.metadata finds it on sys.path."""
    info = root / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    lines = "".join(f"{metric} = {target}\n" for metric, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[evalkit.metrics]\n{lines}")


@pytest.fixture
def plugin_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.syspath_prepend(str(tmp_path))
    reset_plugins()
    yield tmp_path
    monkeypatch.undo()
    reset_plugins()
    for name in [m for m in sys.modules if m.startswith("fake_evalkit_plugin")]:
        del sys.modules[name]


def test_entry_point_is_loaded_when_first_used(plugin_path: Path) -> None:
    (plugin_path / "fake_evalkit_plugin.py").write_text(
        "import evalkit\n\n@evalkit.metric\ndef starts_with_ref(output, reference):\n"
        "    return output.startswith(reference)\n"
    )
    fake_distribution(
        plugin_path, "fake-plugin", {"starts_with_ref": "fake_evalkit_plugin:starts_with_ref"}
    )
    assert "starts_with_ref" in registered()
    assert "fake_evalkit_plugin" not in sys.modules  # listed, not imported
    assert score("starts_with_ref", "Paris, France", ["Paris"]) == 1.0
    assert "fake_evalkit_plugin" in sys.modules


def test_a_plugin_that_fails_to_load_is_named(plugin_path: Path) -> None:
    (plugin_path / "fake_evalkit_plugin_broken.py").write_text("import not_installed_anywhere\n")
    fake_distribution(
        plugin_path, "broken-plugin", {"broken_metric": "fake_evalkit_plugin_broken:M"}
    )
    assert "exact_match" in registered()  # the registry works without importing the plugin
    assert score("exact_match", "a", ["a"]) == 1.0
    with pytest.raises(SpecError) as info:
        create("broken_metric")
    message = str(info.value)
    assert "plugin package 'broken-plugin'" in message
    assert "broken_metric = fake_evalkit_plugin_broken:M" in message
    assert "ModuleNotFoundError: No module named 'not_installed_anywhere'" in message


def test_a_plugin_cannot_shadow_a_builtin(plugin_path: Path) -> None:
    (plugin_path / "fake_evalkit_plugin_shadow.py").write_text(
        "class M:\n    name, version, higher_is_better = 'chrf', '1', True\n"
    )
    fake_distribution(plugin_path, "shadow-plugin", {"chrf": "fake_evalkit_plugin_shadow:M"})
    with pytest.raises(SpecError, match=r"metric 'chrf' is defined twice: by evalkit\.metrics"):
        create("chrf")


def test_installed_jsonschema_plugin() -> None:
    """plugins/evalkit-jsonschema, installed by `make setup`, through the registry."""
    schema: dict[str, Any] = {"type": "object", "required": ["city"]}
    assert score("json_schema_valid", '{"city": "Paris"}', [], schema=schema) == 1.0
    assert score("json_schema_valid", '{"town": "Paris"}', [], schema=schema) == 0.0
