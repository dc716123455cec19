"""Prompt rendering: the suite's jinja2 templates over an example's fields.

StrictUndefined makes a template variable the example lacks an error at collection (naming the
example's file and line) instead of an empty string silently sent to the model. The tokenizer's
chat template is applied later, by the candidate, because it belongs to the model. A candidate's
own templates and few-shot examples (``PromptVariant``, from evalkit.variants) render the same
way; its shots become chat turns (a user message and the reference as the assistant's answer)
or one text before the prompt.

Suite files arrive in pull requests, so templates are untrusted: they render in jinja2's
SandboxedEnvironment (no ``__globals__``/``os`` escape), and their work is bounded (range
lengths summed over a render, string/list repetition, integer powers, output length and wall
time), so a hostile template fails with one clear message instead of hanging the collection.
pytest's own conftest.py is the place for code.
"""

from __future__ import annotations

import contextvars
import functools
import operator
import time
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import jinja2
import jinja2.meta
from jinja2.sandbox import SandboxedEnvironment

from evalkit.candidates.base import GenerationRequest, Message, RetrievedChunk
from evalkit.errors import SpecError
from evalkit.golden import Example
from evalkit.shots import draw_shots
from evalkit.spec import LoadedSuite
from evalkit.variants import PromptVariant, Template, suite_variant

MAX_RANGE_ITEMS = 100_000
"""Items of every ``range()`` in one render together (nested loops multiply, so they add up)."""
MAX_PROMPT_CHARS = 1_000_000
"""Characters one rendered template may produce (and any string or list it builds)."""
MAX_RENDER_SECONDS = 5.0
MAX_INT_ARGUMENT = 1_000_000
"""Largest integer a filter (``center``, ``indent``, ``truncate``...) may receive."""


class TemplateLimit(Exception):
    """A template exceeded a bound on rendering work; the message says which."""


class _Budget:
    def __init__(self) -> None:
        self.range_items = 0
        self.deadline = time.monotonic() + MAX_RENDER_SECONDS

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise TemplateLimit(f"rendering took over {MAX_RENDER_SECONDS:g} s")


_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("budget", default=None)


def _budget() -> _Budget:
    budget = _BUDGET.get()
    if budget is None:  # rendered outside render_text (a test compiling directly)
        budget = _Budget()
        _BUDGET.set(budget)
    return budget


def _bounded_range(*args: int) -> range:
    items = range(*args)
    budget = _budget()
    budget.range_items += len(items)
    if budget.range_items > MAX_RANGE_ITEMS:
        raise TemplateLimit(
            f"loops over range() add up to more than {MAX_RANGE_ITEMS:,} items in one render"
        )
    budget.check_time()
    return items


def _check_size(value: Any) -> Any:
    if isinstance(value, str | list | tuple | bytes) and len(value) > MAX_PROMPT_CHARS:
        raise TemplateLimit(f"a value of over {MAX_PROMPT_CHARS:,} items or characters")
    return value


