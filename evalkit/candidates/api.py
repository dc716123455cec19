"""API candidates: any litellm model string, or an OpenAI-compatible server (``api: {base: URL}``).

Which candidates are API candidates (``make_candidate``):

- every candidate with an ``api:`` block (``api: {}`` takes all defaults);
- without one, a ``model:`` string ``provider/name`` that litellm's *local* price list knows as a
  chat model of that provider (``openai/gpt-4o-mini``, ``anthropic/claude-sonnet-4-5``), unless it
  is an alias, an existing folder, or the candidate sets an option only local models have
  (``revision``, ``device``, ``dtype``, ``chat_template``, ``adapter``, ``quantization``,
  ``speculative``). Hub ids such as ``HuggingFaceTB/SmolLM2-135M-Instruct`` or
  ``openai/gpt-oss-20b`` are not priced chat models of a litellm provider, so they stay local.
  The price list is read as a file (``api_models``): deciding costs no litellm import.

With ``api.base`` the model is sent to that server through litellm's OpenAI-compatible client
(vLLM, TGI, SGLang, llama.cpp server, Ollama, a LiteLLM proxy...): a model string whose prefix is
a litellm provider (``hosted_vllm/...``, ``ollama/...``) keeps that provider, any other string is
sent unchanged as an OpenAI-compatible model name (``meta-llama/Llama-3.1-8B-Instruct``).

Keys, retries and the event loop: ``api_transport`` (keys never reach the fingerprint, the
cache, run.json, logs or error messages; no litellm exception leaves these modules). Requests:
asyncio on one background event-loop thread, at most ``api.concurrency`` in flight, each attempt
limited to ``api.timeout_s``; litellm's own retries are off, so every retry is ours and counted.
A request that still fails becomes that example's ``Generation.error`` (one line: what happened
and what to do), never a score. ``generate`` yields each group of finished requests at once, so
the engine caches them as they land. Decoding parameters: ``api_wire``. ``Generation.prompt``
stays empty: the server's chat template is not known.

Capabilities for other components (build one with ``make_candidate(name, CandidateSpec(model=...,
api={...}), base_dir)``):

- ``complete_many(requests, params, *, top_logprobs=None, json_schema=None) -> list[ApiReply]``
  in request order: the text, per generated position the top ``top_logprobs`` alternatives as
  ``{token: logprob}`` (None when not requested or the server offers none), token counts, cost
  (USD from litellm's local price map; None when unknown, never a guess), seconds and error.
  ``json_schema`` asks for a reply in that schema (``response_format: json_schema``). Options a
  provider does not support per litellm (logprobs, response_format, seed) are left out rather
  than failing the request.
- ``measure_latency(requests, params, *, warmup)`` (``LatencyProbe``): one request at a time,
  streamed; ``ttft_s`` is the time to the first content chunk (None when the server cannot
  stream: then the request is repeated without streaming), ``n_output_tokens`` from the
  streamed usage, else the number of content chunks.
- ``continuation_top_logprobs(requests, continuations, top_k, *, separator=None)``
  (``ContinuationLogprobs``, for fidelity metrics): top-k log-probs of a given answer after the
  server's own chat-templated prompt, from the completions endpoint's ``echo`` (``api_logprobs``);
  per request the reason when the API offers none (chat-only APIs, servers that refuse echo).

The fingerprint is the model string and the base URL's scheme, host, port and path (never user
info or query). An API provider can change the model behind an unchanged name: a cached answer
then stays what that name answered when it was cached (``--evalkit-no-cache`` asks again).
"""

from __future__ import annotations

import asyncio
import queue
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

from evalkit.candidates import api_logprobs
from evalkit.candidates.api_transport import ApiTransport, Backoff, Run, Stats, drain, submit
from evalkit.candidates.api_wire import (
    ApiReply,
    Call,
    RequestOptions,
    StreamRead,
    cannot_stream,
    cut_at_stop,
    litellm_module,
    parse_reply,
    read_stream,
    read_whole,
    request_kwargs,
)
from evalkit.candidates.base import Generation, GenerationRequest, LatencySample
from evalkit.errors import CandidateError
from evalkit.spec import ApiSpec, CandidateSpec, GenerationSpec, public_url

