"""Which model strings are API models when a candidate has no ``api:`` block.

A bare ``provider/name`` is an API model when litellm's bundled price list knows it as a chat
model of that provider (``openai/gpt-4o-mini``), unless it is an alias, an existing folder, or the
candidate sets an option only local models have. Hub ids such as
``HuggingFaceTB/SmolLM2-135M-Instruct`` or ``openai/gpt-oss-20b`` are not priced chat models of a
litellm provider, so they stay local. The price list is read as a JSON file (~50 ms, once per
process): deciding imports neither litellm (~3 s) nor torch.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path
from typing import Any

from evalkit.spec import CandidateSpec

LOCAL_ONLY_OPTIONS = (
    "revision", "device", "dtype", "chat_template", "adapter", "merge", "quantization",
    "speculative",
)  # fmt: skip
"""Options that make a bare ``provider/name`` model string a local (transformers) model."""

_CHAT_MODES = {"chat", "completion", "responses", None}


@functools.cache
def _price_map() -> dict[str, Any]:
    """litellm's bundled price list, read as a file so that deciding costs no litellm import."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or spec.origin is None:
        return {}
    path = Path(spec.origin).parent / "model_prices_and_context_window_backup.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def is_litellm_model(model: str) -> bool:
    """``provider/name`` that litellm's local price list knows as a chat model of ``provider``."""
    if "/" not in model:
        return False
    provider, rest = model.split("/", 1)
    prices = _price_map()
    entry = prices.get(model) or prices.get(rest)
    if not isinstance(entry, dict) or entry.get("mode") not in _CHAT_MODES:
        return False
    return str(entry.get("litellm_provider", "")).split("-")[0] == provider


def is_bare_api_model(spec: CandidateSpec, base_dir: Path) -> bool:
    """Whether a candidate without ``api:`` names an API model (see the module docstring)."""
    from evalkit.candidates.models import ALIASES

    model = spec.model
    if model is None or model in ALIASES:
        return False
    if set(LOCAL_ONLY_OPTIONS) & spec.model_fields_set:
        return False
    path = Path(model).expanduser()
    if path.exists() or (not path.is_absolute() and (base_dir / path).exists()):
        return False
    return is_litellm_model(model)
