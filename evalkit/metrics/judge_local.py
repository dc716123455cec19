"""A local transformers model as a judge: the exact next-token distribution over the choices.

The judge prompt goes through the judge candidate's chat template (``LocalModel.render``),
then an assistant prefill such as ``"Score: "`` is appended, and one forward pass gives the
logits of the next token. Each choice ("1".."5", or "A"/"B"/"C") must be exactly one token
after that prefix, so the probability of each is read directly: nothing is parsed, nothing can
fail to parse. Reading the distribution is deterministic, so sampling several times means
nothing here.

torch is imported inside functions (this module is imported when a suite is collected).
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from evalkit.candidates.base import Generation, GenerationRequest, LocalModel, OnDevice
from evalkit.errors import CandidateError
from evalkit.metrics.judge_prompts import JudgePrompt, Reading
from evalkit.spec import GenerationSpec


class LocalJudgeModel(LocalModel, OnDevice, Protocol):
    """What a local judge needs: loaded weights, the rendered prompt, the device, and
    ``generate`` for rationales (HFCandidate has all of it)."""

    def generate(
        self, requests: Sequence[GenerationRequest], params: GenerationSpec
    ) -> Iterator[list[Generation]]: ...


@dataclass(frozen=True)
class _Encoded:
    """One judge prompt as token ids, and the token id that spells each choice after it."""

    prompt: JudgePrompt
    ids: list[int]
    choice_ids: dict[str, int]
    rationale: Generation | None = None


class LocalJudge:
    """Reads choice probabilities from a local judge model (a ``LocalJudgeModel``)."""

    kind = "local"

    def __init__(self, candidate: LocalJudgeModel, *, batch_size: int = 8) -> None:
        self.candidate = candidate
        self.batch_size = batch_size

    def read(
        self,
        prompts: Sequence[JudgePrompt],
        choices: Sequence[str],
        *,
        rationale_tokens: int = 0,
    ) -> list[Reading]:
        """One reading per prompt, in order. With ``rationale_tokens`` the judge first writes a
        short rationale (greedy) and the score is read after it (G-Eval's order)."""
        if not prompts:
            return []
        _, tokenizer = self.candidate.loaded()
        rationales = self._rationales(prompts, rationale_tokens) if rationale_tokens else {}
        encoded = [self._encode(tokenizer, p, choices, rationales.get(p.id)) for p in prompts]
        readings: dict[str, Reading] = {}
        ordered = sorted(encoded, key=lambda e: len(e.ids), reverse=True)
        for start in range(0, len(ordered), self.batch_size):
            batch = ordered[start : start + self.batch_size]
            readings.update(self._read_batch(batch))
        return [readings[p.id] for p in prompts]

    # -- prompt -> token ids ----------------------------------------------------------------

    def _encode(
        self,
        tokenizer: Any,
        prompt: JudgePrompt,
        choices: Sequence[str],
        rationale: Generation | None,
    ) -> _Encoded:
        text, rendered_ids = self.candidate.render(GenerationRequest(prompt.id, prompt.messages))
        head = text + (f"{rationale.output}\n" if rationale else "")
        ids, choice_ids = choice_tokens(tokenizer, head, prompt.prefill, choices)
        plain = _tokens(tokenizer, text)
        # render() may add special tokens (BOS without a chat template) in front of the text;
        # what follows the text must not re-tokenize its end.
        if (plain and rendered_ids[-len(plain) :] != plain) or ids[: len(plain)] != plain:
            raise CandidateError(
                f"judge '{self.candidate.name}': the judge prompt's tokens change when the "
                "score prefix is appended; use a judge model with a chat template"
            )
        return _Encoded(prompt, rendered_ids + ids[len(plain) :], choice_ids, rationale)

    def _rationales(self, prompts: Sequence[JudgePrompt], max_tokens: int) -> dict[str, Generation]:
        """Greedy short rationales (the prompts ask for one before the score)."""
        params = GenerationSpec(max_new_tokens=max_tokens, temperature=0.0, stop=["Score"])
        requests = [GenerationRequest(p.id, p.messages) for p in prompts]
        out: dict[str, Generation] = {}
        for batch in self.candidate.generate(requests, params):
            out.update((g.id, g) for g in batch)
        return out

    # -- forward pass -------------------------------------------------------------------------

    def _read_batch(self, batch: list[_Encoded]) -> dict[str, Reading]:
        import torch

        model, _ = self.candidate.loaded()
        start = time.perf_counter()
        input_ids, attention_mask = _left_pad([e.ids for e in batch], self.candidate)
        # Explicit positions: with left padding, position 0 must be each row's first real token
        # (as in generate), or padded rows would get different logits from unpadded ones.
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        kwargs: dict[str, Any] = {}
        if "logits_to_keep" in inspect.signature(model.forward).parameters:
            kwargs["logits_to_keep"] = 1  # the vocabulary-sized logits of the last position only
        with torch.inference_mode():
            out = model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                **kwargs,
            )
        logprobs = out.logits[:, -1, :].float().log_softmax(-1).cpu()
        seconds = (time.perf_counter() - start) / len(batch)
        return {e.prompt.id: _reading(e, logprobs[i], seconds) for i, e in enumerate(batch)}


