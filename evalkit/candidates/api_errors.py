"""Failures of API requests: what went wrong, whether to retry, and one redacted line to show.

``classify`` reads the exception chain litellm raises (its own classes wrap the openai SDK's,
which wrap httpx's or aiohttp's) and turns it into a :class:`Failure` whose message says what
happened and what to do. Every message goes through ``redact``: providers echo keys in error
bodies, and litellm's exception texts can carry headers.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

STOP_ALL = {401: "authentication failed", 403: "permission denied", 404: "not found"}
"""Statuses that every other request would get too: the rest of the run is not sent."""


@dataclass(frozen=True)
class Failure:
    """A failed attempt, classified."""

    message: str
    retryable: bool
    stop_all: bool = False
    retry_after: float | None = None
    """Seconds the server asked to wait before the next attempt, if it said."""


def classify(
    exc: BaseException,
    *,
    where: str,
    secrets: Sequence[str],
    timeout_s: float,
    advice: Callable[[int], str],
) -> Failure:
    """What went wrong at ``where`` (a URL or a provider), whether to retry, and what to do;
    ``advice(status)`` says what to do about 401/403/404."""
    chain = _causes(exc)
    names = {type(e).__name__ for e in chain}
    status = getattr(exc, "status_code", None)
    detail = redact(_detail(exc), secrets)
    if isinstance(exc, TimeoutError) or "Timeout" in names or "APITimeoutError" in names:
        return Failure(
            f"timed out after {timeout_s:g} s; raise api.timeout_s or lower api.concurrency",
            retryable=True,
        )
    if "JSONDecodeError" in names:
        return Failure(
            f"the reply from {where} was not valid JSON; check that it is an "
            "OpenAI-compatible server",
            retryable=True,
        )
    if any(_is_transport_error(e) for e in chain):
        return Failure(
            f"could not reach {where} ({detail or 'connection error'}); check that the "
            "server is running and the URL",
            retryable=True,
        )
    if status == 429:
        return Failure(
            f"rate limited by {where} (HTTP 429: {detail}); lower api.concurrency or raise "
            "api.max_retries",
            retryable=True,
            retry_after=_retry_after(exc),
        )
    if isinstance(status, int) and status >= 500:
        return Failure(
            f"server error from {where} (HTTP {status}: {detail}); re-run later (finished "
            "examples are cached)",
            retryable=True,
            retry_after=_retry_after(exc),
        )
    if status in STOP_ALL:
        return Failure(
            f"{STOP_ALL[status]} at {where} (HTTP {status}: {detail}); {advice(status)}",
            retryable=False,
            stop_all=True,
        )
    if isinstance(status, int):
        return Failure(
            f"request rejected by {where} (HTTP {status}: {detail}); check the model name "
            "and the generation settings",
            retryable=False,
        )
    return Failure(f"request to {where} failed ({type(exc).__name__}: {detail})", retryable=False)


def with_attempts(message: str, attempts: int) -> str:
    """``message`` with "(after N attempts)" before its advice, when there was more than one."""
    if attempts <= 1:
        return message
    head, sep, tail = message.partition(";")
    return f"{head} (after {attempts} attempts){sep}{tail}"


_REDACTIONS = (
    (re.compile(r"(?i)(bearer\s+)[^\s'\",]+"), r"\1[redacted]"),
    (re.compile(r"(?i)(api[_-]?key['\"]?\s*[:=]\s*['\"]?)[^\s'\",}]+"), r"\1[redacted]"),
    (re.compile(r"\bsk-[A-Za-z0-9_\-*.]{6,}"), "sk-[redacted]"),
    (re.compile(r"(?i)(incorrect api key provided:\s*)[^\s.,]+"), r"\1[redacted]"),
)


def redact(text: str, secrets: Sequence[str] = ()) -> str:
    """``text`` without the given secrets and without anything shaped like a key or token."""
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, "[redacted]")
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


def _detail(exc: BaseException) -> str:
    """The provider's own words, without litellm's class-name prefixes, on one line."""
    message = str(getattr(exc, "message", None) or exc)
    message = re.sub(r"^(litellm\.\w+:\s*)?(\w+Error:\s*)?(\w+Exception\s*-\s*)?", "", message)
    return first_line(message)[:200]


def first_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else ""


def _causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


_TRANSPORT_MODULES = {"openai", "httpx", "httpcore", "aiohttp"}
_TRANSPORT_WORDS = ("Connect", "Disconnect", "ReadError", "WriteError", "Protocol")


def _is_transport_error(exc: BaseException) -> bool:
    """A refused, dropped or broken connection (not litellm's catch-all APIConnectionError,
    which it also raises for errors that have nothing to do with the network)."""
    if isinstance(exc, OSError):
        return True
    module = type(exc).__module__.split(".")[0]
    name = type(exc).__name__
    return module in _TRANSPORT_MODULES and any(word in name for word in _TRANSPORT_WORDS)


def _retry_after(exc: BaseException) -> float | None:
    """Seconds the server asked to wait (``retry-after-ms`` or ``Retry-After``), if it said."""
    headers = getattr(exc, "litellm_response_headers", None)
    response = getattr(exc, "response", None)
    if not headers and response is not None:
        headers = getattr(response, "headers", None)
    if not headers:
        return None
    with contextlib.suppress(TypeError, ValueError):
        if headers.get("retry-after-ms") is not None:
            return float(headers["retry-after-ms"]) / 1000.0
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        with contextlib.suppress(TypeError, ValueError):
            return parsedate_to_datetime(value).timestamp() - time.time()
    return None
