"""The equivalence gate: ``equivalent_to: CANDIDATE`` compares a candidate's outputs with another
candidate's of the same run (identical share, where each differing output first diverges,
``max_mismatch``, an optional log-prob tolerance for near-ties)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from suitefiles import CAPITALS, write_jsonl, write_suite

from evalkit.cache import Cache
from evalkit.candidates.hf import HFCandidate
from evalkit.errors import SpecError
from evalkit.run import RunOptions, gate_plan, prepare_suite, run_suite
from evalkit.spec import CandidateSpec


def suite(tmp_path: Path, candidates: dict[str, Any], gates: dict[str, Any] | None = None) -> Path:
    write_jsonl(tmp_path / "golden.jsonl", CAPITALS)
    return write_suite(
        tmp_path / "suite.yaml",
        {
            "suite": "equivalence",
            "dataset": "golden.jsonl",
            "prompt": "What is the capital of {{ country }}?",
            "generation": {"max_new_tokens": 6, "batch_size": 1},
            "candidates": candidates,
            "metrics": ["exact_match"],
            "gates": gates or {},
        },
    )


def run(path: Path, tmp_path: Path) -> Any:
    options = RunOptions(
        report_dir=tmp_path / "r", cache=Cache(tmp_path / "c.sqlite"), progress=False
    )
    return run_suite(prepare_suite(path), options)


def test_batch_invariance_generates_the_candidate_afresh(tmp_path: Path, tiny_model: Path) -> None:
    """batch_size is not part of generation keys; under equivalent_to the candidate's outputs
    must still be its own, not the target's read back from the cache."""
    path = suite(
        tmp_path,
        {
            "base": {"model": str(tiny_model)},
            "batch6": {
                "model": str(tiny_model),
                "generation": {"batch_size": 6},
                "equivalent_to": "base",
            },
        },
    )
    assert gate_plan(prepare_suite(path), "batch6") == ["lossless"]
    assert gate_plan(prepare_suite(path), "base") == ["run"]
    result = run(path, tmp_path)
    batch6 = result.candidates["batch6"]
    assert batch6.n_generated == len(CAPITALS)
    check = batch6.equivalence
    assert check is not None and check.target == "candidate 'base'"
    assert check.checked == len(CAPITALS) and check.target_cached == len(CAPITALS)
    (verdict,) = result.gates
    base_outputs = [e.output for e in result.candidates["base"].examples]
    same = sum(a == b.output for a, b in zip(base_outputs, batch6.examples, strict=True))
    assert verdict.gate == "lossless"
    assert verdict.mean == same / len(CAPITALS)
    assert verdict.status == ("passed" if same == len(CAPITALS) else "failed")


def test_differing_outputs_fail_with_ids_and_where_they_diverge(
    tmp_path: Path, tiny_model: Path, tiny_model_b: Path
) -> None:
    candidates = {
        "base": {"model": str(tiny_model)},
        "other": {"model": str(tiny_model_b), "equivalent_to": {"candidate": "base"}},
    }
    result = run(suite(tmp_path, candidates), tmp_path)
    check = result.candidates["other"].equivalence
    assert check is not None and check.mismatches
    base = {e.id: e.output for e in result.candidates["base"].examples}
    for mismatch in check.mismatches:
        assert mismatch.target_output == base[mismatch.id]
        assert mismatch.first_char == len(
            os.path.commonprefix([mismatch.output, base[mismatch.id]])  # noqa: RUF071 (characters)
        )
        words = (mismatch.output or "").split(), base[mismatch.id].split()
        assert mismatch.first_word == next(
            (i for i, (a, b) in enumerate(zip(*words, strict=False)) if a != b),
            min(len(words[0]), len(words[1])),
        )
    (verdict,) = result.gates
    assert verdict.status == "failed"
    headline = f"FAILED: {len(check.mismatches)} outputs differ from candidate 'base'"
    assert headline in verdict.message
    assert all(m.id in verdict.message for m in check.mismatches)
    assert verdict.rules == {"equivalent_to": "candidate 'base'", "max_mismatch": 0}


@pytest.mark.parametrize("tolerance, status", [(1000.0, "passed"), (1e-9, "failed")])
def test_max_mismatch_and_logprob_tolerance(
    tmp_path: Path, tiny_model: Path, tiny_model_b: Path, tolerance: float, status: str
) -> None:
    candidates = {
        "base": {"model": str(tiny_model)},
        "other": {
            "model": str(tiny_model_b),
            "equivalent_to": {"candidate": "base", "logprob_tolerance": tolerance},
        },
    }
    result = run(suite(tmp_path, candidates), tmp_path)
    check = result.candidates["other"].equivalence
    assert check is not None and check.mismatches
    assert all(m.first_token is not None and m.logprob_gap is not None for m in check.mismatches)
    first = check.mismatches[0]
    assert first.logprob_gap == pytest.approx(direct_gap(tiny_model, path_of(tmp_path), first))
    assert result.gates[0].status == status
    # Allowing exactly as many mismatches as there are passes.
    allowed = dict(candidates)
    allowed["other"] = {
        "model": str(tiny_model_b),
        "equivalent_to": {"candidate": "base", "max_mismatch": len(check.mismatches)},
    }
    again = run(suite(tmp_path / "allowed", allowed), tmp_path / "allowed")
    assert again.gates[0].status == "passed"


def path_of(tmp_path: Path) -> Path:
    return tmp_path / "suite.yaml"


def direct_gap(model_dir: Path, suite_path: Path, mismatch: Any) -> float:
    """The target's log p(its token) - log p(the candidate's) at the first token where the two
    outputs' token ids differ (EOS appended), from one unbatched float64 forward pass."""
    import torch

    prepared = prepare_suite(suite_path)
    request = next(r for r in prepared.requests if r.id == mismatch.id)
    target = HFCandidate("base", CandidateSpec(model=str(model_dir)), model_dir.parent)
    model, tokenizer = target.loaded()
    _, prompt = target.render(request)

    def ids(text: str) -> list[int]:
        return [*tokenizer(text, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]

    mine, theirs = ids(mismatch.output), ids(mismatch.target_output)
    k = next(i for i, (a, b) in enumerate(zip(mine, theirs, strict=False)) if a != b)
    assert k == mismatch.first_token
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([[*prompt, *theirs[:k]]])).logits[0, -1]
    logprobs = torch.log_softmax(logits.double(), dim=-1)
    target.close()
    return float(logprobs[theirs[k]] - logprobs[mine[k]])


def test_bad_equivalence_settings_are_named(tmp_path: Path, tiny_model: Path) -> None:
    with pytest.raises(SpecError, match="equivalent_to 'nope' must be another candidate"):
        prepare_suite(
            suite(tmp_path, {"base": {"model": str(tiny_model), "equivalent_to": "nope"}})
        )
    with pytest.raises(SpecError, match=r"'lossless' is the name of evalkit's own check.*set "):
        prepare_suite(
            suite(
                tmp_path / "g",
                {"base": {"model": str(tiny_model)}},
                {"lossless": {"metric": "exact_match", "min": 0}},
            )
        )