def _reading(encoded: _Encoded, logprobs: Any, seconds: float) -> Reading:
    raw = {c: math.exp(float(logprobs[t])) for c, t in encoded.choice_ids.items()}
    mass = sum(raw.values())
    rationale = encoded.rationale
    return Reading(
        id=encoded.prompt.id,
        probs={c: p / mass for c, p in raw.items()} if mass > 0 else None,
        mass=mass,
        rationale=rationale.output if rationale else None,
        n_prompt_tokens=len(encoded.ids),
        n_output_tokens=rationale.n_output_tokens if rationale else 0,
        seconds=seconds + (rationale.seconds if rationale else 0.0),
        error=None if mass > 0 else "the judge gives no probability to any score token",
    )


def _tokens(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def choice_tokens(
    tokenizer: Any, head: str, prefill: str, choices: Sequence[str]
) -> tuple[list[int], dict[str, int]]:
    """Token ids of ``head + prefill`` and the one token id spelling each choice after it.

    Tokenizers differ: SmolLM2 writes "Score: 3" as "Score", ":", " ", "3", GPT-2 as "Score",
    ":", " 3". So the prefill is tried as given and with its trailing space moved onto the
    choice; the first form in which every choice is exactly one token that extends the prefix
    (without re-tokenizing it) wins. If none fits, the scale cannot be read from one token.
    """
    forms = [(prefill, "")]
    if prefill.endswith(" "):
        forms.append((prefill.rstrip(" "), " "))
    problems = []
    for text, sep in forms:
        prefix = _tokens(tokenizer, head + text)
        ids: dict[str, int] = {}
        for choice in choices:
            full = _tokens(tokenizer, head + text + sep + choice)
            if full[: len(prefix)] == prefix and len(full) == len(prefix) + 1:
                ids[choice] = full[-1]
            else:
                stable = full[: len(prefix)] == prefix
                pieces = tokenizer.convert_ids_to_tokens(full[len(prefix) :] if stable else full)
                where = "" if stable else " and re-tokenizes the prefix"
                problems.append(f"'{sep}{choice}' after {text!r} is {pieces} (tokens){where}")
                break
        else:
            if len(set(ids.values())) == len(ids):
                return prefix, ids
            problems.append(f"two choices share one token after {text!r}")
    raise CandidateError(
        "the judge's tokenizer does not spell every choice "
        f"({', '.join(choices)}) as one token: {problems[0]}; use a scale whose scores are single "
        "digits (e.g. scale: [1, 5]) or another judge model"
    )


def _left_pad(rows: list[list[int]], candidate: LocalJudgeModel) -> tuple[Any, Any]:
    import torch

    _, tokenizer = candidate.loaded()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), int(pad), dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        attention_mask[i, width - len(row) :] = 1
    return input_ids.to(candidate.device), attention_mask.to(candidate.device)
