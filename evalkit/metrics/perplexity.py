"""Perplexity of a local candidate (base, adapter, quantized; transformers or vLLM): two metrics.

``reference_perplexity`` (per example): how surprised the candidate is by the reference answer,
given the prompt exactly as generation feeds it (chat template applied, ``LocalModel.render``).
Only the answer's tokens count. Nothing is generated, so a suite of perplexity metrics alone
runs no generation at all.

Tokenization at the prompt/answer boundary. The model is conditioned on the rendered prompt's
own token ids, untouched, so the context is identical to what ``generate`` sees (lm-evaluation-
harness instead moves trailing whitespace from the context into the continuation; we do not,
because a chat template's final "\\n" is part of the prompt the model is trained to continue).
The answer's tokens are taken from tokenizing prompt text + answer in one go, as training data
is tokenized, when the prompt's tokens are a prefix of that (``boundary: joint``, the usual case:
chat templates end in a special token or a newline); if a merge across the boundary breaks
that, the answer is tokenized on its own (``boundary: separate``). Each example's detail says
which. Without a chat template, a space separates a prompt that does not end in whitespace
from the answer (``separator`` overrides this), as lm-evaluation-harness's target delimiter.

``perplexity`` (corpus): the text of a field (``text``) scored with lm-evaluation-harness's
``loglikelihood_rolling``: the tokens (no special tokens) are predicted in windows of
``max_length`` (default: the model's maximum positions), the first conditioned on the prefix
token (BOS, else EOS), each later one on what precedes it within its window. By default the
windows are disjoint (each token predicted once, the next window starts fresh); ``stride: S``
advances windows by S tokens instead, so every prediction after the first window has at least
``max_length - S`` tokens of context (Hugging Face's sliding-window perplexity). Each example's
value is its token perplexity; its detail holds the loglikelihood sum and the token, word and
byte counts, from which the run reports (lm-evaluation-harness's definitions) the corpus token
perplexity as ``corpus`` and ``word_perplexity``, ``byte_perplexity`` and ``bits_per_byte`` in
``extra``: exp(-sum ll / sum words), exp(-sum ll / sum bytes), -sum ll / sum bytes / ln 2, with
words counted as ``len(re.split(r"\\s+", text))`` and bytes as UTF-8 bytes.

``log: true`` (both metrics) reports the mean negative log-likelihood per token in nats (the
log of the perplexity) instead of the perplexity, and the corpus figure on the same scale. Per
example, perplexities are heavy-tailed (a one-token answer the model finds unlikely can score
in the thousands), so a mean of them is dominated by a few examples and paired tests on it are
noisy; on the log scale the same change is detected far more reliably. Gate on it with an
absolute threshold: ``max_increase: 0.05`` allows about 5% more perplexity (e^0.05 = 1.051).

Both take log-probabilities from ``metrics/loglikelihood.py``, from whichever capability the
candidate has: a plain forward pass over weights in this process (``LocalModel``: right padding,
so positions are unchanged, sorted by length and batched by ``batch_size`` of the suite's
generation settings, log-softmax in float32, sums in float64), or a server's prompt log-probs
(``PromptLogprobs``, engine: vllm).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from evalkit.candidates.base import LocalModel, PromptLogprobs
from evalkit.metrics.base import RunFigures, Sample, Score, Scored, ScoreValue, register
from evalkit.metrics.loglikelihood import rolling_windows, scorer
from evalkit.metrics.options import check_type, checked_factory
from evalkit.metrics.teacher_forcing import (  # answer_tokens: this module's public name too
    Continuation,
    answer_tokens,  # noqa: F401
    prefix_token,
    teacher_forced_row,
)
from evalkit.spec import GenerationSpec


def _per_token(nll: float, log: bool) -> float:
    """Perplexity, or with ``log`` the mean negative log-likelihood per token (its log, nats)."""
    return nll if log else _exp(nll)


def _exp(value: float) -> float:
    """exp that gives inf instead of raising; the engine reports inf as a missing value."""
    try:
        return math.exp(value)
    except OverflowError:
        return float("inf")


def _not_local(metric: str, candidate: Any, n: int) -> list[ScoreValue]:
    reason = (
        f"{metric} needs the model's weights in this process (a local transformers model, or "
        f"any candidate with loaded() and render()) or a server's prompt log-probs (engine: "
        f"vllm, or any candidate with prompt_logprobs()); candidate "
        f"'{getattr(candidate, 'name', candidate)}' ({type(candidate).__name__}) is not one"
    )
    return [Score(None, {"error": reason}) for _ in range(n)]


# ---------------------------------------------------------------------------------------------
# reference_perplexity


class ReferencePerplexity:
    """exp(-mean log p) of the first reference's tokens given the rendered prompt."""

    name: ClassVar[str] = "reference_perplexity"
    version: ClassVar[str] = "1"
    higher_is_better: ClassVar[bool] = False
    cacheable: ClassVar[bool] = True
    needs_output: ClassVar[bool] = False
    uses_decoding: ClassVar[bool] = False

    def __init__(self, separator: str | None = None, log: bool = False) -> None:
        check_type("separator", separator, (str, type(None)))
        check_type("log", log, (bool,))
        self.separator = separator
        self.log = log

    def signature(self) -> str:
        separator = "auto" if self.separator is None else repr(self.separator)
        value = "nll" if self.log else "perplexity"
        return (
            f"value:{value}|ref:first|context:rendered-prompt|separator:{separator}|"
            "tokens:joint-else-separate"
        )

    def score_candidate(
        self, samples: Sequence[Sample], candidate: Any, params: GenerationSpec
    ) -> list[ScoreValue]:
        found = scorer(candidate, params.batch_size)
        if found is None:
            return _not_local(self.name, candidate, len(samples))
        tokenizer, limit = found.tokenizer, found.max_length
        rows: list[Continuation] = []
        notes: list[dict[str, Any]] = []
        for sample in samples:
            row, note = self._row(sample, candidate, tokenizer, limit)
            rows.append(row)
            notes.append(note)
        todo = [i for i, note in enumerate(notes) if "error" not in note]
        sums = found.loglikelihoods([rows[i] for i in todo])
        values: list[ScoreValue] = [Score(None, note) for note in notes]
        for i, total in zip(todo, sums, strict=True):
            n_tokens = len(rows[i].continuation)
            detail = {"loglikelihood": total, "n_tokens": n_tokens, **notes[i]}
            values[i] = Score(_per_token(-total / n_tokens, self.log), detail)
        return values

    def _row(
        self, sample: Sample, candidate: LocalModel | PromptLogprobs, tokenizer: Any, limit: int
    ) -> tuple[Continuation, dict[str, Any]]:
        if not sample.references:
            raise ValueError(
                f"metric '{self.name}' needs a reference; example '{sample.id}' has none"
            )
        return teacher_forced_row(
            candidate, tokenizer, sample, sample.reference, limit, separator=self.separator
        )

    def summarize(self, scored: Sequence[Scored]) -> RunFigures:
        """Token-weighted over the whole suite: exp(-sum ll / sum tokens). From the details,
        which are cached with the values, so a fully cached run reports the same figure."""
        details = _scored_details(scored)
        if not details:
            return RunFigures()
        total = sum(float(d["loglikelihood"]) for d in details)
        tokens = sum(int(d["n_tokens"]) for d in details)
        return RunFigures(_per_token(-total / tokens, self.log) if tokens else None)


