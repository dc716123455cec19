"""Suite specification: the pydantic models a suite YAML file is validated against.

Every model forbids unknown keys, so a typo such as ``max_new_token`` fails at collection with
the file, line and field instead of being silently ignored.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from evalkit._spec_errors import located
from evalkit._yaml import LineMap, load_yaml
from evalkit.errors import SpecError
from evalkit.gate_spec import GateSpec as GateSpec  # re-exported: gate rules live there
from evalkit.gate_spec import GateTest as GateTest
from evalkit.gate_spec import Threshold as Threshold
from evalkit.retrieval.spec import RetrievalSpec
from evalkit.spec_engine import EngineOptions
from evalkit.spec_variants import VariantFields, check_source

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GenerationSpec(_Strict):
    """Decoding parameters; everything here is part of the generation cache key."""

    max_new_tokens: int = Field(64, ge=1, le=32768)
    temperature: float = Field(0.0, ge=0.0, description="0 means greedy decoding")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=1)
    seed: int = 0
    batch_size: int = Field(8, ge=1, description="requests per forward pass (local models)")
    stop: list[str] = Field(default_factory=list, description="cut the output at the first stop")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def merged(self, override: GenerationSpec | None) -> GenerationSpec:
        """These settings with the ones ``override`` sets explicitly (its defaults don't count)."""
        if override is None:
            return self
        return self.model_copy(update=override.model_dump(include=override.model_fields_set))


class QuantizationSpec(_Strict):
    """bitsandbytes weight quantization of an HF candidate (CPU and CUDA)."""

    bits: Literal[4, 8]
    type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type (4-bit only)")
    double_quant: bool = Field(False, description="quantize the quantization constants (4-bit)")
    compute_dtype: Literal["float32", "bfloat16", "float16"] | None = Field(
        None, description="dtype of the 4-bit matmuls (default: the candidate's dtype)"
    )

    @model_validator(mode="after")
    def _four_bit_options(self) -> QuantizationSpec:
        four_bit_only = {"type", "double_quant", "compute_dtype"} & self.model_fields_set
        if self.bits == 8 and four_bit_only:
            raise ValueError(f"{', '.join(sorted(four_bit_only))} only apply to bits: 4")
        return self


class SpeculativeSpec(_Strict):
    """Assisted generation: a draft model (any tokenizer) or prompt-lookup decoding."""

    draft: str | None = Field(None, description="draft model: alias, folder or hub id")
    num_assistant_tokens: int | None = Field(
        None, ge=1, description="draft tokens proposed per step (draft only)"
    )
    prompt_lookup: int | None = Field(
        None, ge=1, description="n-gram candidate tokens copied from the prompt per step"
    )
    speedup_sample: int = Field(
        8,
        ge=0,
        description="requests timed one at a time with and without speculation, alternating, in "
        "every run, to report the speed-up; 0 turns it off (a cached run then loads no model)",
    )

    @model_validator(mode="after")
    def _one_method(self) -> SpeculativeSpec:
        if (self.draft is None) == (self.prompt_lookup is None):
            raise ValueError("give exactly one of 'draft' or 'prompt_lookup'")
        if self.num_assistant_tokens is not None and self.draft is None:
            raise ValueError("num_assistant_tokens needs a 'draft' model")
        return self


class EquivalenceSpec(_Strict):
    """``equivalent_to``: this candidate's outputs must equal another's, example by example."""

    candidate: str = Field(description="the candidate whose outputs this one must reproduce")
    max_mismatch: int = Field(0, ge=0, description="differing examples allowed before failing")
    logprob_tolerance: float | None = Field(
        None,
        gt=0,
        description="a log-prob gap at the first differing token up to this is a near-tie",
    )


def public_url(url: str) -> str:
    """Scheme, host, port and path of a URL: no user info (credentials), query or fragment."""
    parts = urlsplit(url)
    host, port = (parts.hostname or "").lower(), f":{parts.port}" if parts.port else ""
    return f"{parts.scheme.lower()}://{host}{port}{parts.path.rstrip('/')}"


class ApiSpec(_Strict):
    """How an API candidate (litellm) is called. Keys are read from the environment variable
    named here, never written in the suite, the cache or the results."""

    base: str | None = Field(
        None, description="OpenAI-compatible server URL, e.g. http://127.0.0.1:8000/v1"
    )
    key_env: str | None = Field(None, description="environment variable holding the API key")
    concurrency: int = Field(8, ge=1, description="requests in flight at once")
    timeout_s: float = Field(60.0, gt=0, description="per-request timeout")
    max_retries: int = Field(
        4, ge=0, description="retries on 429, 5xx, timeouts and connection errors"
    )

    @field_serializer("base")
    def _public(self, base: str | None) -> str | None:
        """run.json and reports copy the spec: they get the URL without user info or query."""
        return public_url(base) if base else base

    @field_validator("base")
    @classmethod
    def _http_url(cls, base: str | None) -> str | None:
        if base is not None and not re.match(r"^https?://[^/\s]+", base, re.IGNORECASE):
            raise ValueError(
                f"'{base}' is not an http(s) URL; write it like http://127.0.0.1:8000/v1"
            )
        return base


class CandidateSpec(_Strict, VariantFields):
    """One model under test. ``model`` is an alias (``evalkit models``), a local folder or a hub id;
    ``replay`` evaluates outputs made elsewhere (a JSONL file of ``{"id", "output"}``); ``call``
    is the user's own pipeline (its fields, and a candidate's own prompt: ``VariantFields``)."""

    model: str | None = None
    replay: str | None = None
    device: str | None = Field(None, description="cuda, cuda:1, cpu, mps; default: cuda if present")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    chat_template: bool | None = Field(
        None,
        description="wrap the prompt in the tokenizer's chat template (default: if it has one)",
    )
    revision: str | None = Field(None, description="hub revision, for hub ids")
    generation: GenerationSpec | None = Field(
        None, description="overrides of the suite's generation settings (only the keys given)"
    )
    adapter: str | None = Field(None, description="peft (LoRA) adapter folder on the base model")
    merge: bool = Field(False, description="merge the adapter into the weights after loading")
    quantization: QuantizationSpec | None = None
    speculative: SpeculativeSpec | None = None
    equivalent_to: EquivalenceSpec | None = Field(
        None,
        description="a candidate of the suite whose outputs this one must equal (its name, or "
        "{candidate, max_mismatch, logprob_tolerance}); checked by an automatic gate",
    )
    engine: str | None = Field(
        None,
        description="the backend that runs 'model' (default: picked from the other fields; "
        "'transformers', or any engine a registered candidate kind names)",
    )
    engine_options: EngineOptions | None = Field(None, description="how engine: vllm serves it")
    api: ApiSpec | None = Field(
        None,
        description="call 'model' through litellm (any litellm model string) or an "
        "OpenAI-compatible server (api.base); 'provider/name' strings that litellm prices are "
        "API models even without this block",
    )
    retrieval: RetrievalSpec | None = None
    limit: int | None = Field(
        None,
        ge=1,
        description="only N of the suite's examples for this candidate (a slow variant in a "
        "quick run), chosen by id hash as latency samples are (nested: a smaller limit is a "
        "subset); its comparisons pair those N; --evalkit-full / --full ignore it",
    )
    samples: int = Field(1, ge=1, le=1000, description="answers per example, each from its "
                         "own seed (sampled decoding); see X@pass@K, X@pass^K columns")  # fmt: skip

    @field_validator("equivalent_to", mode="before")
    @classmethod
    def _equivalence_shorthand(cls, raw: Any) -> Any:
        return {"candidate": raw} if isinstance(raw, str) else raw

    @model_validator(mode="after")
    def _one_source(self) -> CandidateSpec:
        check_source(self)
        if self.merge and self.adapter is None:
            raise ValueError("merge: true needs an 'adapter'")
        if self.merge and self.quantization is not None:
            # peft can merge into bitsandbytes layers, but it dequantizes, adds the update and
            # quantizes again: the rounding changes answers (measured: different greedy tokens).
            raise ValueError(
                "merge: true cannot be combined with quantization: merging re-quantizes the "
                "weights and the rounding changes answers; remove 'merge' to run the adapter "
                "unmerged on the quantized base (QLoRA-style)"
            )
        # Which options a kind accepts is the candidate registry's to say
        # (evalkit.candidates.registry, checked when a suite is prepared).
        return self


class MetricSpec(_Strict):
    """A metric by registered name, its options, and the column name it is reported under."""

    name: str
    options: dict[str, Any] = Field(default_factory=dict)
    alias: str | None = None

    @property
    def column(self) -> str:
        return self.alias or self.name


class SuiteSpec(_Strict):
    suite: Name
    dataset: str = Field(
        description="golden file (.jsonl, .csv, .yaml), relative to the suite file"
    )
    ids: str = Field(
        "id",
        description="where example ids come from: the field 'id' (default), another field's "
        "name, or 'line' (line-N, the line an example starts on: for files without ids, such "
        "as lm-evaluation-harness JSONL; ids change when lines move)",
    )
    prompt: str = Field("{{ input }}", description="jinja2 template over the example's fields")
    system: str | None = Field(None, description="optional system message (jinja2 template)")
    generation: GenerationSpec = Field(default_factory=GenerationSpec)
    candidates: dict[Name, CandidateSpec]
    metrics: list[MetricSpec]
    gates: dict[str, GateSpec] = Field(default_factory=dict)
    compare_to: str | None = Field(
        None,
        description="candidate the others are compared with in this run; without it (and for "
        "that candidate itself) regression gates compare with the accepted baseline file",
    )
    baseline_dir: str | None = Field(
        None, description="where accepted baselines live (default: baselines/ beside the dataset)"
    )
    multiple_comparisons: Literal["holm", "none"] = Field(
        "holm",
        description="holm: the run's detection gates share one family-wise error rate "
        "(Holm-Bonferroni adjusted p beside the raw one); none: each gate at its own alpha",
    )

    @field_validator("metrics", mode="before")
    @classmethod
    def _metric_entries(cls, raw: Any) -> Any:
        if not isinstance(raw, list):
            return raw
        return [_metric_entry(item) for item in raw]

    @field_validator("gates", mode="before")
    @classmethod
    def _gate_entries(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw
        return {
            column: ({"metric": column, **rules} if isinstance(rules, dict) else rules)
            for column, rules in raw.items()
        }

    @model_validator(mode="after")
    def _cross_checks(self) -> SuiteSpec:
        if not self.candidates:
            raise ValueError("'candidates' is empty: name at least one model to evaluate")
        if self.compare_to is not None and self.compare_to not in self.candidates:
            raise ValueError(
                f"compare_to '{self.compare_to}' is not a candidate; candidates: "
                f"{', '.join(self.candidates)}"
            )
        for name, target in ((n, c.equivalent_to) for n, c in self.candidates.items()):
            if target is not None and target.candidate not in set(self.candidates) - {name}:
                raise ValueError(
                    f"candidate '{name}': equivalent_to '{target.candidate}' must be another "
                    f"candidate of this suite; candidates: {', '.join(self.candidates)}"
                )
        for name, gate in self.gates.items():
            unknown = sorted(set(gate.candidates or ()) - set(self.candidates))
            if unknown:
                raise ValueError(
                    f"gate '{name}': candidates {', '.join(unknown)} are not candidates of this "
                    f"suite; candidates: {', '.join(self.candidates)}"
                )
        columns = [m.column for m in self.metrics]
        if len(set(columns)) != len(columns):
            raise ValueError("a metric column appears twice; give one an 'as:' name")
        return self


def _metric_entry(item: Any) -> Any:
    """``exact_match`` or ``{exact_match: {normalize: [lower], as: em}}`` -> MetricSpec data."""
    if isinstance(item, str):
        return {"name": item}
    if isinstance(item, dict) and len(item) == 1:
        ((name, options),) = item.items()
        if not isinstance(options, dict | None):  # {chrf: [1, 2]}: pydantic names the field
            return {"name": name, "options": options}
        options = dict(options or {})
        alias = options.pop("as", None)
        return {"name": name, "options": options, "alias": alias}
    return item


class LoadedSuite(BaseModel):
    """A validated suite plus where it came from (paths resolved against the suite file)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    spec: SuiteSpec
    path: Path
    lines: LineMap

    @property
    def dataset_path(self) -> Path:
        return (self.path.parent / self.spec.dataset).resolve()

    @property
    def baseline_dir(self) -> Path:
        if self.spec.baseline_dir:
            return (self.path.parent / self.spec.baseline_dir).resolve()
        return self.dataset_path.parent / "baselines" / self.spec.suite

    def resolve(self, relative: str) -> Path:
        return (self.path.parent / relative).resolve()

    def line_of(self, *field_path: str | int) -> int | None:
        return self.lines.line_of(field_path)

    @property
    def spec_hash(self) -> str:
        blob = json.dumps(self.spec.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_suite(path: str | Path) -> LoadedSuite:
    """Read and validate a suite file. Any problem raises one SpecError naming file:line field."""
    path = Path(path)
    data, lines = load_yaml(path)
    if not isinstance(data, dict):
        raise SpecError(
            "a suite file must be a YAML mapping with 'suite', 'dataset', ...", path=path
        )
    try:
        spec = SuiteSpec.model_validate(data)
    except ValidationError as exc:
        raise located(exc, SuiteSpec, path, lines) from None
    return LoadedSuite(spec=spec, path=path.resolve(), lines=lines)


def suite_json_schema() -> dict[str, Any]:
    return SuiteSpec.model_json_schema()
