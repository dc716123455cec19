"""Log-likelihoods of token continuations, for the perplexity metrics.

Two ways to get them: a forward pass over a model in this process (``LocalModel``: batched
through ``teacher_forcing.forward_continuations``, log-softmax in float32, sums in float64), or
a server's prompt log-probs (``PromptLogprobs``, engine: vllm). ``scorer`` picks the one a
candidate offers; the metrics never ask for a class.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from evalkit.candidates.base import LocalModel, PromptLogprobs
from evalkit.metrics.teacher_forcing import Continuation, forward_continuations, pad_id

if TYPE_CHECKING:
    import torch

DEFAULT_MAX_LENGTH = 2048
"""When neither the model config nor the tokenizer says how long a sequence may be."""
_LOG_SOFTMAX_CHUNK = 1024


def rolling_windows(
    tokens: Sequence[int], prefix_token: int, max_length: int, stride: int | None = None
) -> list[Continuation]:
    """Cover every token of ``tokens`` exactly once with windows of at most ``max_length``
    model inputs, as lm-evaluation-harness's ``get_rolling_token_windows`` followed by
    ``make_disjoint_window``.

    The sequence is ``[prefix_token] + tokens``. The first window predicts the first
    ``max_length`` tokens from the prefix; each later one predicts the next ``stride`` tokens
    (default ``max_length``: disjoint windows), with the tokens before them in the same window as
    context, so the model input ``context + continuation[:-1]`` is exactly ``max_length`` long
    (the last window takes extra context rather than being short).
    """
    if max_length < 1:
        raise ValueError("max_length must be at least 1")
    step = max_length if stride is None else stride
    if not 1 <= step <= max_length:
        raise ValueError(f"stride must be between 1 and max_length ({max_length})")
    sequence = [prefix_token, *tokens]  # tokens[i] is sequence[i + 1]
    windows: list[Continuation] = []
    start, end = 0, min(max_length, len(tokens))
    while start < len(tokens):
        first_input = max(0, end - max_length)
        windows.append(
            Continuation(sequence[first_input : start + 1], sequence[start + 1 : end + 1])
        )
        start, end = end, min(end + step, len(tokens))
    return windows


def continuation_loglikelihoods(
    model: Any, rows: Sequence[Continuation], *, batch_size: int, pad_id: int
) -> list[float]:
    """Sum of log p(continuation tokens | what precedes them) for each row, in row order."""
    import torch

    results = [0.0] * len(rows)

    def collect(i: int, logits: torch.Tensor) -> None:
        targets = torch.tensor(rows[i].continuation, dtype=torch.long, device=logits.device)
        results[i] = _sum_logprobs(logits, targets)

    forward_continuations(model, rows, collect, batch_size=batch_size, pad_id=pad_id)
    return results


def _sum_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """log_softmax in float32 (bf16 logits would lose digits), in chunks so a long window never
    holds two full copies of its logits; the sum in float64."""
    import torch

    total = torch.zeros((), dtype=torch.float64)
    for start in range(0, targets.shape[0], _LOG_SOFTMAX_CHUNK):
        chunk = torch.log_softmax(logits[start : start + _LOG_SOFTMAX_CHUNK].float(), dim=-1)
        picked = chunk.gather(-1, targets[start : start + _LOG_SOFTMAX_CHUNK, None])
        total += picked.double().sum().cpu()
    return float(total)


def model_max_length(model: Any, tokenizer: Any) -> int:
    """What lm-evaluation-harness uses: the config's positions, else a sane tokenizer limit."""
    config = getattr(model, "config", None)
    for attribute in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, attribute, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < 1_000_000:  # "no limit" is a huge number
        return limit
    return DEFAULT_MAX_LENGTH


@dataclass(frozen=True)
class Scorer:
    """What both metrics need of a candidate: its tokenizer, the longest model input, and the
    summed log-probability of each row's continuation."""

    tokenizer: Any
    max_length: int
    loglikelihoods: Callable[[Sequence[Continuation]], list[float]]


def scorer(candidate: Any, batch_size: int) -> Scorer | None:
    """The capability ``candidate`` offers (weights here first), or None for neither."""
    if isinstance(candidate, LocalModel):
        model, tokenizer = candidate.loaded()
        return Scorer(
            tokenizer,
            model_max_length(model, tokenizer),
            lambda rows: continuation_loglikelihoods(
                model, rows, batch_size=batch_size, pad_id=pad_id(tokenizer)
            ),
        )
    if isinstance(candidate, PromptLogprobs):
        return Scorer(
            candidate.tokenizer(),
            candidate.max_length(),
            lambda rows: served_loglikelihoods(candidate, rows),
        )
    return None


def served_loglikelihoods(candidate: PromptLogprobs, rows: Sequence[Continuation]) -> list[float]:
    """Each row's continuation scored from the prompt log-probs of context + continuation. The
    first position has none (nothing precedes it), which is why every row has a context."""
    per_row = candidate.prompt_logprobs([row.context + row.continuation for row in rows])
    sums = []
    for row, logprobs in zip(rows, per_row, strict=True):
        picked = logprobs[len(row.context) :]
        if not row.context or any(value is None for value in picked):
            raise ValueError(f"candidate '{candidate.name}' returned no log-prob for a token")
        sums.append(math.fsum(float(value) for value in picked))  # type: ignore[arg-type]
    return sums