def _scored_details(scored: Sequence[Scored]) -> list[Mapping[str, Any]]:
    """The details of the examples that have a value (the others carry only an error)."""
    return [s.detail for s in scored if s.value is not None]


# ---------------------------------------------------------------------------------------------
# perplexity (rolling, over a text corpus)


def count_words(text: str) -> int:
    """lm-evaluation-harness's word count (wikitext): whitespace-separated pieces."""
    return len(re.split(r"\s+", text))


class Perplexity:
    """Token perplexity of a text field with rolling windows; corpus figures from ``summarize``."""

    name: ClassVar[str] = "perplexity"
    version: ClassVar[str] = "1"
    higher_is_better: ClassVar[bool] = False
    cacheable: ClassVar[bool] = True
    needs_output: ClassVar[bool] = False
    uses_decoding: ClassVar[bool] = False

    def __init__(
        self,
        field: str = "text",
        max_length: int | None = None,
        stride: int | None = None,
        log: bool = False,
    ) -> None:
        check_type("field", field, (str,))
        check_type("max_length", max_length, (int, type(None)))
        check_type("stride", stride, (int, type(None)))
        check_type("log", log, (bool,))
        if max_length is not None and max_length < 1:
            raise ValueError("max_length must be at least 1")
        if stride is not None and (stride < 1 or (max_length is not None and stride > max_length)):
            raise ValueError("stride must be at least 1 and at most max_length")
        self.field = field
        self.max_length = max_length
        self.stride = stride
        self.log = log

    def signature(self) -> str:
        value = "nll" if self.log else "perplexity"
        return (
            f"value:{value}|field:{self.field}|max_length:{self.max_length or 'model'}|"
            f"stride:{self.stride or 'max_length'}|prefix:bos-else-eos|special_tokens:no"
        )

    def score_candidate(
        self, samples: Sequence[Sample], candidate: Any, params: GenerationSpec
    ) -> list[ScoreValue]:
        found = scorer(candidate, params.batch_size)
        if found is None:
            return _not_local(self.name, candidate, len(samples))
        tokenizer = found.tokenizer
        max_length = self.max_length or found.max_length
        if self.stride is not None and self.stride > max_length:
            raise ValueError(f"stride {self.stride} exceeds the model's max_length {max_length}")
        prefix = prefix_token(tokenizer)
        texts = [self._text(sample) for sample in samples]
        tokens = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        windows = [rolling_windows(t, prefix, max_length, self.stride) for t in tokens]
        flat = [w for per_text in windows for w in per_text]
        sums = found.loglikelihoods(flat)
        values: list[ScoreValue] = []
        position = 0
        for text, ids, per_text in zip(texts, tokens, windows, strict=True):
            total = sum(sums[position : position + len(per_text)])
            position += len(per_text)
            if not ids:
                values.append(Score(None, {"error": f"field '{self.field}' has no tokens"}))
                continue
            detail = {
                "loglikelihood": total,
                "n_tokens": len(ids),
                "n_words": count_words(text),
                "n_bytes": len(text.encode("utf-8")),
                "n_windows": len(per_text),
            }
            values.append(Score(_per_token(-total / len(ids), self.log), detail))
        return values

    def _text(self, sample: Sample) -> str:
        text = sample.fields.get(self.field)
        if not isinstance(text, str):
            raise ValueError(
                f"metric '{self.name}' scores the text in field '{self.field}', but example "
                f"'{sample.id}' has {'no such field' if text is None else type(text).__name__}; "
                "set the metric's `field:` option"
            )
        return text

    def summarize(self, scored: Sequence[Scored]) -> RunFigures:
        """lm-evaluation-harness's corpus figures, from the (cached) per-example details."""
        details = _scored_details(scored)
        if not details:
            return RunFigures()
        total = sum(float(d["loglikelihood"]) for d in details)
        tokens = sum(int(d["n_tokens"]) for d in details)
        words = sum(int(d["n_words"]) for d in details)
        n_bytes = sum(int(d["n_bytes"]) for d in details)
        return RunFigures(
            _per_token(-total / tokens, self.log) if tokens else None,
            {
                "word_perplexity": _exp(-total / words) if words else None,
                "byte_perplexity": _exp(-total / n_bytes) if n_bytes else None,
                "bits_per_byte": -total / n_bytes / math.log(2) if n_bytes else None,
            },
        )


register(
    "reference_perplexity",
    checked_factory("reference_perplexity", ReferencePerplexity, ["separator", "log"]),
)
register(
    "perplexity",
    checked_factory("perplexity", Perplexity, ["field", "max_length", "stride", "log"]),
)
