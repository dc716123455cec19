"""Who scored a judge column: the identity stored with its scores in run.json and baselines.

A judge score means something only together with the judge that gave it: the judge model (its
fingerprint: weights, or the API model string), the rubric text, the prompt version and the
scale. Two scores from different judges are not comparable, so every judge column records this
identity, accepted baselines keep it, and a comparison with a baseline scored by another judge
re-scores the baseline's outputs with today's judge, or refuses (``evalkit.baseline``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

IDENTITY_FIELDS = ("model", "fingerprint", "rubric", "rubric_sha256", "prompt_version", "scale")
"""What makes two judges the same judge (the rest of the record is description)."""


def is_judge(metric: Any) -> bool:
    """A judge metric (``judge``, ``judge_pairwise`` or any metric built on their judge)."""
    return callable(getattr(metric, "judge_signature", None)) and hasattr(metric, "rubric")


def judge_identity(metric: Any) -> dict[str, Any] | None:
    """The judge's identity, or None for a metric that is no judge. Cheap: the fingerprint
    hashes the judge's files, it does not load the judge."""
    if not is_judge(metric):
        return None
    import hashlib

    from evalkit.cache import make_key
    from evalkit.metrics.judge_prompts import PROMPT_VERSION

    rubric = metric.rubric
    scale = getattr(metric, "scale", None)
    text = f"{rubric.criteria}\0{sorted(rubric.levels.items())}\0{rubric.uses_reference}"
    return {
        "model": metric.options.model,
        "fingerprint": make_key(**metric.candidate.fingerprint())[:16],
        "rubric": rubric.name,
        "rubric_sha256": hashlib.sha256(text.encode()).hexdigest()[:16],
        "prompt_version": PROMPT_VERSION,
        "scale": list(scale) if scale is not None else "win/tie/loss",
        "signature": metric.signature(),
    }


def same_judge(stored: dict[str, Any] | None, today: dict[str, Any] | None) -> bool:
    """Whether a stored identity names today's judge (None stored: unknown, never the same)."""
    if stored is None or today is None:
        return stored is None and today is None
    return all(stored.get(f) == today.get(f) for f in IDENTITY_FIELDS)


def describe(identity: dict[str, Any] | None) -> str:
    if identity is None:
        return "an unrecorded judge"
    scale = identity.get("scale")
    scale_text = f"{scale[0]}-{scale[1]}" if isinstance(scale, list) else str(scale)
    return (
        f"{identity.get('model')}@{identity.get('fingerprint')} rubric "
        f"{identity.get('rubric')}#{identity.get('rubric_sha256')} prompt "
        f"v{identity.get('prompt_version')} scale {scale_text}"
    )


def calibration_file(metric: Any) -> Path | None:
    """The labels file a ``judge`` is calibrated on (``calibration:``), resolved."""
    name = getattr(getattr(metric, "options", None), "calibration", None)
    return None if name is None else (metric.base_dir / name).resolve()
