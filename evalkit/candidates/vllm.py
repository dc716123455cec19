"""``engine: vllm``: a local candidate served by a managed vLLM server (``vllm_server``).

The same model and options as on transformers, mapped to vLLM's own mechanisms:

- ``adapter`` is a LoRA module of the base model's server; its requests name the module;
- ``quantization`` (bitsandbytes settings) becomes vLLM's bitsandbytes quantization when the
  installed vLLM has it, 4-bit nf4 only; anything else is refused with what to do instead;
- ``speculative`` becomes ``--speculative-config``: ``prompt_lookup: N`` is vLLM's n-gram
  method (N tokens, matching 1 to 2 prompt tokens as transformers' prompt lookup does),
  ``draft:`` a draft model. Speculation is a server setting, so such a candidate gets a server of
  its own; its equivalence target (``Verifiable``, the run's generic check) is the same candidate
  on the plain server (``VllmSpeculation``);
- decoding keeps its meaning: temperature 0 is greedy, ``top_p``/``top_k`` are always sent (a
  model's generation_config cannot change them), ``seed`` seeds sampling per request, and
  ``stop`` is applied to the stripped output exactly as the transformers engine does (not sent to
  the server, which would cut before stripping).

Generation goes through the OpenAI-compatible client (``ApiCandidate``, chat completions), so
the server applies the model's chat template; ``Generation.prompt`` is the same template rendered
here. dtype ``auto`` is float32 on the CPU build (as the transformers engine on CPU), vLLM's
choice on GPUs. The fingerprint holds ``engine: vllm``, the vLLM distribution and version, the
weights' hash and every server setting that can change an answer, so the two engines' answers
never share a cache entry.

Perplexity metrics use ``prompt_logprobs`` and fidelity metrics ``continuation_top_logprobs``:
token ids rendered here are sent to ``/v1/completions`` with ``prompt_logprobs``
(``vllm_logprobs``).
"""

from __future__ import annotations

import contextlib
import json
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from evalkit.candidates import adapters, vllm_logprobs
from evalkit.candidates import vllm_options as opts
from evalkit.candidates.api import ApiCandidate
from evalkit.candidates.base import (
    EquivalenceTarget,
    Generation,
    GenerationRequest,
    LatencySample,
)
from evalkit.candidates.models import (
    ResolvedModel,
    evalkit_home,
    fingerprint_files,
    has_chat_template,
    hub_fingerprint,
)
from evalkit.candidates.vllm_install import VllmInstall, find_vllm
from evalkit.candidates.vllm_logprobs import REQUEST_TIMEOUT_S
from evalkit.candidates.vllm_server import ServerConfig, ServerPool, VllmServer, active_pool
from evalkit.candidates.vllm_speculation import VllmSpeculation
from evalkit.errors import CandidateError
from evalkit.spec import ApiSpec, CandidateSpec, GenerationSpec
from evalkit.spec_engine import EngineOptions


