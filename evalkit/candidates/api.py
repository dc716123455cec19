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

Keys: read from the variable ``api.key_env`` names; without ``key_env``, litellm reads its
standard variables (``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``, ...) -- except with ``api.base``,
where no provider key is sent unless ``key_env`` says so (a placeholder goes instead), so a
vendor key never reaches a third-party server by accident. Keys never reach the fingerprint, the
cache, run.json, logs or error messages: every error text is redacted (``api_errors``) and no
litellm exception leaves this module.

Requests: asyncio on one background event-loop thread, at most ``api.concurrency`` in flight,
each attempt limited to ``api.timeout_s``. 429, 5xx, timeouts, dropped connections and replies
that are not JSON are retried up to ``api.max_retries`` times with exponential backoff and jitter
(``Backoff``), waiting what ``Retry-After``/``retry-after-ms`` asks when the server says. Other
4xx are not retried; 401, 403 and 404 also stop sending this run's remaining requests (they
would all fail the same way). litellm's own retries are off, so every retry is ours and counted.
A request that still fails becomes that example's ``Generation.error`` (one line: what
happened and what to do), never a score. ``generate`` yields each group of finished requests at
once, so the engine caches them as they land.

Decoding: ``max_new_tokens`` -> ``max_tokens``; ``temperature``; ``top_p`` and ``top_k`` when set;
``seed`` only when sampling; ``stop`` (the first 4 sent, all applied to the reply locally, as for
local models). ``Generation.prompt`` stays empty: the server's chat template is not known.

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

The fingerprint is the model string and the base URL's scheme, host, port and path (never user
info or query). An API provider can change the model behind an unchanged name: a cached answer
then stays what that name answered when it was cached (``--evalkit-no-cache`` asks again).
"""

from __future__ import annotations

import asyncio
import os
import queue
import random
import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar
from urllib.parse import urlsplit

from evalkit.candidates.api_errors import classify, first_line, redact, with_attempts
from evalkit.candidates.base import Generation, GenerationRequest, LatencySample, Message
from evalkit.errors import CandidateError
from evalkit.spec import ApiSpec, CandidateSpec, GenerationSpec, public_url

__all__ = ["ApiCandidate", "ApiReply", "Backoff"]

PLACEHOLDER_KEY = "EMPTY"
"""Sent to an ``api.base`` server when no ``key_env`` is given (vLLM's convention)."""

_MAX_STOPS = 4  # OpenAI's limit; every stop string is also applied locally
T = TypeVar("T")


@dataclass(frozen=True)
class ApiReply:
    """One chat completion as ``complete_many`` returns it."""

    id: str
    text: str
    top_logprobs: list[dict[str, float]] | None = None
    """Per generated token position: token string -> logprob (when requested and offered)."""
    n_prompt_tokens: int = 0
    n_output_tokens: int = 0
    cost: float | None = None
    """USD from litellm's local price map; None when the model or the usage is unknown."""
    seconds: float = 0.0
    """Wall time of the attempt that answered (retries and backoff excluded)."""
    error: str | None = None
    attempts: int = 0


@dataclass(frozen=True)
class Backoff:
    """Waits between attempts: ``base_s * 2**retry`` capped at ``cap_s``, times a random factor
    in [0.5, 1] (jitter spreads retries of concurrent requests); a server's ``Retry-After`` wins,
    up to ``max_retry_after_s``."""

    base_s: float = 1.0
    cap_s: float = 30.0
    max_retry_after_s: float = 120.0

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after_s)
        return min(self.cap_s, self.base_s * 2**retry) * random.uniform(0.5, 1.0)


@dataclass(frozen=True)
class _Options:
    """Per-call extras of ``complete_many``."""

    top_logprobs: int | None = None
    json_schema: dict[str, Any] | None = None
    stream: bool = False


