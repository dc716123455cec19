"""The plain-Python route: golden examples, models and metrics in ordinary pytest functions.

    from evalkit.testing import golden_params, score

    @pytest.mark.parametrize("example", golden_params("../golden/capitals.jsonl"))
    def test_capital(example, evalkit_model):
        model = evalkit_model("smollm2-135m-instruct", max_new_tokens=16)
        answer = model.generate(f"Capital of {example.fields['country']}? One word.")
        assert score("contains", answer, example.references, normalize=["lower"]) == 1.0
        assert model.score("reference_perplexity", "Capital of France?", "Paris") < 50

Generations go through the same cache as suites (keyed by model fingerprint, decoding settings
and messages), and each model is loaded once per session, on its first cache miss. Metrics that
need the model itself (perplexity) are computed by ``ModelHandle.score``, uncached.

The user's own pipeline takes the same route as a suite's ``call:`` candidate::

    def test_app(evalkit_call):
        app = evalkit_call(myapp.pipeline.answer, version="2", concurrency=8)
        outputs = app.many(golden_examples)        # cached by source hash + version + fields
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from evalkit._files import display_path
from evalkit.cache import Cache, make_key
from evalkit.candidates import make_candidate
from evalkit.candidates.base import Candidate, Generation, GenerationRequest, Message
from evalkit.candidates.call import CallCandidate
from evalkit.errors import EvalkitError
from evalkit.golden import Example, load_golden
from evalkit.metrics import CandidateMetric, Metric, Sample, create, split_score
from evalkit.run.generation import generate_cached
from evalkit.spec import CandidateSpec, GenerationSpec

Prompt = str | Sequence[Mapping[str, str]]
"""A user message, or a whole chat as ``[{"role": ..., "content": ...}, ...]``."""


def golden_params(path: str | Path, *, limit: int | None = None, ids: str = "id") -> list[Any]:
    """``pytest.param(example, id=example.id)`` for each example of a golden file. A relative
    path is relative to the calling test file, as a suite's ``dataset`` is to the suite;
    ``ids`` is a suite's ``ids:`` (the id field, or ``line``)."""
    given = Path(path)
    caller = Path(inspect.stack()[1].filename).resolve()
    path = given if given.is_absolute() else caller.parent / given
    if not path.is_file():
        raise EvalkitError(
            f"golden_params('{given}'): no file {display_path(path)}; a relative path is relative "
            f"to the file that calls golden_params ({display_path(caller)}), so from tests/ write "
            "'../golden/NAME.jsonl', or pass an absolute path"
        )
    examples = load_golden(path, limit, ids)
    return [pytest.param(example, id=example.id) for example in examples]


def score(metric: str, output: str, references: str | Sequence[str], **options: Any) -> float:
    """One metric's value for one output, exactly as a suite would compute it."""
    scorer = create(metric, options)
    if not isinstance(scorer, Metric):
        raise EvalkitError(
            f"metric '{metric}' needs the model itself; use `evalkit_model(...).score('{metric}', "
            "prompt, reference)` or a suite"
        )
    sample = Sample(id="0", output=output, references=_references(references))
    return _value(metric, scorer.score([sample])[0])


def _references(references: str | Sequence[str]) -> tuple[str, ...]:
    return (references,) if isinstance(references, str) else tuple(references)


def _value(metric: str, raw: Any) -> float:
    value, detail = split_score(raw)
    if value is None:
        raise EvalkitError(f"metric '{metric}' gave no score: {detail.get('error', 'no reason')}")
    return value


def _messages(prompt: Prompt, system: str | None) -> tuple[Message, ...]:
    chat = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if system is not None:
        chat.insert(0, {"role": "system", "content": system})
    return tuple(Message(role=m["role"], content=m["content"]) for m in chat)


def _model_sample(
    sample_id: str,
    prompt: Prompt,
    references: str | Sequence[str],
    fields: Mapping[str, Any],
    system: str | None,
) -> Sample:
    """What a model metric sees: the request as a suite renders it, no output."""
    messages = _messages(prompt, system) if prompt else ()
    return Sample(
        id=sample_id,
        output="",
        references=_references(references),
        prompt=messages[-1].content if messages else "",
        fields=dict(fields),
        messages=messages,
    )


