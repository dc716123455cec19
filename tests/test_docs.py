"""The docs cannot drift from the code: every example in README.md and docs/*.md is checked.

YAML blocks are suites (or fragments of one) validated as a user's file is; Python blocks run
(or, marked with the reason, are compiled and their evalkit names resolved); shell blocks and
inline commands name only evalkit commands, options and make targets that exist; links and
anchors resolve; every command, option, environment variable and suite field is documented.
``test_a_broken_doc_is_rejected`` shows that each check fails on a doc that is wrong.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
from docblocks import (
    REPO,
    Block,
    doc_files,
    link_problems,
    marker_problem,
    read_blocks,
    slug,
)
from docchecks import (
    SHELL_LANGS,
    evalkit_commands,
    inline_problems,
    options_of,
    pytest_options,
    python_static_problems,
    run_as_test_problems,
    run_script_problems,
    shell_problems,
    yaml_problems,
)

from evalkit.spec import suite_json_schema

BLOCKS = [block for path in doc_files() for block in read_blocks(path)]
YAML = [b for b in BLOCKS if b.lang in {"yaml", "yml"}]
PYTHON = [b for b in BLOCKS if b.lang == "python"]
BENCH = REPO / "bench" / "README.md"
SHELL = [b for path in [*doc_files(), BENCH] for b in read_blocks(path) if b.lang in SHELL_LANGS]

EXPECTED_MARKERS = {"not a suite": 1, "run as": 1}
"""How many blocks each marker exempts from the plain check: pinned, so that marking one more
block (and checking it less) is a visible change to this file, not a silent one."""

SPEC_INTERNALS = {"alias", "options"}
"""MetricSpec fields that suites write as ``{name: {<options>, as: <alias>}}``, not by name."""


def _ids(block: Block) -> str:
    return block.where


def _relative(path: Path) -> str:
    return str(path.relative_to(REPO))


@pytest.mark.parametrize("block", YAML, ids=_ids)
def test_yaml_block_is_a_valid_suite(block: Block, tmp_path: Path) -> None:
    problems = yaml_problems(block, tmp_path)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("block", PYTHON, ids=_ids)
def test_python_block_compiles_and_its_evalkit_names_exist(block: Block) -> None:
    problems = python_static_problems(block)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("block", [b for b in PYTHON if b.marker is None], ids=_ids)
def test_python_block_runs(block: Block, tmp_path: Path) -> None:
    problems = run_script_problems(block, tmp_path)
    assert not problems, "\n".join(problems)


@pytest.mark.real_model
@pytest.mark.parametrize(
    "block", [b for b in PYTHON if b.marker and b.marker[0] == "run as"], ids=_ids
)
def test_python_block_runs_as_a_test_file(block: Block, tmp_path: Path) -> None:
    """The plain-test example, on two capitals SmolLM2-135M answers right, greedy."""
    rows = [json.loads(line) for line in (REPO / "golden" / "capitals.jsonl").open()]
    golden = [row for row in rows if row["id"] in {"cap-france", "cap-japan"}]
    assert len(golden) == 2
    problems = run_as_test_problems(block, tmp_path, golden)
    assert not problems, "\n".join(problems)


def test_markers_are_known_and_counted() -> None:
    problems = [problem for block in BLOCKS if (problem := marker_problem(block))]
    problems += _stray_markers()
    assert not problems, "\n".join(problems)
    counts = Counter(block.marker[0] for block in BLOCKS if block.marker)
    listed = [f"{b.where}: {b.marker[0]}: {b.marker[1]}" for b in BLOCKS if b.marker]
    print("\n".join(["marked blocks:", *listed]))  # shown with -rP
    assert dict(counts) == EXPECTED_MARKERS, "\n".join(listed)


def _stray_markers() -> list[str]:
    """A marker comment not directly above a fenced block marks nothing."""
    stray = []
    for path in doc_files():
        lines = path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines):
            if re.match(r"^\s*<!--\s*(not|run)\b", line, re.IGNORECASE):
                following = next((n for n in lines[number + 1 :] if n.strip()), "")
                if not following.lstrip().startswith(("```", "~~~")):
                    stray.append(f"{path.name}:{number + 1}: marker above no fenced block")
    return stray


@pytest.mark.parametrize("block", SHELL, ids=_ids)
def test_shell_block_names_existing_commands(block: Block) -> None:
    problems = shell_problems(block)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", [*doc_files(), BENCH], ids=_relative)
def test_inline_commands_exist(path: Path) -> None:
    problems = inline_problems(path)
    assert not problems, "\n".join(problems)


LINKED = [*doc_files(), BENCH, *sorted(REPO.glob("plugins/*/README.md"))]


@pytest.mark.parametrize("path", LINKED, ids=_relative)
def test_links_and_anchors_resolve(path: Path) -> None:
    problems = link_problems(path)
    assert not problems, "\n".join(problems)


def test_slugs_are_githubs() -> None:
    """Anchors GitHub made from headings of the README these pages came from."""
    assert slug("Repeats: samples, pass@k, pass^k, sentinels") == (
        "repeats-samples-passk-passk-sentinels"
    )
    assert slug("The vLLM engine (`engine: vllm`)") == "the-vllm-engine-engine-vllm"
    assert slug("Your own pipeline (`call:`)") == "your-own-pipeline-call"
    assert slug("6. Evals in ordinary test functions") == "6-evals-in-ordinary-test-functions"
    assert slug("Bad input, full disks and crashes") == "bad-input-full-disks-and-crashes"


def _docs_text() -> str:
    return "\n".join(path.read_text(encoding="utf-8") for path in doc_files())


def test_every_command_option_and_variable_is_documented() -> None:
    """Each evalkit command with all its options (in a paragraph that names the command), each
    pytest option and ini setting, each make target and each EVALKIT_* variable."""
    text = _docs_text()
    paragraphs = re.split(r"\n\s*\n", text)
    missing = []
    for name, parser in evalkit_commands().items():
        about = [p for p in paragraphs if f"evalkit {name}" in p]
        flags = sorted(o for o in options_of(parser) if o.startswith("--") and o != "--help")
        missing += [f"evalkit {name} {flag}" for flag in flags if not any(flag in p for p in about)]
        missing += [] if about else [f"evalkit {name}"]
    options, inis = pytest_options()
    missing += sorted(o for o in options | inis if o not in text)
    phony = re.search(r"^\.PHONY:(.*)$", (REPO / "Makefile").read_text(), re.MULTILINE)
    assert phony
    missing += [f"make {t}" for t in phony[1].split() if f"make {t}" not in text]
    code = "\n".join(p.read_text(encoding="utf-8") for p in (REPO / "evalkit").rglob("*.py"))
    variables = sorted(set(re.findall(r"\bEVALKIT_[A-Z_]+\b", code)))
    assert variables  # the search finds the ones the code reads
    missing += [v for v in variables if v not in text]
    assert not missing, "\n".join(missing)


def test_every_suite_field_is_documented() -> None:
    fields: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            fields.update(node.get("properties", {}))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(suite_json_schema())
    assert {"suite", "candidates", "max_drop", "prompt_lookup"} <= fields
    text = _docs_text()
    problems = sorted(f for f in fields - SPEC_INTERNALS if not re.search(rf"\b{f}\b", text))
    assert not problems, "\n".join(problems)


BROKEN = """# Broken

