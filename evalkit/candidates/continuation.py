"""A given continuation (an answer) after a rendered prompt: where it starts, how it is
tokenized, and how its top-k alternatives are named. One rule for every route that scores an
answer it did not generate: teacher forcing on local weights (perplexity, fidelity) and the
servers that return prompt log-probs (``ContinuationLogprobs``), so their positions line up.

Tokens are named, in the ``{token: log-prob}`` maps these routes return, by id where both sides
know ids (``token_id:N``, vLLM's ``return_tokens_as_token_ids`` form: exact, for models that
share a vocabulary) and otherwise by their text as an OpenAI-compatible server reports it
(vLLM's rule): each token decoded alone, with the leading spaces a SentencePiece-style tokenizer
(a ``Metaspace`` pre-tokenizer) drops from a lone token put back, so ``▁Paris`` is `` Paris``
and ``Paris`` is ``Paris``. Two ids with the same text (partial UTF-8 bytes, which a server may
also name differently, in context) are one entry whose probability is their sum.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

TOKEN_ID = "token_id:"
"""The prefix of a token named by its id."""


def answer_separator(prompt_text: str, separator: str | None = None) -> str:
    """What goes between the prompt and the answer: ``separator`` when given, else nothing
    after a prompt that ends in whitespace (a chat template's ``assistant\\n``) or an empty
    one, and one space otherwise (lm-evaluation-harness's target delimiter)."""
    if separator is not None:
        return separator
    return "" if not prompt_text or prompt_text[-1].isspace() else " "


def answer_tokens(tokenizer: Any, prompt_text: str, answer: str) -> tuple[list[int], str]:
    """The answer's token ids after ``prompt_text``, and how they were found: ``joint`` when
    the prompt's tokens are a prefix of prompt + answer tokenized together (what the model sees
    when it writes the answer itself), else ``separate`` (the answer tokenized alone)."""
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    whole = tokenizer(prompt_text + answer, add_special_tokens=False)["input_ids"]
    if whole[: len(prompt_ids)] == prompt_ids and len(whole) > len(prompt_ids):
        return list(whole[len(prompt_ids) :]), "joint"
    return list(tokenizer(answer, add_special_tokens=False)["input_ids"]), "separate"


def token_texts(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """Each id's text as a server reports it (see the module docstring)."""
    marker = _space_marker(tokenizer)
    texts = [tokenizer.decode([int(i)]) or "" for i in ids]
    if marker is None:
        return texts
    raw = tokenizer.convert_ids_to_tokens([int(i) for i in ids])
    pairs = zip(raw, texts, strict=True)
    return [_restore_spaces(piece or "", text, marker) for piece, text in pairs]


def named_top_k(
    tokenizer: Any, ids: Sequence[int], logprobs: Sequence[float], k: int, *, by_id: bool = False
) -> dict[str, float]:
    """``{token: log-prob}`` of the ``k`` most likely of ``ids`` (most likely first), named
    ``token_id:N`` when ``by_id``, else by text (ids that share a text are merged: their
    probabilities added)."""
    ranked = sorted(zip(logprobs, ids, strict=True), key=lambda pair: -pair[0])[:k]
    if by_id:
        return {f"{TOKEN_ID}{int(i)}": float(logprob) for logprob, i in ranked}
    named: dict[str, float] = {}
    texts = token_texts(tokenizer, [i for _, i in ranked])
    for text, (logprob, _) in zip(texts, ranked, strict=True):
        named[text] = _logaddexp(named[text], logprob) if text in named else float(logprob)
    return named


def names_ids(positions: Sequence[Mapping[str, float]]) -> bool:
    """Whether these positions name their tokens by id (every key ``token_id:N``)."""
    keys = [key for position in positions for key in position]
    return bool(keys) and all(key.startswith(TOKEN_ID) for key in keys)


def _logaddexp(a: float, b: float) -> float:
    high, low = max(a, b), min(a, b)
    return high + math.log1p(math.exp(low - high))


def _space_marker(tokenizer: Any) -> str | None:
    """The Metaspace replacement character of a fast tokenizer's pre-tokenizer, if any."""
    cached = getattr(tokenizer, "_evalkit_space_marker", ())
    if cached != ():
        return cached
    marker = None
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        pre = json.loads(backend.to_str()).get("pre_tokenizer") or {}
        for step in [pre, *pre.get("pretokenizers", [])]:
            if step.get("type") == "Metaspace":
                marker = step.get("replacement", "\u2581")
                break
    with contextlib.suppress(AttributeError):  # else it is recomputed next time
        tokenizer._evalkit_space_marker = marker
    return marker


def _restore_spaces(piece: str, text: str, marker: str) -> str:
    """``text`` with as many leading spaces as ``piece`` has leading markers."""
    markers = len(piece) - len(piece.lstrip(marker))
    missing = markers - (len(text) - len(text.lstrip(" ")))
    return " " * missing + text if missing > 0 else text
