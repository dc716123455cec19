"""Where two outputs of an equivalence check part, and whether that is a near-tie.

``first_divergence`` needs no model: the first differing character and word (whitespace
split). With a ``logprob_tolerance`` and a local target model, ``near_ties`` also finds the first
differing token (both outputs tokenized by the target's tokenizer) and the gap between the
target's log-probs of the two tokens there, given the prompt and the common prefix: one forward
pass per differing example. A gap within the tolerance means the target itself found the two
continuations about equally likely (a float rounding can flip such a near-tie, e.g. between
batch sizes); such an example is reported but does not count as a mismatch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from evalkit.candidates.base import Candidate, GenerationRequest, LocalModel


@dataclass(frozen=True)
class Divergence:
    char: int
    word: int
    token: int | None = None
    logprob_gap: float | None = None
    """log p_target(target's token) - log p_target(candidate's token) at ``token``."""


def first_divergence(output: str, target: str) -> Divergence:
    char = next(
        (i for i, (a, b) in enumerate(zip(output, target, strict=False)) if a != b),
        min(len(output), len(target)),
    )
    words, target_words = output.split(), target.split()
    word = next(
        (i for i, (a, b) in enumerate(zip(words, target_words, strict=False)) if a != b),
        min(len(words), len(target_words)),
    )
    return Divergence(char=char, word=word)


def near_ties(
    target: Candidate, pairs: Sequence[tuple[GenerationRequest, str, str]]
) -> list[Divergence] | str:
    """For each (request, output, target output): the first differing token and the target's
    log-prob gap there; a string saying why not when the target has no local weights."""
    if not isinstance(target, LocalModel):
        return (
            f"logprob_tolerance needs the target's weights in this process; "
            f"'{getattr(target, 'name', target)}' ({type(target).__name__}) has none"
        )
    import torch

    model, tokenizer = target.loaded()
    device = next(model.parameters()).device
    end = tokenizer.eos_token_id
    found = []
    for request, output, reference in pairs:
        mine = [*_ids(tokenizer, output), end]
        theirs = [*_ids(tokenizer, reference), end]
        k = next(
            (i for i, (a, b) in enumerate(zip(mine, theirs, strict=False)) if a != b),
            min(len(mine), len(theirs)) - 1,
        )
        _, prompt = target.render(request)
        ids = torch.tensor([list(prompt) + theirs[:k]], device=device)
        with torch.inference_mode():
            logits = model(input_ids=ids).logits[0, -1].double()
        logprobs = torch.log_softmax(logits, dim=-1)
        gap = float(logprobs[theirs[k]] - logprobs[mine[k]])
        base = first_divergence(output, reference)
        found.append(Divergence(base.char, base.word, k, gap))
    return found


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])