@dataclass
class ModelHandle:
    """A candidate plus default decoding settings, answering through the cache."""

    candidate: Candidate
    fingerprint_hash: str
    params: GenerationSpec
    cache: Cache

    def generate(self, prompt: Prompt, *, system: str | None = None, **generation: Any) -> str:
        return self.generate_many([prompt], system=system, **generation)[0]

    def generate_many(
        self, prompts: Sequence[Prompt], *, system: str | None = None, **generation: Any
    ) -> list[str]:
        """Outputs in prompt order; uncached prompts run batched (``batch_size``)."""
        params = self.params.merged(GenerationSpec.model_validate(generation))
        requests = [
            GenerationRequest(id=str(i), messages=_messages(p, system))
            for i, p in enumerate(prompts)
        ]
        generations = generate_cached(
            self.candidate, self.fingerprint_hash, requests, params, self.cache
        )
        outputs = []
        for request in requests:
            generation_result, _ = generations[request.id]
            if generation_result.error is not None:
                raise EvalkitError(f"{self.candidate.name}: {generation_result.error}")
            outputs.append(generation_result.output)
        return outputs

    def score(
        self,
        metric: str,
        prompt: Prompt = "",
        reference: str | Sequence[str] = (),
        *,
        system: str | None = None,
        fields: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> float:
        """A metric that needs this model (``reference_perplexity``, ``perplexity``) for one
        example: ``model.score("reference_perplexity", "Capital of France?", "Paris")`` or
        ``model.score("perplexity", fields={"text": essay})``. Options are the metric's."""
        return self.score_many(
            metric, [prompt], [reference], system=system, fields=[fields or {}], **options
        )[0]

    def score_many(
        self,
        metric: str,
        prompts: Sequence[Prompt],
        references: Sequence[str | Sequence[str]] | None = None,
        *,
        system: str | None = None,
        fields: Sequence[Mapping[str, Any]] | None = None,
        **options: Any,
    ) -> list[float]:
        """One value per prompt, computed batched, with the prompt rendered as a suite would."""
        scorer = create(metric, options)
        if not isinstance(scorer, CandidateMetric):
            raise EvalkitError(
                f"metric '{metric}' scores outputs, not the model; use evalkit.testing.score"
            )
        references = references if references is not None else [()] * len(prompts)
        fields = fields if fields is not None else [{}] * len(prompts)
        if not len(prompts) == len(references) == len(fields):
            raise EvalkitError("prompts, references and fields must have the same length")
        samples = [
            _model_sample(str(i), prompt, ref, extra, system)
            for i, (prompt, ref, extra) in enumerate(zip(prompts, references, fields, strict=True))
        ]
        raw = scorer.score_candidate(samples, self.candidate, self.params)
        return [_value(metric, value) for value in raw]


class ModelPool:
    """The ``evalkit_model`` fixture: ``evalkit_model(model, **options)`` -> ModelHandle.

    Candidate options (``device``, ``dtype``, ``chat_template``, ``revision``, ``api``) pick the
    model; the rest are default generation settings (``max_new_tokens``, ``temperature``, ...)."""

    CANDIDATE_OPTIONS = ("device", "dtype", "chat_template", "revision", "api")

    def __init__(self, cache: Cache, base_dir: Path, device: str | None = None) -> None:
        self.cache = cache
        self.base_dir = base_dir
        self.device = device
        self._handles: dict[str, ModelHandle] = {}

    def __call__(self, model: str, **options: Any) -> ModelHandle:
        picked = {k: options.pop(k) for k in self.CANDIDATE_OPTIONS if k in options}
        spec = CandidateSpec(model=model, **picked)
        params = GenerationSpec.model_validate(options)
        key = spec.model_dump_json()
        if key not in self._handles:
            candidate = make_candidate(model, spec, self.base_dir, device=self.device)
            fingerprint_hash = make_key(**candidate.fingerprint())[:16]
            self._handles[key] = ModelHandle(candidate, fingerprint_hash, params, self.cache)
        handle = self._handles[key]
        return ModelHandle(handle.candidate, handle.fingerprint_hash, params, self.cache)

    def close(self) -> None:
        for handle in self._handles.values():
            handle.candidate.close()
        self._handles.clear()


@dataclass
class CallHandle:
    """A function as a candidate (``evalkit_call(fn)``), answering through the cache."""

    candidate: CallCandidate
    fingerprint_hash: str
    cache: Cache

    def __call__(self, example: Example | Mapping[str, Any]) -> str:
        """The function's answer for one example (or a mapping of fields)."""
        return self.many([example])[0]

    def many(self, examples: Sequence[Example | Mapping[str, Any]]) -> list[str]:
        """Answers in order, uncached ones called concurrently; an error raises EvalkitError."""
        outputs = []
        for generation in self.results(examples):
            if generation.error is not None:
                raise EvalkitError(f"example '{generation.id}': {generation.error}")
            outputs.append(generation.output)
        return outputs

    def results(self, examples: Sequence[Example | Mapping[str, Any]]) -> list[Generation]:
        """Full results in order: output, context, tokens, cost, seconds, or the error."""
        requests = [
            GenerationRequest(
                id=e.id if isinstance(e, Example) else str(e.get("id", i)),
                messages=(),
                fields=e.fields if isinstance(e, Example) else dict(e),
            )
            for i, e in enumerate(examples)
        ]
        if len({r.id for r in requests}) != len(requests):
            raise EvalkitError("examples need distinct ids (an 'id' field or their position)")
        answers = generate_cached(
            self.candidate, self.fingerprint_hash, requests, GenerationSpec(), self.cache
        )
        return [answers[r.id][0] for r in requests]


class CallPool:
    """The ``evalkit_call`` fixture: ``evalkit_call(function, version=..., concurrency=...,
    timeout_s=...)`` -> CallHandle. The function is called as a ``call:`` candidate's is."""

    def __init__(self, cache: Cache) -> None:
        self.cache = cache

    def __call__(
        self,
        function: Callable[..., Any],
        *,
        version: str | None = None,
        concurrency: int = 4,
        timeout_s: float = 60.0,
    ) -> CallHandle:
        name = getattr(function, "__name__", "call")
        candidate = CallCandidate(
            name, function, version=version, concurrency=concurrency, timeout_s=timeout_s
        )
        return CallHandle(candidate, make_key(**candidate.fingerprint())[:16], self.cache)


__all__ = [
    "CallHandle",
    "CallPool",
    "Example",
    "ModelHandle",
    "ModelPool",
    "golden_params",
    "score",
]
