"""Load and check a suite, everything cheap and checkable at collection time, and plan its gates.

``prepare_suite`` validates the spec, golden data, templates, metric names and gate names without
importing torch, so a broken suite fails in milliseconds with one clear message. ``gate_plan``
is the one answer to "which items does this candidate get", used by the pytest plugin, the CLI
and the runner alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from evalkit._files import display_path
from evalkit.candidates.base import GenerationRequest
from evalkit.candidates.call_target import resolve_target
from evalkit.candidates.registry import check_suite_candidates, checks_equivalence
from evalkit.candidates.replay import check_replay_file
from evalkit.errors import CandidateError, EvalkitError, SpecError
from evalkit.gate_spec import EQUIVALENCE_GATE, RUN_GATE
from evalkit.golden import Example, load_golden
from evalkit.metrics import AnyMetric, create_columns
from evalkit.prompts import compile_at, render_request, template_variables
from evalkit.repeats import parse_derived
from evalkit.retrieval.retriever import RetrievalSetup
from evalkit.run.rag import check_retrieval
from evalkit.shots import check_disjoint
from evalkit.spec import LoadedSuite, load_suite
from evalkit.variants import PromptVariant, candidate_variant


@dataclass(frozen=True)
class PreparedSuite:
    """A suite validated end to end, ready to run; building it imports no model library."""

    loaded: LoadedSuite
    examples: list[Example]
    requests: list[GenerationRequest]
    metrics: dict[str, AnyMetric]
    retrieval: dict[str, RetrievalSetup] = field(default_factory=dict)
    """The checked retrieval of each RAG candidate, by candidate name."""
    variants: dict[str, PromptVariant] = field(default_factory=dict)
    """The prompt of each candidate that has its own (templates, shots), by candidate name."""
    candidate_requests: dict[str, list[GenerationRequest]] = field(default_factory=dict)
    """Those candidates' requests (rendered without retrieved chunks)."""

    @property
    def name(self) -> str:
        return self.loaded.spec.suite

    def candidate_names(self) -> list[str]:
        return list(self.loaded.spec.candidates)

    @property
    def needs_outputs(self) -> bool:
        """False when every metric says it never reads outputs (perplexity): then nothing is
        generated at all."""
        return any(needs_output(metric) for metric in self.metrics.values())


def needs_output(metric: AnyMetric) -> bool:
    return bool(getattr(metric, "needs_output", True))


def prepare_suite(path: str | Path, limit: int | None = None) -> PreparedSuite:
    """``limit``: read and render only the first examples (``--evalkit-limit``), so a 100 MB
    golden file costs what its first lines cost."""
    loaded = load_suite(path)
    examples = _load_examples(loaded, limit)
    requests = [render_request(loaded, example) for example in examples]
    metrics = check_rules(loaded)
    variants = _variants(loaded, examples)
    candidate_requests = {
        name: [render_request(loaded, example, variant=variant) for example in examples]
        for name, variant in variants.items()
    }
    _check_calls(loaded, examples)
    complete = limit is None or len(examples) < limit
    _check_replay_files(loaded, {e.id for e in examples} if complete else None)
    retrieval = check_retrieval(loaded, examples, variants)
    return PreparedSuite(
        loaded=loaded,
        examples=examples,
        requests=requests,
        metrics=metrics,
        retrieval=retrieval,
        variants=variants,
        candidate_requests=candidate_requests,
    )


def check_rules(loaded: LoadedSuite) -> dict[str, AnyMetric]:
    """The checks a suite file's own fields allow, without its golden data: candidate kinds and
    their options, metric names and options, gates, samples, metrics that need ``compare_to``.
    Returns the metric columns. The docs' tests (tests/test_docs.py) check suite fragments this
    way, so an example in the docs fails as the same file of a user's would."""
    check_suite_candidates(loaded)
    metrics = _create_metrics(loaded)
    _check_gates(loaded, metrics)
    _check_samples(loaded)
    _check_pairwise(loaded, metrics)
    return metrics


def _variants(loaded: LoadedSuite, examples: list[Example]) -> dict[str, PromptVariant]:
    """The own prompt of every candidate that gives one; a train file sharing an id or an
    input with the test examples read (all of them, unless ``limit``) fails collection."""
    variants = {}
    for name, candidate in loaded.spec.candidates.items():
        if not candidate.prompt_fields_set():
            continue
        variant = variants[name] = candidate_variant(loaded, name)
        if variant.train:
            read: set[str] = set()
            for template in variant.templates():
                compile_at(template)  # a syntax error is reported as one, at its place
                read |= template_variables(template.source)
            fields = sorted(read - {"context", "chunks", "shots", "id"})
            line = loaded.line_of("candidates", name, "train")
            where = f"{display_path(loaded.path)}:{line} field 'candidates.{name}.train'"
            check_disjoint(variant.train, examples, fields, f"candidate '{name}', {where}")
    return variants