def _bounded_args(filter_fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(filter_fn)  # keeps jinja_pass_arg (pass_context/pass_environment)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        for value in (*args, *kwargs.values()):
            if isinstance(value, int) and abs(value) > MAX_INT_ARGUMENT:
                raise TemplateLimit(f"a filter argument of {value} (at most {MAX_INT_ARGUMENT:,})")
        return _check_size(filter_fn(*args, **kwargs))

    return wrapper


class _PromptEnvironment(SandboxedEnvironment):
    """The sandbox plus bounds on the operators that build huge values from small input."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: jinja2.runtime.Context, op: str, left: Any, right: Any) -> Any:
        if op == "**" and isinstance(right, int):
            bits = left.bit_length() if isinstance(left, int) else 64
            if abs(right) > 64 or bits * abs(right) > 65_536:
                raise TemplateLimit(f"a power of {right} (results up to 65,536 bits)")
        if op == "*":
            for seq, times in ((left, right), (right, left)):
                sized = isinstance(seq, str | list | tuple) and isinstance(times, int)
                if sized and len(seq) * times > MAX_PROMPT_CHARS:
                    raise TemplateLimit(f"a value of over {MAX_PROMPT_CHARS:,} characters")
        return _check_size({"*": operator.mul, "**": operator.pow}[op](left, right))

    def call(self, context: Any, obj: Any, *args: Any, **kwargs: Any) -> Any:
        for value in (*args, *kwargs.values()) if obj is not _bounded_range else ():
            if isinstance(value, int) and abs(value) > MAX_INT_ARGUMENT:
                raise TemplateLimit(f"a call argument of {value} (at most {MAX_INT_ARGUMENT:,})")
        return _check_size(super().call(context, obj, *args, **kwargs))


_ENV = _PromptEnvironment(
    undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True
)
_ENV.globals["range"] = _bounded_range
_ENV.filters = {name: _bounded_args(fn) for name, fn in _ENV.filters.items()}


@lru_cache(maxsize=256)
def _compile(source: str) -> jinja2.Template:
    return _ENV.from_string(source)


def compile_template(source: str, suite: LoadedSuite, field: str) -> jinja2.Template:
    """A template written in the suite file at ``field``."""
    return compile_at(Template(source, field, suite.path, suite.line_of(*field.split("."))))


def compile_at(template: Template) -> jinja2.Template:
    """Compile a template; a syntax error names its file, line and field."""
    try:
        return _compile(template.source)
    except jinja2.TemplateSyntaxError as exc:
        raise SpecError(
            f"bad jinja2 template: {exc.message}",
            path=template.path,
            line=exc.lineno if template.in_file else template.line,
            field=template.field,
        ) from None
    except (RecursionError, ValueError, OverflowError) as exc:
        raise SpecError(
            f"the template cannot be compiled ({type(exc).__name__}: {exc})", path=template.path,
            line=template.line, field=template.field,
        ) from None  # fmt: skip


def render_text(template: jinja2.Template, fields: dict[str, Any]) -> str:
    """Render with the work bounds; chunks are counted as they come so output is bounded too."""
    token = _BUDGET.set(_Budget())
    try:
        parts: list[str] = []
        size = 0
        for chunk in template.generate(**fields):
            size += len(chunk)
            if size > MAX_PROMPT_CHARS:
                raise TemplateLimit(f"the output passed {MAX_PROMPT_CHARS:,} characters")
            _budget().check_time()
            parts.append(chunk)
        return "".join(parts)
    finally:
        _BUDGET.reset(token)


CONTEXT_VARIABLES = ("context", "chunks")
"""Template variables of a RAG candidate's retrieved chunks (see ``context_variables``)."""


def context_variables(retrieved: Sequence[RetrievedChunk]) -> dict[str, Any]:
    """``context``: the chunks as one text, best first, each headed by its document id in
    brackets and separated by a blank line; ``chunks``: the same as a list of mappings with
    ``id``, ``doc_id``, ``score`` and ``text``, for templates that lay them out themselves.
    Both are empty for candidates without retrieval, so ``{% if context %}`` works."""
    return {
        "context": "\n\n".join(f"[{c.doc_id}]\n{c.text.strip()}" for c in retrieved),
        "chunks": [
            {"id": c.id, "doc_id": c.doc_id, "score": c.score, "text": c.text} for c in retrieved
        ],
    }


@lru_cache(maxsize=256)
def template_variables(source: str) -> frozenset[str]:
    """The variables a template reads (for collection-time checks)."""
    return frozenset(jinja2.meta.find_undeclared_variables(_ENV.parse(source)))


def render_request(
    suite: LoadedSuite,
    example: Example,
    retrieved: Sequence[RetrievedChunk] = (),
    variant: PromptVariant | None = None,
) -> GenerationRequest:
    """The chat messages for one example: optional system message, the shots as chat turns
    (``shots_as: turns``), then the user prompt. ``retrieved`` chunks (RAG candidates) fill
    ``context`` and ``chunks``; without them those variables are empty, unless the example has
    fields of those names. ``variant`` is the candidate's prompt (default: the suite's)."""
    variant = variant or suite_variant(suite)
    turns, inline = _shots(variant, example)
    values = (
        {**example.fields, **context_variables(retrieved)}
        if retrieved
        else {**context_variables(()), **example.fields}
    )
    values = {**values, "shots": inline} if inline else {"shots": "", **values}
    messages = []
    if variant.system is not None:
        messages.append(Message("system", _render(variant.system, example, values)))
    messages.extend(turns)
    user = _render(variant.prompt, example, values)
    if inline and "shots" not in template_variables(variant.prompt.source):
        user = f"{inline}\n\n{user}"
    messages.append(Message("user", user))
    return GenerationRequest(
        id=example.id, messages=tuple(messages), retrieved=tuple(retrieved), fields=example.fields
    )


def render_user(variant: PromptVariant, example: Example) -> str:
    """The user prompt alone, without context or shots (a shot's question; a search query)."""
    values = {**context_variables(()), "shots": "", **example.fields}
    return _render(variant.prompt, example, values)


def _shots(variant: PromptVariant, example: Example) -> tuple[list[Message], str]:
    """The example's shots as chat turns, or as one text (``shots_as: inline``)."""
    if not variant.shots:
        return [], ""
    if variant.shots_as == "inline" and "shots" in example.fields:
        raise SpecError(
            "this example has a field 'shots', which an inline few-shot candidate fills with its "
            "shots; rename the field",
            path=example.path,
            line=example.line,
            field="shots",
        )
    drawn = draw_shots(variant.train, variant.shots, variant.shots_seed, example.id)
    pairs = [(render_user(variant, shot), shot.references[0]) for shot in drawn]
    if variant.shots_as == "inline":
        return [], "\n\n".join(f"{question}\n{answer}" for question, answer in pairs)
    turns = [Message(role, text) for pair in pairs for role, text in zip(_ROLES, pair, strict=True)]
    return turns, ""


_ROLES = ("user", "assistant")


def _render(template: Template, example: Example, values: dict[str, Any]) -> str:
    compiled = compile_at(template)
    try:
        return render_text(compiled, values)
    except jinja2.UndefinedError as exc:
        where = template.where  # only on failure: it resolves paths, ~1 ms a call
        fields = ", ".join(sorted(map(str, example.fields)))
        raise SpecError(
            f"{exc.message} in {where}; this example has the fields {fields}",
            path=example.path,
            line=example.line,
        ) from None
    except jinja2.exceptions.SecurityError as exc:
        raise SpecError(
            f"{template.where} was refused: {exc} Templates run sandboxed: use the example's "
            "fields, not Python internals (pytest's conftest.py is the place for code)",
            path=example.path,
            line=example.line,
        ) from None
    except TemplateLimit as exc:
        raise SpecError(
            f"{template.where} was stopped: {exc}; prompts are bounded so a template cannot "
            "hang or exhaust memory, simplify it",
            path=example.path,
            line=example.line,
        ) from None
    except (jinja2.TemplateError, ArithmeticError, TypeError, ValueError, LookupError,
            RecursionError, AttributeError) as exc:  # fmt: skip
        raise SpecError(
            f"{template.where} failed on this example: {type(exc).__name__}: {exc}",
            path=example.path,
            line=example.line,
        ) from None
