"""Sampled generation is seeded per example: a sample does not depend on its batch, its batch
size or which other examples were cached, so a resumed sampled run equals an uninterrupted one;
and the per-row Gumbel-max draw has exactly the softmax distribution."""

from __future__ import annotations

from pathlib import Path

import torch
from scipy.stats import chisquare

from evalkit.candidates.base import GenerationRequest, Message
from evalkit.candidates.hf import HFCandidate
from evalkit.candidates.sampling import _RowGumbel, example_seed
from evalkit.spec import CandidateSpec, GenerationSpec

PROMPTS = [f"tell me about the number {i} and its friends" * (1 + i % 3) for i in range(9)]


def generate(cand: HFCandidate, ids: list[int], **params: object) -> dict[str, str]:
    requests = [GenerationRequest(id=f"r{i}", messages=(Message("user", PROMPTS[i]),)) for i in ids]
    spec = GenerationSpec(max_new_tokens=10, temperature=1.0, **params)  # type: ignore[arg-type]
    return {g.id: g.output for batch in cand.generate(requests, spec) for g in batch}


def test_a_sample_depends_on_its_example_not_its_batch(tiny_model: Path) -> None:
    cand = HFCandidate("tiny", CandidateSpec(model=str(tiny_model), chat_template=False),
                       base_dir=tiny_model.parent)  # fmt: skip
    everything = generate(cand, list(range(9)), batch_size=4)
    # A resumed run: the first examples are cached, the rest generate in other batches.
    resumed = generate(cand, [5, 7, 8, 6], batch_size=4)
    assert resumed == {k: everything[k] for k in resumed}
    assert generate(cand, list(range(9)), batch_size=1) == everything
    assert generate(cand, list(range(9)), batch_size=9) == everything
    other_seed = generate(cand, list(range(9)), batch_size=4, seed=1)
    assert other_seed != everything
    greedy = {g.id: g.output for b in cand.generate(
        [GenerationRequest(id=f"r{i}", messages=(Message("user", PROMPTS[i]),)) for i in range(9)],
        GenerationSpec(max_new_tokens=10)) for g in b}  # fmt: skip
    assert greedy != everything  # it does sample
    cand.close()


def test_gumbel_max_draws_from_the_softmax() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, float("-inf")]], dtype=torch.float64)
    expected = torch.softmax(logits[0], dim=-1).numpy()
    noise = _RowGumbel([example_seed(0, "x")])
    draws = 20_000
    counts = torch.zeros(5, dtype=torch.long)
    for _ in range(draws):
        counts[int(noise(torch.zeros(1, 1), logits.clone()).argmax())] += 1
    assert counts[4] == 0  # a filtered (-inf) token is never drawn
    result = chisquare(counts[:4].numpy(), expected[:4] / expected[:4].sum() * draws)
    assert result.pvalue > 1e-3, (counts, expected)


def test_example_seeds_differ_by_id_seed_and_sample() -> None:
    seeds = {example_seed(s, i, k) for s in (0, 1) for i in ("a", "b", "a ") for k in (0, 1)}
    assert len(seeds) == 12 and all(0 <= s < 2**63 for s in seeds)
