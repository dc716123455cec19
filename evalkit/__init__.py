"""evalkit: golden datasets as pytest suites for evaluating and regression-testing LLM changes."""

__version__ = "0.1.0"
