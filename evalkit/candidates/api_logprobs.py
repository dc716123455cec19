"""Top-k log-probs of a given answer from an OpenAI-compatible server: ``ContinuationLogprobs``
for API candidates with ``api.base`` (what fidelity metrics compare with the base model).

Chat completions return log-probs only of tokens the model generates, so the answer is scored
through the legacy completions endpoint's ``echo`` (vLLM's and OpenAI's format), after the prompt
exactly as the server's chat endpoint renders it. Per request:

1. ``POST {root}/tokenize`` with the messages and ``add_generation_prompt``: the prompt's token
   ids, through the server's own chat template (vLLM's endpoint; ``root`` is ``api.base``
   without its trailing ``/v1``);
2. ``POST {root}/detokenize``: that prompt's text;
3. ``POST {root}/tokenize`` of prompt text + separator + answer, no special tokens added: the
   answer's ids are the tail when the prompt's ids are its prefix, else the answer is tokenized
   alone (teacher forcing's rule: ``continuation.answer_tokens``, ``answer_separator``);
4. ``POST {base}/completions`` with prompt + answer ids, ``echo: true``, ``logprobs: k``,
   ``max_tokens: 0`` and ``return_tokens_as_token_ids: true``: per prompt token the top-k
   log-probs (``logprobs.top_logprobs``); the answer's positions are the last ones. vLLM lists
   each position's actual token beside its top k: only the k most likely entries are kept.

Tokens come back named by id (``token_id:N``, which the fidelity metric matches with a local
base's ids: exact) and the answer's must be the ids sent. A server that ignores
``return_tokens_as_token_ids`` names them by their text: the answer's token texts must then
spell the answer (whitespace aside), else the server names tokens some other way (raw pieces)
and the reason says so rather than comparing mismatched names.

The reason, per request, where no log-probs can be had (the metric's value is then missing,
never 0): an API without ``api.base`` (chat-only providers such as OpenAI's gpt-4o; nothing is
sent), a server without these endpoints (404, 405, 501: the remaining requests are not sent), a
request the server rejects (400, 422: echo unsupported, a prompt too long), or a reply without
prompt log-probs. Requests go through the candidate's transport: the key as a bearer token,
``api.concurrency``, retries, and errors redacted.
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from evalkit.candidates.api_errors import first_line, redact
from evalkit.candidates.api_transport import ApiTransport, Run, submit
from evalkit.candidates.api_wire import Call
from evalkit.candidates.base import GenerationRequest
from evalkit.candidates.continuation import TOKEN_ID, answer_separator

Positions = list[dict[str, float]]

MISSING_ENDPOINT = frozenset({404, 405, 501})
"""Statuses that say the server lacks the route: every request would get them."""
REJECTED = frozenset({400, 413, 415, 422})
"""Statuses that say this request is refused (echo unsupported, a prompt too long)."""


class HttpStatusError(Exception):
    """A status ``api_errors.classify`` decides about (401, 403, 429, 5xx...)."""

    def __init__(self, status: int, message: str, headers: Any) -> None:
        super().__init__(message)
        self.status_code = status
        self.message = message
        self.response = SimpleNamespace(headers=headers)


def continuation_top_logprobs(
    transport: ApiTransport,
    requests: Sequence[GenerationRequest],
    continuations: Sequence[str],
    top_k: int,
    separator: str | None = None,
) -> list[Positions | str]:
    """Per request the answer's top-k positions, or why there are none (module docstring)."""
    if not transport.api.base:
        reason = (
            f"candidate '{transport.name}' ({transport.model}) is a chat-completions API: it "
            "returns log-probs of tokens it generates, not of a given text; serve the model "
            "behind an OpenAI-compatible server whose completions endpoint takes echo (vLLM) "
            "and set api.base"
        )
        return [reason for _ in requests]
    if not requests:
        return []
    scorer = _EchoScorer(transport, transport.call(), top_k, separator)
    return submit(scorer.score_all(requests, continuations)).result()


