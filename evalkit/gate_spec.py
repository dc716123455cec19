"""Gate rules of a suite file: thresholds, the test a change rule asks for, ``GateSpec``.

Kept apart from ``evalkit.spec`` (which re-exports them) so each file stays one screenful of
models; users write them under ``gates:`` in a suite file.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    model_validator,
)

RUN_GATE = "run"
"""The check of a candidate in a suite that declares no gates: the run itself must work."""
EQUIVALENCE_GATE = "lossless"
"""The item name of the equivalence check (the name predates the general check)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_RELATIVE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*%\s*$")


class Threshold(_Strict):
    """An allowed change: absolute (``0.03``) or relative to the baseline mean (``"15%"``)."""

    value: float
    relative: bool = False

    @classmethod
    def parse(cls, raw: float | int | str) -> Threshold:
        if isinstance(raw, bool):
            raise ValueError("expected a number or a percentage such as '15%'")
        if isinstance(raw, int | float):
            if raw < 0:
                raise ValueError("must be >= 0")
            return cls(value=float(raw))
        match = _RELATIVE.match(raw)
        if not match:
            raise ValueError(f"'{raw}' is neither a number nor a percentage such as '15%'")
        return cls(value=float(match.group(1)) / 100.0, relative=True)

    def allowed(self, baseline_mean: float) -> float:
        return self.value * abs(baseline_mean) if self.relative else self.value

    def __str__(self) -> str:
        return f"{self.value * 100:g}%" if self.relative else f"{self.value:g}"


def _parse_threshold(raw: Any) -> Any:
    return raw if raw is None or isinstance(raw, Threshold | dict) else Threshold.parse(raw)


# Users write a number or "15%"; the schema says so (not the internal Threshold object).
ThresholdField = Annotated[
    Threshold | None,
    BeforeValidator(_parse_threshold),
    PlainSerializer(
        lambda t: None if t is None else (str(t) if t.relative else t.value),
        return_type=float | str | None,
    ),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": r"^\s*[0-9]*\.?[0-9]+\s*%\s*$"},
                {"type": "null"},
            ],
            "description": "absolute change (0.03) or relative to the baseline mean ('15%')",
        }
    ),
]


class GateTest(StrEnum):
    """What a gate's change rules ask of the data (``test:`` in a gate).

    ``detection``: fail on evidence that the change exceeds the allowance (nightly noise watch;
    silence is not evidence of safety). ``noninferiority``: pass only on evidence that the change
    is within the allowance (release sign-off: the one-sided bound must clear it)."""

    DETECTION = "detection"
    NONINFERIORITY = "noninferiority"


class GateSpec(_Strict):
    """Pass/fail rules for one metric column.

    ``min``/``max`` bound the mean. ``max_drop``/``max_increase`` bound the change against the
    baseline, ``min_ratio`` the candidate mean over the baseline mean; ``test`` says how the
    data must show it (see ``GateTest``). A detection rule fails only when the change exceeds
    the threshold AND a one-sided paired test finds it significant at ``alpha`` (``strict:
    true`` uses the point estimate).
    """

    metric: str
    min: float | None = None
    max: float | None = None
    max_drop: ThresholdField = None
    max_increase: ThresholdField = None
    min_ratio: float | None = Field(
        None, gt=0, description="candidate mean / baseline mean must be at least this"
    )
    test: GateTest = Field(
        GateTest.DETECTION,
        description="detection: fail on evidence of harm beyond the allowance; "
        "noninferiority: pass only on evidence the change is within it",
    )
    underpowered: Literal["warn", "fail"] = Field(
        "warn",
        description="a detection rule that cannot see a change the size of its allowance: "
        "warn (the item passes and says so) or fail",
    )
    strict: bool = False
    alpha: float = Field(0.05, gt=0.0, lt=1.0)
    candidates: list[str] | None = Field(
        None, description="only these candidates get this gate (default: every candidate)"
    )

    @model_validator(mode="after")
    def _has_rule(self) -> GateSpec:
        rules = (self.min, self.max, self.max_drop, self.max_increase, self.min_ratio)
        if all(v is None for v in rules):
            raise ValueError(
                "a gate needs at least one of min, max, max_drop, max_increase, min_ratio"
            )
        if self.strict and self.test is GateTest.NONINFERIORITY:
            raise ValueError(
                "strict judges a detection rule on the point estimate; a noninferiority rule "
                "is judged on its one-sided bound: drop 'strict' or 'test: noninferiority'"
            )
        return self

    @property
    def is_regression(self) -> bool:
        return any(v is not None for v in (self.max_drop, self.max_increase, self.min_ratio))
