"""Candidate kinds come from one registry; metrics and the equivalence check ask for
capabilities (candidates.base), never for concrete classes.

A toy backend registered here is picked by ``engine: toy`` the way a new backend would be; toy
candidates lacking a capability are refused by the metrics that need it, with a clear message;
the equivalence check runs on toy candidates and on a real speculative tiny model, against
outputs computed independently.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from suitefiles import write_jsonl, write_suite

from evalkit.cache import Cache, make_key
from evalkit.candidates import make_candidate
from evalkit.candidates.base import (
    ChatCompleter,
    EquivalenceTarget,
    Generation,
    GenerationRequest,
    LatencyProbe,
    LatencySample,
    LocalModel,
    Message,
    OnDevice,
    ProbeAware,
    Verifiable,
)
from evalkit.candidates.registry import CandidateKind, register_kind, unregister_kind
from evalkit.errors import CandidateError, SpecError
from evalkit.gates import equivalence_verdict
from evalkit.results import load_run
from evalkit.spec import CandidateSpec, GenerationSpec

WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]


def _requests(words: Sequence[str] = WORDS) -> list[GenerationRequest]:
    return [GenerationRequest(f"w{i}", (Message("user", w),)) for i, w in enumerate(words)]


def _reply(model: str, request: GenerationRequest) -> str:
    """What a toy model answers: the word in capitals; ``lossy`` models lower-case the words
    at even positions of the golden file (ids w0, w2, ...)."""
    word = request.messages[-1].content.upper()
    if model.endswith("lossy") and int(request.id[1:]) % 2 == 0:
        return word.lower()
    return word


class ToyCandidate:
    """A backend with only the Candidate protocol and, for ``*-lossy``/``*-fast`` models, an
    equivalence target (the same toy without the suffix)."""

    def __init__(self, name: str, spec: CandidateSpec) -> None:
        self.name = name
        self.model = str(spec.model)
        self.calls: list[str] = []

    def fingerprint(self) -> dict[str, Any]:
        return {"kind": "toy", "model": self.model}

    def generate(
        self, requests: Sequence[GenerationRequest], params: GenerationSpec
    ) -> Iterator[list[Generation]]:
        self.calls += [r.id for r in requests]
        yield [Generation(r.id, _reply(self.model, r)) for r in requests]

    def describe(self) -> dict[str, Any]:
        return {"model": self.model}

    def close(self) -> None:
        pass


class VerifiableToy(ToyCandidate):
    allowed = 0

    def equivalence_target(self, params: GenerationSpec) -> EquivalenceTarget | None:
        reference = ToyCandidate(f"{self.name} (reference)", CandidateSpec(model="toy"))
        return EquivalenceTarget(
            label="the toy reference",
            fingerprint=reference.fingerprint(),
            candidate=reference,
            max_mismatch=self.allowed,
            skipped=None if params.greedy else "sampling",
        )


def _build(name: str, spec: CandidateSpec, base_dir: Path) -> ToyCandidate:
    model = str(spec.model)
    return VerifiableToy(name, spec) if model != "toy" else ToyCandidate(name, spec)


@pytest.fixture
def toy_kind() -> Iterator[CandidateKind]:
    kind = CandidateKind(
        "toy",
        _build,
        engine="toy",
        checks_equivalence=lambda spec, params: spec.model != "toy" and params.greedy,
    )
    register_kind(kind)
    yield kind
    unregister_kind("toy")


# -- the registry ----------------------------------------------------------------------------


def test_a_registered_backend_is_picked_by_its_engine_field(
    toy_kind: CandidateKind, tmp_path: Path
) -> None:
    built = make_candidate("t", CandidateSpec(model="toy", engine="toy"), tmp_path)
    assert type(built) is ToyCandidate and built.model == "toy"
    # Without `engine:` the same model string is a transformers model, as before.
    plain = make_candidate("h", CandidateSpec(model="toy"), tmp_path)
    assert type(plain).__name__ == "HFCandidate"
    with pytest.raises(CandidateError, match=r"candidate 'x': device do not apply to toy"):
        make_candidate("x", CandidateSpec(model="toy", engine="toy", device="cpu"), tmp_path)
    unregister_kind("toy")
    with pytest.raises(CandidateError, match=r"unknown engine 'toy'; registered engines: .*"):
        make_candidate("t", CandidateSpec(model="toy", engine="toy"), tmp_path)


def test_a_suite_runs_a_registered_backend_and_checks_its_equivalence(
    toy_kind: CandidateKind, tmp_path: Path
) -> None:
    from evalkit.run import RunOptions, gate_plan, prepare_suite, run_suite

    write_jsonl(
        tmp_path / "golden" / "words.jsonl",
        [{"id": f"w{i}", "word": w, "reference": w.upper()} for i, w in enumerate(WORDS)],
    )
    suite = write_suite(
        tmp_path / "suites" / "words.yaml",
        {
            "suite": "words",
            "dataset": "../golden/words.jsonl",
            "prompt": "{{ word }}",
            "candidates": {
                "ref": {"model": "toy", "engine": "toy"},
                "fast": {"model": "toy-fast", "engine": "toy"},
                "lossy": {"model": "toy-lossy", "engine": "toy"},
            },
            "metrics": ["exact_match"],
        },
    )
    prepared = prepare_suite(suite)
    assert [gate_plan(prepared, n) for n in ("ref", "fast", "lossy")] == [
        ["run"],
        ["lossless"],
        ["lossless"],
    ]
    options = RunOptions(report_dir=tmp_path / "reports", cache=Cache(tmp_path / "c.sqlite"))
    run = run_suite(prepared, options)
    assert load_run(tmp_path / "reports" / "words" / "run.json").gates == run.gates
    ref, fast, lossy = (run.candidates[n] for n in ("ref", "fast", "lossy"))
    assert ref.equivalence is None
    assert fast.equivalence is not None and lossy.equivalence is not None
    # The reference has ref's identity, so ref's cached outputs answer it.
    assert fast.equivalence.target_fingerprint_hash == ref.fingerprint_hash
    assert fast.equivalence.target_cached == len(WORDS)
    assert (fast.equivalence.checked, fast.equivalence.mismatches) == (len(WORDS), [])
    expected = [
        e.id for e, r in zip(lossy.examples, ref.examples, strict=True) if e.output != r.output
    ]
    assert expected and [m.id for m in lossy.equivalence.mismatches] == expected
    verdicts = {v.candidate: v for v in run.gates if v.gate == "lossless"}
    assert verdicts["fast"].passed and verdicts["fast"].mean == 1.0
    assert verdicts["lossy"].status == "failed"
    assert verdicts["lossy"].mean == pytest.approx(1 - len(expected) / len(WORDS))
    assert (
        f"FAILED: {len(expected)} outputs differ from the toy reference"
        in verdicts["lossy"].message
    )


def test_a_bad_option_for_a_kind_fails_collection_at_its_line(
    toy_kind: CandidateKind, tmp_path: Path
) -> None:
    from evalkit.run import prepare_suite

    write_jsonl(tmp_path / "golden" / "w.jsonl", [{"id": "a", "word": "x", "reference": "X"}])
    suite = write_suite(
        tmp_path / "w.yaml",
        "suite: w\ndataset: golden/w.jsonl\nprompt: '{{ word }}'\ncandidates:\n"
        "  ok: {model: toy, engine: toy}\n  bad: {model: toy, engine: toy, dtype: float16}\n"
        "metrics: [exact_match]\n",
    )
    with pytest.raises(SpecError) as info:
        prepare_suite(suite)
    message = str(info.value)
    assert "w.yaml:6" in message and "candidates.bad" in message
    assert "dtype do not apply to toy candidates" in message


# -- capabilities ----------------------------------------------------------------------------


def test_capabilities_are_protocols_the_built_in_kinds_satisfy(tiny_model: Path) -> None:
    from evalkit.candidates.api import ApiCandidate
    from evalkit.candidates.hf import HFCandidate

    hf = HFCandidate("h", CandidateSpec(model=str(tiny_model)), tiny_model.parent)
    api = ApiCandidate("a", CandidateSpec(model="openai/gpt-4o-mini"))
    toy = ToyCandidate("t", CandidateSpec(model="toy"))
    for capability in (LocalModel, OnDevice, ProbeAware, LatencyProbe, Verifiable):
        assert isinstance(hf, capability), capability
        assert not isinstance(toy, capability), capability
    assert isinstance(api, ChatCompleter) and isinstance(api, LatencyProbe)
    assert not isinstance(api, LocalModel) and not isinstance(api, OnDevice)
    assert not isinstance(hf, ChatCompleter)
    assert hf.equivalence_target(GenerationSpec()) is None  # no speculation: nothing to check


class TimedToy(ToyCandidate):
    """Can time requests (LatencyProbe) but runs nowhere in this process."""

    def measure_latency(
        self, requests: Sequence[GenerationRequest], params: GenerationSpec, *, warmup: int
    ) -> list[LatencySample]:
        return [LatencySample(r.id, 0.001, 0.002, 2) for r in requests]


def test_metrics_refuse_a_candidate_lacking_their_capability() -> None:
    from evalkit.metrics.base import Sample
    from evalkit.metrics.latency import LatencySettings, measure, measure_run
    from evalkit.metrics.perplexity import ReferencePerplexity

    requests = _requests()
    samples = [
        Sample(r.id, "", (r.messages[-1].content.upper(),), messages=r.messages) for r in requests
    ]
    toy = ToyCandidate("toy", CandidateSpec(model="toy"))
    scores = ReferencePerplexity().score_candidate(samples, toy, GenerationSpec())
    assert all(s.value is None for s in scores)
    assert "candidate 'toy' (ToyCandidate) is not one" in scores[0].detail["error"]
    assert "loaded() and render()" in scores[0].detail["error"]

    untimed = measure(toy, samples, GenerationSpec(), LatencySettings(sample=2, warmup=0))
    assert untimed.error is not None and "has no model to time" in untimed.error

    timed = TimedToy("timed", CandidateSpec(model="toy"))
    settings = LatencySettings(sample=3, warmup=0)
    result = measure(timed, samples, GenerationSpec(), settings)
    assert len(result.samples) == 3 and timed.calls == []  # singles only: no batched run yet
    ran = measure_run(timed, samples, GenerationSpec(), settings)
    assert ran.throughput.value is not None and sorted(timed.calls) == sorted(result.samples)
    assert ran.memory.value is None
    assert "does not run on a device of this process" in ran.memory.detail["error"]
    assert ran.throughput.detail["batch_size"] == GenerationSpec().batch_size
    assert measure_run(timed, samples, GenerationSpec(), settings) is ran  # one batched run
    assert len(timed.calls) == 3


def test_judges_refuse_a_candidate_without_the_route_they_need() -> None:
    from evalkit.metrics.judge import make_judge

    local = make_judge(model="some-local-judge")
    local._candidate = ToyCandidate("judge", CandidateSpec(model="toy"))
    with pytest.raises(CandidateError, match=r"is not a local model.*ToyCandidate gives no"):
        local.read(lambda reply: [], ["1", "2"], "score")
    remote = make_judge(model="openai/gpt-4o-mini")
    remote._candidate = ToyCandidate("judge", CandidateSpec(model="toy"))
    with pytest.raises(CandidateError, match=r"is not an API model.*has no complete_many"):
        remote.read(lambda reply: [], ["1", "2"], "score")


# -- the equivalence check -------------------------------------------------------------------


def test_equivalence_check_counts_mismatches_against_its_target(tmp_path: Path) -> None:
    from evalkit.results import CandidateRun, ExampleResult
    from evalkit.run.equivalence import check_equivalence
    from evalkit.run.generation import generate_cached

    cache = Cache(tmp_path / "c.sqlite")
    requests, params = _requests(), GenerationSpec()
    lossy = VerifiableToy("lossy", CandidateSpec(model="toy-lossy"))
    generations = generate_cached(lossy, "h", requests, params, cache)
    reference = {r.id: r.messages[-1].content.upper() for r in requests}
    differ = [r.id for r in requests if generations[r.id][0].output != reference[r.id]]
    check = check_equivalence(lossy, requests, params, generations, cache)
    assert check is not None and check.checked == len(requests)
    assert [m.id for m in check.mismatches] == differ == ["w0", "w2", "w4"]
    assert all(m.target_output == reference[m.id] for m in check.mismatches)
    assert check.target_fingerprint_hash == make_key(kind="toy", model="toy")[:16]
    assert check.target_cached == 0
    again = check_equivalence(lossy, requests, params, generations, cache)
    assert again is not None and again.target_cached == len(requests)

    def verdict(allowed: int) -> Any:
        lossy.allowed = allowed
        found = check_equivalence(lossy, requests, params, generations, cache)
        examples = [
            ExampleResult(id=r.id, references=[reference[r.id]], messages=[], output="")
            for r in requests
        ]
        run = CandidateRun(
            name="lossy", spec={}, fingerprint={}, fingerprint_hash="", generation={},
            examples=examples, aggregates={}, equivalence=found,
        )  # fmt: skip
        return equivalence_verdict("words", run)

    failed, tolerated = verdict(2), verdict(3)
    assert failed.status == "failed" and failed.mean == pytest.approx(0.5)
    assert "FAILED: 3 outputs differ from the toy reference" in failed.message
    assert "  - w0: output 'alpha' | target 'ALPHA'" in failed.message
    assert tolerated.passed and "3 allowed" in tolerated.message

    sampled = GenerationSpec(temperature=0.7)
    skipped = check_equivalence(lossy, requests, sampled, generations, cache)
    assert skipped is not None and skipped.skipped == "sampling" and skipped.checked == 0
    assert check_equivalence(ToyCandidate("t", CandidateSpec(model="toy")), requests, params,
                             generations, cache) is None  # fmt: skip


def test_equivalence_of_a_speculative_tiny_model(tiny_model: Path, tmp_path: Path) -> None:
    """Prompt-lookup decoding must leave greedy outputs unchanged: the check compares them with
    the same model decoding plainly, whose outputs a plain candidate of the same model (built
    and run separately here) produces under the very same cache key."""
    from evalkit.run.equivalence import check_equivalence
    from evalkit.run.generation import generate_cached

    cache = Cache(tmp_path / "c.sqlite")
    requests = _requests(["the cat the cat the", "a dog sees a dog", "who wrote it"])
    params = GenerationSpec(max_new_tokens=8)
    spec = CandidateSpec(
        model=str(tiny_model), speculative={"prompt_lookup": 2, "speedup_sample": 0}
    )
    fast = make_candidate("fast", spec, tiny_model.parent)
    plain = make_candidate("plain", CandidateSpec(model=str(tiny_model)), tiny_model.parent)
    try:
        fast_hash = make_key(**fast.fingerprint())[:16]
        generations = generate_cached(fast, fast_hash, requests, params, cache)
        check = check_equivalence(fast, requests, params, generations, cache)
        plain_outputs = {
            g.id: g.output for batch in plain.generate(requests, params) for g in batch
        }
    finally:
        fast.close()
        plain.close()
    assert check is not None and check.target == "the target without speculation"
    assert check.target_fingerprint_hash == make_key(**plain.fingerprint())[:16]
    assert check.target_cached == 0 and check.checked == len(requests)
    assert check.mismatches == []
    assert {i: g.output for i, (g, _) in generations.items()} == plain_outputs
    facts = fast.describe()["speculative"]
    assert facts["speedup"] is None and facts["generation"]["requests"] == len(requests)
