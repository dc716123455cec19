"""A real OpenAI-compatible HTTP server on 127.0.0.1 for API candidate and judge tests.

It implements ``POST /v1/chat/completions`` (plain JSON and ``stream: true`` server-sent events)
with deterministic replies, usage counts, ``logprobs``/``top_logprobs`` and ``response_format``
(JSON object / JSON schema), plus fault injection a test controls, and counters it can assert on.

Replies (all deterministic, so a test can compute what to expect on its own):

- ``server.replies[prompt]`` (``prompt`` = the last user message) gives the reply text, or a
  :class:`Reply` with explicit per-token ``top_logprobs``; otherwise the reply echoes the prompt.
- Tokens are whitespace-delimited pieces (``tokens(text)``); ``max_tokens`` cuts the reply to that
  many tokens (``finish_reason: length``). Usage: ``prompt_tokens`` = words in all messages,
  ``completion_tokens`` = tokens in the reply.
- Without an explicit Reply, token ``i``'s logprob is ``-0.1 * (i + 1)`` and its alternatives are
  ``<alt1>``, ``<alt2>``... at one nat less each.
- ``response_format`` of type ``json_schema`` without a table entry answers a minimal instance of
  the schema (``schema_instance``); ``json_object`` answers ``{"echo": prompt}``.

Faults (:class:`Fault`): ``server.fail_next(*faults, prompt=None)`` queues faults consumed one per
request (by requests with that last user message when ``prompt`` is given);
``server.fail_always(fault, prompt=None, model=None)`` applies to every matching request. A fault
is an HTTP status (with ``Retry-After`` / ``retry-after-ms`` headers), a delay before answering (a
slow reply), a 200 with a body that is not JSON, or a dropped connection.

``server.respond(prompt, body)`` (a callable, when set) answers before the table, for replies that
depend on the whole request (re-ask rounds, seeds, which response a judge sees first);
``server.offer_logprobs = False`` plays an API that ignores ``logprobs``.

``server.routes[path]`` (a callable from the JSON body to ``(status, JSON reply)``) answers other
POST paths, e.g. a real model's ``/v1/completions`` and ``/tokenize`` (``model_server``); they
honour ``required_key`` and ``server.route_faults[path]`` (a list of faults consumed one per
request), and land in ``server.route_log`` as ``(path, authorization, body)``.

Every chat request is recorded in ``server.log`` (:class:`Record`); ``server.count(prompt=...)`` and
``server.max_in_flight`` are what tests assert on. ``server.required_key`` makes the server answer
401 to any other bearer token, echoing the wrong key in its message (as some providers do) so that
tests can check evalkit redacts it.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CHAT_PATHS = ("/v1/chat/completions", "/chat/completions")


def tokens(text: str) -> list[str]:
    """The server's tokenization: words with their trailing whitespace (they join to ``text``)."""
    return re.findall(r"\S+\s*|\s+", text)


def word_count(text: str) -> int:
    return len(text.split())


@dataclass(frozen=True)
class Reply:
    """A scripted reply. ``top_logprobs[i]`` maps token strings to logprobs at position ``i``;
    its first key is the token generated there (the keys' first entries must join to ``text``)."""

    text: str
    top_logprobs: list[dict[str, float]] | None = None

    def __post_init__(self) -> None:
        if self.top_logprobs is not None:
            chosen = "".join(next(iter(position)) for position in self.top_logprobs)
            if chosen != self.text:
                raise ValueError(f"top_logprobs tokens {chosen!r} do not spell {self.text!r}")


@dataclass(frozen=True)
class Fault:
    """What to do instead of (or before) a normal reply."""

    status: int | None = None
    """Answer with this HTTP status and an OpenAI-style error body."""
    retry_after: str | None = None
    """``Retry-After`` header (delta-seconds or an HTTP date)."""
    retry_after_ms: int | None = None
    """``retry-after-ms`` header (OpenAI's millisecond variant)."""
    delay_s: float = 0.0
    """Wait this long before answering (a slow reply; it still answers normally afterwards)."""
    malformed: bool = False
    """Answer 200 with a body that is not JSON."""
    drop: bool = False
    """Close the connection without answering."""
    message: str = ""