class _EchoScorer:
    def __init__(
        self, transport: ApiTransport, call: Call, top_k: int, separator: str | None
    ) -> None:
        self.transport = transport
        self.call = call
        self.top_k = top_k
        self.separator = separator
        self.parts = urlsplit(str(transport.api.base))
        self.base_path = self.parts.path.rstrip("/")
        self.root_path = self.base_path.removesuffix("/v1")
        self.where = transport.where(call)

    async def score_all(
        self, requests: Sequence[GenerationRequest], continuations: Sequence[str]
    ) -> list[Positions | str]:
        run = Run(asyncio.Semaphore(self.transport.api.concurrency))
        pairs = zip(requests, continuations, strict=True)
        return list(await asyncio.gather(*(self.score(run, r, c) for r, c in pairs)))

    async def score(self, run: Run, request: GenerationRequest, answer: str) -> Positions | str:
        model = self.call.wire_model
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        chat = {"model": model, "messages": messages, "add_generation_prompt": True}
        prompt = await self.post(run, "/tokenize", chat)
        if isinstance(prompt, str):
            return prompt
        ids = [int(i) for i in prompt.get("tokens") or []]
        text = await self.post(run, "/detokenize", {"model": model, "tokens": ids})
        if isinstance(text, str):
            return text
        full = answer_separator(str(text.get("prompt", "")), self.separator) + answer
        tail = await self.answer_ids(run, str(text.get("prompt", "")), full, ids)
        if isinstance(tail, str) or not tail:
            return tail or "the answer has no tokens"
        body = {
            "model": model, "prompt": ids + tail, "echo": True, "logprobs": self.top_k,
            "max_tokens": 0, "temperature": 0.0, "return_tokens_as_token_ids": True,
        }  # fmt: skip
        reply = await self.post(run, "/completions", body)
        if isinstance(reply, str):
            return reply
        return self.positions(reply, len(ids), tail, full)

    async def answer_ids(
        self, run: Run, prompt_text: str, full: str, prompt_ids: list[int]
    ) -> list[int] | str:
        """The answer's ids after the prompt: the joint tokenization's tail when the prompt's
        ids are its prefix, else the answer alone (``continuation.answer_tokens``)."""
        for text in (prompt_text + full, full):
            found = await self.post(
                run,
                "/tokenize",
                {"model": self.call.wire_model, "prompt": text, "add_special_tokens": False},
            )
            if isinstance(found, str):
                return found
            ids = [int(i) for i in found.get("tokens") or []]
            if text == full:
                return ids
            if ids[: len(prompt_ids)] == prompt_ids and len(ids) > len(prompt_ids):
                return ids[len(prompt_ids) :]
        return []

    def positions(
        self, reply: Mapping[str, Any], n_prompt: int, tail: list[int], full: str
    ) -> Positions | str:
        """The answer's positions of a completions reply with echo (the last ``len(tail)``),
        or why they cannot be used."""
        choices = reply.get("choices") or [{}]
        logprobs = choices[0].get("logprobs") or {}
        tops, tokens = logprobs.get("top_logprobs") or [], logprobs.get("tokens") or []
        end = n_prompt + len(tail)
        if len(tops) < end or len(tokens) < end:
            return (
                f"the server at {self.where} returned no log-probs of the prompt's tokens with "
                f"echo ({len(tops)} positions for {end} tokens): it cannot score a given text"
            )
        answer = tops[n_prompt:end]
        if not all(isinstance(position, dict) and position for position in answer):
            return f"the server at {self.where} left out log-probs of some answer tokens"
        named = [str(t) for t in tokens[n_prompt:end]]
        if all(t.startswith(TOKEN_ID) for t in named):
            if named != [f"{TOKEN_ID}{i}" for i in tail]:
                return f"the server at {self.where} echoed other token ids than it was sent"
        elif _squash("".join(named)) != _squash(full):
            spelled = "".join(named)
            return (
                f"the server names the answer's tokens {spelled[:80]!r}, which do not spell "
                f"{full[:80]!r}: its log-probs cannot be matched with another model's tokens"
            )
        return [_most_likely(position, self.top_k) for position in answer]

    async def post(self, run: Run, path: str, body: dict[str, Any]) -> dict[str, Any] | str:
        """One JSON request through the transport: the reply, or a one-line reason."""
        url = self.url(path)
        headers, timeout = self.call.headers(), self.transport.api.timeout_s

        async def attempt() -> tuple[int, Any]:
            return await asyncio.to_thread(_post_json, url, body, headers, timeout)

        result = await self.transport.with_retries(self.call, run, attempt)
        if isinstance(result, str):
            self.transport.stats.errors += 1
            return result
        (status, payload), _ = result
        if status < 300 and isinstance(payload, dict):
            return payload
        self.transport.stats.errors += 1
        reason = self.refusal(path, status, redact(first_line(str(payload)), self.call.secrets))
        if status in MISSING_ENDPOINT:
            run.stop_reason = reason  # every other request would get the same answer
        return reason

    def url(self, path: str) -> str:
        """``/completions`` under ``api.base``, the others under its root; the query is kept,
        user info dropped (never sent in a URL)."""
        prefix = self.base_path if path == "/completions" else self.root_path
        host = self.parts.hostname or ""
        netloc = f"{host}:{self.parts.port}" if self.parts.port else host
        return urlunsplit((self.parts.scheme, netloc, prefix + path, self.parts.query, ""))

    def refusal(self, path: str, status: int, detail: str) -> str:
        said = f"HTTP {status}: {detail[:200]}" if detail else f"HTTP {status}"
        if path == "/completions":
            return (
                f"the server at {self.where} refused a completions request with echo and "
                f"logprobs ({said}): it gives no log-probs of a given text"
            )
        return (
            f"the server at {self.where} answered {path} with {said}; evalkit renders the "
            "prompt with the server's own chat template through vLLM's /tokenize and "
            "/detokenize endpoints: check the model name, or serve the model with vLLM"
        )


def _post_json(url: str, body: dict[str, Any], headers: dict[str, str], timeout: float) -> Any:
    """``(status, parsed JSON)``; a refusal's ``(status, error text)``; other statuses raise
    ``HttpStatusError`` for the transport to classify (retry, stop, advice)."""
    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        status, detail, headers = exc.code, _error_text(exc.read()), exc.headers
    if status in MISSING_ENDPOINT | REJECTED:
        return status, detail
    # Raised outside the handler: an HTTPError is an OSError, which classify would read in the
    # exception's context as a connection failure.
    raise HttpStatusError(status, detail, headers)


def _error_text(raw: bytes) -> str:
    """The server's own words: an OpenAI-style ``error.message``, FastAPI's ``detail``, or the
    body."""
    text = raw.decode("utf-8", "replace")
    try:
        payload = json.loads(text)
    except ValueError:
        return first_line(text)
    if isinstance(payload, dict):
        error = payload.get("error")
        message = error.get("message") if isinstance(error, dict) else error
        return first_line(str(message or payload.get("detail") or payload.get("message") or text))
    return first_line(text)


def _most_likely(position: Mapping[str, Any], k: int) -> dict[str, float]:
    ranked = sorted(((str(t), float(lp)) for t, lp in position.items()), key=lambda p: -p[1])
    return dict(ranked[:k])


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)
