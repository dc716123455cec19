"""Log-probs of given tokens from a managed vLLM server: its ``/v1/completions`` with
``prompt_logprobs``, on token ids rendered here with the model's own tokenizer (the same chat
template and tokenization as the transformers engine, so positions line up with a local model's).

- ``prompt_logprobs`` (perplexity metrics, ``PromptLogprobs``): ``prompt_logprobs: 0`` gives, per
  position but the first, log p(token | tokens before it).
- ``continuation_top_logprobs`` (fidelity metrics, ``ContinuationLogprobs``): the answer's ids
  after the rendered prompt by teacher forcing's rule (``continuation.answer_separator``,
  ``answer_tokens``), then ``prompt_logprobs: k``: vLLM lists per position its k most likely
  token ids (each with ``logprob``, ``rank``, ``decoded_token``) plus the position's own token;
  the k most likely are kept, named by id (``token_id:N``: the fidelity metric then names a
  local base's the same way, so the comparison is exact, with no detokenization involved).

vLLM 0.32's LoRA logits layer crashes the engine when prompt log-probs of several requests
share a batch (an einsum shape error, seen on CPU): with LoRA modules on the server, requests go
one at a time.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from evalkit.candidates.base import GenerationRequest
from evalkit.candidates.continuation import answer_separator, answer_tokens, named_top_k
from evalkit.candidates.vllm_server import VllmServer

REQUEST_TIMEOUT_S = 900.0
"""One request on a loaded 2-core CPU with many in flight can take minutes."""

T = TypeVar("T")
R = TypeVar("R")


class Served(Protocol):
    """What these requests need of a vLLM candidate (``vllm.VllmCandidate``)."""

    @property
    def served_model(self) -> str: ...

    def server(self) -> VllmServer: ...

    def tokenizer(self) -> Any: ...

    def render(self, request: GenerationRequest) -> tuple[str, list[int]]: ...

    def concurrency(self) -> int: ...


def prompt_logprobs(served: Served, sequences: Sequence[Sequence[int]]) -> list[list[float | None]]:
    """Per sequence, log p(token i | tokens before it) for each position (None for the
    first, which nothing precedes)."""
    url, model = f"{served.server().base}/completions", served.served_model

    def one(ids: Sequence[int]) -> list[float | None]:
        body = {"model": model, "prompt": list(ids), "max_tokens": 1, "temperature": 0.0,
                "prompt_logprobs": 0}  # fmt: skip
        positions = _post(url, body)["choices"][0]["prompt_logprobs"]
        return [
            None if entry is None else float(entry[str(token)]["logprob"])
            for token, entry in zip(ids, positions, strict=True)
        ]

    return _each(served, one, sequences)


def continuation_top_logprobs(
    served: Served,
    requests: Sequence[GenerationRequest],
    continuations: Sequence[str],
    top_k: int,
    separator: str | None = None,
) -> list[list[dict[str, float]] | str]:
    """Per request the answer's named top-k per position, or why there is none."""
    tokenizer = served.tokenizer()
    rows: list[tuple[list[int], list[int]] | str] = []
    for request, answer in zip(requests, continuations, strict=True):
        text, ids = served.render(request)
        tail, _ = answer_tokens(tokenizer, text, answer_separator(text, separator) + answer)
        rows.append((list(ids), tail) if tail else "the answer has no tokens")
    url, model = f"{served.server().base}/completions", served.served_model

    def one(row: tuple[list[int], list[int]] | str) -> list[dict[str, float]] | str:
        """The answer's positions (the last ``len(tail)`` of the prompt's)."""
        if isinstance(row, str):
            return row
        ids, tail = row
        body = {"model": model, "prompt": ids + tail, "max_tokens": 1, "temperature": 0.0,
                "prompt_logprobs": top_k}  # fmt: skip
        try:
            positions = _post(url, body)["choices"][0]["prompt_logprobs"]
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace").strip().splitlines()[:1]
            return f"the vLLM server refused to score the answer (HTTP {exc.code}: {detail})"
        return [_by_id(entry, top_k) for entry in positions[len(ids) :]]

    return _each(served, one, rows)


def _by_id(entry: Mapping[str, Mapping[str, Any]], k: int) -> dict[str, float]:
    ids = [int(token_id) for token_id in entry]
    return named_top_k(None, ids, [float(v["logprob"]) for v in entry.values()], k, by_id=True)


def _post(url: str, body: dict[str, Any]) -> Any:
    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
        return json.loads(response.read())


def _each(served: Served, one: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``one`` of every item, ``concurrency`` in flight (one at a time with LoRA modules)."""
    workers = 1 if served.server().loras else served.concurrency()
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, items))