def _check_calls(loaded: LoadedSuite, examples: list[Example]) -> None:
    """Each ``call:`` target is a function the project defines (read, not imported) and gets
    the fields it requires from every example."""
    for name, candidate in loaded.spec.candidates.items():
        if candidate.call is None:
            continue
        where = {"path": loaded.path, "line": loaded.line_of("candidates", name, "call"),
                 "field": f"candidates.{name}.call"}  # fmt: skip
        try:
            target = resolve_target(candidate.call.target, loaded.path.parent)
        except CandidateError as exc:
            raise SpecError(f"candidate '{name}': {exc}", **where) from None
        for example in examples:
            missing = [p for p in target.required or () if p not in example.fields]
            if missing:
                raise SpecError(
                    f"candidate '{name}': {target.target} requires '{missing[0]}', which example "
                    f"'{example.id}' ({example.where}) lacks; give the parameter a default or "
                    "add the field",
                    **where,
                )


def _load_examples(loaded: LoadedSuite, limit: int | None = None) -> list[Example]:
    try:
        return load_golden(loaded.dataset_path, limit, loaded.spec.ids)
    except SpecError as exc:
        if exc.path is None:
            raise SpecError(exc.detail, path=loaded.path, line=loaded.line_of("dataset")) from None
        raise


def _check_replay_files(loaded: LoadedSuite, ids: set[str] | None) -> None:
    """Replay files are data like the golden file: a broken line fails collection. A file not
    written yet (a CI step may produce it) is reported when its candidate runs."""
    for candidate in loaded.spec.candidates.values():
        if candidate.replay is not None and loaded.resolve(candidate.replay).is_file():
            check_replay_file(loaded.resolve(candidate.replay), ids, loaded.dataset_path)


def _create_metrics(loaded: LoadedSuite) -> dict[str, AnyMetric]:
    """Columns in list order; a group (``latency``) adds all its columns at its place."""
    metrics: dict[str, AnyMetric] = {}
    for index, metric_spec in enumerate(loaded.spec.metrics):
        try:
            columns = create_columns(
                metric_spec.name,
                metric_spec.options,
                metric_spec.alias,
                base_dir=loaded.path.parent,
            )
            if twice := [c for c in columns if c in metrics]:
                raise SpecError(
                    f"column '{twice[0]}' appears twice (a group such as 'latency' makes "
                    "several columns); drop one entry or give one an 'as:' name"
                )
        except SpecError as exc:
            raise SpecError(
                exc.detail,
                path=loaded.path,
                line=loaded.line_of("metrics", index),
                field=f"metrics[{index}]",
            ) from None
        metrics.update(columns)
    return metrics


def _check_gates(loaded: LoadedSuite, metrics: dict[str, AnyMetric]) -> None:
    if EQUIVALENCE_GATE in loaded.spec.gates:
        raise SpecError(
            f"'{EQUIVALENCE_GATE}' is the name of evalkit's own check that a candidate's outputs "
            "equal another candidate's (set equivalent_to on the candidate); gate a metric "
            "column instead",
            path=loaded.path,
            line=loaded.line_of("gates", EQUIVALENCE_GATE),
            field=f"gates.{EQUIVALENCE_GATE}",
        )
    for gate_name, gate in loaded.spec.gates.items():
        problem = None if gate.metric in metrics else _derived_problem(gate.metric, metrics)
        if problem:
            raise SpecError(
                problem, path=loaded.path, line=loaded.line_of("gates", gate_name),
                field=f"gates.{gate_name}",
            )  # fmt: skip


def _derived_problem(column: str, metrics: dict[str, AnyMetric]) -> str | None:
    """Why a gated column is neither a metric column nor a derived one (``X@pass^5``)."""
    derived = parse_derived(column)
    if derived is None or derived.base not in metrics:
        return (
            f"gate on '{column}', which is not a metric of this suite; metrics: "
            f"{', '.join(metrics)} (over samples: <metric>@mean, @pass@K, @pass^K)"
        )
    metric = metrics[derived.base]
    if derived.needs_binary and getattr(metric, "binary", None) is False:
        return f"'{column}' needs a 0/1 metric; '{derived.base}' is not one (use @mean)"
    if not needs_output(metric) or hasattr(metric, "score_run"):
        return f"'{column}': '{derived.base}' does not score answers, so samples do not change it"
    return None


