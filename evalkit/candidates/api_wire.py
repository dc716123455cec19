"""Chat completions on the wire (through litellm): the request an API candidate sends, and the
reply it reads back.

Decoding: ``max_new_tokens`` -> ``max_tokens``; ``temperature``; ``top_p`` and ``top_k`` when set;
``seed`` only when sampling; ``stop`` (the first 4 sent, all applied to the reply locally, as for
local models). Options a provider does not support per litellm (logprobs, response_format, seed)
are left out rather than failing the request.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from evalkit.candidates.base import Message
from evalkit.spec import GenerationSpec

MAX_STOPS = 4  # OpenAI's limit; every stop string is also applied locally


@dataclass(frozen=True)
class Call:
    """What litellm needs for every request of one candidate (holds the key: never logged)."""

    model: str
    kwargs: dict[str, Any]
    provider: str
    supported: frozenset[str] | None
    """OpenAI parameters litellm says the provider supports (None: unknown)."""
    secrets: tuple[str, ...]
    wire_model: str = ""
    """The model name the server sees (litellm's provider prefix removed)."""

    def headers(self) -> dict[str, str]:
        """HTTP headers for requests made without litellm (the key as a bearer token)."""
        key = self.kwargs.get("api_key")
        return {"Authorization": f"Bearer {key}"} if key else {}


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
class RequestOptions:
    """Per-call extras of ``complete_many``."""

    top_logprobs: int | None = None
    json_schema: dict[str, Any] | None = None
    stream: bool = False


@dataclass
class StreamRead:
    """A reply read for latency: its text, time to the first content chunk, usage, total."""

    text: str = ""
    ttft_s: float | None = None
    chunks: int = 0
    usage: Any = None
    total_s: float = 0.0


def request_kwargs(
    call: Call, messages: Sequence[Message], params: GenerationSpec, options: RequestOptions
) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        **call.kwargs,
        "model": call.model,
        "messages": [{"role": m.role, "content": m.content} for m in messages],
        "max_tokens": params.max_new_tokens,
        "temperature": params.temperature,
    }
    if params.top_p != 1.0:
        kwargs["top_p"] = params.top_p
    if params.top_k is not None:
        kwargs["top_k"] = params.top_k
    if params.stop:
        kwargs["stop"] = list(params.stop[:MAX_STOPS])
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


def parse_reply(request_id: str, response: Any, seconds: float) -> ApiReply:
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
        cost = litellm_module().completion_cost(completion_response=response)
    except Exception:  # ModelNotMappedError, missing usage: unknown, not zero
        return None
    return float(cost) if cost is not None else None


async def read_stream(kwargs: dict[str, Any]) -> StreamRead:
    started = time.perf_counter()
    out = StreamRead()
    pieces: list[str] = []
    response = await litellm_module().acompletion(**kwargs)
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


async def read_whole(kwargs: dict[str, Any]) -> StreamRead:
    started = time.perf_counter()
    response = await litellm_module().acompletion(**kwargs)
    text = response.choices[0].message.content or ""
    usage = getattr(response, "usage", None)
    return StreamRead(text=text, usage=usage, total_s=time.perf_counter() - started)


def cannot_stream(error: str) -> bool:
    """A 4xx that is not about the key, the model or the rate: the server refused the stream."""
    match = re.search(r"HTTP (\d{3})", error)
    return bool(match) and match.group(1) in {"400", "405", "415", "422", "501"}


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return text if cut < 0 else text[:cut]


# -- litellm, lazily --------------------------------------------------------------------------


def litellm_module() -> Any:
    """litellm, imported on first use (~3 s) with its local price map and quiet."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True  # else it prints "Give Feedback" lines on every error
    return litellm


def supported_params(litellm: Any, model: str, provider: str) -> frozenset[str] | None:
    try:
        supported = litellm.get_supported_openai_params(model=model, custom_llm_provider=provider)
    except Exception:
        return None
    return frozenset(supported) if supported else None
