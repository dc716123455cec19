"""An API model (``ApiCandidate``, litellm) as a judge.

Two ways to read a verdict:

- ``logprobs``: the judge replies with the score only and the top log-probabilities of its first
  tokens are read; the first position whose alternatives include score tokens gives the
  distribution (tokens are compared without surrounding spaces, and "4" and " 4" add up). No
  parsing, so nothing to fail, as with a local judge.
- ``json``: the judge replies with ``{"rationale": ..., "score": N}`` (``verdict`` for pairwise),
  requested with a JSON schema and validated by pydantic. A reply that does not validate is
  re-asked with the validation error, at most ``max_reasks`` times; after that the example's
  value is missing with the error (never 0). An API failure (after the candidate's own retries)
  is not re-asked: it is the example's error.

``read: auto`` uses logprobs and falls back to JSON for the examples whose replies carry no
log-probabilities (the API does not offer them) or no score token among them. A rationale needs
JSON (the score must come after it). ``samples: N`` sends N requests per prompt (seeds 0..N-1).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from evalkit.candidates.base import GenerationRequest, Message
from evalkit.metrics.judge_prompts import JudgePrompt, Reading
from evalkit.spec import GenerationSpec

if TYPE_CHECKING:
    from evalkit.candidates.api import ApiReply
    from evalkit.candidates.base import ChatCompleter
    from evalkit.metrics.judge_options import _JudgeModelOptions

TOP_LOGPROBS = 20  # OpenAI's maximum
SCORE_TOKENS = 8  # room for a judge that writes "Score: 4" instead of "4"
JSON_TOKENS = 300


class ApiJudge:
    kind = "api"

    def __init__(self, candidate: ChatCompleter, options: _JudgeModelOptions) -> None:
        self.candidate = candidate
        self.options = options

    def read(
        self,
        prompts_for: Callable[[str], list[JudgePrompt]],
        choices: Sequence[str],
        field: str,
    ) -> list[list[Reading]]:
        """Per prompt, one reading per sample."""
        mode = "json" if self.options.rationale else self.options.read
        if mode == "json":
            return self._json(prompts_for("json"), choices, field)
        prompts = prompts_for("score")
        readings = self._logprobs(prompts, choices)
        if mode == "logprobs":
            return readings
        fallback = [i for i, rs in enumerate(readings) if any(r.probs is None for r in rs)]
        if fallback:
            json_prompts = prompts_for("json")
            redo = self._json([json_prompts[i] for i in fallback], choices, field)
            for i, fresh in zip(fallback, redo, strict=True):
                tried = readings[i]
                readings[i] = [_with_tried(f, t) for f, t in zip(fresh, tried, strict=True)]
        return readings

    # -- requests ----------------------------------------------------------------------------

    def _params(self, max_tokens: int, sample: int) -> GenerationSpec:
        return GenerationSpec(
            max_new_tokens=max_tokens, temperature=self.options.temperature, seed=sample
        )

    def _ask(
        self,
        conversations: Sequence[tuple[str, tuple[Message, ...], int]],
        max_tokens: int,
        **extra: Any,
    ) -> list[ApiReply]:
        """One completion per (id, messages, sample index), grouped by sample for the seed."""
        out: dict[int, ApiReply] = {}
        for sample in sorted({s for _, _, s in conversations}):
            indices = [i for i, (_, _, s) in enumerate(conversations) if s == sample]
            requests = [
                GenerationRequest(conversations[i][0], conversations[i][1]) for i in indices
            ]
            replies = self.candidate.complete_many(
                requests, self._params(max_tokens, sample), **extra
            )
            out.update(zip(indices, replies, strict=True))
        return [out[i] for i in range(len(conversations))]

    def _expand(self, prompts: Sequence[JudgePrompt]) -> list[tuple[str, tuple[Message, ...], int]]:
        return [(p.id, p.messages, s) for p in prompts for s in range(self.options.samples)]

    def _regroup(self, flat: list[Reading]) -> list[list[Reading]]:
        n = self.options.samples
        return [flat[i : i + n] for i in range(0, len(flat), n)]

    # -- logprobs ----------------------------------------------------------------------------

    def _logprobs(
        self, prompts: Sequence[JudgePrompt], choices: Sequence[str]
    ) -> list[list[Reading]]:
        replies = self._ask(self._expand(prompts), SCORE_TOKENS, top_logprobs=TOP_LOGPROBS)
        return self._regroup([logprob_reading(r, choices) for r in replies])

    # -- JSON with re-asks -------------------------------------------------------------------

    def _json(
        self, prompts: Sequence[JudgePrompt], choices: Sequence[str], field: str
    ) -> list[list[Reading]]:
        schema, model = reply_schema(field, choices)
        conversations = self._expand(prompts)
        readings: list[Reading | None] = [None] * len(conversations)
        spent = [_Spent() for _ in conversations]
        pending = list(range(len(conversations)))
        for attempt in range(self.options.max_reasks + 1):
            replies = self._ask(
                [conversations[i] for i in pending], JSON_TOKENS, json_schema=schema
            )
            retry = []
            for index, reply in zip(pending, replies, strict=True):
                spent[index].add(reply)
                reading, problem = parse_json_reply(reply, model, field)
                if reading is not None or reply.error is not None:
                    readings[index] = spent[index].apply(reading or _failed(reply), attempt)
                elif attempt == self.options.max_reasks:
                    error = f"no valid JSON reply after {attempt + 1} tries; last: {problem}"
                    readings[index] = spent[index].apply(Reading(reply.id, error=error), attempt)
                else:
                    id_, messages, sample = conversations[index]
                    conversations[index] = (id_, (*messages, *reask(reply.text, problem)), sample)
                    retry.append(index)
            pending = retry
            if not pending:
                break
        return self._regroup([r for r in readings if r is not None])


class _Spent:
    """Tokens, cost and time over every request made for one judgment (re-asks included)."""

    def __init__(self) -> None:
        self.prompt = self.output = 0
        self.seconds = 0.0
        self.costs: list[float] = []

    def add(self, reply: ApiReply) -> None:
        self.prompt += reply.n_prompt_tokens
        self.output += reply.n_output_tokens
        self.seconds += reply.seconds
        if reply.cost is not None:
            self.costs.append(reply.cost)

    def apply(self, reading: Reading, reasks: int) -> Reading:
        return replace(
            reading,
            n_prompt_tokens=self.prompt,
            n_output_tokens=self.output,
            seconds=self.seconds,
            cost=sum(self.costs) if self.costs else None,
            reasks=reasks,
        )


def reply_schema(field: str, choices: Sequence[str]) -> tuple[dict[str, Any], type[BaseModel]]:
    """The JSON schema sent to the API and the pydantic model that validates the reply."""
    values = tuple(int(c) for c in choices)
    model = create_model(
        "JudgeReply",
        __config__=ConfigDict(extra="forbid"),
        rationale=(str, ...),
        **{field: (Literal[values], ...)},  # type: ignore[valid-type]
    )
    schema = {
        "type": "object",
        "properties": {
            "rationale": {"type": "string"},
            field: {"type": "integer", "enum": list(values)},
        },
        "required": ["rationale", field],
        "additionalProperties": False,
    }
    return schema, model


def parse_json_reply(
    reply: ApiReply, model: type[BaseModel], field: str
) -> tuple[Reading | None, str]:
    """A reading from a valid reply, else (None, what is wrong in one line)."""
    if reply.error is not None:
        return None, reply.error
    try:
        parsed = model.model_validate_json(reply.text.strip())
    except ValidationError as exc:
        return None, _one_line(exc)
    value = getattr(parsed, field)
    return Reading(reply.id, choice=str(value), rationale=parsed.rationale or None), ""


def _one_line(exc: ValidationError) -> str:
    error = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in error["loc"])
    return f"{where}: {error['msg']}" if where else error["msg"]


def reask(bad_reply: str, problem: str) -> tuple[Message, Message]:
    """The judge's invalid reply and a request to answer again, with what was wrong."""
    return (
        Message("assistant", bad_reply),
        Message(
            "user",
            f"That reply is not valid ({problem}). Reply again with the JSON object only, with "
            "exactly the fields asked for, and nothing before or after it.",
        ),
    )


