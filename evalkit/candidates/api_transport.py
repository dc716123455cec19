"""How an API candidate reaches its API: the key, the provider, retries, and the event loop.

Keys: read from the variable ``api.key_env`` names; without ``key_env``, litellm reads its
standard variables (``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``, ...) -- except with ``api.base``,
where no provider key is sent unless ``key_env`` says so (a placeholder goes instead), so a
vendor key never reaches a third-party server by accident. The key lives in ``Call`` only; every
error text is redacted (``api_errors``) before it leaves.

Retries: 429, 5xx, timeouts, dropped connections and replies that are not JSON are retried up to
``api.max_retries`` times with exponential backoff and jitter (``Backoff``), waiting what
``Retry-After``/``retry-after-ms`` asks when the server says. Other 4xx are not retried; 401, 403
and 404 also stop sending this run's remaining requests (they would all fail the same way).

Requests run on one long-lived background event loop (``submit``): litellm caches HTTP clients
bound to the loop they were made on, and a closed loop would break them on the next call.
"""

from __future__ import annotations

import asyncio
import os
import queue
import random
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from evalkit.candidates.api_errors import classify, first_line, redact, with_attempts
from evalkit.candidates.api_wire import Call, litellm_module, supported_params
from evalkit.errors import CandidateError
from evalkit.spec import ApiSpec, public_url

PLACEHOLDER_KEY = "EMPTY"
"""Sent to an ``api.base`` server when no ``key_env`` is given (vLLM's convention)."""

T = TypeVar("T")


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


@dataclass
class Run:
    """Shared state of one batch of requests (created inside the event loop)."""

    semaphore: asyncio.Semaphore
    stop_reason: str | None = None


@dataclass
class Stats:
    requests: int = 0
    retries: int = 0
    errors: int = 0
    cost: float | None = None
    streaming: bool | None = None


class ApiTransport:
    """One candidate's route to its API: resolves the key and provider once (importing
    litellm), runs attempts with retries, and counts requests, retries and cost."""

    def __init__(self, name: str, model: str, api: ApiSpec, backoff: Backoff | None) -> None:
        self.name = name
        self.model = model
        self.api = api
        self.backoff = backoff or Backoff()
        self.stats = Stats()
        self.resolved: Call | None = None

    def call(self) -> Call:
        if self.resolved is None:
            self.resolved = self._resolve()
        return self.resolved

    def where(self, call: Call) -> str:
        return public_url(self.api.base) if self.api.base else call.provider

    async def with_retries(
        self, call: Call, run: Run, attempt: Callable[[], Awaitable[T]]
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
                    where=self.where(call),
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

    def add_cost(self, cost: float | None) -> None:
        if cost is not None:
            self.stats.cost = (self.stats.cost or 0.0) + cost

    # -- configuration ----------------------------------------------------------------------

    def _resolve(self) -> Call:
        litellm = litellm_module()
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
            wire_model, provider, _, _ = litellm.get_llm_provider(
                model, custom_llm_provider=provider, api_base=self.api.base
            )
        except Exception as exc:
            raise CandidateError(
                f"candidate '{self.name}': litellm does not know the provider of '{model}' "
                f"({redact(first_line(str(exc)), self._secrets(key))}); write it as "
                "provider/model (e.g. openai/gpt-4o-mini)"
                " or give api.base for an OpenAI-compatible server"
            ) from None
        return Call(
            model=model,
            kwargs=kwargs,
            provider=str(provider),
            supported=supported_params(litellm, model, str(provider)),
            secrets=self._secrets(key),
            wire_model=str(wire_model),
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


# -- the event loop thread -----------------------------------------------------------------------

_LOOP_LOCK = threading.Lock()
_LOOP: tuple[int, asyncio.AbstractEventLoop, threading.Thread] | None = None


def submit(coro: Awaitable[T]) -> Any:
    """Run ``coro`` on evalkit's API event loop; returns a concurrent.futures.Future."""
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


def drain(finished: queue.Queue[T | None]) -> list[T] | None:
    """Block for one finished item, then take every other one already waiting; None once the
    end marker (None) comes first."""
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