def _check_samples(loaded: LoadedSuite) -> None:
    """``samples: k`` needs answers that differ: a sampled decoding and a model to ask."""
    for name, candidate in loaded.spec.candidates.items():
        if candidate.samples == 1:
            continue
        params = loaded.spec.generation.merged(candidate.generation)
        problem = None
        if candidate.replay is not None:
            problem = "a replay candidate has one recorded answer per example; remove 'samples'"
        elif params.greedy and candidate.call is None:  # a pipeline decodes as it likes
            problem = (
                f"samples: {candidate.samples} with temperature 0 (greedy) gives the same answer "
                f"{candidate.samples} times; set generation: {{temperature: 0.7}} (or any > 0) "
                "on the candidate, or remove 'samples'"
            )
        if problem:
            raise SpecError(
                problem, path=loaded.path, line=loaded.line_of("candidates", name, "samples"),
                field=f"candidates.{name}.samples",
            )  # fmt: skip


def _check_pairwise(loaded: LoadedSuite, metrics: dict[str, AnyMetric]) -> None:
    """A metric that reads the baseline's output (or model) needs a ``compare_to`` candidate."""
    if loaded.spec.compare_to is not None:
        return
    for index, (column, metric) in enumerate(metrics.items()):
        if getattr(metric, "uses_base_model", False):
            raise SpecError(
                f"metric '{column}' compares each candidate's model with the compare_to "
                "candidate's, but the suite has no 'compare_to'; add compare_to: <candidate>",
                path=loaded.path,
                line=loaded.line_of("metrics", index),
                field=f"metrics[{index}]",
            )
        if getattr(metric, "uses_baseline", False):
            raise SpecError(
                f"metric '{column}' compares each output with the compare_to candidate's "
                "output, but the suite has no 'compare_to'; add compare_to: <candidate>",
                path=loaded.path,
                line=loaded.line_of("metrics", index),
                field=f"metrics[{index}]",
            )


def gate_plan(prepared: PreparedSuite, candidate: str) -> list[str]:
    """The gates (pytest items) of one candidate, in order: the suite's gates that apply to it
    (every gate without ``candidates``, and those whose ``candidates`` name it), then evalkit's
    own checks (``lossless`` for candidates with ``equivalent_to`` and for those whose kind says
    their outputs must equal another candidate's, see ``candidates.registry``); ``run`` alone
    when that leaves nothing.

    A gate on a pairwise metric (one that reads the compare_to candidate's output) does not
    apply to the compare_to candidate itself: it has nothing to be compared with."""
    spec = prepared.loaded.spec
    implicit = _implicit_gates(prepared.loaded, candidate)
    if not spec.gates and not implicit:
        return [RUN_GATE]
    gates = [
        name
        for name, gate in spec.gates.items()
        if (gate.candidates is None or candidate in gate.candidates)
        and not _pairwise_on_itself(prepared, candidate, name)
    ]
    return [*gates, *implicit]


def _pairwise_on_itself(prepared: PreparedSuite, candidate: str, gate_name: str) -> bool:
    gate = prepared.loaded.spec.gates[gate_name]
    derived = parse_derived(gate.metric)
    column = derived.base if derived and gate.metric not in prepared.metrics else gate.metric
    metric = prepared.metrics.get(column)
    # Fidelity metrics compare with the compare_to candidate's model: 0 against itself.
    pairwise = any(getattr(metric, a, False) for a in ("uses_baseline", "uses_base_model"))
    return pairwise and candidate == prepared.loaded.spec.compare_to


def _implicit_gates(loaded: LoadedSuite, candidate: str) -> list[str]:
    """``lossless`` when the candidate names an ``equivalent_to`` target, or its kind says its
    outputs must equal another's (speculative decoding, greedy)."""
    declared = loaded.spec.candidates[candidate].equivalent_to is not None
    return [EQUIVALENCE_GATE] if declared or checks_equivalence(loaded, candidate) else []


def run_order(prepared: PreparedSuite, wanted: Sequence[str] | None) -> list[str]:
    """Candidates to run: the wanted ones plus what they compare to, baseline first."""
    names = prepared.candidate_names()
    if wanted is not None:
        unknown = [w for w in wanted if w not in names]
        if unknown:
            raise EvalkitError(
                f"suite '{prepared.name}' has no candidate {', '.join(unknown)}; "
                f"candidates: {', '.join(names)}"
            )
        names = [n for n in names if n in wanted]
    compare_to = prepared.loaded.spec.compare_to
    if compare_to and names and compare_to not in names:
        names.append(compare_to)
    return sorted(names, key=lambda n: n != compare_to)
