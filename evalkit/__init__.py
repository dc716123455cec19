"""evalkit: golden datasets as pytest suites for evaluating and regression-testing LLM changes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["__version__", "metric"]

if TYPE_CHECKING:
    from evalkit.metrics.decorator import metric


def __getattr__(name: str) -> Any:
    # Lazy, so `import evalkit` stays cheap and the package's own modules can import it early.
    if name == "metric":
        from evalkit.metrics.decorator import metric

        return metric
    raise AttributeError(f"module 'evalkit' has no attribute {name!r}")