```yaml
suite: broken
dataset: golden.jsonl
candidates: {base: {model: smollm2-135m-instruct}}
metrics: [containz]
```

```yaml
gates:
  contains: {max_dorp: 0.05}
```

<!-- not a suite: github actions -->
```yaml
name: evals
steps: []
```

<!-- not a suite: kubernetes -->
```yaml
kind: Pod
```

<!-- not rn: a typo in the marker -->
```python
print("unchecked?")
```

```python
import evalkit
from evalkit.testing import golden_params, no_such_helper
evalkit.metrics.NoSuchFigures
```

```bash
evalkit rnu suites/x.yaml
evalkit run --limt 3 suites/x.yaml
make demoo
pytest suites/ --evalkit-limt 3
.venv/bin/python bench/no_such_script.py
```

See [the gates](gates.md#no-such-heading), [nothing](nowhere.md), `evalkit run --fulll` and
`evalkit/no_such_module.py`.
"""


def test_a_broken_doc_is_rejected(tmp_path: Path) -> None:
    """Each check, on a doc with one mistake per block: the mistake is named."""
    doc = tmp_path / "docs" / "broken.md"
    doc.parent.mkdir()
    doc.write_text(BROKEN, encoding="utf-8")
    (doc.parent / "gates.md").write_text("# Gates\n", encoding="utf-8")
    unknown, typo, workflow, kind, unmarked, python, bash = read_blocks(doc)

    def problems(block: Block) -> str:
        return "\n".join(yaml_problems(block, tmp_path / f"y{block.line}"))

    assert "unknown metric 'containz'. Did you mean 'contains'?" in problems(unknown)
    assert "unknown option 'max_dorp'; did you mean 'max_drop'?" in problems(typo)
    assert "needs 'on:'" in problems(workflow)
    assert "'not a suite: kubernetes': unknown kind" in problems(kind)
    assert "is no marker" in str(marker_problem(unmarked))
    static = "\n".join(python_static_problems(python))
    assert "no_such_helper" in static and "NoSuchFigures" in static
    (tmp_path / "run").mkdir()
    ran = "\n".join(run_script_problems(python, tmp_path / "run"))
    assert "exited 1" in ran and "cannot import name 'no_such_helper'" in ran
    shell = "\n".join(shell_problems(bash))
    assert "evalkit rnu: no such command" in shell
    assert "unrecognized arguments: --limt" in shell
    assert "make demoo: no such target" in shell
    assert "'--evalkit-limt' is no option" in shell
    assert "bench/no_such_script.py: no such file" in shell
    inline = "\n".join(inline_problems(doc))
    assert "evalkit run --fulll: no such option" in inline
    assert "evalkit/no_such_module.py: no such file" in inline
    links = "\n".join(link_problems(doc))
    assert "gates.md#no-such-heading: no heading" in links
    assert "nowhere.md: no such file" in links