class VllmCandidate:
    """A local model on a vLLM server of ``pool`` (default: the run's, else a private one)."""

    def __init__(
        self, name: str, spec: CandidateSpec, base_dir: Path, *, pool: ServerPool | None = None
    ) -> None:
        if not spec.model:
            raise CandidateError(f"candidate '{name}': engine: vllm needs 'model'")
        for key, why in opts.UNSUPPORTED.items():
            if key in spec.model_fields_set and getattr(spec, key):
                raise CandidateError(
                    f"candidate '{name}': {key} does not apply to engine: vllm: {why}"
                )
        self.name = name
        self.spec = spec
        self.base_dir = Path(base_dir)
        self.options = spec.engine_options or EngineOptions()
        self._pool = pool
        self._own_pool: ServerPool | None = None
        self._resolved: ResolvedModel | None = None
        self._server: VllmServer | None = None
        self._client: ApiCandidate | None = None
        self._tokenizer: Any = None
        self.prompt_mismatches = 0
        self._speculation = VllmSpeculation(self) if spec.speculative is not None else None

    def __repr__(self) -> str:
        return f"VllmCandidate({self.name!r}, model={self.spec.model!r})"

    # -- identity ------------------------------------------------------------------------------

    @property
    def who(self) -> str:
        return f"candidate '{self.name}'"

    @property
    def install(self) -> VllmInstall:
        try:
            return find_vllm(self.options.python, [self.base_dir])
        except CandidateError as exc:
            raise CandidateError(f"{self.who}: {exc}") from None

    @property
    def resolved(self) -> ResolvedModel:
        if self._resolved is None:
            self._resolved = opts.locate(
                str(self.spec.model), self.base_dir, self.spec.revision, self.who
            )
        return self._resolved

    @property
    def adapter(self) -> adapters.AdapterFolder | None:
        if self.spec.adapter is None:
            return None
        return adapters.read_adapter(self.spec.adapter, self.base_dir, self.who)

    @property
    def dtype_name(self) -> str:
        if self.spec.dtype != "auto":
            return self.spec.dtype
        return "float32" if self.install.cpu_build else "auto"

    def server_config(self) -> ServerConfig:
        """The server this candidate runs on (adapters excluded: they share the base's)."""
        resolved, options = self.resolved, self.options
        revision = ["--revision", resolved.revision] if resolved.kind == "hub" else []
        if not resolved.revision:
            revision = []
        return ServerConfig(
            install=self.install,
            model=resolved.source,
            served_name=opts.served_name(resolved),
            dtype=self.dtype_name,
            max_model_len=options.max_model_len,
            tensor_parallel_size=options.tensor_parallel_size,
            data_parallel_size=options.data_parallel_size,
            gpu_memory_utilization=options.gpu_memory_utilization,
            quantization=opts.quantization(self.spec, self.install, self.who),
            speculative=opts.speculative_config(self.spec, self.base_dir, self.who)[0],
            args=(*revision, *options.args),
        )

    def fingerprint(self) -> dict[str, Any]:
        """Engine, vLLM build and version, weights hash and answer-changing server settings;
        reads files and package metadata, starts nothing."""
        resolved, install, options = self.resolved, self.install, self.options
        identity: dict[str, Any] = {
            "kind": "vllm",
            "engine": "vllm",
            "vllm": f"{install.dist}=={install.version}",
            "model": self.spec.model,
            "files": fingerprint_files(resolved.path)
            if resolved.path is not None
            else hub_fingerprint(str(resolved.hub_id), resolved.revision),
            "dtype": self.dtype_name,
            "chat_template": self._chat_template(),
            "tensor_parallel_size": options.tensor_parallel_size,
        }
        if options.args:
            identity["args"] = list(options.args)
        if self.adapter is not None:
            identity["adapter"] = adapters.fingerprint(self.adapter, merge=False)
        if self.spec.quantization is not None:
            identity["quantization"] = opts.quantization(self.spec, install, self.who)
        speculative = opts.speculative_config(self.spec, self.base_dir, self.who)[1]
        if speculative is not None:  # without it: the plain server's fingerprint
            identity["speculative"] = speculative
        return identity

    def _chat_template(self) -> bool | str:
        """Always the chat template (the server's chat endpoint applies it)."""
        path = self.resolved.path
        if self.spec.chat_template is False:
            problem = "chat_template is false"
        elif path is not None and not has_chat_template(path):
            problem = f"'{self.spec.model}' has no chat template"
        else:
            return True if path is not None else "auto"
        raise CandidateError(
            f"{self.who}: engine: vllm generates through the server's chat endpoint, and "
            f"{problem}; use engine: transformers for plain-text prompts"
        )

    # -- the server ----------------------------------------------------------------------------

    @property
    def pool(self) -> ServerPool:
        if self._pool is None:
            self._pool = active_pool()
        if self._pool is None:
            self._own_pool = self._pool = ServerPool(evalkit_home() / "vllm" / "logs")
        return self._pool

    def plan(self) -> ServerConfig:
        """Tell the pool which server this candidate needs (its LoRA module included)."""
        config = self.server_config()
        folder = self.adapter
        if folder is not None:
            adapters.check_base(folder, self.resolved, str(self.spec.model))
            rank = int(folder.config.get("r") or 8)
            self.pool.add_lora(config, opts.lora_name(folder.path), str(folder.path), rank)
        return config

    def server(self) -> VllmServer:
        if self._server is None or not self._server.running():
            config = self.plan()
            self._server = self.pool.server(config, self.options.startup_timeout_s)
            self._client = None
        return self._server

    @property
    def served_model(self) -> str:
        """What requests name: the LoRA module, else the base model."""
        folder = self.adapter
        return opts.lora_name(folder.path) if folder else self.server_config().served_name

    def client(self) -> ApiCandidate:
        server = self.server()
        if self._client is None:
            api = ApiSpec(
                base=server.base,
                concurrency=self.options.concurrency,
                timeout_s=REQUEST_TIMEOUT_S,
                max_retries=1,
            )
            spec = CandidateSpec(model=f"hosted_vllm/{self.served_model}", api=api)
            self._client = ApiCandidate(self.name, spec)
        return self._client

    # -- generation ----------------------------------------------------------------------------

    def generate(
        self, requests: Sequence[GenerationRequest], params: GenerationSpec
    ) -> Iterator[list[Generation]]:
        """Chat completions, ``concurrency`` in flight; groups as they finish."""
        if not requests:
            return
        rendered = {r.id: self.render(r) for r in requests}
        client = self._sampling_client(params)
        for group in client.generate(requests, _sent(params)):
            yield [self._finish(g, rendered.get(g.id), params) for g in group]

    def _finish(
        self, generation: Generation, rendered: tuple[str, list[int]] | None, params: GenerationSpec
    ) -> Generation:
        text, ids = rendered or ("", [])
        if generation.error is None and ids and generation.n_prompt_tokens != len(ids):
            self.prompt_mismatches += 1  # the server's template tokenized differently
        output = opts.cut_at_stop(generation.output.strip(), params.stop)
        return Generation(
            id=generation.id,
            output=output,
            prompt=text,
            n_prompt_tokens=generation.n_prompt_tokens,
            n_output_tokens=generation.n_output_tokens,
            seconds=generation.seconds,
            error=generation.error,
        )

    def measure_latency(
        self, requests: Sequence[GenerationRequest], params: GenerationSpec, *, warmup: int
    ) -> list[LatencySample]:
        client = self._sampling_client(params)
        return client.measure_latency(requests, _sent(params), warmup=warmup)

    def _sampling_client(self, params: GenerationSpec) -> ApiCandidate:
        client = self.client()
        client.extra_body = opts.sampling_body(params)
        return client

    # -- prompt log-probabilities (perplexity metrics) -----------------------------------------

    def tokenizer(self) -> Any:
        """The model's tokenizer, loaded in this process (the server uses the same files)."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            hub = {"revision": self.resolved.revision} if self.resolved.kind == "hub" else {}
            self._tokenizer = AutoTokenizer.from_pretrained(self.resolved.source, **hub)
        return self._tokenizer

    def render(self, request: GenerationRequest) -> tuple[str, list[int]]:
        """The prompt text and ids the chat template gives (as the transformers engine)."""
        tokenizer = self.tokenizer()
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return text, list(tokenizer(text, add_special_tokens=False)["input_ids"])

    def max_length(self) -> int:
        """Longest model input a perplexity window may use: a sequence scored here is that plus
        the token it predicts, and the server must still generate one token after it."""
        with urllib.request.urlopen(f"{self.server().base}/models", timeout=30) as response:
            models = json.loads(response.read())["data"]
        return int(models[0]["max_model_len"]) - 2

    def concurrency(self) -> int:
        return self.options.concurrency

    def prompt_logprobs(self, sequences: Sequence[Sequence[int]]) -> list[list[float | None]]:
        """Per sequence, log p(token i | tokens before it); None first (``vllm_logprobs``)."""
        return vllm_logprobs.prompt_logprobs(self, sequences)

    def continuation_top_logprobs(
        self,
        requests: Sequence[GenerationRequest],
        continuations: Sequence[str],
        top_k: int,
        *,
        separator: str | None = None,
    ) -> list[list[dict[str, float]] | str]:
        """Per request the top-k log-probs at each answer token after the prompt as rendered
        here, or why there are none (``vllm_logprobs``; fidelity metrics)."""
        return vllm_logprobs.continuation_top_logprobs(
            self, requests, continuations, top_k, separator
        )

    # -- capabilities (candidates.base): equivalence and run facts of speculative candidates --

    def equivalence_target(self, params: GenerationSpec) -> EquivalenceTarget | None:
        speculation = self._speculation
        return speculation.equivalence_target(params) if speculation else None

    def after_generation(
        self, requests: Sequence[GenerationRequest], params: GenerationSpec
    ) -> None:
        if self._speculation is not None and self._speculation.spec.speedup_sample:
            self._speculation.measure_speedup(requests, params)

    def without_speculation(self) -> VllmCandidate:
        """The same candidate without ``speculative``: the plain server, on the same pool."""
        spec = self.spec.model_copy(update={"speculative": None})
        name = f"{self.name} (without speculation)"
        return VllmCandidate(name, spec, self.base_dir, pool=self.pool)

    # -- run record ----------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        server = self._server
        facts: dict[str, Any] = {
            "engine": "vllm",
            "model": self.spec.model,
            "source": self._resolved.source if self._resolved else None,
            "dtype": self.dtype_name,
            "served_model": self.served_model if self._resolved else None,
        }
        if server is not None:
            install = server.config.install
            facts["vllm"] = {
                "build": install.dist,
                "version": install.version,
                "python": install.python,
                "base": server.base,
                "startup_s": server.startup_s,
                "log": str(server.log_path),
                "loras": [name for name, _ in server.loras],
            }
        if self._client is not None:
            facts["requests"] = self._client.describe()
        if self.prompt_mismatches:
            facts["prompt_token_mismatches"] = self.prompt_mismatches
        if self._speculation is not None:
            facts["speculative"] = self._speculation.describe()
        return facts

    def close(self) -> None:
        """Servers belong to the run's pool; a private pool closes with its candidate."""
        self._client = None
        self._server = None
        if self._own_pool is not None:
            self._own_pool.close()


