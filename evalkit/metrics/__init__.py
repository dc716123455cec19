"""Metrics: the protocol, the registry and the built-in metrics."""

from evalkit.metrics.base import (
    AnyMetric,
    CandidateMetric,
    CorpusFigures,
    CorpusMetric,
    DetailAggregating,
    Metric,
    Sample,
    Score,
    ScoreValue,
    Store,
    UsesStore,
    create,
    register,
    registered,
    split_score,
)

__all__ = [
    "AnyMetric",
    "CandidateMetric",
    "CorpusFigures",
    "CorpusMetric",
    "DetailAggregating",
    "Metric",
    "Sample",
    "Score",
    "ScoreValue",
    "Store",
    "UsesStore",
    "create",
    "register",
    "registered",
    "split_score",
]
