"""Prompt rendering: the suite's jinja2 templates over an example's fields.

StrictUndefined makes a template variable the example lacks an error at collection (naming the
example's file and line) instead of an empty string silently sent to the model. The tokenizer's
chat template is applied later, by the candidate, because it belongs to the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import jinja2
import jinja2.meta

from evalkit.candidates.base import GenerationRequest, Message, RetrievedChunk
from evalkit.errors import SpecError
from evalkit.golden import Example
from evalkit.spec import LoadedSuite

_ENV = jinja2.Environment(
    undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True
)


@lru_cache(maxsize=256)
def _compile(source: str) -> jinja2.Template:
    return _ENV.from_string(source)


def compile_template(source: str, suite: LoadedSuite, field: str) -> jinja2.Template:
    try:
        return _compile(source)
    except jinja2.TemplateSyntaxError as exc:
        raise SpecError(
            f"bad jinja2 template: {exc.message}",
            path=suite.path,
            line=suite.line_of(field),
            field=field,
        ) from None


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


def template_variables(source: str) -> set[str]:
    """The variables a template reads (for collection-time checks)."""
    return jinja2.meta.find_undeclared_variables(_ENV.parse(source))


def render_request(
    suite: LoadedSuite, example: Example, retrieved: Sequence[RetrievedChunk] = ()
) -> GenerationRequest:
    """The chat messages for one example: optional system message, then the user prompt.
    ``retrieved`` chunks (RAG candidates) fill ``context`` and ``chunks``; without them those
    variables are empty, unless the example has fields of those names."""
    values = (
        {**example.fields, **context_variables(retrieved)}
        if retrieved
        else {**context_variables(()), **example.fields}
    )
    messages = []
    for role, source, field in (
        ("system", suite.spec.system, "system"),
        ("user", suite.spec.prompt, "prompt"),
    ):
        if source is None:
            continue
        template = compile_template(source, suite, field)
        try:
            text = template.render(**values)
        except jinja2.UndefinedError as exc:
            raise SpecError(
                f"{exc.message} in the suite's '{field}' template "
                f"({suite.path}:{suite.line_of(field)}); this example has the fields "
                f"{', '.join(sorted(example.fields))}",
                path=example.path,
                line=example.line,
            ) from None
        messages.append(Message(role=role, content=text))
    return GenerationRequest(id=example.id, messages=tuple(messages), retrieved=tuple(retrieved))
