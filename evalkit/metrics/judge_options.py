"""Options of the judge metrics as a suite writes them, validated with one clear error each.

``{judge: {rubric: correctness, model: smollm2-135m-instruct, scale: [1, 5]}}`` and
``{judge_pairwise: {model: openai/gpt-4o-mini, api: {base: ...}}}``. The judge model is any
candidate: an alias, a local folder or hub id, or an API model (with ``api:``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from evalkit.spec import ApiSpec, CandidateSpec


class AnchorExampleSpec(BaseModel):
    """A graded example shown to the judge: ``{answer, score}`` plus optional question,
    reference and ``why``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    answer: str
    score: int
    question: str = ""
    reference: str = ""
    why: str = ""


class _JudgeModelOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(description="judge model: alias, local folder, hub id, or API model")
    api: ApiSpec | None = Field(None, description="call the judge through litellm")
    device: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    chat_template: bool | None = None
    revision: str | None = None
    rubric: str | None = Field(
        None, description="built-in rubric (correctness, helpfulness, conciseness) or a text"
    )
    rubric_file: str | None = Field(None, description="rubric file, relative to the suite file")
    reference: bool | None = Field(
        None, description="show the example's reference (default: if the rubric needs one)"
    )
    rationale: bool = Field(False, description="keep the judge's one-sentence rationale")
    rationale_tokens: int = Field(48, ge=1, le=512, description="local judges: rationale length")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="API judges only")
    samples: int = Field(1, ge=1, le=20, description="API judges with temperature > 0 only")
    read: Literal["auto", "logprobs", "json"] = Field(
        "auto",
        description="API judges: score token log-probabilities, or JSON (auto: logprobs when "
        "the API returns them)",
    )
    max_reasks: int = Field(2, ge=0, le=10, description="JSON mode: re-asks after a bad reply")
    batch_size: int = Field(8, ge=1, description="local judges: prompts per forward pass")

    @property
    def is_api(self) -> bool:
        """An ``api:`` block, or a bare ``provider/name`` litellm prices as a chat model (the
        rule ``make_candidate`` applies; it reads a file, imports nothing)."""
        from evalkit.candidates.api_models import LOCAL_ONLY_OPTIONS, is_litellm_model
        from evalkit.candidates.models import ALIASES

        if self.api is not None:
            return True
        if self.model in ALIASES or set(LOCAL_ONLY_OPTIONS) & self.model_fields_set:
            return False
        return is_litellm_model(self.model)

    @model_validator(mode="after")
    def _judge_kind(self) -> _JudgeModelOptions:
        if self.rubric is not None and self.rubric_file is not None:
            raise ValueError("give 'rubric' or 'rubric_file', not both")
        if not self.is_api:
            local_only_wrong = {"temperature", "read", "max_reasks"} & self.model_fields_set
            if self.samples > 1:
                raise ValueError(
                    "samples: N is meaningless for a local judge: its score is read from the "
                    "exact next-token distribution, which is the same every time; remove it"
                )
            if "temperature" in local_only_wrong and self.temperature != 0:
                raise ValueError(
                    "temperature applies to API judges only: a local judge reads the "
                    "distribution itself instead of sampling from it"
                )
            if "read" in local_only_wrong and self.read != "auto":
                raise ValueError("read: logprobs|json applies to API judges only (give 'api')")
        else:
            if self.samples > 1 and self.temperature == 0:
                raise ValueError(
                    f"samples: {self.samples} with temperature 0 asks the same question "
                    "several times for the same answer; set temperature > 0 or drop samples"
                )
            if self.rationale and self.read == "logprobs":
                raise ValueError(
                    "rationale needs read: json (or auto): with logprobs the score is the "
                    "reply's first token, so nothing comes before it"
                )
            local_only = {"device", "dtype", "chat_template", "revision", "batch_size"}
            if given := local_only & self.model_fields_set:
                raise ValueError(f"{', '.join(sorted(given))} do not apply to API judges")
        return self

    def candidate_spec(self) -> CandidateSpec:
        """The judge as a candidate (built with ``make_candidate``)."""
        fields = ("model", "api", "device", "dtype", "chat_template", "revision")
        return CandidateSpec(**{f: getattr(self, f) for f in fields if f in self.model_fields_set})


class JudgeOptions(_JudgeModelOptions):
    scale: tuple[int, int] = Field((1, 5), description="lowest and highest score")
    levels: dict[int, str] | None = Field(
        None, description="what each score means (default: the built-in rubric's, on 1-5)"
    )
    examples: list[AnchorExampleSpec] = Field(
        default_factory=list, description="graded examples that anchor the scores"
    )
    calibration: str | None = Field(
        None,
        description="human labels (.jsonl of {id, question, reference, answer, score}, relative "
        "to the suite file) the judge's agreement is measured on; below min_kappa its gates are "
        "advisory",
    )
    min_kappa: float = Field(
        0.6, ge=-1.0, le=1.0, description="agreement floor (quadratic-weighted Cohen's kappa)"
    )

    @field_validator("scale", mode="before")
    @classmethod
    def _scale_pair(cls, raw: Any) -> Any:
        if not isinstance(raw, list | tuple) or len(raw) != 2:
            raise ValueError("scale must be [lowest, highest], e.g. [1, 5]")
        return raw

    @model_validator(mode="after")
    def _within_scale(self) -> JudgeOptions:
        low, high = self.scale
        if not 0 <= low < high:
            raise ValueError(f"scale [{low}, {high}] must have 0 <= lowest < highest")
        outside = [s for s in (self.levels or {}) if not low <= s <= high]
        outside += [e.score for e in self.examples if not low <= e.score <= high]
        if outside:
            raise ValueError(f"score {outside[0]} in levels/examples is outside scale {low}-{high}")
        if "min_kappa" in self.model_fields_set and self.calibration is None:
            raise ValueError("min_kappa needs calibration: <labels.jsonl> to measure agreement on")
        return self


class PairwiseOptions(_JudgeModelOptions):
    pass


def options_error(metric: str, exc: ValidationError) -> ValueError:
    """A pydantic error as one line naming the option."""
    error = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = f"unknown option '{where}'"
        return ValueError(
            f"{message} (see `evalkit schema` / docs/metrics.md for {metric} options)"
        )
    if error["type"] == "missing":
        return ValueError(
            f"option '{where}' is required (the judge model, e.g. smollm2-135m-instruct)"
            if where == "model"
            else f"option '{where}' is required"
        )
    return ValueError(f"option '{where}': {message}" if where else message)
