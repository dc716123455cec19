"""The user's own pipeline as a candidate: ``call: myapp.pipeline:answer``.

The function (sync or ``async``) is called with the example's fields as keyword arguments (only
those it declares, unless it takes ``**fields``) and returns the answer as a string, or a mapping
``{output, context, tokens, cost}``:

- ``output``: the answer (a string, required);
- ``context``: what the pipeline retrieved, a list of strings or of ``{text, id, doc_id,
  score}`` mappings, which context metrics (``faithfulness``, ``recall_at_k``...) read;
- ``tokens``: output tokens (an int) or ``{prompt, output}``;
- ``cost``: USD (a number).

Calls run concurrently (``call.concurrency`` in flight; sync functions each in a daemon thread,
``async`` ones on one event loop in a background thread), each limited to ``call.timeout_s``.
An exception, a timeout or a malformed return value becomes that example's
``Generation.error`` (one line, with the place in the user's code), never a score, and is not
cached. A sync call that times out keeps running in its thread until it returns (Python cannot
stop a thread); being a daemon thread, it never holds up the end of the session.

Answers are cached by the fingerprint (the function's source hash and ``version:``, see
evalkit.candidates.call_target) and the example's fields; decoding settings do not apply.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import os
import queue
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from evalkit._reading import text_problem
from evalkit.candidates.base import Generation, GenerationRequest, RetrievedChunk
from evalkit.candidates.call_target import CallTarget, import_target
from evalkit.spec import GenerationSpec

RESULT_KEYS = frozenset({"output", "context", "tokens", "cost"})
LIBRARY_PARTS = ("site-packages", "dist-packages", f"{os.sep}lib{os.sep}python")


class BadResult(ValueError):
    """The function returned something that is not an answer; the message says what."""


class CallCandidate:
    """A function as a candidate: ``target`` is a resolved ``call:`` target (suites) or the
    function itself (the plain-Python route, evalkit.testing)."""

    def __init__(
        self,
        name: str,
        target: CallTarget | Callable[..., Any],
        *,
        version: str | None = None,
        concurrency: int = 4,
        timeout_s: float = 60.0,
    ) -> None:
        self.name = name
        self.version = version
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        if isinstance(target, CallTarget):
            self._target: CallTarget | None = target
            self._function: Callable[..., Any] | None = None
            self.label, self.source_sha256 = target.target, target.source_sha256
        else:
            self._target, self._function = None, target
            self.label = f"{target.__module__}:{getattr(target, '__qualname__', repr(target))}"
            self.source_sha256 = _source_hash(target)
        self.counts = {"calls": 0, "errors": 0, "timeouts": 0}

    def answers_from_fields(self) -> bool:
        return True

    def fingerprint(self) -> dict[str, Any]:
        return {"call": self.label, "source_sha256": self.source_sha256, "version": self.version}

    def function(self) -> Callable[..., Any]:
        """The function, imported on first use (a fully cached run never imports it)."""
        if self._function is None:
            assert self._target is not None
            self._function = import_target(self._target)
        return self._function

    def generate(
        self, requests: Sequence[GenerationRequest], params: GenerationSpec
    ) -> Iterator[list[Generation]]:
        """Yield answers as they finish (whatever has landed since the last yield)."""
        function = self.function()
        landed: queue.Queue[Any] = queue.Queue()
        thread = threading.Thread(
            target=self._drive_all, args=(function, list(requests), landed), daemon=True
        )
        thread.start()
        remaining = len(requests)
        while remaining:
            batch = [landed.get()]
            while True:
                try:
                    batch.append(landed.get_nowait())
                except queue.Empty:
                    break
            for item in batch:
                if isinstance(item, BaseException):
                    raise item
            done = [g for g in batch if isinstance(g, Generation)]
            remaining -= len(done)
            yield done
        thread.join()

    def _drive_all(
        self, function: Callable[..., Any], requests: list[GenerationRequest], landed: queue.Queue
    ) -> None:
        try:
            asyncio.run(self._drive(function, requests, landed.put))
        except BaseException as exc:  # a bug here must not leave generate() waiting forever
            landed.put(exc)

    async def _drive(
        self,
        function: Callable[..., Any],
        requests: list[GenerationRequest],
        put: Callable[[Generation], None],
    ) -> None:
        slots = asyncio.Semaphore(self.concurrency)
        parameters = _parameters(function)

        async def one(request: GenerationRequest) -> None:
            async with slots:
                put(await self._answer(function, parameters, request))

        await asyncio.gather(*(one(r) for r in requests))

    async def _answer(
        self,
        function: Callable[..., Any],
        parameters: tuple[set[str] | None, list[str]],
        request: GenerationRequest,
    ) -> Generation:
        self.counts["calls"] += 1
        started = time.perf_counter()
        try:
            kwargs = _arguments(parameters, request.fields)
            value = await asyncio.wait_for(_invoke(function, kwargs), self.timeout_s)
            return to_generation(request.id, value, time.perf_counter() - started)
        except BadResult as exc:
            error = f"{self.label} {exc}"
        except Exception as exc:
            late = isinstance(exc, TimeoutError) and time.perf_counter() - started >= self.timeout_s
            if late:  # ours (wait_for), not a TimeoutError the function raised itself
                self.counts["timeouts"] += 1
                error = f"{self.label} timed out after {self.timeout_s:g} s (call.timeout_s)"
            else:
                error = f"{self.label} raised {_describe(exc)}"
        self.counts["errors"] += 1
        return Generation(id=request.id, output="", error=error)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "call",
            "call": self.label,
            "version": self.version,
            "concurrency": self.concurrency,
            "timeout_s": self.timeout_s,
            **self.counts,
        }

    def close(self) -> None:
        """Nothing to free: the module stays imported, as any imported module does."""


def _source_hash(function: Callable[..., Any]) -> str:
    """The function's source (without it, e.g. a builtin or a REPL function, its repr)."""
    try:
        text = inspect.getsource(function)
    except (OSError, TypeError):
        text = repr(function)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _parameters(function: Callable[..., Any]) -> tuple[set[str] | None, list[str]]:
    """(names the function accepts by keyword, None for ``**kwargs``; names it requires)."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return None, []
    accepted: set[str] | None = set()
    required = []
    for param in signature.parameters.values():
        if param.kind is param.VAR_KEYWORD:
            accepted = None
        elif param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
            if accepted is not None:
                accepted.add(param.name)
            if param.default is param.empty:
                required.append(param.name)
    return accepted, required


def _arguments(
    parameters: tuple[set[str] | None, list[str]], fields: Mapping[str, Any]
) -> dict[str, Any]:
    accepted, required = parameters
    missing = [name for name in required if name not in fields]
    if missing:
        raise BadResult(
            f"needs the field '{missing[0]}', which this example lacks (it has "
            f"{', '.join(map(str, fields)) or 'no fields'})"
        )
    return dict(fields) if accepted is None else {k: v for k, v in fields.items() if k in accepted}


async def _invoke(function: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """Await an async function here; run a sync one in its own daemon thread (so a call that
    never returns cannot block the end of the session) and await what it returns if awaitable."""
    if inspect.iscoroutinefunction(function):
        return await function(**kwargs)
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(value: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)

    def work() -> None:
        try:
            outcome: tuple[Any, BaseException | None] = (function(**kwargs), None)
        except BaseException as exc:
            outcome = (None, exc)
        with contextlib.suppress(RuntimeError):  # the loop closed: the call had timed out
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=work, daemon=True, name="evalkit-call").start()
    value = await future
    return await value if inspect.isawaitable(value) else value


def _describe(exc: BaseException) -> str:
    """``ValueError: message (pipeline.py:12)``: the exception and the line that raised it."""
    message = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    frames = traceback.extract_tb(exc.__traceback__)
    # The deepest frame of the user's code, not of a library it called.
    own = [f for f in frames if not any(part in f.filename for part in LIBRARY_PARTS)]
    frame = (own or frames or [None])[-1]
    place = f" ({os.path.basename(frame.filename)}:{frame.lineno})" if frame else ""
    return f"{type(exc).__name__}{f': {message}' if message else ''}{place}"


def to_generation(example_id: str, value: Any, seconds: float) -> Generation:
    """A returned value as a Generation; BadResult says what is wrong with it."""
    if isinstance(value, str):
        value = {"output": value}
    if not isinstance(value, Mapping):
        raise BadResult(
            f"returned {type(value).__name__}; return a str or a dict with 'output' (and "
            "optionally 'context', 'tokens', 'cost')"
        )
    unknown = sorted(set(map(str, value)) - RESULT_KEYS)
    if unknown:
        raise BadResult(f"returned unknown keys {unknown}; allowed: {sorted(RESULT_KEYS)}")
    output = value.get("output")
    if not isinstance(output, str):
        raise BadResult(f"returned an 'output' of type {type(output).__name__}; it must be a str")
    if problem := text_problem(output):
        raise BadResult(f"returned an output that {problem}")
    n_prompt, n_output = _tokens(value.get("tokens"))
    cost = value.get("cost")
    if cost is not None and (isinstance(cost, bool) or not isinstance(cost, int | float)):
        raise BadResult(f"returned a 'cost' of type {type(cost).__name__}; give USD as a number")
    return Generation(
        id=example_id,
        output=output,
        n_prompt_tokens=n_prompt,
        n_output_tokens=n_output,
        seconds=seconds,
        cost=None if cost is None else float(cost),
        context=_context(value.get("context")),
    )


def _tokens(raw: Any) -> tuple[int, int]:
    if raw is None:
        return 0, 0
    if isinstance(raw, int) and not isinstance(raw, bool):
        return 0, raw
    if isinstance(raw, Mapping) and set(raw) <= {"prompt", "output"}:
        counts = (raw.get("prompt", 0), raw.get("output", 0))
        if all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
            return counts
    raise BadResult("returned 'tokens' that are neither an int nor {prompt: int, output: int}")


def _context(raw: Any) -> tuple[RetrievedChunk, ...]:
    if raw is None:
        return ()
    if isinstance(raw, str) or not isinstance(raw, Sequence):
        raise BadResult("returned a 'context' that is not a list of texts or {text, id, score}")
    chunks = []
    for index, item in enumerate(raw):
        item = {"text": item} if isinstance(item, str) else item
        text = item.get("text") if isinstance(item, Mapping) else None
        if not isinstance(text, str) or text_problem(text):
            raise BadResult(f"returned context item {index} without a valid 'text'")
        chunk_id = str(item.get("id", f"context#{index}"))
        score = item.get("score", 0.0)
        chunks.append(
            RetrievedChunk(
                id=chunk_id,
                doc_id=str(item.get("doc_id", chunk_id.split("#", 1)[0])),
                score=float(score) if isinstance(score, int | float) else 0.0,
                text=text,
            )
        )
    return tuple(chunks)
