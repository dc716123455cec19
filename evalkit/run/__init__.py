"""The run pipeline, in the order data flows: ``prepare`` (load and check a suite, plan its
gates), ``generation`` (cached generation), ``scoring`` (cached scoring and aggregation),
``runner`` (orchestration)."""

from evalkit.run.prepare import PreparedSuite, gate_plan, prepare_suite
from evalkit.run.runner import RunOptions, run_suite

__all__ = ["PreparedSuite", "RunOptions", "gate_plan", "prepare_suite", "run_suite"]