@dataclass(frozen=True)
class _Call:
    """What litellm needs for every request of one candidate (holds the key: never logged)."""

    model: str
    kwargs: dict[str, Any]
    provider: str
    supported: frozenset[str] | None
    """OpenAI parameters litellm says the provider supports (None: unknown)."""
    secrets: tuple[str, ...]


@dataclass
class _Run:
    """Shared state of one batch of requests (created inside the event loop)."""

    semaphore: asyncio.Semaphore
    stop_reason: str | None = None


@dataclass
class _Stats:
    requests: int = 0
    retries: int = 0
    errors: int = 0
    cost: float | None = None
    streaming: bool | None = None


@dataclass
class _Stream:
    text: str = ""
    ttft_s: float | None = None
    chunks: int = 0
    usage: Any = None
    total_s: float = 0.0


class ApiCandidate:
    """A model behind an API, called through litellm. See the module docstring."""

    def __init__(self, name: str, spec: CandidateSpec, *, backoff: Backoff | None = None) -> None:
        if not spec.model:
            raise CandidateError(f"candidate '{name}': an API candidate needs 'model'")
        self.name = name
        self.spec = spec
        self.model = spec.model
        self.api = spec.api or ApiSpec()
        self.backoff = backoff or Backoff()
        self.stats = _Stats()
        self._call_cache: _Call | None = None
        self.extra_body: dict[str, Any] | None = None
        """Sent with every request as extra JSON fields (engine: vllm sets sampling options
        that the OpenAI API lacks)."""

    def __repr__(self) -> str:
        return f"ApiCandidate({self.name!r}, model={self.model!r})"

    # -- identity -------------------------------------------------------------------------

    def fingerprint(self) -> dict[str, Any]:
        """The model string and where it is served; no key, no litellm import."""
        return {
            "kind": "api",
            "model": self.model,
            "base": public_url(self.api.base) if self.api.base else None,
        }

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "api",
            "model": self.model,
            "base": public_url(self.api.base) if self.api.base else None,
            "provider": self._call_cache.provider if self._call_cache else None,
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
        self._call_cache = None

    # -- the candidate contract -----------------------------------------------------------

    def generate(
        self, requests: Sequence[GenerationRequest], params: GenerationSpec
    ) -> Iterator[list[Generation]]:
        """Yield each group of requests that finished since the last yield."""
        for replies in self._replies(requests, params, _Options()):
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
        options = _Options(top_logprobs=top_logprobs, json_schema=json_schema)
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
        call = self._call()
        warm = [requests[i % len(requests)] for i in range(max(warmup, 0))]

        async def run_all() -> list[LatencySample]:
            run = _Run(asyncio.Semaphore(1))
            samples = [await self._timed(call, run, r, params) for r in [*warm, *requests]]
            return samples[len(warm) :]

        return _submit(run_all()).result()

    # -- plumbing ---------------------------------------------------------------------------

    def _replies(
        self, requests: Sequence[GenerationRequest], params: GenerationSpec, options: _Options
    ) -> Iterator[list[tuple[int, ApiReply]]]:
        """Run the requests on the loop thread; yield (index, reply) groups as they finish."""
        if not requests:
            return
        call = self._call()
        finished: queue.Queue[tuple[int, ApiReply] | None] = queue.Queue()
        future = _submit(self._complete_all(call, requests, params, options, finished.put))
        future.add_done_callback(lambda _: finished.put(None))
        remaining = len(requests)
        try:
            while remaining:
                group = _drain(finished)
                if group is None:  # the loop task ended early: surface its exception
                    future.result()
                    raise CandidateError(f"candidate '{self.name}': requests ended early")
                remaining -= len(group)
                yield group
        finally:
            future.cancel()  # a consumer that stops early (a crash) cancels what is in flight

    async def _complete_all(
        self,
        call: _Call,
        requests: Sequence[GenerationRequest],
        params: GenerationSpec,
        options: _Options,
        done: Callable[[tuple[int, ApiReply]], None],
    ) -> None:
        run = _Run(asyncio.Semaphore(self.api.concurrency))

        async def one(index: int, request: GenerationRequest) -> None:
            done((index, await self._complete(call, run, request, params, options)))

        await asyncio.gather(*(one(i, r) for i, r in enumerate(requests)))

    async def _complete(
        self,
        call: _Call,
        run: _Run,
        request: GenerationRequest,
        params: GenerationSpec,
        options: _Options,
    ) -> ApiReply:
        kwargs = self._with_extra(_request_kwargs(call, request, params, options))

        async def attempt() -> ApiReply:
            started = time.perf_counter()
            response = await _litellm().acompletion(**kwargs)
            return _parse_reply(request.id, response, time.perf_counter() - started)

        result = await self._with_retries(call, run, attempt)
        if isinstance(result, str):
            self.stats.errors += 1
            return ApiReply(id=request.id, text="", error=result)
        reply, attempts = result
        self._add_cost(reply.cost)
        return replace(reply, attempts=attempts)

    async def _timed(
        self,
        call: _Call,
        run: _Run,
        request: GenerationRequest,
        params: GenerationSpec,
        stream: bool | None = None,
    ) -> LatencySample:
        stream = self.stats.streaming is not False if stream is None else stream
        kwargs = self._with_extra(_request_kwargs(call, request, params, _Options(stream=stream)))

        async def attempt() -> _Stream:
            return await _read_stream(kwargs) if stream else await _read_whole(kwargs)

        result = await self._with_retries(call, run, attempt)
        if isinstance(result, str) and stream and _cannot_stream(result):
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

    async def _with_retries(
        self, call: _Call, run: _Run, attempt: Callable[[], Awaitable[T]]
    ) -> tuple[T, int] | str:
        """``(result, attempts)``, or the one-line error of the last failed attempt."""
        attempts = 0
        while True:
            if run.stop_reason is not None:
                return f"not sent: {run.stop_reason}"
            attempts += 1
            try:
                async with run.semaphore:
                    if run.stop_reason is not None:
                        return f"not sent: {run.stop_reason}"
                    self.stats.requests += 1
                    async with asyncio.timeout(self.api.timeout_s):
                        return await attempt(), attempts
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # litellm raises many types; all are classified
                failure = classify(
                    exc,
                    where=public_url(self.api.base) if self.api.base else call.provider,
                    secrets=call.secrets,
                    timeout_s=self.api.timeout_s,
                    advice=self._advice,
                )
            if failure.stop_all:
                run.stop_reason = failure.message
                return failure.message
            if not failure.retryable or attempts > self.api.max_retries:
                return with_attempts(failure.message, attempts)
            self.stats.retries += 1
            await asyncio.sleep(self.backoff.delay(attempts - 1, failure.retry_after))

    def _with_extra(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        return {**kwargs, "extra_body": dict(self.extra_body)} if self.extra_body else kwargs

    def _add_cost(self, cost: float | None) -> None:
        if cost is not None:
            self.stats.cost = (self.stats.cost or 0.0) + cost

    def _generation(self, reply: ApiReply, params: GenerationSpec) -> Generation:
        return Generation(
            id=reply.id,
            output=_cut_at_stop(reply.text, params.stop),
            prompt="",
            n_prompt_tokens=reply.n_prompt_tokens,
            n_output_tokens=reply.n_output_tokens,
            seconds=reply.seconds,
            error=reply.error,
            cost=reply.cost,
        )

    # -- configuration ----------------------------------------------------------------------

    def _call(self) -> _Call:
        """Resolve the key and the provider once (imports litellm)."""
        if self._call_cache is None:
            self._call_cache = self._resolve()
        return self._call_cache

    def _resolve(self) -> _Call:
        litellm = _litellm()
        key = self._api_key()
        kwargs: dict[str, Any] = {"num_retries": 0, "max_retries": 0}
        model, provider = self.model, None
        if self.api.base:
            kwargs["api_base"] = self.api.base
            prefix = model.split("/", 1)[0] if "/" in model else ""
            if prefix not in litellm.provider_list:
                kwargs["custom_llm_provider"] = provider = "openai"
        if key is not None:
            kwargs["api_key"] = key
        try:
            _, provider, _, _ = litellm.get_llm_provider(
                model, custom_llm_provider=provider, api_base=self.api.base
            )
        except Exception as exc:
            raise CandidateError(
                f"candidate '{self.name}': litellm does not know the provider of '{model}' "
                f"({redact(first_line(str(exc)), self._secrets(key))}); write it as "
                "provider/model (e.g. openai/gpt-4o-mini)"
                " or give api.base for an OpenAI-compatible server"
            ) from None
        return _Call(
            model=model,
            kwargs=kwargs,
            provider=str(provider),
            supported=_supported_params(litellm, model, str(provider)),
            secrets=self._secrets(key),
        )

    def _api_key(self) -> str | None:
        env = self.api.key_env
        if env:
            value = os.environ.get(env, "")
            if not value.strip():
                raise CandidateError(
                    f"candidate '{self.name}': api.key_env names the environment variable {env},"
                    f" which is not set; export {env} with the API key (evalkit never writes it"
                    " to the suite, the cache or the results)"
                )
            return value.strip()
        return PLACEHOLDER_KEY if self.api.base else None

    def _advice(self, status: int) -> str:
        """What to do about a 401, 403 or 404."""
        if status == 404:
            where = " and api.base" if self.api.base else ""
            return f"check the model name '{self.model}'{where}"
        if self.api.key_env:
            return f"check the key in ${self.api.key_env} (api.key_env)"
        if self.api.base:
            return "set api.key_env to the variable that holds this server's key"
        return "check the provider's key variable (e.g. OPENAI_API_KEY) or set api.key_env"

    def _secrets(self, key: str | None) -> tuple[str, ...]:
        secrets = [key] if key and key != PLACEHOLDER_KEY else []
        if self.api.base:
            parts = urlsplit(self.api.base)
            secrets += [s for s in (parts.password, parts.query) if s]
        return tuple(secrets)


# -- requests and replies ----------------------------------------------------------------------


def _request_kwargs(
    call: _Call, request: GenerationRequest, params: GenerationSpec, options: _Options
) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        **call.kwargs,
        "model": call.model,
        "messages": _messages(request.messages),
        "max_tokens": params.max_new_tokens,
        "temperature": params.temperature,
    }
    if params.top_p != 1.0:
        kwargs["top_p"] = params.top_p
    if params.top_k is not None:
        kwargs["top_k"] = params.top_k
    if params.stop:
        kwargs["stop"] = list(params.stop[:_MAX_STOPS])
    optional: dict[str, Any] = {}
    if not params.greedy:
        optional["seed"] = params.seed
    if options.top_logprobs is not None:
        optional["logprobs"] = True
        if options.top_logprobs > 0:
            optional["top_logprobs"] = options.top_logprobs
    if options.json_schema is not None:
        optional["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "reply", "schema": options.json_schema},
        }
    if options.stream:
        kwargs["stream"] = True
        kwargs["stream_options"] = {"include_usage": True}
    kwargs.update(
        (name, value)
        for name, value in optional.items()
        if call.supported is None or name in call.supported
    )
    return kwargs


