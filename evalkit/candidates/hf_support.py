"""Parts of the transformers candidate that hold no candidate state: the tokenized prompt, stop
strings, device checks and load-failure messages. torch and transformers are imported inside."""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalkit._files import env_flag
from evalkit.candidates import quantization
from evalkit.candidates.base import Generation, GenerationRequest
from evalkit.candidates.models import ResolvedModel, has_chat_template
from evalkit.errors import CandidateError
from evalkit.spec import CandidateSpec, GenerationSpec

if TYPE_CHECKING:
    import torch


@dataclass
class Prompt:
    """One request after the chat template and tokenization."""

    request: GenerationRequest
    text: str
    ids: list[int]


def render_prompt(name: str, tokenizer: Any, request: GenerationRequest, use_chat: bool) -> Prompt:
    """The request as the model sees it: through the chat template (or joined), tokenized."""
    messages = [{"role": m.role, "content": m.content} for m in request.messages]
    if use_chat:
        try:
            text = tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        except Exception as exc:  # jinja2 errors raised by the template itself
            raise CandidateError(
                f"candidate '{name}': the chat template rejected request "
                f"'{request.id}' ({exc}); drop the system message or set "
                "chat_template: false"
            ) from exc
    else:
        text = "\n\n".join(m.content for m in request.messages)
    # The template already wrote BOS and friends; adding them again would double them.
    ids = tokenizer(text, add_special_tokens=not use_chat)["input_ids"]
    return Prompt(request, text, list(ids))


def chat_template_setting(name: str, spec: CandidateSpec, path: Path | None) -> bool | str:
    """For the fingerprint: True/False when known from the files; "auto" for hub models not
    on disk."""
    if spec.chat_template is False:
        return False
    if path is None:
        return "auto" if spec.chat_template is None else True
    present = has_chat_template(path)
    if spec.chat_template and not present:
        raise no_template_error(name, spec.model)
    return present


def no_template_error(name: str, model: str | None) -> CandidateError:
    return CandidateError(
        f"candidate '{name}': chat_template is true but the tokenizer of "
        f"'{model}' has no chat template; set chat_template: false to send the "
        "prompt as plain text"
    )


def left_pad(rows: list[list[int]], pad_id: int, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoder-only models continue from the last position, so padding goes on the left."""
    import torch

    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        attention_mask[i, width - len(row) :] = 1
    return input_ids.to(device), attention_mask.to(device)


def decoding_kwargs(
    params: GenerationSpec, pad_id: int, tokenizer: Any, prompt_width: int
) -> dict[str, Any]:
    """Our spec decides sampling; the model's generation_config keeps the rest (eos ids,
    repetition penalty). ``top_k`` None means no top-k (transformers would default to 50)."""
    kwargs: dict[str, Any] = {
        "max_new_tokens": params.max_new_tokens,
        "do_sample": not params.greedy,
        "pad_token_id": pad_id,
    }
    if not params.greedy:
        kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=params.top_k or 0)
    if params.stop:
        kwargs["stopping_criteria"] = stop_criteria(tokenizer, params.stop, prompt_width)
    return kwargs


def finish(
    prompt: Prompt,
    tokens: list[int],
    params: GenerationSpec,
    seconds: float,
    ends: set[int],
    tokenizer: Any,
) -> Generation:
    """The generation of one row: new tokens up to the first end/pad id, decoded, cut at the
    first stop string."""
    count = next((i for i, token in enumerate(tokens) if token in ends), len(tokens))
    text = tokenizer.decode(tokens[:count], skip_special_tokens=True).strip()
    return Generation(
        id=prompt.request.id,
        output=cut_at_stop(text, params.stop),
        prompt=prompt.text,
        n_prompt_tokens=len(prompt.ids),
        n_output_tokens=count,
        seconds=seconds,
    )


def device_type(name: str, wanted: str | None) -> str:
    """The type ``pick_device`` would give ("cpu", "cuda", ...), without importing torch when
    the answer is certain: ``cpu`` asked for, or no device asked for and a CPU-only torch build
    installed. The fingerprint needs only this, and a fully cached re-run should not pay
    torch's import (1.6 s) just to learn the device of a model it never loads."""
    if wanted == "cpu" or (wanted is None and "torch" not in sys.modules and cpu_only_torch()):
        return "cpu"
    return pick_device(name, wanted).type


_BUILD_LINE = re.compile(r"^(cuda|hip)\b[^=\n]*=\s*(\S.*)$", re.MULTILINE)


