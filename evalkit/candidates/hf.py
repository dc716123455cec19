"""A transformers causal LM as a candidate.

torch and transformers are imported inside methods: building a candidate and computing its
fingerprint happen at collection and on fully cached runs, which must stay fast. ``fingerprint``
never loads weights, never imports transformers, and imports torch only where the device type
cannot be read from torch's files (a CUDA or ROCm build with no ``device:`` given).
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalkit._files import progress_enabled
from evalkit._quiet import loading_quietly
from evalkit.candidates import adapters, quantization
from evalkit.candidates.base import (
    EquivalenceTarget,
    Generation,
    GenerationRequest,
    LatencySample,
)
from evalkit.candidates.hf_support import (
    Prompt,
    chat_template_setting,
    decoding_kwargs,
    device_type,
    empty_prompt,
    finish,
    left_pad,
    load_failure,
    megabytes,
    no_template_error,
    pick_device,
    render_prompt,
    transformers_model,
)
from evalkit.candidates.hf_support import cut_at_stop as cut_at_stop  # re-exported
from evalkit.candidates.models import (
    ALIASES,
    ResolvedModel,
    fingerprint_files,
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

            self.speculation = Speculation(
                self, lambda name, draft: HFCandidate(name, draft, self.base_dir)
            )

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
            "device": self.device_type,
            "chat_template": chat_template_setting(self.name, self.spec, resolved.path),
        }
        # Added only when set, so plain candidates keep their fingerprints (and caches).
        if self.adapter is not None:
            identity["adapter"] = adapters.fingerprint(self.adapter, self.spec.merge)
        if self.spec.quantization is not None:
            identity["quantization"] = quantization.fingerprint(
                self.spec.quantization, self.dtype_name, self.device_type
            )
        if self.speculation is not None:  # without this key: the plain target's fingerprint
            identity["speculative"] = self.speculation.fingerprint()
        return identity

    # -- device and dtype -----------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        """``spec.device`` if given (and available), else cuda when present, else cpu."""
        if self._device is None:
            self._device = pick_device(self.name, self.spec.device)
        return self._device

    @property
    def device_type(self) -> str:
        """``device.type``, read without importing torch where that is certain."""
        if self._device is not None:
            return self._device.type
        return device_type(self.name, self.spec.device)

    @property
    def dtype_name(self) -> str:
        """``auto``: float32 on CPU (bfloat16 is slow there and changes answers), bfloat16 on
        GPUs that support it, else float16."""
        if self.spec.dtype != "auto":
            return self.spec.dtype
        if self.device_type != "cuda":
            return "float32"
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"

    # -- loading --------------------------------------------------------------------------

    def _load(self) -> None:
        if self._model is None:
            with loading_quietly():  # no third-party bars, deprecation notes or log lines
                self._load_model()

    def _load_model(self) -> None:
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
            failure = load_failure(
                self.name, self.spec, resolved, self.base_dir, self.dtype_name, exc
            )
            raise CandidateError(failure) from exc
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
            self.speculation.attach(transformers_model(self._model), tokenizer)

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
            yield [empty_prompt(p) for p in empty]
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

    def _prepare(self, request: GenerationRequest, use_chat: bool) -> Prompt:
        return render_prompt(self.name, self._tokenizer, request, use_chat)

    def _use_chat_template(self) -> bool:
        present = getattr(self._tokenizer, "chat_template", None) is not None
        if self.spec.chat_template and not present:
            raise no_template_error(self.name, self.spec.model)
        return present if self.spec.chat_template is None else self.spec.chat_template

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
            return empty_prompt(prompt)
        return self._generate_batch([prompt], params, 0, assisted=assisted, streamer=streamer)[0]

    # -- capabilities (candidates.base): latency probes, equivalence, run facts ---------------

    def measure_latency(
        self, requests: Sequence[GenerationRequest], params: GenerationSpec, *, warmup: int
    ) -> list[LatencySample]:
        from evalkit.candidates.timing import measure_single_requests

        return measure_single_requests(self, requests, params, warmup=warmup)

    def probing(self) -> AbstractContextManager[None]:
        """Speculative acceptance during probes is counted apart from the generation's."""
        speculation = self.speculation
        return speculation.counting(speculation.probed) if speculation else nullcontext()

    def effective_batch_size(self, params: GenerationSpec) -> int:
        return 1 if self.speculation is not None else params.batch_size

    def equivalence_target(self, params: GenerationSpec) -> EquivalenceTarget | None:
        speculation = self.speculation
        return speculation.equivalence_target(params) if speculation else None

    def after_generation(
        self, requests: Sequence[GenerationRequest], params: GenerationSpec
    ) -> None:
        if self.speculation is not None:
            self.speculation.after_generation(requests, params)

    def _generate_batch(
        self,
        batch: list[Prompt],
        params: GenerationSpec,
        index: int,
        *,
        assisted: bool = True,
        streamer: Any = None,
    ) -> list[Generation]:
        import torch

        start = time.perf_counter()
        input_ids, attention_mask = left_pad([p.ids for p in batch], self._pad_id, self.device)
        kwargs = decoding_kwargs(params, self._pad_id, self._tokenizer, input_ids.shape[1])
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
        ends = {*self._end_ids, self._pad_id}
        return [
            finish(prompt, tokens, params, seconds, ends, self._tokenizer)
            for prompt, tokens in zip(batch, new_tokens, strict=True)
        ]

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
            "weights_mb": megabytes(self._weights_bytes),
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