def _messages(messages: Sequence[Message]) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in messages]


def _parse_reply(request_id: str, response: Any, seconds: float) -> ApiReply:
    choice = response.choices[0]
    usage = getattr(response, "usage", None)
    prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
    output_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
    return ApiReply(
        id=request_id,
        text=choice.message.content or "",
        top_logprobs=_top_logprobs(getattr(choice, "logprobs", None)),
        n_prompt_tokens=prompt_tokens,
        n_output_tokens=output_tokens,
        cost=_cost(response) if prompt_tokens + output_tokens > 0 else None,
        seconds=seconds,
    )


def _top_logprobs(logprobs: Any) -> list[dict[str, float]] | None:
    content = _get(logprobs, "content")
    if not content:
        return None
    positions = []
    for entry in content:
        top = _get(entry, "top_logprobs") or []
        alternatives = {str(_get(t, "token")): float(_get(t, "logprob")) for t in top}
        positions.append(alternatives or {str(_get(entry, "token")): float(_get(entry, "logprob"))})
    return positions


def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def _cost(response: Any) -> float | None:
    """USD per litellm's local price map; None for a model it does not price."""
    try:
        cost = _litellm().completion_cost(completion_response=response)
    except Exception:  # ModelNotMappedError, missing usage: unknown, not zero
        return None
    return float(cost) if cost is not None else None