def cpu_only_torch() -> bool:
    """True when the installed torch was built without CUDA and ROCm, read from its
    ``version.py`` (``cuda = None``, ``hip = None``) without importing it; such a build never
    reports ``torch.cuda.is_available()``. False when unsure (torch then answers itself)."""
    try:
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        return False
    if spec is None or not spec.submodule_search_locations:
        return False
    try:
        text = (Path(next(iter(spec.submodule_search_locations))) / "version.py").read_text()
    except OSError:
        return False
    builds = dict(_BUILD_LINE.findall(text))
    return set(builds) == {"cuda", "hip"} and all(v.strip() == "None" for v in builds.values())


def pick_device(name: str, wanted: str | None) -> torch.device:
    """``wanted`` if given (and available), else cuda when present, else cpu."""
    import torch

    if wanted is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(wanted)
    except (RuntimeError, ValueError) as exc:
        raise CandidateError(
            f"candidate '{name}': device '{wanted}' is not a torch device "
            f"({exc}); use cpu, cuda, cuda:1 or mps, or leave it out"
        ) from None
    if not device_available(device):
        raise CandidateError(
            f"candidate '{name}': device '{wanted}' is not available on this "
            f"machine (torch {torch.__version__}); remove 'device:' to pick one automatically "
            "or install a torch build for that device"
        )
    return device


def load_failure(
    name: str,
    spec: CandidateSpec,
    resolved: ResolvedModel,
    base_dir: Path,
    dtype_name: str,
    exc: Exception,
) -> str:
    """The message for a model that failed to load: what to check, by where it came from."""
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if spec.quantization is not None:
        settings = quantization.settings(spec.quantization, dtype_name)
        return (
            f"candidate '{name}': could not load '{spec.model}' with "
            f"quantization {settings} ({reason}); check that it loads without "
            "'quantization:', then change or remove the quantization settings"
        )
    if resolved.kind != "hub":
        return (
            f"candidate '{name}': could not load the model in {resolved.path} "
            f"({reason}); the folder must hold a complete save_pretrained output "
            "(config.json, *.safetensors, tokenizer files)"
        )
    hint = (
        "HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE is set, so only models already in the local "
        "Hugging Face cache load: run once with HF_HUB_OFFLINE=0 online, "
        if env_flag("HF_HUB_OFFLINE") or env_flag("TRANSFORMERS_OFFLINE")
        else ""
    )
    return (
        f"candidate '{name}': could not load hub model '{resolved.hub_id}' ({reason}); "
        f"{hint}check the id and revision, or give a local folder (no folder "
        f"{base_dir / str(spec.model)} exists)"
    )


def transformers_model(model: Any) -> Any:
    """The transformers model whose ``generate`` runs: an unmerged peft adapter wraps it."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def megabytes(size: int | None) -> float | None:
    """Decimal megabytes (10^6 bytes) to the kilobyte: what the loaded weights occupy."""
    return None if size is None else round(size / 1e6, 3)


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """Text before the first occurrence of any stop string, without trailing whitespace."""
    positions = [i for i in (text.find(stop) for stop in stops if stop) if i >= 0]
    return text[: min(positions)].rstrip() if positions else text


def stop_criteria(tokenizer: Any, stops: Sequence[str], prompt_width: int) -> Any:
    """Stop a row once its decoded new text contains a stop string.

    The output is cut at the stop afterwards anyway; stopping early only saves time. It checks
    the same text the cut uses (new tokens only, special tokens skipped, stripped), so the
    result is identical to generating to the end and cutting. transformers' own
    ``stop_strings`` would also match across the prompt boundary (a chat template ends in
    "\\n"), stopping too soon.
    """
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class StopOnStrings(StoppingCriteria):
        def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
            texts = tokenizer.batch_decode(input_ids[:, prompt_width:], skip_special_tokens=True)
            hits = [any(stop in text.strip() for stop in stops if stop) for text in texts]
            return torch.tensor(hits, dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([StopOnStrings()])


def device_available(device: torch.device) -> bool:
    import torch

    if device.type == "cpu":
        return True
    if device.type == "cuda":
        index = device.index or 0
        return torch.cuda.is_available() and index < torch.cuda.device_count()
    if device.type == "mps":
        return torch.backends.mps.is_available()
    backend = getattr(torch, device.type, None)
    return bool(backend is not None and getattr(backend, "is_available", lambda: False)())


def empty_prompt(prompt: Prompt) -> Generation:
    return Generation(
        id=prompt.request.id,
        output="",
        prompt=prompt.text,
        error="the prompt is empty (no tokens); check the suite's prompt template and this example",
    )
