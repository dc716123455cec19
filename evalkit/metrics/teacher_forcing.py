"""Teacher forcing: an answer's tokens after a prompt as a candidate renders it, and batched
forward passes that hand each row's logits at the answer positions to a callback. Shared by the
perplexity metrics (log-likelihood sums) and the fidelity metrics (distributions compared with
the base model's).

Tokenization at the prompt/answer boundary: see ``metrics.perplexity``'s docstring (the rule itself
is ``candidates.continuation``'s, shared with servers that score a given answer).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from evalkit.candidates.base import GenerationRequest
from evalkit.candidates.continuation import answer_separator, answer_tokens
from evalkit.metrics.base import Sample

if TYPE_CHECKING:
    import torch

MAX_BATCH_TOKENS = 16_384
"""Rows x width per forward pass; long windows go fewer to a batch."""

MAX_LOGITS_BYTES = {"cpu": 128 * 2**20, "accelerator": 512 * 2**20}
"""Logits of one forward pass (rows x width x vocabulary float32) stay under this, or are one
row's when a single window is larger. On the CPU they are process memory: batching windows of a
few hundred tokens to 512 MiB of logits made `evalkit run` of the corpus peak at 1.59 GB RSS
where a loop of one window at a time peaks at 1.13 GB (bench/peer_lm_eval.py), for no speed on
CPU; 16k positions of a 49k vocabulary (the token cap alone) were 3 GB. On an accelerator they
are device memory, and larger batches pay."""


MIN_PADDING_ALLOWED = 16
"""Short rows (a prompt and an answer) batch despite a few tokens of padding: for them the
batch's speed matters more than the padding."""


@dataclass(frozen=True)
class Continuation:
    """Tokens to score (``continuation``) after tokens given as context."""

    context: list[int]
    continuation: list[int]


def forward_continuations(
    model: Any,
    rows: Sequence[Continuation],
    on_row: Callable[[int, torch.Tensor], None],
    *,
    batch_size: int,
    pad_id: int,
) -> None:
    """One forward pass per row (batched): ``on_row(i, logits)`` gets row i's logits at the
    positions that predict its continuation tokens (``len(continuation)`` x vocabulary).

    Rows are sorted longest first and right-padded: a real token then sits at the same position
    as when run alone, and the causal mask keeps padding out of its attention. A batch holds
    rows of about the same length (``similar_rows``). Perplexity sums log-probabilities from
    these logits; fidelity compares them with the base model's.
    """
    import torch

    device = next(model.parameters()).device
    order = sorted(range(len(rows)), key=lambda i: -input_length(rows[i]))
    start = 0
    while start < len(order):
        width = input_length(rows[order[start]])
        count = rows_per_batch(model, width, batch_size, device.type)
        batch = similar_rows(rows, order[start : start + count], width)
        inputs = [(rows[i].context + rows[i].continuation)[:-1] for i in batch]
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ids in enumerate(inputs):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
        with torch.inference_mode():
            logits = model(
                input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)
            ).logits
            for row, i in enumerate(batch):
                end = len(inputs[row])
                on_row(i, logits[row, end - len(rows[i].continuation) : end])
        start += len(batch)


def similar_rows(rows: Sequence[Continuation], candidates: list[int], width: int) -> list[int]:
    """The first of ``candidates`` (longest first) and those after it that need at most
    ``padding_allowed(width)`` padding. Padding is computed like real tokens: a 160-token window
    padded to 320 made a corpus cost 17% more than one window at a time on CPU."""
    slack = padding_allowed(width)
    return list(itertools.takewhile(lambda i: width - input_length(rows[i]) <= slack, candidates))


def padding_allowed(width: int) -> int:
    """Padding positions a row may have in a batch ``width`` wide: a tenth, at least 16."""
    return max(MIN_PADDING_ALLOWED, width // 10)


def rows_per_batch(model: Any, width: int, batch_size: int, device_type: str = "cpu") -> int:
    """Rows of ``width`` tokens per forward pass: at most ``batch_size``, MAX_BATCH_TOKENS
    tokens and the device's MAX_LOGITS_BYTES of logits; at least one."""
    vocab = int(getattr(getattr(model, "config", None), "vocab_size", None) or 1)
    budget = MAX_LOGITS_BYTES["cpu" if device_type == "cpu" else "accelerator"]
    by_logits = budget // max(width * vocab * 4, 1)
    return max(1, min(batch_size, MAX_BATCH_TOKENS // max(width, 1), by_logits))


def input_length(row: Continuation) -> int:
    return len(row.context) + len(row.continuation) - 1


def prefix_token(tokenizer: Any) -> int:
    """What the first token is conditioned on: BOS, else EOS (lm-evaluation-harness's rule)."""
    for value in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if value is not None:
            return int(value)
    raise ValueError(
        "the tokenizer has neither a BOS nor an EOS token to condition the first token on"
    )


def pad_id(tokenizer: Any) -> int:
    for value in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if value is not None:
            return int(value)
    return 0


def teacher_forced_row(
    candidate: Any,
    tokenizer: Any,
    sample: Sample,
    answer_text: str,
    limit: int,
    *,
    separator: str | None = None,
) -> tuple[Continuation, dict[str, Any]]:
    """``answer_text``'s tokens after the sample's prompt as ``candidate`` renders it (chat
    template applied), for one teacher-forced forward pass; the note says how the boundary was
    tokenized, and ``error`` why the row cannot be scored."""
    text, ids = candidate.render(GenerationRequest(sample.id, sample.messages))
    separator = answer_separator(text, separator)
    answer, boundary = answer_tokens(tokenizer, text, separator + answer_text)
    context = list(ids) or [prefix_token(tokenizer)]
    note: dict[str, Any] = {"boundary": boundary}
    if not answer:
        note["error"] = "the answer has no tokens"
    elif len(answer) >= limit:
        note["error"] = f"the answer has {len(answer)} tokens; the model takes {limit}"
    elif len(context) + len(answer) - 1 > limit:  # keep the answer, drop the oldest context
        note["context_truncated"] = len(context) + len(answer) - 1 - limit
        context = context[note["context_truncated"] :]
    return Continuation(context, answer), note
