"""Speculative candidates on tiny models: lossless output, acceptance counts, speed-up, gates.

Acceptance is checked against an independent replay of assisted decoding built from plain
greedy calls of the target and the draft (what the draft proposes at each position, how much
of it the target's own greedy continuation keeps), and against the invariant that every step
of assisted decoding emits its accepted tokens plus one token of the target's own.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from suitefiles import write_jsonl, write_suite
from tinymodels import make_noisy_copy, make_tiny_llama

from evalkit.candidates.base import GenerationRequest, Message
from evalkit.candidates.hf import HFCandidate
from evalkit.candidates.speculative import AcceptanceStats, plain_fingerprint
from evalkit.errors import CandidateError
from evalkit.results import load_run
from evalkit.spec import CandidateSpec, GenerationSpec

PROMPTS = [
    "The cat",
    "A dog sees the red ball. A dog sees the red",
    "Who wrote the letter?",
    "Where is the river? The river is where the river is",
]
MAX_NEW = 10


def _requests() -> list[GenerationRequest]:
    return [
        GenerationRequest(id=f"r{i}", messages=(Message("user", text),))
        for i, text in enumerate(PROMPTS)
    ]


@pytest.fixture(scope="module")
def draft(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The target plus a little noise (about 60% of proposals accepted), with the confidence
    cut-off off so that the draft always proposes ``num_assistant_tokens`` tokens."""
    folder = make_noisy_copy(tiny_model, tmp_path_factory.mktemp("draft"), noise=0.01)
    config = json.loads((folder / "generation_config.json").read_text())
    config["assistant_confidence_threshold"] = 0.0
    (folder / "generation_config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def other_vocab_draft(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A draft with its own, smaller tokenizer (universal assisted decoding)."""
    return make_tiny_llama(tmp_path_factory.mktemp("draft-200"), seed=3, vocab_size=200)


def _candidate(target: Path, speculative: dict | None) -> HFCandidate:
    spec = CandidateSpec(model=str(target), speculative=speculative)
    return HFCandidate("spec" if speculative else "plain", spec, base_dir=target.parent)


def _greedy_new_tokens(model, prompt_ids: list[int], max_new: int, eos: int) -> list[int]:
    import torch

    with torch.inference_mode():
        output = model.generate(
            torch.tensor([prompt_ids]),
            attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
            max_new_tokens=max_new,
            do_sample=False,
            eos_token_id=eos,
            pad_token_id=eos,
        )
    return output[0, len(prompt_ids) :].tolist()


def _replay(target, draft_model, prompt_ids: list[int], n_draft: int, eos: int) -> AcceptanceStats:
    """Assisted greedy decoding recomputed from plain greedy calls: at each position the draft
    proposes its greedy continuation (at most ``n_draft`` tokens, never past the length
    budget); the target keeps the longest prefix that matches its own greedy output plus one
    token of its own."""
    final = _greedy_new_tokens(target, prompt_ids, MAX_NEW, eos)
    stats = AcceptanceStats(requests=1)
    position = 0
    while position < len(final):
        budget = min(n_draft, MAX_NEW - position - 1)
        proposal = (
            _greedy_new_tokens(draft_model, prompt_ids + final[:position], budget, eos)
            if budget > 0
            else []
        )
        matches = 0
        while (
            matches < len(proposal)
            and position + matches < len(final)
            and proposal[matches] == final[position + matches]
        ):
            matches += 1
        emitted = final[position : position + matches + 1]
        stats.steps += 1
        stats.proposed += len(proposal)
        stats.accepted += len(emitted) - 1
        position += len(emitted)
    return stats


def test_draft_acceptance_equals_an_independent_replay(tiny_model: Path, draft: Path) -> None:
    from transformers import AutoModelForCausalLM

    cand = _candidate(tiny_model, {"draft": str(draft), "num_assistant_tokens": 3})
    plain = _candidate(tiny_model, None)
    params = GenerationSpec(max_new_tokens=MAX_NEW)
    target_model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    draft_model = AutoModelForCausalLM.from_pretrained(draft).eval()
    total = AcceptanceStats()
    for request in _requests():
        counted = AcceptanceStats()
        assert cand.speculation is not None
        with cand.speculation.counting(counted):
            fast = cand.generate_single(request, params)
        assert fast.output == plain.generate_single(request, params).output
        _, prompt_ids = cand.render(request)
        eos = cand.loaded()[1].eos_token_id
        assert counted == _replay(target_model, draft_model, prompt_ids, 3, eos), request.id
        total.proposed += counted.proposed
        total.accepted += counted.accepted
    # The draft neither always agrees nor never: the replay above tested real accept/reject.
    assert 0 < total.accepted < total.proposed


@pytest.mark.parametrize("method", ["prompt_lookup", "other_tokenizer"])
def test_lossless_and_every_step_emits_accepted_plus_one(
    method: str, tiny_model: Path, other_vocab_draft: Path
) -> None:
    speculative = (
        {"prompt_lookup": 3} if method == "prompt_lookup" else {"draft": str(other_vocab_draft)}
    )
    cand = _candidate(tiny_model, speculative)
    plain = _candidate(tiny_model, None)
    params = GenerationSpec(max_new_tokens=MAX_NEW)
    requests = _requests()
    fast = {g.id: g for batch in cand.generate(requests, params) for g in batch}
    slow = {g.id: g for batch in plain.generate(requests, params) for g in batch}
    assert {i: g.output for i, g in fast.items()} == {i: g.output for i, g in slow.items()}
    assert cand.speculation is not None
    stats = cand.speculation.generated
    assert stats.requests == len(requests)
    # Tokens emitted (EOS included) = steps + accepted, each request decoding greedily alone.
    target = cand.loaded()[0]
    eos = cand.loaded()[1].eos_token_id
    emitted = sum(
        len(_greedy_new_tokens(target, cand.render(r)[1], MAX_NEW, eos)) for r in requests
    )
    assert stats.steps + stats.accepted == emitted
    assert 0 <= stats.accepted <= stats.proposed
    facts = cand.describe()["speculative"]
    assert facts["batch_size"] == 1 and "one at a time" in facts["note"]
    if method == "other_tokenizer":
        assert facts["same_tokenizer"] is False
        assert facts["draft_parameters"] > 0
    else:
        assert stats.proposed > 0  # the repeated phrases give prompt lookup something to copy


def test_fingerprint_is_the_plain_one_plus_speculative(
    tiny_model: Path, draft: Path, other_vocab_draft: Path
) -> None:
    plain = _candidate(tiny_model, None).fingerprint()
    with_draft = _candidate(tiny_model, {"draft": str(draft)}).fingerprint()
    other = _candidate(tiny_model, {"draft": str(other_vocab_draft)}).fingerprint()
    lookup = _candidate(tiny_model, {"prompt_lookup": 4}).fingerprint()
    assert plain_fingerprint(with_draft) == plain == plain_fingerprint(lookup)
    assert "speculative" not in plain
    assert with_draft["speculative"]["draft_files"] != other["speculative"]["draft_files"]
    assert lookup["speculative"] == {"method": "prompt_lookup", "prompt_lookup": 4}
    # A draft folder relative to the suite file resolves like a model.
    relative = HFCandidate(
        "spec",
        CandidateSpec(model=str(tiny_model), speculative={"draft": f"./{draft.name}"}),
        base_dir=draft.parent,
    )
    assert (
        relative.fingerprint()["speculative"]["draft_files"]
        == (with_draft["speculative"]["draft_files"])
    )
    missing = HFCandidate(
        "spec",
        CandidateSpec(model=str(tiny_model), speculative={"draft": "./no-such-draft"}),
        base_dir=tiny_model.parent,
    )
    with pytest.raises(CandidateError, match=r"spec \(draft\).*no-such-draft"):
        missing.fingerprint()


def test_speedup_times_both_on_the_same_requests(tiny_model: Path) -> None:
    # The target as its own draft: every proposal is accepted.
    cand = _candidate(
        tiny_model, {"draft": str(tiny_model), "num_assistant_tokens": 2, "speedup_sample": 3}
    )
    assert cand.speculation is not None
    cand.speculation.measure_speedup(_requests(), GenerationSpec(max_new_tokens=MAX_NEW))
    facts = cand.describe()["speculative"]
    assert facts["timed_requests"] == 3
    assert facts["plain_tokens"] == facts["speculative_tokens"] > 0
    assert facts["speedup"] == pytest.approx(facts["plain_s"] / facts["speculative_s"])
    assert facts["acceptance_over"] == "speed-up sample"
    assert facts["acceptance_rate"] == 1.0 and facts["proposed"] > 0
    assert "generation" not in facts  # nothing was generated for the suite


# -- end to end: the lossless gate -------------------------------------------------------------

ROWS = [
    {"id": f"w{i}", "text": text, "reference": "x"}
    for i, text in enumerate([*PROMPTS, "The bird finds fresh water.", "Our team"])
]


@pytest.fixture
def project(pytester: pytest.Pytester, tiny_model: Path, draft: Path) -> Path:
    root = pytester.path
    write_jsonl(root / "golden" / "words.jsonl", ROWS)
    write_suite(
        root / "suites" / "words.yaml",
        {
            "suite": "words",
            "dataset": "../golden/words.jsonl",
            "prompt": "{{ text }}",
            "generation": {"max_new_tokens": 6, "batch_size": 4},
            "candidates": {
                # Speculative ones first: the plain outputs they need are generated by them and
                # then read from the cache by `base`.
                "drafted": {
                    "model": str(tiny_model),
                    "speculative": {"draft": str(draft), "speedup_sample": 2},
                },
                "lookup": {
                    "model": str(tiny_model),
                    "speculative": {"prompt_lookup": 3, "speedup_sample": 0},
                },
                "sampled": {
                    "model": str(tiny_model),
                    "speculative": {"prompt_lookup": 3, "speedup_sample": 0},
                    "generation": {"temperature": 0.7},
                },
                "base": {"model": str(tiny_model)},
            },
            "metrics": ["chrf"],
            "gates": {"chrf": {"min": 0.0}},
        },
    )
    return root


def test_lossless_items_pass_for_real_assisted_generation(
    pytester: pytest.Pytester, project: Path
) -> None:
    result = pytester.runpytest("suites/", "-v", "-p", "no:xdist")
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(
        ["*words.yaml::drafted::lossless PASSED*", "*words.yaml::lookup::lossless PASSED*"]
    )
    # Sampling: no lossless item (samples cannot be compared one by one), and run.json says why.
    assert "sampled::lossless" not in result.stdout.str()
    run = load_run(project / "reports" / "words" / "run.json")
    drafted, lookup = run.candidates["drafted"], run.candidates["lookup"]
    n = len(ROWS)
    assert drafted.equivalence is not None and lookup.equivalence is not None
    assert (drafted.equivalence.checked, drafted.equivalence.mismatches) == (n, [])
    # `drafted` generated the plain outputs; `lookup` and `base` read them from the cache.
    assert drafted.equivalence.target_cached == 0
    assert lookup.equivalence.target_cached == n
    assert run.candidates["base"].n_cached == n
    assert drafted.equivalence.target_fingerprint_hash == run.candidates["base"].fingerprint_hash
    base_outputs = [e.output for e in run.candidates["base"].examples]
    assert [e.output for e in drafted.examples] == base_outputs
    sampled = run.candidates["sampled"].equivalence
    assert sampled is not None and "sampling" in (sampled.skipped or "")
    facts = drafted.describe["speculative"]
    assert facts["timed_requests"] == 2 and facts["speedup"] > 0
    assert facts["generation"]["requests"] == n
    assert lookup.describe["speculative"]["speedup"] is None
    assert "speedup_sample: 0" in lookup.describe["speculative"]["speedup_note"]
    lossless = [v for v in run.gates if v.gate == "lossless"]
    assert sorted(v.candidate for v in lossless) == ["drafted", "lookup"]
    assert all(v.passed and v.mean == 1.0 for v in lossless)


def test_a_lossy_setup_fails_the_lossless_gate(
    pytester: pytest.Pytester, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from evalkit.candidates import speculative

    attach = speculative.Speculation.attach

    def lossy_attach(self: speculative.Speculation, model: object, tokenizer: object) -> None:
        # transformers' documented lossy mode: accept tokens against 0.01 * target + 0.99 *
        # draft instead of the target alone (generation_config.assistant_ensemble_weight).
        attach(self, model, tokenizer)
        assert self._assist is not None
        self._assist["assistant_ensemble_weight"] = 0.01

    monkeypatch.setattr(speculative.Speculation, "attach", lossy_attach)
    result = pytester.runpytest("suites/", "-p", "no:xdist", "--evalkit-candidates", "drafted,base")
    result.assert_outcomes(passed=2, failed=1)
    run = load_run(project / "reports" / "words" / "run.json")
    check = run.candidates["drafted"].equivalence
    assert check is not None and check.mismatches
    base = {e.id: e.output for e in run.candidates["base"].examples}
    drafted = {e.id: e.output for e in run.candidates["drafted"].examples}
    # The gate names exactly the examples whose outputs differ, with both outputs.
    assert [m.id for m in check.mismatches] == [i for i in drafted if drafted[i] != base[i]]
    first = check.mismatches[0]
    assert (first.output, first.target_output) == (drafted[first.id], base[first.id])
    result.stdout.fnmatch_lines(
        [
            "*words::drafted::lossless*",
            f"FAILED: speculative decoding changed {len(check.mismatches)} greedy outputs*",
            f"  - {first.id}: speculative*",
        ]
    )


def test_lossless_is_a_reserved_gate_name(pytester: pytest.Pytester, project: Path) -> None:
    suite = project / "suites" / "words.yaml"
    suite.write_text(suite.read_text() + "  lossless: {min: 1}\n")
    result = pytester.runpytest("suites/", "-p", "no:xdist")
    result.stdout.fnmatch_lines(["*field 'gates.lossless'*evalkit's own check*"])
