"""A transformers causal LM as a candidate.

torch and transformers are imported inside methods: building a candidate and computing its
fingerprint happen at collection and on fully cached runs, which must stay fast. ``fingerprint``
imports torch (to know the device) but never transformers and never loads weights.
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalkit._files import env_flag, progress_enabled
from evalkit.candidates import adapters, quantization
from evalkit.candidates.base import Generation, GenerationRequest, LatencySample
from evalkit.candidates.models import (
    ALIASES,
    ResolvedModel,
    fingerprint_files,
    has_chat_template,
    hub_fingerprint,
    looks_like_path,
    resolve_model,
)
from evalkit.candidates.sampling import example_seed, per_example_sampling
from evalkit.errors import CandidateError
from evalkit.spec import CandidateSpec, GenerationSpec

if TYPE_CHECKING:
    import torch

    from evalkit.candidates.speculative import Speculation


@dataclass
class _Prompt:
    """One request after the chat template and tokenization."""

    request: GenerationRequest
    text: str
    ids: list[int]


class HFCandidate:
    """A local folder, alias or hub id loaded with ``AutoModelForCausalLM``.

    ``base_dir`` is the folder relative ``model:`` paths are relative to (the suite file's).
    """

    def __init__(self, name: str, spec: CandidateSpec, base_dir: Path) -> None:
        if not spec.model:
            raise CandidateError(f"candidate '{name}': HFCandidate needs 'model'")
        self.name = name
        self.spec = spec
        self.base_dir = Path(base_dir)
        self._resolved: ResolvedModel | None = None
        self._device: torch.device | None = None
        self._model: Any = None
        self._tokenizer: Any = None
        self._load_seconds: float | None = None
        self._n_parameters: int | None = None
        self._adapter: adapters.AdapterFolder | None = None
        self._attached: adapters.AttachedAdapter | None = None
        self._weights_bytes: int | None = None
        self._quantization_facts: dict[str, Any] = {}
        self.speculation: Speculation | None = None
        if spec.speculative is not None:
            from evalkit.candidates.speculative import Speculation

            self.speculation = Speculation(self)

    def __repr__(self) -> str:
        return f"HFCandidate({self.name!r}, model={self.spec.model!r})"

    # -- identity -------------------------------------------------------------------------

    @property
    def resolved(self) -> ResolvedModel:
        """Resolved once; for the embedded alias this converts it on first use (~15 s)."""
        if self._resolved is None:
            try:
                self._resolved = resolve_model(self._locate(), self.spec.revision)
            except CandidateError as exc:
                raise CandidateError(f"candidate '{self.name}': {exc}") from None
        return self._resolved

    @property
    def adapter(self) -> adapters.AdapterFolder | None:
        """The ``adapter:`` folder, read and checked on first use (no weights loaded)."""
        if self._adapter is None and self.spec.adapter is not None:
            self._adapter = adapters.read_adapter(self.spec.adapter, self.base_dir, self._who)
        return self._adapter

    @property
    def _who(self) -> str:
        return f"candidate '{self.name}'"

    def _locate(self) -> str:
        """Relative folders are relative to ``base_dir``; an ``org/name`` with no such folder
        there stays a hub id, as in ``from_pretrained``."""
        model = str(self.spec.model)
        path = Path(model).expanduser()
        if model in ALIASES or path.is_absolute():
            return str(path) if path.is_absolute() else model
        relative = self.base_dir / path
        return str(relative) if relative.exists() or looks_like_path(model) else model

    def fingerprint(self) -> dict[str, Any]:
        """Everything that changes an answer, computed from files (hashes are memoized)."""
        resolved = self.resolved
        device = self.device
        files = (
            fingerprint_files(resolved.path)
            if resolved.path is not None
            else hub_fingerprint(str(resolved.hub_id), resolved.revision)
        )
        identity: dict[str, Any] = {
            "kind": "hf",
            "model": self.spec.model,
            "files": files,
            "dtype": self.dtype_name,
            "device": device.type,
            "chat_template": self._chat_template_setting(),
        }
        # Added only when set, so plain candidates keep their fingerprints (and caches).
        if self.adapter is not None:
            identity["adapter"] = adapters.fingerprint(self.adapter, self.spec.merge)
        if self.spec.quantization is not None:
            identity["quantization"] = quantization.fingerprint(
                self.spec.quantization, self.dtype_name, device
            )
        if self.speculation is not None:  # without this key: the plain target's fingerprint
            identity["speculative"] = self.speculation.fingerprint()
        return identity

    def _chat_template_setting(self) -> bool | str:
        """True/False when known from the files; "auto" for hub models not on disk."""
        path = self.resolved.path
        if self.spec.chat_template is False:
            return False
        if path is None:
            return "auto" if self.spec.chat_template is None else True
        present = has_chat_template(path)
        if self.spec.chat_template and not present:
            raise self._no_template_error()
        return present

    def _no_template_error(self) -> CandidateError:
        return CandidateError(
            f"candidate '{self.name}': chat_template is true but the tokenizer of "
            f"'{self.spec.model}' has no chat template; set chat_template: false to send the "
            "prompt as plain text"
        )

    # -- device and dtype -----------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        """``spec.device`` if given (and available), else cuda when present, else cpu."""
        if self._device is None:
            self._device = self._pick_device()
        return self._device

    def _pick_device(self) -> torch.device:
        import torch

        if self.spec.device is None:
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            device = torch.device(self.spec.device)
        except (RuntimeError, ValueError) as exc:
            raise CandidateError(
                f"candidate '{self.name}': device '{self.spec.device}' is not a torch device "
                f"({exc}); use cpu, cuda, cuda:1 or mps, or leave it out"
            ) from None
        if not _device_available(device):
            raise CandidateError(
                f"candidate '{self.name}': device '{self.spec.device}' is not available on this "
                f"machine (torch {torch.__version__}); remove 'device:' to pick one automatically "
                "or install a torch build for that device"
            )
        return device

    @property
    def dtype_name(self) -> str:
        """``auto``: float32 on CPU (bfloat16 is slow there and changes answers), bfloat16 on
        GPUs that support it, else float16."""
        if self.spec.dtype != "auto":
            return self.spec.dtype
        if self.device.type != "cuda":
            return "float32"
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"

    # -- loading --------------------------------------------------------------------------

    def _load(self) -> None:
        if self._model is not None:
            return
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        resolved, device, quant = self.resolved, self.device, self.spec.quantization
        hub = {"revision": resolved.revision} if resolved.kind == "hub" else {}
        if quant is not None:
            quantization.check_backend(quant, device, self._who)
        start = time.perf_counter()
        try:
            tokenizer = AutoTokenizer.from_pretrained(resolved.source, **hub)
            model = AutoModelForCausalLM.from_pretrained(
                resolved.source,
                dtype=getattr(torch, self.dtype_name),
                **hub,
                **quantization.load_kwargs(quant, self.dtype_name, device),
            )
        except Exception as exc:  # transformers raises OSError, ValueError, KeyError, ...
            raise CandidateError(self._load_failure(exc)) from exc
        if quant is None:
            model = model.to(device)
        else:  # bitsandbytes placed it while quantizing
            self._quantization_facts = quantization.prepare_loaded(model, device)
        model = self._attach_adapter(model)
        self._weights_bytes = int(model.get_memory_footprint()) + int(
            self._quantization_facts.get("constants_bytes", 0)
        )
        self._model = model.eval()
        self._tokenizer = tokenizer
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None and tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        self._load_seconds = time.perf_counter() - start
        self._n_parameters = int(model.num_parameters())
        if self.speculation is not None:
            self.speculation.attach(_transformers_model(self._model), tokenizer)

    def _attach_adapter(self, model: Any) -> Any:
        """The base model wrapped in (or merged with) the ``adapter:``; fails loudly."""
        folder = self.adapter
        if folder is None:
            return model
        base_check = adapters.check_base(folder, self.resolved, str(self.spec.model))
        model, self._attached = adapters.attach(
            model, folder, merge=self.spec.merge, base_check=base_check, device=self.device
        )
        return model

    def _load_failure(self, exc: Exception) -> str:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        resolved = self.resolved
        if self.spec.quantization is not None:
            settings = quantization.settings(self.spec.quantization, self.dtype_name)
            return (
                f"candidate '{self.name}': could not load '{self.spec.model}' with "
                f"quantization {settings} ({reason}); check that it loads without "
                "'quantization:', then change or remove the quantization settings"
            )
        if resolved.kind != "hub":
            return (
                f"candidate '{self.name}': could not load the model in {resolved.path} "
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
            f"candidate '{self.name}': could not load hub model '{resolved.hub_id}' ({reason}); "
            f"{hint}check the id and revision, or give a local folder (no folder "
            f"{self.base_dir / str(self.spec.model)} exists)"
        )

    # -- access for metrics that need the model (perplexity, judges, latency) ---------------

    def loaded(self) -> tuple[Any, Any]:
        """``(model, tokenizer)``, loading them on first use. The tokenizer pads on the left."""
        self._load()
        return self._model, self._tokenizer

    def render(self, request: GenerationRequest) -> tuple[str, list[int]]:
        """The exact prompt text and token ids ``generate`` would feed the model."""
        self._load()
        prompt = self._prepare(request, self._use_chat_template())
        return prompt.text, prompt.ids

    # -- generation -----------------------------------------------------------------------

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        params: GenerationSpec,
        *,
        assisted: bool = True,
    ) -> Iterator[list[Generation]]:
        """Longest prompts first, batched with left padding, one list per finished batch.
        Speculative candidates run one request at a time (``assisted=False``: the plain
        target, batched)."""
        if not requests:
            return
        self._load()
        use_chat = self._use_chat_template()
        prompts = [self._prepare(request, use_chat) for request in requests]
        if empty := [p for p in prompts if not p.ids]:
            yield [_empty_prompt(p) for p in empty]
        # Longest first: padding waste is smallest, and an out-of-memory error shows at once.
        ordered = sorted((p for p in prompts if p.ids), key=lambda p: len(p.ids), reverse=True)
        from tqdm.auto import tqdm

        bar = tqdm(
            total=len(requests),
            desc=f"generate {self.name}",
            unit="ex",
            file=sys.stderr,
            leave=False,
            disable=not progress_enabled(),
        )
        bar.update(len(empty))
        speculating = assisted and self.speculation is not None
        batch_size = 1 if speculating else params.batch_size
        with bar:
            for index, start in enumerate(range(0, len(ordered), batch_size)):
                batch = ordered[start : start + batch_size]
                generations = self._generate_batch(batch, params, index, assisted=assisted)
                bar.update(len(batch))
                yield generations

    def _use_chat_template(self) -> bool:
        present = getattr(self._tokenizer, "chat_template", None) is not None
        if self.spec.chat_template and not present:
            raise self._no_template_error()
        return present if self.spec.chat_template is None else self.spec.chat_template

    def _prepare(self, request: GenerationRequest, use_chat: bool) -> _Prompt:
        tokenizer = self._tokenizer
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        if use_chat:
            try:
                text = tokenizer.apply_chat_template(
                    messages, tokenize=False, add_generation_prompt=True
                )
            except Exception as exc:  # jinja2 errors raised by the template itself
                raise CandidateError(
                    f"candidate '{self.name}': the chat template rejected request "
                    f"'{request.id}' ({exc}); drop the system message or set "
                    "chat_template: false"
                ) from exc
        else:
            text = "\n\n".join(m.content for m in request.messages)
        # The template already wrote BOS and friends; adding them again would double them.
        ids = tokenizer(text, add_special_tokens=not use_chat)["input_ids"]
        return _Prompt(request, text, list(ids))

    def generate_single(
        self,
        request: GenerationRequest,
        params: GenerationSpec,
        *,
        assisted: bool = True,
        streamer: Any = None,
    ) -> Generation:
        """One request on its own, unbatched (latency probes and speed-up timing)."""
        self._load()
        prompt = self._prepare(request, self._use_chat_template())
        if not prompt.ids:
            return _empty_prompt(prompt)
        return self._generate_batch([prompt], params, 0, assisted=assisted, streamer=streamer)[0]

    def measure_latency(
        self, requests: Sequence[GenerationRequest], params: GenerationSpec, *, warmup: int
    ) -> list[LatencySample]:
        from evalkit.candidates.timing import measure_single_requests

        return measure_single_requests(self, requests, params, warmup=warmup)

    def _generate_batch(
        self,
        batch: list[_Prompt],
        params: GenerationSpec,
        index: int,
        *,
        assisted: bool = True,
        streamer: Any = None,
    ) -> list[Generation]:
        import torch

        start = time.perf_counter()
        input_ids, attention_mask = self._left_pad([p.ids for p in batch])
        kwargs = self._decoding_kwargs(params, input_ids.shape[1])
        if streamer is not None:
            kwargs["streamer"] = streamer
        speculation = self.speculation if assisted else None
        if not params.greedy:
            # Seeded per example (suite seed + example id), so a sample does not depend on the
            # batch it ran in or on what was cached: a resumed run equals an uninterrupted one.
            # Speculative candidates run one request at a time: the global seed is per example.
            ids = [p.request.id for p in batch]
            if speculation is None:
                kwargs = per_example_sampling(kwargs, params, ids)
            else:
                torch.manual_seed(example_seed(params.seed, ids[0]))
        # Not around the whole generator: inference mode is thread state and must not leak
        # into the caller's code while we are suspended at a yield.
        with torch.inference_mode():
            if speculation is not None:
                output = speculation.generate(
                    self._model, input_ids=input_ids, attention_mask=attention_mask, **kwargs
                )
            else:
                output = self._model.generate(
                    input_ids=input_ids, attention_mask=attention_mask, **kwargs
                )
        seconds = (time.perf_counter() - start) / len(batch)
        new_tokens = output[:, input_ids.shape[1] :].tolist()
        return [
            self._finish(prompt, tokens, params, seconds)
            for prompt, tokens in zip(batch, new_tokens, strict=True)
        ]

    def _left_pad(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder-only models continue from the last position, so padding goes on the left."""
        import torch

        width = max(len(row) for row in rows)
        input_ids = torch.full((len(rows), width), self._pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            attention_mask[i, width - len(row) :] = 1
        return input_ids.to(self.device), attention_mask.to(self.device)

    def _decoding_kwargs(self, params: GenerationSpec, prompt_width: int) -> dict[str, Any]:
        """Our spec decides sampling; the model's generation_config keeps the rest (eos ids,
        repetition penalty). ``top_k`` None means no top-k (transformers would default to 50)."""
        kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_new_tokens,
            "do_sample": not params.greedy,
            "pad_token_id": self._pad_id,
        }
        if not params.greedy:
            kwargs.update(
                temperature=params.temperature, top_p=params.top_p, top_k=params.top_k or 0
            )
        if params.stop:
            kwargs["stopping_criteria"] = _stop_criteria(self._tokenizer, params.stop, prompt_width)
        return kwargs

    @property
    def _pad_id(self) -> int:
        """Padding is masked out, so any id works; eos is the usual choice for models without
        a pad token, and generate also fills finished rows with it."""
        for value in (self._tokenizer.pad_token_id, *self._end_ids):
            if value is not None:
                return int(value)
        return 0

    @property
    def _end_ids(self) -> list[int]:
        eos = self._model.generation_config.eos_token_id
        ids = eos if isinstance(eos, list) else [eos]
        return [int(i) for i in (*ids, self._tokenizer.eos_token_id) if i is not None]

    def _finish(
        self, prompt: _Prompt, tokens: list[int], params: GenerationSpec, seconds: float
    ) -> Generation:
        ends = {*self._end_ids, self._pad_id}
        count = next((i for i, token in enumerate(tokens) if token in ends), len(tokens))
        text = self._tokenizer.decode(tokens[:count], skip_special_tokens=True).strip()
        return Generation(
            id=prompt.request.id,
            output=cut_at_stop(text, params.stop),
            prompt=prompt.text,
            n_prompt_tokens=len(prompt.ids),
            n_output_tokens=count,
            seconds=seconds,
        )

    # -- run record -----------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """Facts for the run record; never loads anything."""
        resolved = self._resolved
        return {
            "model": self.spec.model,
            "source": resolved.source if resolved else None,
            "kind": resolved.kind if resolved else None,
            "device": str(self._device) if self._device is not None else None,
            "dtype": self.dtype_name if self._device is not None else self.spec.dtype,
            "load_seconds": self._load_seconds,
            "n_parameters": self._n_parameters,
            "weights_mb": _megabytes(self._weights_bytes),
            **self._variant_facts(),
            **({"speculative": self.speculation.describe()} if self.speculation else {}),
        }

    def _variant_facts(self) -> dict[str, Any]:
        facts: dict[str, Any] = {}
        if self.spec.quantization is not None:
            facts["quantization"] = {
                **quantization.settings(self.spec.quantization, self.dtype_name),
                **self._quantization_facts,
            }
        if self._adapter is not None:
            facts["adapter"] = adapters.describe(self._adapter, self.spec.merge, self._attached)
        return facts

    def close(self) -> None:
        """Drop the model so a run over several candidates holds one in memory at a time."""
        if self.speculation is not None:
            self.speculation.close()
        if self._model is None:
            return
        self._model = None
        self._tokenizer = None
        gc.collect()
        if self._device is not None and self._device.type == "cuda":
            import torch

            torch.cuda.empty_cache()


def _transformers_model(model: Any) -> Any:
    """The transformers model whose ``generate`` runs: an unmerged peft adapter wraps it."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _megabytes(size: int | None) -> float | None:
    """Decimal megabytes (10^6 bytes) to the kilobyte: what the loaded weights occupy."""
    return None if size is None else round(size / 1e6, 3)


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """Text before the first occurrence of any stop string, without trailing whitespace."""
    positions = [i for i in (text.find(stop) for stop in stops if stop) if i >= 0]
    return text[: min(positions)].rstrip() if positions else text


def _stop_criteria(tokenizer: Any, stops: Sequence[str], prompt_width: int) -> Any:
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


def _device_available(device: torch.device) -> bool:
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


def _empty_prompt(prompt: _Prompt) -> Generation:
    return Generation(
        id=prompt.request.id,
        output="",
        prompt=prompt.text,
        error="the prompt is empty (no tokens); check the suite's prompt template and this example",
    )