@dataclass
class Record:
    """One request as the server saw it."""

    prompt: str
    model: str
    authorization: str | None
    body: dict[str, Any]
    stream: bool
    started: float
    ended: float = 0.0
    status: int = 0
    fault: Fault | None = None


@dataclass
class _Rule:
    fault: Fault
    prompt: str | None = None
    model: str | None = None

    def matches(self, prompt: str, model: str) -> bool:
        return (self.prompt is None or self.prompt == prompt) and (
            self.model is None or self.model == model
        )


@dataclass
class _State:
    replies: dict[str, str | Reply] = field(default_factory=dict)
    queued: deque[_Rule] = field(default_factory=deque)
    always: list[_Rule] = field(default_factory=list)
    log: list[Record] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0


class OpenAIServer:
    """Start with ``with OpenAIServer() as server:``; ``server.base`` is the ``/v1`` URL."""

    def __init__(self) -> None:
        self._state = _State()
        self._lock = threading.Lock()
        self.stopping = threading.Event()
        self.delay_s = 0.0
        """Every reply waits this long before answering (to overlap concurrent requests)."""
        self.stream_delay_s = 0.0
        """Pause between streamed chunks."""
        self.refuse_stream = False
        """Answer 400 to ``stream: true`` (a server that cannot stream)."""
        self.required_key: str | None = None
        self.offer_logprobs = True
        """False: answer as an API without log-probabilities (ignores ``logprobs: true``)."""
        self.respond: Callable[[str, dict[str, Any]], str | Reply | None] | None = None
        """Called with (last user message, request body) before the ``replies`` table; a
        non-None result is the reply (for replies that depend on the whole request)."""
        self.routes: dict[str, Callable[[dict[str, Any]], tuple[int, dict[str, Any]]]] = {}
        self.route_faults: dict[str, list[Fault]] = {}
        self.route_log: list[tuple[str, str | None, dict[str, Any]]] = []
        self._httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    # -- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> OpenAIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- scripting --------------------------------------------------------------------------

    @property
    def replies(self) -> dict[str, str | Reply]:
        return self._state.replies

    def fail_next(self, *faults: Fault, prompt: str | None = None) -> None:
        with self._lock:
            self._state.queued.extend(_Rule(f, prompt=prompt) for f in faults)

    def fail_always(
        self, fault: Fault, *, prompt: str | None = None, model: str | None = None
    ) -> None:
        with self._lock:
            self._state.always.append(_Rule(fault, prompt=prompt, model=model))

    def reset(self) -> None:
        """Forget scripted faults and recorded requests (replies stay)."""
        with self._lock:
            self._state.queued.clear()
            self._state.always.clear()
            self._state.log.clear()
            self._state.max_in_flight = 0

    # -- observations -----------------------------------------------------------------------

    @property
    def log(self) -> list[Record]:
        with self._lock:
            return list(self._state.log)

    @property
    def max_in_flight(self) -> int:
        return self._state.max_in_flight

    def count(self, prompt: str | None = None) -> int:
        return sum(1 for r in self.log if prompt is None or r.prompt == prompt)

    # -- used by the handler ----------------------------------------------------------------

    def _begin(self, record: Record) -> Fault | None:
        with self._lock:
            state = self._state
            state.log.append(record)
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
            for rule in state.queued:
                if rule.matches(record.prompt, record.model):
                    state.queued.remove(rule)
                    return rule.fault
            return next(
                (r.fault for r in state.always if r.matches(record.prompt, record.model)), None
            )

    def _end(self, record: Record, status: int) -> None:
        with self._lock:
            self._state.in_flight -= 1
            record.ended = time.perf_counter()
            record.status = status

    def reply_for(self, prompt: str, body: dict[str, Any]) -> Reply:
        computed = self.respond(prompt, body) if self.respond is not None else None
        if computed is not None:
            return computed if isinstance(computed, Reply) else Reply(computed)
        scripted = self._state.replies.get(prompt)
        if scripted is not None:
            return scripted if isinstance(scripted, Reply) else Reply(scripted)
        response_format = body.get("response_format") or {}
        if response_format.get("type") == "json_schema":
            schema = (response_format.get("json_schema") or {}).get("schema") or {}
            return Reply(json.dumps(schema_instance(schema)))
        if response_format.get("type") == "json_object":
            return Reply(json.dumps({"echo": prompt}))
        return Reply(prompt)


