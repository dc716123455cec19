"""The import graph of evalkit/ flows one way: a module imports only modules of its own layer
or below, and no import chain leads back to where it started (lazy imports count: an upward or
circular import inside a function is the same dependency, only hidden)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import evalkit

PACKAGE = Path(evalkit.__file__).parent

LAYERS: list[tuple[str, ...]] = [
    # 0: no evalkit dependencies worth naming
    ("evalkit._files", "evalkit._quiet", "evalkit._threads", "evalkit.errors", "evalkit.hookspecs",
     "evalkit.stats", "evalkit.power", "evalkit.distributions", "evalkit.mcnemar", "evalkit.cache",
     "evalkit.format", "evalkit.metrics.options", "evalkit.metrics.rubrics"),
    # 1: what a suite says, what a run records
    ("evalkit._yaml", "evalkit._spec_errors", "evalkit._reading", "evalkit.gate_spec",
     "evalkit.spec", "evalkit.retrieval.spec", "evalkit.spec_variants", "evalkit.spec_engine",
     "evalkit.results"),
    # 2: golden data, prompts (a candidate's own templates and shots), retrieval, candidates
    ("evalkit.golden", "evalkit.shots", "evalkit.variants", "evalkit.prompts",
     "evalkit.retrieval", "evalkit.candidates", "evalkit.embeddings"),
    # 3: metrics ask candidates for capabilities; agreement of a judge with labels; folding
    # the scores of repeated samples (evalkit.repeats imports nothing of evalkit)
    ("evalkit.metrics", "evalkit.agreement", "evalkit.repeats"),
    # 4-5: verdicts, and what they compare with
    ("evalkit.gates", "evalkit.paired_gates", "evalkit.figure_gates"),
    ("evalkit.baseline",),
    # 6: the run pipeline
    ("evalkit.run",),
    # 7: what reads a run (reports), and the plain-Python route
    ("evalkit.report", "evalkit.testing"),
    # 8: entry points
    ("evalkit.pytest_session", "evalkit.pytest_plugin", "evalkit.cli", "evalkit.cli_plugins"),
]  # fmt: skip


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from pkg import sub` imports the submodule sub; `from mod import name` mod.
                subs = [f"{node.module}.{a.name}" for a in node.names]
                targets = [s for s in subs if s in modules] or [node.module]
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def layer_of(module: str) -> int | None:
    """The layer of the longest matching prefix; None for the package root, which holds only
    the version and the public decorator."""
    if module == "evalkit":
        return None
    best: tuple[int, int] | None = None
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            matches = module == prefix or module.startswith(prefix + ".")
            if matches and (best is None or len(prefix) > best[0]):
                best = (len(prefix), index)
    assert best is not None, f"{module} is in no layer: add it to LAYERS in {__file__}"
    return best[1]


def test_every_module_has_a_layer() -> None:
    for module in import_graph():
        layer_of(module)


def test_no_module_imports_a_higher_layer() -> None:
    upward = []
    for module, targets in import_graph().items():
        own = layer_of(module)
        for target in targets:
            theirs = layer_of(target)
            if own is not None and theirs is not None and theirs > own:
                upward.append(f"{module} (layer {own}) imports {target} (layer {theirs})")
    assert upward == []


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in list(graph):
        if node not in index:
            visit(node)
    return cycles


def test_cycle_finder_finds_a_known_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    graph = import_graph()
    # A package's __init__ re-exporting its own submodules is not a cycle of design.
    for module, targets in graph.items():
        for target in list(targets):
            if module.startswith(target + "."):
                targets.discard(target)
    assert find_cycles(graph) == []
