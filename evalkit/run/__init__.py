"""The run pipeline, in the order data flows: ``prepare`` (load and check a suite, plan its
gates), ``generation`` (cached generation), ``scoring`` (cached scoring and aggregation),
``runner`` (orchestration)."""

from typing import Any

from evalkit.run.options import RunOptions
from evalkit.run.prepare import PreparedSuite, gate_plan, prepare_suite

__all__ = ["PreparedSuite", "RunOptions", "gate_plan", "prepare_suite", "run_suite"]


def __getattr__(name: str) -> Any:
    """``run_suite`` imports the runner (gates, statistics, numpy) when first asked for, so
    that collecting suites and every pytest start (evalkit's plugin) stay without them."""
    if name == "run_suite":
        from evalkit.run.runner import run_suite

        return run_suite
    raise AttributeError(f"module 'evalkit.run' has no attribute {name!r}")