def schema_instance(schema: dict[str, Any]) -> Any:
    """A minimal value that satisfies a simple JSON schema (enums, defaults, objects, arrays)."""
    if "enum" in schema:
        return schema["enum"][0]
    if "default" in schema:
        return schema["default"]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = kind[0]
    if kind == "object":
        return {name: schema_instance(sub) for name, sub in schema.get("properties", {}).items()}
    if kind == "array":
        return []
    if kind in ("integer", "number"):
        return schema.get("minimum", 0)
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return ""


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    owner: OpenAIServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read the log
        return

    def do_POST(self) -> None:
        owner = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path.split("?")[0] in owner.routes:
            self._route(owner, self.path.split("?")[0], raw)
            return
        if self.path.split("?")[0] not in CHAT_PATHS:
            self._json(404, _error(f"no route {self.path}", "not_found"))
            return
        try:
            body = json.loads(raw)
        except ValueError:
            self._json(400, _error("request body is not JSON", "invalid_request_error"))
            return
        record = Record(
            prompt=_last_user(body.get("messages") or []),
            model=str(body.get("model", "")),
            authorization=self.headers.get("Authorization"),
            body=body,
            stream=bool(body.get("stream")),
            started=time.perf_counter(),
        )
        fault = owner._begin(record)
        record.fault = fault
        status = 0
        try:
            status = self._answer(owner, record, fault)
        finally:
            owner._end(record, status)

    def _route(self, owner: OpenAIServer, path: str, raw: bytes) -> None:
        try:
            body = json.loads(raw)
        except ValueError:
            self._json(400, _error("request body is not JSON", "invalid_request_error"))
            return
        authorization = self.headers.get("Authorization")
        with owner._lock:
            owner.route_log.append((path, authorization, body))
            faults = owner.route_faults.get(path) or []
            fault = faults.pop(0) if faults else None
        if fault is not None and fault.status is not None:
            self._fault_status(fault)
            return
        given = (authorization or "").removeprefix("Bearer ")
        if owner.required_key is not None and given != owner.required_key:
            message = f"Incorrect API key provided: {given}. You can find your API key at ..."
            self._json(401, _error(message, "invalid_request_error", "invalid_api_key"))
            return
        status, payload = owner.routes[path](body)
        self._json(status, payload)

    def _answer(self, owner: OpenAIServer, record: Record, fault: Fault | None) -> int:
        delay = owner.delay_s + (fault.delay_s if fault else 0.0)
        if delay and owner.stopping.wait(delay):
            return 0
        if fault is not None and fault.drop:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return 0
        if fault is not None and fault.status is not None:
            return self._fault_status(fault)
        if fault is not None and fault.malformed:
            self._raw(200, b'{"id": "broken", "choices": [{"message": ', "application/json")
            return 200
        if owner.required_key is not None:
            given = (record.authorization or "").removeprefix("Bearer ")
            if given != owner.required_key:
                message = f"Incorrect API key provided: {given}. You can find your API key at ..."
                self._json(401, _error(message, "invalid_request_error", "invalid_api_key"))
                return 401
        if record.stream:
            if owner.refuse_stream:
                self._json(400, _error("streaming is not supported", "invalid_request_error"))
                return 400
            self._stream(owner, record)
        else:
            self._json(200, _completion(owner, record))
        return 200

    def _fault_status(self, fault: Fault) -> int:
        assert fault.status is not None
        headers = {}
        if fault.retry_after is not None:
            headers["Retry-After"] = fault.retry_after
        if fault.retry_after_ms is not None:
            headers["retry-after-ms"] = str(fault.retry_after_ms)
        kind = "rate_limit_error" if fault.status == 429 else "server_error"
        if 400 <= fault.status < 500 and fault.status != 429:
            kind = "invalid_request_error"
        message = fault.message or f"injected fault {fault.status}"
        self._json(fault.status, _error(message, kind), headers)
        return fault.status

    def _stream(self, owner: OpenAIServer, record: Record) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        reply, pieces, finish = _generated(owner, record)
        for index, piece in enumerate(pieces):
            if index and owner.stream_delay_s and owner.stopping.wait(owner.stream_delay_s):
                return
            delta: dict[str, Any] = {"content": piece}
            if index == 0:
                delta["role"] = "assistant"
            choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": None}
            if record.body.get("logprobs") and owner.offer_logprobs:
                choice["logprobs"] = {"content": [_logprob_entry(reply, index, record.body)]}
            self._event(_chunk(record, [choice]))
        self._event(_chunk(record, [{"index": 0, "delta": {}, "finish_reason": finish}]))
        if (record.body.get("stream_options") or {}).get("include_usage"):
            self._event(_chunk(record, [], usage=_usage(record, pieces)))
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    def _event(self, payload: dict[str, Any]) -> None:
        self.wfile.write(b"data: " + json.dumps(payload).encode() + b"\n\n")
        self.wfile.flush()

    def _json(
        self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        self._raw(status, json.dumps(payload).encode(), "application/json", headers)

    def _raw(
        self,
        status: int,
        data: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()


def _last_user(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return _text(message.get("content"))
    return ""


def _text(content: Any) -> str:
    if isinstance(content, list):  # content parts
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content or "")


def _error(message: str, kind: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _generated(owner: OpenAIServer, record: Record) -> tuple[Reply, list[str], str]:
    """The reply, its tokens after ``max_tokens``, and the finish reason."""
    reply = owner.reply_for(record.prompt, record.body)
    pieces = (
        [next(iter(p)) for p in reply.top_logprobs] if reply.top_logprobs else tokens(reply.text)
    )
    limit = record.body.get("max_completion_tokens") or record.body.get("max_tokens")
    if limit is not None and len(pieces) > int(limit):
        return reply, pieces[: int(limit)], "length"
    return reply, pieces, "stop"


def _usage(record: Record, pieces: list[str]) -> dict[str, int]:
    prompt = sum(word_count(_text(m.get("content"))) for m in record.body.get("messages") or [])
    return {
        "prompt_tokens": prompt,
        "completion_tokens": len(pieces),
        "total_tokens": prompt + len(pieces),
    }


def default_top_logprobs(index: int, token: str, k: int) -> dict[str, float]:
    """The logprobs the server reports at position ``index`` without a scripted Reply."""
    chosen = -0.1 * (index + 1)
    alternatives = {f"<alt{j}>": chosen - j for j in range(1, k)}
    return {token: chosen, **alternatives}


def _logprob_entry(reply: Reply, index: int, body: dict[str, Any]) -> dict[str, Any]:
    k = int(body.get("top_logprobs") or 1)
    if reply.top_logprobs is not None:
        position = dict(list(reply.top_logprobs[index].items())[: max(k, 1)])
    else:
        position = default_top_logprobs(index, tokens(reply.text)[index], max(k, 1))
    token, logprob = next(iter(position.items()))
    top = [
        {"token": t, "logprob": lp, "bytes": list(t.encode())}
        for t, lp in position.items()
        if body.get("top_logprobs")
    ]
    return {"token": token, "logprob": logprob, "bytes": list(token.encode()), "top_logprobs": top}


def _completion(owner: OpenAIServer, record: Record) -> dict[str, Any]:
    reply, pieces, finish = _generated(owner, record)
    choice: dict[str, Any] = {
        "index": 0,
        "message": {"role": "assistant", "content": "".join(pieces)},
        "finish_reason": finish,
        "logprobs": None,
    }
    if record.body.get("logprobs") and owner.offer_logprobs:
        choice["logprobs"] = {
            "content": [_logprob_entry(reply, i, record.body) for i in range(len(pieces))]
        }
    return {
        "id": f"chatcmpl-{len(owner.log)}",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": record.model,
        "choices": [choice],
        "usage": _usage(record, pieces),
    }


def _chunk(
    record: Record, choices: list[dict[str, Any]], usage: dict[str, int] | None = None
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "id": "chatcmpl-stream",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": record.model,
        "choices": choices,
    }
    if usage is not None:
        payload["usage"] = usage
    return payload