__all__ = ["ApiCandidate", "ApiReply", "Backoff"]


class ApiCandidate:
    """A model behind an API, called through litellm. See the module docstring."""

    def __init__(self, name: str, spec: CandidateSpec, *, backoff: Backoff | None = None) -> None:
        if not spec.model:
            raise CandidateError(f"candidate '{name}': an API candidate needs 'model'")
        self.name = name
        self.spec = spec
        self.model = spec.model
        self.api = spec.api or ApiSpec()
        self.transport = ApiTransport(name, self.model, self.api, backoff)
        self.extra_body: dict[str, Any] | None = None
        """Sent with every request as extra JSON fields (engine: vllm sets sampling options
        that the OpenAI API lacks)."""

    def __repr__(self) -> str:
        return f"ApiCandidate({self.name!r}, model={self.model!r})"

    @property
    def stats(self) -> Stats:
        return self.transport.stats

    # -- identity -------------------------------------------------------------------------

    def fingerprint(self) -> dict[str, Any]:
        """The model string and where it is served; no key, no litellm import."""
        return {
            "kind": "api",
            "model": self.model,
            "base": public_url(self.api.base) if self.api.base else None,
        }

    def describe(self) -> dict[str, Any]:
        resolved = self.transport.resolved
        return {
            "kind": "api",
            "model": self.model,
            "base": public_url(self.api.base) if self.api.base else None,
            "provider": resolved.provider if resolved else None,
            "requests": self.stats.requests,
            "retries": self.stats.retries,
            "errors": self.stats.errors,
            "cost": self.stats.cost,
            "streaming": self.stats.streaming,
            "concurrency": self.api.concurrency,
            "timeout_s": self.api.timeout_s,
            "max_retries": self.api.max_retries,
        }

    def close(self) -> None:
        self.transport.resolved = None

    # -- the candidate contract -----------------------------------------------------------

    def generate(
        self, requests: Sequence[GenerationRequest], params: GenerationSpec
    ) -> Iterator[list[Generation]]:
        """Yield each group of requests that finished since the last yield."""
        for replies in self._replies(requests, params, RequestOptions()):
            yield [self._generation(reply, params) for _, reply in replies]

    def complete_many(
        self,
        requests: Sequence[GenerationRequest],
        params: GenerationSpec,
        *,
        top_logprobs: int | None = None,
        json_schema: dict[str, Any] | None = None,
    ) -> list[ApiReply]:
        """Complete every request (concurrently, with retries); replies in request order (ids
        need not be unique: several samples of one example are fine)."""
        options = RequestOptions(top_logprobs=top_logprobs, json_schema=json_schema)
        by_index = dict(
            pair for group in self._replies(requests, params, options) for pair in group
        )
        return [by_index[index] for index in range(len(requests))]

    def measure_latency(
        self, requests: Sequence[GenerationRequest], params: GenerationSpec, *, warmup: int
    ) -> list[LatencySample]:
        """Time each request alone (streamed) after ``warmup`` untimed ones."""
        if not requests:
            return []
        call = self.transport.call()
        warm = [requests[i % len(requests)] for i in range(max(warmup, 0))]

        async def run_all() -> list[LatencySample]:
            run = Run(asyncio.Semaphore(1))
            samples = [await self._timed(call, run, r, params) for r in [*warm, *requests]]
            return samples[len(warm) :]

        return submit(run_all()).result()

    def continuation_top_logprobs(
        self,
        requests: Sequence[GenerationRequest],
        continuations: Sequence[str],
        top_k: int,
        *,
        separator: str | None = None,
    ) -> list[list[dict[str, float]] | str]:
        """Top-k log-probs of each continuation's tokens after the server's chat-templated
        prompt, or why there are none (``api_logprobs``)."""
        return api_logprobs.continuation_top_logprobs(
            self.transport, requests, continuations, top_k, separator
        )

    # -- plumbing ---------------------------------------------------------------------------

    def _replies(
        self,
        requests: Sequence[GenerationRequest],
        params: GenerationSpec,
        options: RequestOptions,
    ) -> Iterator[list[tuple[int, ApiReply]]]:
        """Run the requests on the loop thread; yield (index, reply) groups as they finish."""
        if not requests:
            return
        call = self.transport.call()
        finished: queue.Queue[tuple[int, ApiReply] | None] = queue.Queue()
        future = submit(self._complete_all(call, requests, params, options, finished.put))
        future.add_done_callback(lambda _: finished.put(None))
        remaining = len(requests)
        try:
            while remaining:
                group = drain(finished)
                if group is None:  # the loop task ended early: surface its exception
                    future.result()
                    raise CandidateError(f"candidate '{self.name}': requests ended early")
                remaining -= len(group)
                yield group
        finally:
            future.cancel()  # a consumer that stops early (a crash) cancels what is in flight

    async def _complete_all(
        self,
        call: Call,
        requests: Sequence[GenerationRequest],
        params: GenerationSpec,
        options: RequestOptions,
        done: Callable[[tuple[int, ApiReply]], None],
    ) -> None:
        run = Run(asyncio.Semaphore(self.api.concurrency))

        async def one(index: int, request: GenerationRequest) -> None:
            done((index, await self._complete(call, run, request, params, options)))

        await asyncio.gather(*(one(i, r) for i, r in enumerate(requests)))

    async def _complete(
        self,
        call: Call,
        run: Run,
        request: GenerationRequest,
        params: GenerationSpec,
        options: RequestOptions,
    ) -> ApiReply:
        kwargs = self._with_extra(request_kwargs(call, request.messages, params, options))

        async def attempt() -> ApiReply:
            started = time.perf_counter()
            response = await litellm_module().acompletion(**kwargs)
            return parse_reply(request.id, response, time.perf_counter() - started)

        result = await self.transport.with_retries(call, run, attempt)
        if isinstance(result, str):
            self.stats.errors += 1
            return ApiReply(id=request.id, text="", error=result)
        reply, attempts = result
        self.transport.add_cost(reply.cost)
        return replace(reply, attempts=attempts)

    async def _timed(
        self,
        call: Call,
        run: Run,
        request: GenerationRequest,
        params: GenerationSpec,
        stream: bool | None = None,
    ) -> LatencySample:
        stream = self.stats.streaming is not False if stream is None else stream
        options = RequestOptions(stream=stream)
        kwargs = self._with_extra(request_kwargs(call, request.messages, params, options))

        async def attempt() -> StreamRead:
            return await read_stream(kwargs) if stream else await read_whole(kwargs)

        result = await self.transport.with_retries(call, run, attempt)
        if isinstance(result, str) and stream and cannot_stream(result):
            # Perhaps the server refuses streams: time the whole reply instead.
            return await self._timed(call, run, request, params, stream=False)
        if isinstance(result, str):
            self.stats.errors += 1
            return LatencySample(request.id, None, 0.0, 0, error=result)
        timed, _ = result
        self.stats.streaming = stream
        usage_tokens = getattr(timed.usage, "completion_tokens", None)
        return LatencySample(
            id=request.id,
            ttft_s=timed.ttft_s,
            total_s=timed.total_s,
            n_output_tokens=int(usage_tokens) if usage_tokens else timed.chunks,
        )

    def _with_extra(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        return {**kwargs, "extra_body": dict(self.extra_body)} if self.extra_body else kwargs

    def _generation(self, reply: ApiReply, params: GenerationSpec) -> Generation:
        return Generation(
            id=reply.id,
            output=cut_at_stop(reply.text, params.stop),
            prompt="",
            n_prompt_tokens=reply.n_prompt_tokens,
            n_output_tokens=reply.n_output_tokens,
            seconds=reply.seconds,
            error=reply.error,
            cost=reply.cost,
        )