async def _read_stream(kwargs: dict[str, Any]) -> _Stream:
    started = time.perf_counter()
    out = _Stream()
    pieces: list[str] = []
    response = await _litellm().acompletion(**kwargs)
    async for chunk in response:
        out.usage = getattr(chunk, "usage", None) or out.usage
        for choice in getattr(chunk, "choices", None) or []:
            text = getattr(getattr(choice, "delta", None), "content", None)
            if text:
                if out.ttft_s is None:
                    out.ttft_s = time.perf_counter() - started
                out.chunks += 1
                pieces.append(text)
    out.text = "".join(pieces)
    out.total_s = time.perf_counter() - started
    return out


async def _read_whole(kwargs: dict[str, Any]) -> _Stream:
    started = time.perf_counter()
    response = await _litellm().acompletion(**kwargs)
    text = response.choices[0].message.content or ""
    usage = getattr(response, "usage", None)
    return _Stream(text=text, usage=usage, total_s=time.perf_counter() - started)


def _cannot_stream(error: str) -> bool:
    """A 4xx that is not about the key, the model or the rate: the server refused the stream."""
    match = re.search(r"HTTP (\d{3})", error)
    return bool(match) and match.group(1) in {"400", "405", "415", "422", "501"}


def _cut_at_stop(text: str, stops: Sequence[str]) -> str:
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return text if cut < 0 else text[:cut]