def _sent(params: GenerationSpec) -> GenerationSpec:
    """What the client sends: stops are applied here (as transformers' engine does), top_k goes
    in the extra fields (``opts.sampling_body``)."""
    return params.model_copy(update={"stop": [], "top_k": None})


# -- the servers of one run --------------------------------------------------------------------


@contextlib.contextmanager
def run_servers(
    specs: Mapping[str, CandidateSpec], base_dir: Path, log_dir: Path
) -> Iterator[ServerPool]:
    """A pool for one run: every vLLM candidate's LoRA module is planned before the first server
    starts (so a base and its adapters share one start), and every server stops at the end.
    Inside an active pool (a caller that keeps servers across runs: tests, benchmarks) the run
    plans into that pool and leaves its servers running."""
    outer = active_pool()
    pool = outer or ServerPool(log_dir)
    for name, spec in specs.items():
        if spec.engine != "vllm":  # the registry passes only these; direct callers may not
            continue
        # A candidate that cannot be planned fails with its own message when it runs.
        with contextlib.suppress(CandidateError):
            candidate = VllmCandidate(name, spec, base_dir, pool=pool)
            candidate.plan()
            if spec.speculative is not None:
                candidate.without_speculation().plan()
    if outer is not None:
        yield outer
        return
    with pool.active():
        yield pool
