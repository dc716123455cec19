"""Prompt rendering: the suite's jinja2 templates over an example's fields.

StrictUndefined makes a template variable the example lacks an error at collection (naming the
example's file and line) instead of an empty string silently sent to the model. The tokenizer's
chat template is applied later, by the candidate, because it belongs to the model.
"""

from __future__ import annotations

from functools import lru_cache

import jinja2

from evalkit.candidates.base import GenerationRequest, Message
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


def render_request(suite: LoadedSuite, example: Example) -> GenerationRequest:
    """The chat messages for one example: optional system message, then the user prompt."""
    messages = []
    for role, source, field in (
        ("system", suite.spec.system, "system"),
        ("user", suite.spec.prompt, "prompt"),
    ):
        if source is None:
            continue
        template = compile_template(source, suite, field)
        try:
            text = template.render(**example.fields)
        except jinja2.UndefinedError as exc:
            raise SpecError(
                f"{exc.message} in the suite's '{field}' template "
                f"({suite.path}:{suite.line_of(field)}); this example has the fields "
                f"{', '.join(sorted(example.fields))}",
                path=example.path,
                line=example.line,
            ) from None
        messages.append(Message(role=role, content=text))
    return GenerationRequest(id=example.id, messages=tuple(messages))