# -- litellm, lazily --------------------------------------------------------------------------


def _litellm() -> Any:
    """litellm, imported on first use (~3 s) with its local price map and quiet."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True  # else it prints "Give Feedback" lines on every error
    return litellm


def _supported_params(litellm: Any, model: str, provider: str) -> frozenset[str] | None:
    try:
        supported = litellm.get_supported_openai_params(model=model, custom_llm_provider=provider)
    except Exception:
        return None
    return frozenset(supported) if supported else None


# -- the event loop thread -----------------------------------------------------------------------

_LOOP_LOCK = threading.Lock()
_LOOP: tuple[int, asyncio.AbstractEventLoop, threading.Thread] | None = None


def _submit(coro: Awaitable[T]) -> Any:
    """Run ``coro`` on evalkit's API event loop; returns a concurrent.futures.Future.

    One long-lived loop per process (not ``asyncio.run`` per call): litellm caches HTTP clients
    bound to the loop they were made on, and a closed loop would break them on the next call.
    """
    return asyncio.run_coroutine_threadsafe(coro, _loop())  # type: ignore[arg-type]


def _loop() -> asyncio.AbstractEventLoop:
    global _LOOP
    with _LOOP_LOCK:
        if _LOOP is None or _LOOP[0] != os.getpid() or not _LOOP[2].is_alive():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="evalkit-api", daemon=True)
            thread.start()
            _LOOP = (os.getpid(), loop, thread)
        return _LOOP[1]


def _drain(
    finished: queue.Queue[tuple[int, ApiReply] | None],
) -> list[tuple[int, ApiReply]] | None:
    """Block for one finished reply, then take every other one already waiting."""
    first = finished.get()
    if first is None:
        return None
    group = [first]
    while True:
        try:
            item = finished.get_nowait()
        except queue.Empty:
            return group
        if item is None:
            finished.put(None)  # keep the end marker for the next call
            return group
        group.append(item)
