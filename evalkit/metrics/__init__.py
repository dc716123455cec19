"""Metrics: the protocol, the registry and the built-in metrics."""

from evalkit.metrics.base import CorpusMetric, Metric, Sample, create, register, registered

__all__ = ["CorpusMetric", "Metric", "Sample", "create", "register", "registered"]