def _failed(reply: ApiReply) -> Reading:
    return Reading(reply.id, error=reply.error)


def logprob_reading(reply: ApiReply, choices: Sequence[str]) -> Reading:
    """The distribution over the choices at the first position where any of them is among the
    top alternatives; probs is None (with the reason) when there is none."""
    base = Reading(
        reply.id,
        n_prompt_tokens=reply.n_prompt_tokens,
        n_output_tokens=reply.n_output_tokens,
        cost=reply.cost,
        seconds=reply.seconds,
    )
    if reply.error is not None:
        return replace(base, error=reply.error)
    if reply.top_logprobs is None:
        return replace(base, error="the API returned no log-probabilities")
    for position in reply.top_logprobs:
        raw: dict[str, float] = {}
        for token, logprob in position.items():
            key = token.strip()
            if key in choices:
                raw[key] = raw.get(key, 0.0) + math.exp(logprob)
        if raw:
            mass = sum(raw.values())
            probs = {c: raw.get(c, 0.0) / mass for c in choices}
            return replace(base, probs=probs, mass=mass)
    return replace(
        base, error=f"no score token among the reply's top log-probabilities ({reply.text!r})"
    )


def _with_tried(fresh: Reading, tried: Reading) -> Reading:
    """A JSON reading that replaced a failed logprob reading: both requests' cost counts."""
    costs = [c for c in (fresh.cost, tried.cost) if c is not None]
    return replace(
        fresh,
        n_prompt_tokens=fresh.n_prompt_tokens + tried.n_prompt_tokens,
        n_output_tokens=fresh.n_output_tokens + tried.n_output_tokens,
        seconds=fresh.seconds + tried.seconds,
        cost=sum(costs) if costs else None,
        extra={**fresh.extra, "fallback": f"json ({tried.error})"},
    )
